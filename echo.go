package myproto

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Echo: what ICMP echo (ping(8)) is to IP. A stack answers an echo request
// with an echo reply carrying the request's nonce and data back, within the
// discovery answer rate limit; the requester measures the round trip.
// SPEC.md §15 has the protocol. Both messages are discovery frames whose
// body is the discovery body followed by the data:
//
//	+-------------------------------+
//	|  discovery body (27 + Name)   |  Lifetime 0, Target zero
//	+-------------------------------+
//	|  Data ...                     |  returned unchanged in the reply
//	+-------------------------------+
//
// A request naming a name is answered only by the stack that has claimed
// it on the receiving interface; one naming none by every stack that gets
// it.

const (
	// defaultEchoSize is the data a request carries unless told, as
	// ping(8)'s default -s.
	defaultEchoSize = 56
	// defaultEchoTimeout is how long Ping waits for a reply unless told.
	defaultEchoTimeout = time.Second
)

// isEchoOp reports whether op is an echo message, which parseEcho decodes.
func isEchoOp(op discOp) bool { return op == discEchoRequest || op == discEchoReply }

// parseEcho decodes an echo body into m and returns its data, which
// aliases body; ok is false for anything malformed. Flags, Lifetime and
// Target are zero when sent and ignored here.
func parseEcho(body []byte, nonce uint64, m *discMsg) (data []byte, ok bool) {
	if len(body) < discFixedLen {
		return nil, false
	}
	n := int(body[26])
	if len(body) < discFixedLen+n || body[2] != 0 || body[3] != 0 || !isEchoOp(discOp(body[0])) {
		return nil, false
	}
	*m = discMsg{
		op:     discOp(body[0]),
		nonce:  nonce,
		nodeID: binary.BigEndian.Uint64(body[4:]),
		mtu:    binary.BigEndian.Uint32(body[12:]),
	}
	if name := body[discFixedLen : discFixedLen+n]; n > 0 {
		if !validName(string(name)) {
			return nil, false
		}
		m.name = string(name)
	}
	return body[discFixedLen+n:], true
}

// marshalEcho returns the body of the echo message m with data.
func marshalEcho(m *discMsg, data []byte) []byte {
	b := make([]byte, discFixedLen+len(m.name)+len(data))
	n := marshalDisc(b, m)
	copy(b[n:], data)
	return b
}

// echoInput handles an echo request or reply received on ep.
func (s *stack) echoInput(ep *endpoint, h *header, body []byte) dropReason {
	var m discMsg
	data, ok := parseEcho(body, h.connID, &m)
	if h.srcPort != 0 || h.dstPort != 0 || !ok {
		return dropMalformed
	}
	if m.nodeID == s.names.nodeID || h.src == ep.hwaddr() {
		return dropNone // ours, or another process's on this host
	}
	now := time.Now()
	switch m.op {
	case discEchoRequest:
		ep.disc.onEchoRequest(h, &m, data, now)
	case discEchoReply:
		ep.disc.echo.deliver(h.src, &m, headerLen+len(body), now)
	}
	return dropNone
}

// onEchoRequest answers an echo request if it names a name claimed here,
// or none; the answers share the advertises' rate limit.
func (d *discovery) onEchoRequest(h *header, m *discMsg, data []byte, now time.Time) {
	name := m.name
	d.mu.Lock()
	switch {
	case name != "" && d.names[name] != nameClaimed:
		d.mu.Unlock()
		return
	case name == "":
		// Say who answered: the node name, if claimed here and if the
		// reply has room for it.
		l := d.ep.s.names.list
		if len(l) > 0 && d.names[l[0]] == nameClaimed && discFixedLen+len(l[0])+len(data) <= d.ep.maxPayload() {
			name = l[0]
		}
	}
	d.mu.Unlock()
	if !d.answer.allow(now) {
		return
	}
	// A lost reply is the requester's to notice, as with ICMP.
	d.sendEcho(h.src, &discMsg{op: discEchoReply, nonce: m.nonce, name: name}, data)
}

// sendEcho fills in our node ID and MTU and sends the echo message m with
// data to dst.
func (d *discovery) sendEcho(dst [6]byte, m *discMsg, data []byte) error {
	ep := d.ep
	m.nodeID = ep.s.names.nodeID
	m.mtu = uint32(ep.mtu.Load())
	return ep.send(&header{dst: dst, typ: typeDiscovery, connID: m.nonce}, marshalEcho(m, data))
}

// echoWaiters are the echo requests in flight from one interface, by nonce.
// The zero value is ready to use.
type echoWaiters struct {
	mu sync.Mutex
	m  map[uint64]*echoWait
}

// An echoWait is one request waiting for its reply from peer.
type echoWait struct {
	peer [6]byte
	c    chan echoArrival // 1 slot: the first reply wins
}

// An echoArrival is a reply as the receive path saw it.
type echoArrival struct {
	msg discMsg
	len int       // bytes, myproto header included
	at  time.Time // when the receive path got it
}

func (w *echoWaiters) add(nonce uint64, e *echoWait) {
	w.mu.Lock()
	if w.m == nil {
		w.m = make(map[uint64]*echoWait)
	}
	w.m[nonce] = e
	w.mu.Unlock()
}

func (w *echoWaiters) remove(nonce uint64) {
	w.mu.Lock()
	delete(w.m, nonce)
	w.mu.Unlock()
}

// deliver hands a reply from src to the request with its nonce, if that
// request went to src and has no reply yet.
func (w *echoWaiters) deliver(src [6]byte, m *discMsg, n int, now time.Time) {
	w.mu.Lock()
	e := w.m[m.nonce]
	w.mu.Unlock()
	if e == nil || e.peer != src {
		return
	}
	select {
	case e.c <- echoArrival{msg: *m, len: n, at: now}:
	default: // a duplicate: another stack on the same MAC answered too
	}
}

// PingConfig configures a Pinger. A nil *PingConfig means the defaults.
type PingConfig struct {
	// Config is the stack configuration; nil means defaults.
	Config *Config
	// Resolver resolves a node name; nil means DefaultResolver (its
	// Config is not used: names are looked up by the Pinger's stack).
	Resolver *Resolver
	// Size is how many bytes of data each request carries and its reply
	// brings back, as ping(8)'s -s: 0 means 56, negative means none. It
	// must fit the interface MTU with the 24-byte header, the 27-byte echo
	// body and the name.
	Size int
	// Timeout is how long Ping waits for a reply; 0 means 1 s. A context
	// deadline may cut it shorter.
	Timeout time.Duration
}

// A Pinger sends echo requests to one neighbour and waits for its replies,
// as ping(8) does with ICMP echo (SPEC.md §15). It keeps the interface open
// between requests; Close releases it. A Pinger is safe for concurrent use:
// requests may overlap, as ping's do when replies are slower than the
// interval.
//
// Any process that has the interface open with myproto (a listener, a
// dialed connection, a datagram socket) answers echo requests. A request
// for a node name is answered by the one process on the neighbour that
// holds the name; a request for a MAC by every process on it, of which Ping
// takes the first answer.
type Pinger struct {
	ep      *endpoint
	release func()
	local   *Addr
	remote  *Addr
	peer    [6]byte
	name    string
	data    []byte
	timeout time.Duration

	closeOnce sync.Once
	closed    chan struct{}
}

// An EchoReply is the answer to one echo request.
type EchoReply struct {
	// Addr is the station that answered: its hardware address and the
	// interface it was reached through, port 0.
	Addr *Addr
	// Name is the name it answered for: the request's, or for a request by
	// MAC the answering stack's node name ("" if it has none on the link).
	Name string
	// NodeID identifies the answering stack, as Neighbor.NodeID does.
	NodeID uint64
	// MTU is the answering interface's MTU.
	MTU int
	// Len is the reply's size in bytes, myproto header included, as ping(8)
	// counts ICMP bytes.
	Len int
	// RTT is the time from sending the request to receiving the reply.
	RTT time.Duration
}

// Ping sends one echo request to the neighbour at address and returns its
// reply: NewPinger, Pinger.Ping and Close in one call.
func Ping(ctx context.Context, address string, cfg *PingConfig) (*EchoReply, error) {
	p, err := NewPinger(ctx, address, cfg)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	return p.Ping(ctx)
}

// NewPinger resolves address and returns a Pinger for the neighbour it
// names, with the interface to it open. The address is a node name
// ("nodeb"), or a hardware address with or without a zone naming the
// interface ("[02:00:5e:10:00:01%eth0]", "02:00:5e:10:00:01"); a port, as in
// "nodeb:80", is allowed and ignored. A name is resolved as Dial resolves it
// (ctx bounds the lookup); a hardware address needs a zone when the host
// has several interfaces.
//
// Errors are *net.OpError with Op "ping": wrapping a *net.DNSError for an
// unknown name, a *net.AddrError for a malformed address, and EMSGSIZE
// when Size does not fit the MTU.
func NewPinger(ctx context.Context, address string, cfg *PingConfig) (*Pinger, error) {
	var stackCfg *Config
	if cfg != nil {
		stackCfg = cfg.Config
	}
	s, err := defaultStack(stackCfg)
	if err != nil {
		return nil, opError("ping", nil, nil, err)
	}
	return s.newPinger(ctx, address, cfg)
}

func (s *stack) newPinger(ctx context.Context, address string, c *PingConfig) (*Pinger, error) {
	if c == nil {
		c = &PingConfig{}
	}
	mac, zone, name, ip, err := parsePingAddr(address)
	if err != nil {
		return nil, opError("ping", nil, nil, err)
	}
	if ip.IP.IsValid() && zone == "" {
		// A UDP bearer station: the only UDP bearer.
		if zone, err = s.udpInterface(address); err != nil {
			return nil, opError("ping", nil, nil, err)
		}
	}
	// Hold the interfaces through the lookup, so they are not opened
	// twice (with their name claims and goodbyes) for one ping.
	_, releaseAll, err := s.holdEndpoints(zone)
	if err != nil {
		return nil, opError("ping", nil, nil, err)
	}
	defer releaseAll()
	if name != "" {
		r := c.Resolver
		if r == nil {
			r = DefaultResolver
		}
		a, err := s.lookupName(ctx, r, name, zone)
		if err != nil {
			return nil, opError("ping", nil, nil, err)
		}
		name, _ = canonicalName(name) // lookupName has checked it
		mac = a.HardwareAddr
		if zone == "" {
			zone = a.Zone
		}
	}
	remote := &Addr{HardwareAddr: mac, Zone: zone}
	ifis, err := s.selectInterfaces(nil, zone)
	if err != nil {
		return nil, opError("ping", nil, remote, err)
	}
	if len(ifis) != 1 {
		return nil, opError("ping", nil, remote,
			&net.AddrError{Err: "zone needed to choose among several interfaces", Addr: address})
	}
	remote.Zone = ifis[0].Name
	eps, release, err := s.holdEndpoints(remote.Zone)
	if err != nil {
		return nil, opError("ping", nil, remote, err)
	}
	ep := eps[0]
	if ip.IP.IsValid() {
		remote.IP, remote.UDPPort = ip.IP, ip.UDPPort
	}
	if remote, err = ep.remoteAddr(remote); err != nil {
		release()
		return nil, opError("ping", nil, nil, err)
	}
	mac = remote.HardwareAddr
	local := ep.addr(0)
	size := c.Size
	switch {
	case size == 0:
		size = defaultEchoSize
	case size < 0:
		size = 0
	}
	if discFixedLen+len(name)+size > ep.maxPayload() {
		release()
		return nil, opError("ping", local, remote, errTooBig)
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i) // ping(8)'s pattern
	}
	p := &Pinger{
		ep:      ep,
		release: release,
		local:   local,
		remote:  remote,
		name:    name,
		data:    data,
		timeout: c.Timeout,
		closed:  make(chan struct{}),
	}
	copy(p.peer[:], mac)
	if p.timeout <= 0 {
		p.timeout = defaultEchoTimeout
	}
	return p, nil
}

// parsePingAddr splits a Pinger's address into a hardware address and its
// zone, or a UDP bearer station's IP address (ip.IP, ip.UDPPort) and its
// zone, or a name. Errors are *net.AddrError naming address.
func parsePingAddr(address string) (mac net.HardwareAddr, zone, name string, ip Addr, err error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		// No port: a bare name or MAC, perhaps in brackets.
		host = strings.TrimSuffix(strings.TrimPrefix(address, "["), "]")
	}
	if host == "" {
		return nil, "", "", Addr{}, &net.AddrError{Err: "missing host", Addr: address}
	}
	pa, err := parseAddress(net.JoinHostPort(host, "0"))
	if ae, ok := errors.AsType[*net.AddrError](err); ok {
		return nil, "", "", Addr{}, &net.AddrError{Err: ae.Err, Addr: address}
	}
	if err != nil {
		return nil, "", "", Addr{}, err
	}
	mac, zone, name = pa.mac, pa.zone, pa.host
	if mac != nil && mac[0]&1 != 0 {
		return nil, "", "", Addr{}, &net.AddrError{Err: "not a station's address (group or broadcast)", Addr: address}
	}
	return mac, zone, name, Addr{IP: pa.ip, UDPPort: pa.udpPort}, nil
}

// Addr returns the neighbour's address: its hardware address and the
// interface it is reached through, port 0.
func (p *Pinger) Addr() *Addr { return p.remote.clone() }

// Name returns the node name the requests ask for, or "" when the
// neighbour was given by its hardware address.
func (p *Pinger) Name() string { return p.name }

// Ping sends one echo request and waits for its reply, for at most the
// configured Timeout or until ctx is done. The first reply wins; later ones
// (from other stacks on the neighbour's MAC) are dropped, as are replies
// after Ping has returned.
//
// No reply in time gives a *net.OpError wrapping os.ErrDeadlineExceeded (a
// net.Error with Timeout() true); a cancelled ctx gives one wrapping
// context.Canceled; a closed Pinger net.ErrClosed; an interface that is
// down ENETDOWN.
func (p *Pinger) Ping(ctx context.Context) (*EchoReply, error) {
	select {
	case <-p.closed:
		return nil, opError("ping", p.local, p.remote, net.ErrClosed)
	default:
	}
	if p.ep.down.Load() {
		return nil, opError("ping", p.local, p.remote, os.NewSyscallError("sendto", syscall.ENETDOWN))
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	nonce := randNonce()
	w := &echoWait{peer: p.peer, c: make(chan echoArrival, 1)}
	waiters := &p.ep.disc.echo
	waiters.add(nonce, w)
	defer waiters.remove(nonce)
	start := time.Now()
	err := p.ep.disc.sendEcho(p.peer, &discMsg{op: discEchoRequest, nonce: nonce, name: p.name}, p.data)
	if err != nil {
		return nil, opError("ping", p.local, p.remote, err)
	}
	select {
	case a := <-w.c:
		return &EchoReply{
			Addr:   p.remote.clone(),
			Name:   a.msg.name,
			NodeID: a.msg.nodeID,
			MTU:    int(a.msg.mtu),
			Len:    a.len,
			RTT:    a.at.Sub(start),
		}, nil
	case <-ctx.Done():
		err = ctx.Err()
		if errors.Is(err, context.DeadlineExceeded) {
			err = os.ErrDeadlineExceeded
		}
	case <-p.closed:
		err = net.ErrClosed
	}
	return nil, opError("ping", p.local, p.remote, err)
}

// Close releases the interface. Pings in progress return net.ErrClosed, as
// do later calls, Close included.
func (p *Pinger) Close() error {
	first := false
	p.closeOnce.Do(func() {
		first = true
		close(p.closed)
		p.release()
	})
	if !first {
		return opError("close", p.local, p.remote, net.ErrClosed)
	}
	return nil
}
