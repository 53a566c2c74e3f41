package myproto

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/myproto/myproto/internal/link"
	"github.com/myproto/myproto/internal/stream"
	"github.com/myproto/myproto/internal/sys"
	"golang.org/x/net/bpf"
)

// Bearers: the media a stack carries its frames on, as TIPC's bearers.
// Ethernet is the host's interfaces through packet sockets; a UDP bearer is
// one UDP socket on one local IP address, which the stack sees as one more
// interface (named "udp" unless configured otherwise) whose stations have
// virtual MACs computed from their IP addresses (SPEC.md §18). The same
// frames cross both.

// Bearer media, for Bearer.Media.
const (
	// MediaEthernet is the host's Ethernet interfaces, through AF_PACKET
	// sockets (packet(7)); they need CAP_NET_RAW.
	MediaEthernet = "eth"
	// MediaUDP is a UDP bearer: the frames in UDP datagrams over IPv4 or
	// IPv6, through a UDP socket, which needs no privilege.
	MediaUDP = "udp"
)

// A Bearer is a medium the stack runs on (Config.Bearers).
type Bearer struct {
	// Media is MediaEthernet or MediaUDP.
	Media string

	// Name is, for Ethernet, the one interface to use ("" for every up
	// Ethernet interface); for UDP, the bearer's interface name, the zone
	// of its addresses ("[192.0.2.7%udp]:80"): "" means "udp" for the first
	// UDP bearer, "udp1", "udp2"... for the next ones. It must be a valid
	// interface name, and is looked up before the host's interfaces.
	Name string

	// The fields below are the UDP bearer's.

	// Port is the bearer port, which all hosts must agree on, as on the
	// EtherType: a station at it is reached by IP address alone, and its
	// virtual MAC shows its IPv4 address (SPEC.md §18). 0 means the
	// EtherType (0x88B5 = 34997).
	Port uint16
	// Local is the bearer's own address: "IP", "IP:PORT", ":PORT" or "".
	// Without an IP address the bearer takes the host's: its only global
	// unicast address, else the source address of its route to the
	// Internet, else the first global one, else 127.0.0.1. Without a port
	// it binds the bearer port, or, when another process on this host
	// holds that, an ephemeral one: the process is then reached by name,
	// or by an address that gives the port ("[192.0.2.7#40000%udp]:80").
	Local string
	// Peers are the other hosts' bearers, "IP", "IP:PORT", "HOST" or
	// "HOST:PORT" (resolved by DNS when the bearer opens; the port defaults
	// to the bearer port): broadcast frames (discovery) go to each, as TIPC's
	// UDP bearer replicates them, and to each station heard broadcasting in
	// the last three minutes. Peers of the other IP family are ignored.
	Peers []string
	// Group, if set, is an IPv4 or IPv6 multicast group, "IP" or "IP:PORT"
	// (the port defaulting to the bearer port): the bearer joins it on its
	// address's interface, and sends broadcast frames to it too (TTL 1: the
	// local network).
	Group string
	// MTU is the IP MTU of the paths to the peers; 0 means the MTU of the
	// interface holding the local address. Frames are that less the IP and
	// UDP headers (1472 bytes over IPv4 at 1500).
	MTU int
	// NoOffload turns generic segmentation and receive offload (UDP_SEGMENT
	// and UDP_GRO, udp(7)) off, to measure what they bring.
	NoOffload bool
}

// udpIndexBase is where the UDP bearers' interface indexes start, far above
// any the kernel gives.
const udpIndexBase = 1 << 30

// plannedTTL is how long a bearer's automatically chosen address is reused
// before the host's addresses are looked at again.
const plannedTTL = 5 * time.Second

// bearerProvider adds UDP bearers to a provider, which keeps its Ethernet
// interfaces (unless the configuration has none), port reservations, host
// sockets and link events.
type bearerProvider struct {
	provider
	ns        *sys.Netns
	etherType uint16
	eth       bool     // the base's Ethernet interfaces are used
	ethOnly   []string // if set, only these
	udp       []*udpBearer
	// onDemand: the UDP bearers are not among "every interface" (Listen
	// on ":80", lookups on every interface): the defaults, where the UDP
	// bearer is used only where an address names it.
	onDemand    bool
	rbuf, wbuf  int
	lookupPeers func(ctx context.Context, host string) ([]netip.Addr, error)
}

// udpBearer is one configured UDP bearer and its link while open.
type udpBearer struct {
	name       string
	index      int
	ip         netip.Addr // configured; invalid: automatic
	port       uint16     // configured; 0: the bearer port, or an ephemeral one if taken
	bearerPort uint16
	peers      []string
	group      string
	mtu        int
	noOffload  bool

	mu          sync.Mutex
	link        *sys.UDPLink // while open
	planned     netip.Addr   // the automatic address, chosen at plannedAt
	plannedAt   time.Time
	dataOpened  bool // the data view was handed out
	controlSent bool // so was the control view
}

// withBearers wraps prov with the bearers cfg configures.
func withBearers(cfg *Config, prov provider) (*bearerProvider, error) {
	if bp, ok := prov.(*bearerProvider); ok {
		return bp, nil
	}
	p := &bearerProvider{provider: prov, etherType: cfg.etherType(), rbuf: cfg.ReadBuffer, wbuf: cfg.WriteBuffer}
	if pp, ok := prov.(packetProvider); ok {
		p.ns = pp.ns
	}
	if cfg.Bearers == nil {
		p.eth = true
		b, env := envBearer()
		ub, err := newUDPBearer(&b, 0, p.etherType)
		if err != nil {
			return nil, fmt.Errorf("myproto: %s: %v", env, err)
		}
		p.udp = []*udpBearer{ub}
		// Configured through the environment, the host is on the UDP
		// bearer's network; else the bearer is used where named.
		p.onDemand = env == ""
		return p, nil
	}
	names := map[string]bool{}
	for i, b := range cfg.Bearers {
		switch b.Media {
		case MediaEthernet:
			p.eth = true
			if b.Name != "" {
				p.ethOnly = append(p.ethOnly, b.Name)
			}
		case MediaUDP:
			ub, err := newUDPBearer(&b, len(p.udp), p.etherType)
			if err != nil {
				return nil, fmt.Errorf("myproto: Config.Bearers[%d]: %v", i, err)
			}
			if names[ub.name] {
				return nil, fmt.Errorf("myproto: Config.Bearers[%d]: a second bearer named %q", i, ub.name)
			}
			names[ub.name] = true
			p.udp = append(p.udp, ub)
		default:
			return nil, fmt.Errorf("myproto: Config.Bearers[%d]: unknown media %q (want %q or %q)", i, b.Media, MediaEthernet, MediaUDP)
		}
	}
	if slices.ContainsFunc(cfg.Bearers, func(b Bearer) bool { return b.Media == MediaEthernet && b.Name == "" }) {
		p.ethOnly = nil // one entry asks for every interface
	}
	return p, nil
}

func newUDPBearer(b *Bearer, n int, etherType uint16) (*udpBearer, error) {
	ub := &udpBearer{name: b.Name, index: udpIndexBase + n, bearerPort: etherType,
		peers: slices.Clone(b.Peers), group: b.Group, mtu: b.MTU, noOffload: b.NoOffload}
	if b.Port != 0 {
		ub.bearerPort = b.Port
	}
	if ub.name == "" {
		ub.name = MediaUDP
		if n > 0 {
			ub.name += strconv.Itoa(n)
		}
	}
	if !validZone(ub.name) {
		return nil, fmt.Errorf("bad bearer name %q", ub.name)
	}
	if b.Local != "" {
		ip, port, err := parseHostPort(b.Local)
		if err != nil {
			return nil, fmt.Errorf("bad Local %q: %v", b.Local, err)
		}
		if ip.IsValid() && (ip.IsUnspecified() || ip.IsMulticast()) {
			return nil, fmt.Errorf("bad Local %q: not a unicast address", b.Local)
		}
		ub.ip, ub.port = ip, port
	}
	for _, peer := range b.Peers {
		if _, _, err := splitPeer(peer); err != nil {
			return nil, fmt.Errorf("bad peer %q: %v", peer, err)
		}
	}
	if b.Group != "" {
		ip, _, err := parseHostPort(b.Group)
		if err != nil || !ip.IsMulticast() {
			return nil, fmt.Errorf("bad Group %q: want a multicast IP address", b.Group)
		}
	}
	if b.MTU < 0 || b.MTU > 0 && b.MTU < 576 {
		return nil, fmt.Errorf("bad MTU %d", b.MTU)
	}
	return ub, nil
}

// parseHostPort parses "IP", "IP:PORT", "[IPv6]:PORT", ":PORT" or "".
func parseHostPort(s string) (netip.Addr, uint16, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return ip.Unmap(), 0, nil
	}
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	port, ok := parsePort(p)
	if !ok {
		return netip.Addr{}, 0, errors.New(errInvalidPort)
	}
	if h == "" {
		return netip.Addr{}, port, nil
	}
	ip, err := netip.ParseAddr(h)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	return ip.Unmap(), port, nil
}

// splitPeer splits a peer into host (an IP address or a DNS name) and port
// (0: the bearer port).
func splitPeer(s string) (string, uint16, error) {
	if _, err := netip.ParseAddr(s); err == nil {
		return s, 0, nil
	}
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		if validHost(s) {
			return s, 0, nil
		}
		return "", 0, err
	}
	port, ok := parsePort(p)
	if !ok || port == 0 || h == "" {
		return "", 0, errors.New(errInvalidPort)
	}
	return h, port, nil
}

func (p *bearerProvider) do(fn func() error) error {
	if p.ns == nil {
		return fn()
	}
	return p.ns.Do(fn)
}

func (p *bearerProvider) udpByIndex(index int) *udpBearer {
	if i := index - udpIndexBase; i >= 0 && i < len(p.udp) {
		return p.udp[i]
	}
	return nil
}

func (p *bearerProvider) udpByName(name string) *udpBearer {
	for _, b := range p.udp {
		if b.name == name {
			return b
		}
	}
	return nil
}

// interfaces lists the UDP bearers, then the Ethernet interfaces.
func (p *bearerProvider) interfaces() ([]net.Interface, error) {
	var out []net.Interface
	for _, b := range p.udp {
		out = append(out, b.iface(p))
	}
	if !p.eth {
		return out, nil
	}
	ifis, err := p.provider.interfaces()
	if err != nil {
		return nil, err
	}
	for _, ifi := range ifis {
		if (len(p.ethOnly) == 0 || slices.Contains(p.ethOnly, ifi.Name)) && p.udpByName(ifi.Name) == nil {
			out = append(out, ifi)
		}
	}
	return out, nil
}

// byDefault reports whether an address naming no interface (":80", a
// lookup everywhere) uses ifi.
func (p *bearerProvider) byDefault(ifi *net.Interface) bool {
	return !p.onDemand || p.udpByIndex(ifi.Index) == nil
}

// byDefault reports whether the stack uses ifi where an address names no
// interface.
func (s *stack) byDefault(ifi *net.Interface) bool {
	if bp, ok := s.prov.(*bearerProvider); ok && !bp.byDefault(ifi) {
		return false
	}
	return usable(ifi)
}

// iface describes the bearer as an interface: up, its virtual MAC that of
// its address (the one it is bound to, or the one it will bind).
func (b *udpBearer) iface(p *bearerProvider) net.Interface {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.checkClosedLocked()
	ifi := net.Interface{Index: b.index, Name: b.name, Flags: net.FlagUp | net.FlagRunning | net.FlagBroadcast | net.FlagMulticast}
	var ap netip.AddrPort
	if b.link != nil {
		ap, ifi.MTU = b.link.LocalAddr(), b.link.MTU()
	} else {
		ap = netip.AddrPortFrom(b.addrLocked(p), b.bindPort())
		ifi.MTU = max(b.mtu, 1500) - 28 - link.EthernetHeaderLen
	}
	mac := sys.UDPMAC(ap, b.bearerPort)
	ifi.HardwareAddr = net.HardwareAddr(mac[:])
	return ifi
}

func (b *udpBearer) bindPort() uint16 {
	if b.port != 0 {
		return b.port
	}
	return b.bearerPort
}

// checkClosedLocked forgets a link the stack closed.
func (b *udpBearer) checkClosedLocked() {
	if b.link != nil && b.link.Closed() {
		b.link, b.dataOpened, b.controlSent = nil, false, false
	}
}

// addrLocked is the IP address the bearer binds: the configured one, or
// the host's (see Bearer.Local).
func (b *udpBearer) addrLocked(p *bearerProvider) netip.Addr {
	if b.ip.IsValid() {
		return b.ip
	}
	if b.planned.IsValid() && time.Since(b.plannedAt) < plannedTTL {
		return b.planned
	}
	ip := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	_ = p.do(func() error {
		if a, ok := hostIP(); ok {
			ip = a
		}
		return nil
	})
	b.planned, b.plannedAt = ip, time.Now()
	return ip
}

// hostIP picks the host's address for a UDP bearer: its only global unicast
// address, else the source of its route to the Internet, else the first
// global one (IPv4 before IPv6).
func hostIP() (netip.Addr, bool) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Addr{}, false
	}
	var v4, v6 []netip.Addr
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok || !ip.Unmap().IsGlobalUnicast() {
			continue
		}
		if ip = ip.Unmap(); ip.Is4() {
			v4 = append(v4, ip)
		} else {
			v6 = append(v6, ip)
		}
	}
	all := append(v4, v6...)
	switch len(all) {
	case 0:
		return netip.Addr{}, false
	case 1:
		return all[0], true
	}
	// Connecting a UDP socket sends nothing: it only picks the route.
	for _, probe := range []string{"192.0.2.1:9", "[2001:db8::1]:9"} {
		if c, err := net.Dial("udp", probe); err == nil {
			ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
			c.Close()
			if slices.Contains(all, ap.Addr().Unmap()) {
				return ap.Addr().Unmap(), true
			}
		}
	}
	return all[0], true
}

// open opens the bearer's link for the stack's endpoint on ifi (its data
// view: openControl hands out the control view).
func (p *bearerProvider) open(ifi *net.Interface, etherType uint16, filter []bpf.RawInstruction, readBuffer, writeBuffer int) (link.Link, error) {
	b := p.udpByIndex(ifi.Index)
	if b == nil {
		return p.provider.open(ifi, etherType, filter, readBuffer, writeBuffer)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.checkClosedLocked()
	if b.link != nil {
		// The stack opens an interface only when it has no endpoint on
		// it: this link's endpoint let go of it and has yet to close it.
		b.link.Close()
		b.link, b.dataOpened, b.controlSent = nil, false, false
	}
	l, err := b.openLocked(p)
	if err != nil {
		return nil, err
	}
	b.link, b.dataOpened = l, true
	return l, nil
}

// openControl opens the control link of the endpoint on ifi: the UDP
// bearer's control view, or what the base provider opens.
func (p *bearerProvider) openControl(ifi *net.Interface, etherType uint16, filter []bpf.RawInstruction, readBuffer, writeBuffer int) (link.Link, error) {
	b := p.udpByIndex(ifi.Index)
	if b == nil {
		type controlOpener interface {
			openControl(*net.Interface, uint16, []bpf.RawInstruction, int, int) (link.Link, error)
		}
		if co, ok := p.provider.(controlOpener); ok {
			return co.openControl(ifi, etherType, filter, readBuffer, writeBuffer)
		}
		return p.provider.open(ifi, etherType, filter, readBuffer, writeBuffer)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.checkClosedLocked()
	if b.link == nil || b.controlSent {
		return nil, fmt.Errorf("myproto: udp bearer %s: control view without its data view", b.name)
	}
	b.controlSent = true
	return b.link.Control(), nil
}

// openLocked opens the bearer's socket.
func (b *udpBearer) openLocked(p *bearerProvider) (*sys.UDPLink, error) {
	ip := b.addrLocked(p)
	cfg := sys.UDPConfig{
		Name:        b.name,
		Index:       b.index,
		Local:       netip.AddrPortFrom(ip, b.bindPort()),
		BearerPort:  b.bearerPort,
		MTU:         b.mtu,
		ReadBuffer:  p.rbuf,
		WriteBuffer: p.wbuf,
		NoGSO:       b.noOffload,
		NoGRO:       b.noOffload,
		Control:     controlFrame,
	}
	var l *sys.UDPLink
	err := p.do(func() error {
		var err error
		if cfg.Peers, err = b.resolvePeers(p, ip.Is6()); err != nil {
			return err
		}
		if b.group != "" {
			g, port, _ := parseHostPort(b.group)
			if port == 0 {
				port = b.bearerPort
			}
			cfg.Group = netip.AddrPortFrom(g, port)
		}
		l, err = sys.OpenUDP(cfg)
		if errors.Is(err, syscall.EADDRINUSE) && b.port == 0 {
			// The bearer port is another process's: this one is
			// reached by name.
			cfg.Local = netip.AddrPortFrom(ip, 0)
			l, err = sys.OpenUDP(cfg)
		}
		if errors.Is(err, syscall.EADDRNOTAVAIL) && !b.ip.IsValid() {
			b.plannedAt = time.Time{} // the host's address changed
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// resolvePeers resolves the configured peers, keeping those of the
// bearer's family.
func (b *udpBearer) resolvePeers(p *bearerProvider, v6 bool) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, peer := range b.peers {
		host, port, err := splitPeer(peer)
		if err != nil {
			return nil, err
		}
		if port == 0 {
			port = b.bearerPort
		}
		var ips []netip.Addr
		if ip, err := netip.ParseAddr(host); err == nil {
			ips = []netip.Addr{ip.Unmap()}
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			lookup := p.lookupPeers
			if lookup == nil {
				lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
					return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
				}
			}
			ips, err = lookup(ctx, host)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("udp bearer %s: peer %s: %w", b.name, peer, err)
			}
		}
		for _, ip := range ips {
			if ip = ip.Unmap(); ip.Is6() == v6 {
				out = append(out, netip.AddrPortFrom(ip, port))
			}
		}
	}
	return out, nil
}

// controlFrame reports whether a frame received on a UDP bearer is for the
// endpoint's control loop, as the Ethernet control socket's filter passes
// it: discovery and SYNs.
func controlFrame(f []byte) bool {
	if len(f) < offBody {
		return false
	}
	switch frameType(f[offType]) {
	case typeDiscovery:
		return true
	case typeStream:
		return binary.BigEndian.Uint16(f[offFlags:])&stream.FlagSYN != 0
	}
	return false
}

// defaultBearerAddr returns the address of the default stack's UDP bearer
// named name (port 0), or nil if it has none: what ResolveAddr makes of
// "udp:80" and of a zone naming a bearer. It sets up no stack: without a
// default stack yet, the bearers are those of a nil Config.
func defaultBearerAddr(name string) *Addr {
	stacks.mu.Lock()
	s := stacks.m[DefaultEtherType]
	stacks.mu.Unlock()
	var bp *bearerProvider
	if s != nil {
		bp, _ = s.prov.(*bearerProvider)
	} else {
		bp, _ = withBearers(&Config{}, packetProvider{})
	}
	if bp == nil {
		return nil
	}
	b := bp.udpByName(name)
	if b == nil {
		return nil
	}
	ifi := b.iface(bp)
	b.mu.Lock()
	defer b.mu.Unlock()
	a := &Addr{HardwareAddr: ifi.HardwareAddr, Zone: name}
	var ap netip.AddrPort
	if b.link != nil {
		ap = b.link.LocalAddr()
	} else {
		ap = netip.AddrPortFrom(b.addrLocked(bp), b.bindPort())
	}
	a.IP = ap.Addr()
	if ap.Port() != b.bearerPort {
		a.UDPPort = ap.Port()
	}
	return a
}

// addr returns the address of port on ep: for a UDP bearer, with its IP
// address.
func (ep *endpoint) addr(port uint16) *Addr {
	a := &Addr{HardwareAddr: net.HardwareAddr(ep.hwaddrSlice()), Port: port, Zone: ep.name}
	if ep.udp != nil {
		ap := ep.udp.LocalAddr()
		a.IP = ap.Addr()
		if ap.Port() != ep.udp.BearerPort() {
			a.UDPPort = ap.Port()
		}
	}
	return a
}

// peerAddr returns the address of the station mac at port, as seen from
// ep: for a UDP bearer, with its IP address when the link knows it.
func (ep *endpoint) peerAddr(mac [6]byte, port uint16) *Addr {
	a := &Addr{HardwareAddr: net.HardwareAddr(append([]byte(nil), mac[:]...)), Port: port, Zone: ep.name}
	if ep.udp != nil {
		if ap, ok := ep.udp.AddrOf(mac); ok {
			a.IP = ap.Addr()
			if ap.Port() != ep.udp.BearerPort() {
				a.UDPPort = ap.Port()
			}
		}
	}
	return a
}

// udpPeerMAC returns the virtual MAC of the station a names on ep, a UDP
// bearer, and tells the link where it is.
func (ep *endpoint) udpPeerMAC(a *Addr) ([6]byte, error) {
	if ep.udp == nil {
		return [6]byte{}, &net.AddrError{Err: "an IP address needs a UDP bearer", Addr: a.String()}
	}
	ip := a.IP.Unmap()
	if ip.IsUnspecified() || ip.IsMulticast() {
		return [6]byte{}, &net.AddrError{Err: "not a station's IP address", Addr: a.String()}
	}
	local := ep.udp.LocalAddr()
	if ip.Is6() != local.Addr().Is6() {
		return [6]byte{}, &net.AddrError{Err: "the bearer is " + ipFamily(local.Addr()) + " only", Addr: a.String()}
	}
	port := a.UDPPort
	if port == 0 {
		port = ep.udp.BearerPort()
	}
	return ep.udp.AddPeer(netip.AddrPortFrom(ip, port)), nil
}

func ipFamily(ip netip.Addr) string {
	if ip.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// udpInterface picks the UDP bearer an IP address without a zone goes
// through: the only one.
func (s *stack) udpInterface(address string) (string, error) {
	bp, _ := s.prov.(*bearerProvider)
	if bp == nil || len(bp.udp) == 0 {
		return "", &net.AddrError{Err: "no UDP bearer", Addr: address}
	}
	if len(bp.udp) > 1 {
		return "", &net.AddrError{Err: "zone needed to choose among several UDP bearers", Addr: address}
	}
	return bp.udp[0].name, nil
}

// udpLocal finds the UDP bearer bound to (or configured with) ip, for an
// address that names the local side by IP.
func (s *stack) udpLocal(ip netip.Addr, zone, address string) (string, error) {
	bp, _ := s.prov.(*bearerProvider)
	if bp != nil {
		for _, b := range bp.udp {
			if zone != "" && b.name != zone {
				continue
			}
			b.mu.Lock()
			b.checkClosedLocked()
			var have netip.Addr
			if b.link != nil {
				have = b.link.LocalAddr().Addr()
			} else {
				have = b.addrLocked(bp)
			}
			b.mu.Unlock()
			if have == ip.Unmap() {
				return b.name, nil
			}
		}
	}
	return "", &net.AddrError{Err: "no UDP bearer on that IP address", Addr: address}
}

// resolveUDP picks the UDP bearer for a remote IP address: its zone, or the
// only UDP bearer.
func (s *stack) resolveUDP(pa addrParts, address string) (*Addr, *net.Interface, error) {
	zone := pa.zone
	if zone == "" {
		var err error
		if zone, err = s.udpInterface(address); err != nil {
			return nil, nil, err
		}
	}
	if pa.port == 0 {
		return nil, nil, &net.AddrError{Err: "missing port", Addr: address}
	}
	if pa.ip.IsUnspecified() || pa.ip.IsMulticast() {
		return nil, nil, &net.AddrError{Err: "not a station's IP address", Addr: address}
	}
	ifis, err := s.selectInterfaces(nil, zone)
	if err != nil {
		return nil, nil, inAddress(err, address)
	}
	if bp, _ := s.prov.(*bearerProvider); bp == nil || bp.udpByIndex(ifis[0].Index) == nil {
		return nil, nil, &net.AddrError{Err: "an IP address needs a UDP bearer", Addr: address}
	}
	return &Addr{IP: pa.ip, UDPPort: pa.udpPort, Port: pa.port, Zone: ifis[0].Name}, &ifis[0], nil
}

// remoteAddr completes a remote address on ep: a UDP bearer station's
// virtual MAC from its IP address (telling the link where it is), or its IP
// address from its MAC.
func (ep *endpoint) remoteAddr(a *Addr) (*Addr, error) {
	if ep.udp == nil {
		return a, nil
	}
	if a.IP.IsValid() {
		mac, err := ep.udpPeerMAC(a)
		if err != nil {
			return nil, err
		}
		a = a.clone()
		a.HardwareAddr = net.HardwareAddr(mac[:])
		return a, nil
	}
	return ep.peerAddr([6]byte(a.HardwareAddr), a.Port), nil
}

// onlyUDP returns the one UDP bearer among eps, or nil.
func onlyUDP(eps []*endpoint) *endpoint {
	var found *endpoint
	for _, ep := range eps {
		if ep.udp != nil {
			if found != nil {
				return nil
			}
			found = ep
		}
	}
	return found
}

// baseProvider is the provider the stack's bearers wrap.
func (s *stack) baseProvider() provider {
	if bp, ok := s.prov.(*bearerProvider); ok {
		return bp.provider
	}
	return s.prov
}

// Environment variables that configure the UDP bearer of a stack whose
// Config has no Bearers, as MYPROTO_NAME names its node: for programs and
// tools that take no Config.
const (
	envUDPLocal = "MYPROTO_UDP_LOCAL" // Bearer.Local
	envUDPPeers = "MYPROTO_UDP_PEERS" // Bearer.Peers, separated by commas or spaces
	envUDPGroup = "MYPROTO_UDP_GROUP" // Bearer.Group
)

// envBearer returns the default UDP bearer as the environment configures
// it, and the variables that did (empty: none).
func envBearer() (Bearer, string) {
	b := Bearer{Media: MediaUDP, Local: os.Getenv(envUDPLocal), Group: os.Getenv(envUDPGroup)}
	b.Peers = strings.FieldsFunc(os.Getenv(envUDPPeers), func(r rune) bool { return r == ',' || r == ' ' })
	var set []string
	for _, v := range []string{envUDPLocal, envUDPPeers, envUDPGroup} {
		if os.Getenv(v) != "" {
			set = append(set, "$"+v)
		}
	}
	return b, strings.Join(set, ", ")
}

// udpAddrOf returns, for the interface index idx, how to find a neighbour's
// IP address and port from its MAC: the open bearer's table, or, with the
// bearer closed, the IPv4 form's decoding. nil: not a UDP bearer. s.mu is
// held.
func (s *stack) udpAddrOf(idx int) func([6]byte) netip.AddrPort {
	if ep := s.endpoints[idx]; ep != nil && ep.udp != nil {
		return func(mac [6]byte) netip.AddrPort {
			ap, _ := ep.udp.AddrOf(mac)
			return ap
		}
	}
	bp, _ := s.prov.(*bearerProvider)
	if bp == nil || bp.udpByIndex(idx) == nil {
		return nil
	}
	port := bp.udpByIndex(idx).bearerPort
	return func(mac [6]byte) netip.AddrPort {
		if mac[0] != 0x02 || mac[1] != 0x00 {
			return netip.AddrPort{}
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(mac[2:6])), port)
	}
}
