//go:build linux

package sys

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/myproto/myproto/internal/link"
)

// The UDP bearer's link: whole myproto frames, Ethernet header included, as
// the payloads of UDP datagrams (SPEC.md §18). A UDPLink is one UDP socket
// bound to one local address; the stack sees it as an interface whose MAC is
// that address's virtual MAC (UDPMAC).
//
// Sending, a run of frames to one peer of one size (the last may be shorter)
// leaves as one sendmsg(2) with UDP_SEGMENT (generic segmentation offload,
// udp(7)): the kernel cuts the super-datagram into datagrams as late as it
// can, on the wire or, across veth and loopback, not at all. Receiving,
// UDP_GRO hands such runs back whole with their segment size, which the link
// cuts into frames without copying them. recvmmsg(2) and sendmmsg(2) batch
// what remains.

const (
	// udpMaxMsgs is the most datagrams (or GSO runs) one sendmmsg or
	// recvmmsg moves.
	udpMaxMsgs = 64
	// udpMaxSegments is the most segments one GSO send carries
	// (UDP_MAX_SEGMENTS in the kernel).
	udpMaxSegments = 64
	// udpMaxPayload is the largest UDP payload over IPv4, and the most a
	// GSO run may carry: 65535 less the IPv4 and UDP headers.
	udpMaxPayload = 65535 - 20 - 8
	// udpGROBuf is a receive buffer with GRO: a coalesced run is at most
	// one IP packet's worth.
	udpGROBuf = 1 << 16
	// udpRxGRO and udpRxPlain are how many datagrams one recvmmsg asks for
	// with and without GRO.
	udpRxGRO   = 16
	udpRxPlain = 64
	// udpCtrlSpace holds the control messages a receive can carry:
	// UDP_GRO's segment size and SO_RXQ_OVFL's drop counter.
	udpCtrlSpace = 64
	// udpControlQueue bounds the frames waiting for the control view, as
	// the Ethernet control socket's small buffer does: a flood of SYNs or
	// discovery frames is dropped there.
	udpControlQueue = 1 << 20
	// udpPeersMax bounds each generation of learned peers.
	udpPeersMax = 1 << 14
	// udpHeardMax bounds the stations learned from their broadcasts, to
	// which broadcasts go back; udpHeardTTL is how long one stays unheard.
	udpHeardMax = 1024
	udpHeardTTL = 3 * time.Minute
)

// UDPConfig configures OpenUDP.
type UDPConfig struct {
	// Name and Index are what the link reports as its interface: the
	// bearer's name (the zone of its addresses) and an index the stack
	// chose outside the kernel's range.
	Name  string
	Index int
	// Local is the address to bind: a unicast IP address of this host and
	// a port (0: an ephemeral one). Its family is the bearer's.
	Local netip.AddrPort
	// BearerPort is the UDP port all hosts agree on, which virtual MACs
	// depend on (UDPMAC).
	BearerPort uint16
	// Peers receive every broadcast frame (TIPC's "replicast"), as do the
	// stations heard broadcasting lately.
	Peers []netip.AddrPort
	// Group, if valid, is an IP multicast group and port: the link joins
	// it on the local address's interface and sends broadcast frames to it
	// too.
	Group netip.AddrPort
	// MTU is the IP MTU of the paths to the peers; 0 means the MTU of the
	// interface holding the local address.
	MTU int
	// ReadBuffer and WriteBuffer size the socket's buffers (SO_RCVBUFFORCE,
	// falling back to the capped SO_RCVBUF); 0 means 32 MiB.
	ReadBuffer, WriteBuffer int
	// NoGSO and NoGRO turn segmentation offload off, to measure it.
	NoGSO, NoGRO bool
	// Control reports whether a frame is for the control view (discovery,
	// SYNs); nil sends every frame to the data view.
	Control func(frame []byte) bool
}

var (
	_ link.Link = (*UDPLink)(nil)
	_ link.Link = (*udpControl)(nil)
)

// A UDPLink is a link.Link over a UDP socket: its data view. Control returns
// the control view, which shares the socket: the data view's reader passes
// it the frames Config.Control picks, through a small queue.
type UDPLink struct {
	cfg    UDPConfig
	conn   *net.UDPConn
	rc     syscall.RawConn
	group  *net.UDPConn // the multicast group's socket, or nil
	local  netip.AddrPort
	mac    [6]byte
	v6     bool
	scope  uint32 // the local address's zone, for link-local peers
	mtu    atomic.Int64
	closed atomic.Bool
	gso    atomic.Bool
	gro    bool

	peers udpPeers
	cast  udpCast
	ctl   *udpControl
	queue frameQueue

	rd     udpReader
	readFn func(fd uintptr) bool

	writers sync.Pool // *udpWriteScratch

	frames   atomic.Uint64 // frames received
	rxqDrops atomic.Uint64 // the kernel's, from SO_RXQ_OVFL
	rejected atomic.Uint64 // frames whose source MAC is not their sender's
	noRoute  atomic.Uint64 // frames to a MAC the link cannot map
	sendErrs atomic.Uint64 // datagrams the kernel refused
	backoffs atomic.Uint64
	gsoRuns  atomic.Uint64 // GSO sends of more than one frame
	groRuns  atomic.Uint64 // received datagrams of more than one frame

	wg sync.WaitGroup // the group socket's reader
}

// OpenUDP opens a UDP link bound to cfg.Local. It needs no privilege.
func OpenUDP(cfg UDPConfig) (*UDPLink, error) {
	l, err := openUDP(cfg)
	if err != nil {
		return nil, fmt.Errorf("sys: open udp link %s on %v: %w", cfg.Name, cfg.Local, err)
	}
	return l, nil
}

func openUDP(cfg UDPConfig) (*UDPLink, error) {
	ip := cfg.Local.Addr().Unmap()
	if !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() {
		return nil, errors.New("the local address must be a unicast IP address")
	}
	netw := "udp4"
	if ip.Is6() {
		netw = "udp6"
	}
	pc, err := (&net.ListenConfig{}).ListenPacket(context.Background(), netw, netip.AddrPortFrom(ip, cfg.Local.Port()).String())
	if err != nil {
		return nil, err
	}
	conn := pc.(*net.UDPConn)
	l := &UDPLink{cfg: cfg, conn: conn, v6: ip.Is6()}
	if err := l.setup(); err != nil {
		conn.Close()
		return nil, err
	}
	if cfg.Group.IsValid() {
		if err := l.joinGroup(); err != nil {
			conn.Close()
			return nil, err
		}
		l.wg.Add(1)
		go l.readGroup()
	}
	return l, nil
}

// setup sets the socket's options and the link's state.
func (l *UDPLink) setup() error {
	cfg := &l.cfg
	l.local = l.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	l.local = netip.AddrPortFrom(l.local.Addr().Unmap(), l.local.Port())
	l.mac = UDPMAC(l.local, cfg.BearerPort)
	ifi, _ := interfaceOf(l.local.Addr())
	if ifi != nil && l.local.Addr().Is6() && l.local.Addr().IsLinkLocalUnicast() {
		l.scope = uint32(ifi.Index)
	}
	mtu := cfg.MTU
	if mtu <= 0 {
		mtu = 1500
		if ifi != nil {
			mtu = ifi.MTU
		}
	}
	hdr := 20 + 8
	if l.v6 {
		hdr = 40 + 8
	}
	payload := min(mtu-hdr, udpMaxPayload)
	if payload < link.EthernetHeaderLen+64 {
		return fmt.Errorf("MTU %d is too small", mtu)
	}
	l.mtu.Store(int64(payload - link.EthernetHeaderLen))

	rc, err := l.conn.SyscallConn()
	if err != nil {
		return err
	}
	l.rc = rc
	rcvbuf, sndbuf := cfg.ReadBuffer, cfg.WriteBuffer
	if rcvbuf == 0 {
		rcvbuf = defaultSocketBuffer
	}
	if sndbuf == 0 {
		sndbuf = defaultSocketBuffer
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		s := int(fd)
		if serr = setBuffer(s, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, rcvbuf); serr != nil {
			return
		}
		if serr = setBuffer(s, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, sndbuf); serr != nil {
			return
		}
		// The kernel's drop counter rides on every receive.
		_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1)
		// GSO is there if the option can be read (Linux 4.18).
		if !cfg.NoGSO {
			if _, err := unix.GetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_SEGMENT); err == nil {
				l.gso.Store(true)
			}
		}
		if !cfg.NoGRO {
			l.gro = unix.SetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	for _, p := range cfg.Peers {
		l.cast.fixed = append(l.cast.fixed, unmapPort(p))
	}
	if cfg.Group.IsValid() {
		l.cast.fixed = append(l.cast.fixed, unmapPort(cfg.Group))
	}
	l.cast.fixed = slices.DeleteFunc(l.cast.fixed, func(p netip.AddrPort) bool {
		return p == l.local || p.Addr().Is6() != l.v6
	})
	for _, p := range l.cast.fixed {
		if !p.Addr().IsMulticast() {
			l.peers.pin(UDPMAC(p, cfg.BearerPort), p)
		}
	}
	l.cast.rebuild(time.Now())
	l.ctl = &udpControl{l: l, done: make(chan struct{})}
	l.queue.init(udpControlQueue)
	l.rd.init(l.gro, l.frameSize())
	l.readFn = l.recvmmsg
	l.writers.New = func() any {
		s := new(udpWriteScratch)
		s.sendFn = s.sendmmsg
		return s
	}
	return nil
}

func unmapPort(p netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(p.Addr().Unmap(), p.Port())
}

// interfaceOf returns the interface holding ip.
func interfaceOf(ip netip.Addr) (*net.Interface, error) {
	ifis, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for i := range ifis {
		addrs, err := ifis[i].Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if x, ok := netip.AddrFromSlice(n.IP); ok && x.Unmap() == ip {
					return &ifis[i], nil
				}
			}
		}
	}
	return nil, fmt.Errorf("no interface holds %v", ip)
}

// joinGroup opens the group's socket, bound to the group and port with
// SO_REUSEADDR so that every process on the host receives the group's
// datagrams, joins the group on the local address's interface, and makes
// the data socket send to groups through that interface.
func (l *UDPLink) joinGroup() error {
	g := unmapPort(l.cfg.Group)
	if !g.Addr().IsMulticast() || g.Addr().Is6() != l.v6 {
		return fmt.Errorf("group %v is not a multicast address of the bearer's family", g)
	}
	ifi, err := interfaceOf(l.local.Addr())
	if err != nil {
		return err
	}
	gc, err := listenGroup(g)
	if err != nil {
		return err
	}
	ga := &net.UDPAddr{IP: g.Addr().AsSlice()}
	if l.v6 {
		p := ipv6.NewPacketConn(gc)
		err = p.JoinGroup(ifi, ga)
		if err == nil {
			err = ipv6.NewPacketConn(l.conn).SetMulticastInterface(ifi)
		}
	} else {
		p := ipv4.NewPacketConn(gc)
		err = p.JoinGroup(ifi, ga)
		if err == nil {
			err = ipv4.NewPacketConn(l.conn).SetMulticastInterface(ifi)
		}
	}
	if err != nil {
		gc.Close()
		return err
	}
	l.group = gc
	return nil
}

// listenGroup opens a UDP socket bound to the group's own address and port
// with SO_REUSEADDR, so that it receives that group's datagrams and
// nothing else, and so does every other process's. (package net binds a
// multicast address's socket to the wildcard address instead, which the
// data socket, bound to the same port without SO_REUSEADDR, refuses.)
func listenGroup(g netip.AddrPort) (*net.UDPConn, error) {
	family := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(g.Port()), Addr: g.Addr().As4()}
	if g.Addr().Is6() {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(g.Port()), Addr: g.Addr().As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	f := os.NewFile(uintptr(fd), "udp group "+g.String())
	defer f.Close()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return nil, os.NewSyscallError("setsockopt", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return nil, os.NewSyscallError("bind", err)
	}
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// readGroup reads the group's socket until it closes. Group traffic is
// broadcast frames (discovery, mostly): it goes to the control view.
func (l *UDPLink) readGroup() {
	defer l.wg.Done()
	buf := make([]byte, udpGROBuf)
	for {
		n, src, err := l.group.ReadFromUDPAddrPort(buf)
		if err != nil {
			if l.closed.Load() {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		f := buf[:n]
		src = unmapPort(src)
		if len(f) < link.EthernetHeaderLen || f[0]&1 == 0 {
			continue // group sockets carry group frames only
		}
		mac := UDPMAC(src, l.cfg.BearerPort)
		if [6]byte(f[6:12]) != mac {
			l.rejected.Add(1)
			continue
		}
		if mac == l.mac {
			continue // our own, looped back
		}
		l.frames.Add(1)
		l.learn(mac, src)
		l.cast.note(src, time.Now())
		l.queue.push(f)
	}
}

// Control returns the control view of the link.
func (l *UDPLink) Control() link.Link { return l.ctl }

// LocalAddr returns the address the socket is bound to.
func (l *UDPLink) LocalAddr() netip.AddrPort { return l.local }

// BearerPort returns the port virtual MACs are computed for.
func (l *UDPLink) BearerPort() uint16 { return l.cfg.BearerPort }

// GSO and GRO report whether the link uses segmentation offload.
func (l *UDPLink) GSO() bool { return l.gso.Load() }

// GRO reports whether the socket receives coalesced datagrams.
func (l *UDPLink) GRO() bool { return l.gro }

// Offload counts the GSO sends of several frames and the received
// datagrams that GRO coalesced from several.
func (l *UDPLink) Offload() (gsoRuns, groRuns uint64) { return l.gsoRuns.Load(), l.groRuns.Load() }

// Rejected counts the frames dropped because their source MAC was not the
// virtual MAC of the address they came from.
func (l *UDPLink) Rejected() uint64 { return l.rejected.Load() }

// NoRoute counts the frames dropped because no address was known for their
// destination MAC.
func (l *UDPLink) NoRoute() uint64 { return l.noRoute.Load() }

// AddrOf returns the address a virtual MAC stands for, if the link knows it.
func (l *UDPLink) AddrOf(mac [6]byte) (netip.AddrPort, bool) {
	if mac == l.mac {
		return l.local, true
	}
	if ap, ok := udpMACAddr(mac, l.cfg.BearerPort); ok {
		return ap, !l.v6
	}
	return l.peers.lookup(mac)
}

// AddPeer tells the link the address behind a virtual MAC that the stack
// is about to send to: the address a caller gave. It returns the MAC.
func (l *UDPLink) AddPeer(ap netip.AddrPort) [6]byte {
	ap = unmapPort(ap)
	mac := UDPMAC(ap, l.cfg.BearerPort)
	l.learn(mac, ap)
	return mac
}

// learn records the address behind a hashed virtual MAC.
func (l *UDPLink) learn(mac [6]byte, ap netip.AddrPort) {
	if mac[0] == 0x02 {
		return // the IPv4 form needs no table
	}
	l.peers.learn(mac, ap)
}

func (l *UDPLink) frameSize() int { return int(l.mtu.Load()) + link.EthernetHeaderLen }

// udpReader is the data view's receive state: the batch recvmmsg filled and
// how far the frames in it have been handed out. One goroutine at a time.
type udpReader struct {
	bufs  [][]byte
	iov   []unix.Iovec
	names []unix.RawSockaddrInet6
	ctrl  [][udpCtrlSpace]byte
	msg   []mmsghdr
	got   int // datagrams in the batch
	errno syscall.Errno

	next int // the datagram being handed out
	off  int // how far into it
	seg  int // its segment size
	src  netip.AddrPort
	mac  [6]byte // the virtual MAC of src
	ok   bool    // the datagram's first frame passed the source check

	lastSrc netip.AddrPort // a one-entry cache of UDPMAC
	lastMAC [6]byte
}

func (r *udpReader) init(gro bool, frameSize int) {
	n, size := udpRxPlain, frameSize
	if gro {
		n, size = udpRxGRO, udpGROBuf
	}
	r.bufs = make([][]byte, n)
	r.iov = make([]unix.Iovec, n)
	r.names = make([]unix.RawSockaddrInet6, n)
	r.ctrl = make([][udpCtrlSpace]byte, n)
	r.msg = make([]mmsghdr, n)
	slab := make([]byte, n*size)
	for i := range n {
		r.bufs[i] = slab[i*size : (i+1)*size : (i+1)*size]
	}
}

// ReadBatch implements the link.Link ReadBatch method with recvmmsg(2). The
// frames it returns are not copied into ms: it points each ms[i].Buf into
// the link's own buffers, which stay valid until the next ReadBatch. Frames
// whose source MAC is not their sender's are dropped and counted
// (Rejected); those Config.Control picks are copied to the control view.
func (l *UDPLink) ReadBatch(ms []link.Message) (int, error) {
	r := &l.rd
	n := 0
	for n == 0 {
		if l.closed.Load() {
			return 0, l.opError("read", net.ErrClosed)
		}
		if r.next >= r.got {
			if err := l.receive(); err != nil {
				return 0, err
			}
			continue
		}
		n = l.handOut(ms)
	}
	return n, nil
}

// SetReadDeadline sets the deadline for ReadBatch, which then fails with an
// error wrapping os.ErrDeadlineExceeded. The stack's calls that wait for
// frames use it to read the link themselves (the root package's receive.go)
// and to cut each other's waits short.
func (l *UDPLink) SetReadDeadline(t time.Time) error {
	return l.opError("set", l.conn.SetReadDeadline(t))
}

// receive fills the reader's batch.
func (l *UDPLink) receive() error {
	r := &l.rd
	for i := range r.msg {
		r.iov[i] = unix.Iovec{Base: &r.bufs[i][0]}
		r.iov[i].SetLen(len(r.bufs[i]))
		r.msg[i] = mmsghdr{Hdr: unix.Msghdr{
			Name:    (*byte)(unsafe.Pointer(&r.names[i])),
			Namelen: unix.SizeofSockaddrInet6,
			Iov:     &r.iov[i],
			Control: &r.ctrl[i][0],
		}}
		r.msg[i].Hdr.SetIovlen(1)
		r.msg[i].Hdr.SetControllen(udpCtrlSpace)
	}
	r.got, r.errno, r.next, r.off = 0, 0, 0, 0
	if err := l.rc.Read(l.readFn); err != nil {
		return l.opError("read", err)
	}
	if r.errno != 0 {
		return l.opError("read", os.NewSyscallError("recvmmsg", r.errno))
	}
	return nil
}

// recvmmsg is the syscall.RawConn Read callback of ReadBatch.
func (l *UDPLink) recvmmsg(fd uintptr) bool {
	r := &l.rd
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msg[0])),
			uintptr(len(r.msg)), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			r.got = int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.errno = e
		return true
	}
}

// handOut cuts the received datagrams into frames for ms, and returns how
// many it filled; it goes on where it stopped on the next call.
func (l *UDPLink) handOut(ms []link.Message) int {
	r := &l.rd
	n := 0
	for r.next < r.got && n < len(ms) {
		m := &r.msg[r.next]
		size := int(m.Len)
		if r.off == 0 {
			if !l.startDatagram(m, size) {
				r.next++
				continue
			}
		}
		buf := r.bufs[r.next][:size]
		for r.off < size && n < len(ms) {
			end := min(r.off+r.seg, size)
			f := buf[r.off:end:end]
			r.off = end
			if l.input(f) {
				ms[n].Buf, ms[n].N = f, len(f)
				n++
			}
		}
		if r.off >= size {
			r.next++
			r.off = 0
		}
	}
	return n
}

// startDatagram reads a received datagram's source and control messages;
// false drops it.
func (l *UDPLink) startDatagram(m *mmsghdr, size int) bool {
	r := &l.rd
	if m.Hdr.Flags&unix.MSG_TRUNC != 0 || size == 0 {
		return false
	}
	r.seg = size
	l.parseControl(m)
	if r.seg < size {
		l.groRuns.Add(1)
	}
	src, ok := sockaddrPort(&r.names[r.next])
	if !ok {
		return false
	}
	if src != r.lastSrc {
		r.lastSrc, r.lastMAC = src, UDPMAC(src, l.cfg.BearerPort)
	}
	r.src, r.mac, r.ok = src, r.lastMAC, false
	return true
}

// parseControl reads UDP_GRO's segment size and SO_RXQ_OVFL's counter.
func (l *UDPLink) parseControl(m *mmsghdr) {
	r := &l.rd
	b := r.ctrl[r.next][:min(int(m.Hdr.Controllen), udpCtrlSpace)]
	hl := unix.CmsgLen(0)
	for len(b) >= hl {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		cl := int(h.Len)
		if cl < hl || cl > len(b) {
			return
		}
		data := b[hl:cl]
		switch {
		case h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && len(data) >= 4:
			if seg := int(*(*int32)(unsafe.Pointer(&data[0]))); seg > 0 {
				r.seg = seg
			}
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && len(data) >= 4:
			l.rxqDrops.Store(uint64(*(*uint32)(unsafe.Pointer(&data[0]))))
		}
		next := unix.CmsgSpace(cl - hl)
		if next > len(b) {
			return
		}
		b = b[next:]
	}
}

// input checks one frame of the current datagram: true hands it to the
// data view's caller.
func (l *UDPLink) input(f []byte) bool {
	r := &l.rd
	if len(f) < link.EthernetHeaderLen {
		return false
	}
	if [6]byte(f[6:12]) != r.mac {
		l.rejected.Add(1)
		return false
	}
	l.frames.Add(1)
	if !r.ok {
		// Once a datagram: the sender is who it says.
		r.ok = true
		l.learn(r.mac, r.src)
		if f[0]&1 != 0 {
			l.cast.note(r.src, time.Now())
		}
	}
	if l.cfg.Control != nil && l.cfg.Control(f) {
		l.queue.push(f)
		return false
	}
	return true
}

// sockaddrPort decodes a received source address.
func sockaddrPort(sa *unix.RawSockaddrInet6) (netip.AddrPort, bool) {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port), true
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port), true
	}
	return netip.AddrPort{}, false
}

// udpWriteScratch is one WriteBatch call's system-call arguments.
type udpWriteScratch struct {
	iov   [udpMaxMsgs]unix.Iovec
	msg   [udpMaxMsgs]mmsghdr
	names [udpMaxMsgs]unix.RawSockaddrInet6
	ctrl  [udpMaxMsgs][24]byte // CmsgSpace(2): UDP_SEGMENT's uint16
	// first and count say which frames (iov entries) each message holds,
	// to resend a refused GSO run frame by frame.
	first, count [udpMaxMsgs]int
	dst          [udpMaxMsgs]netip.AddrPort
	nmsg, niov   int
	off, got     int
	errno        syscall.Errno
	sendFn       func(fd uintptr) bool
}

// WriteBatch implements the link.Link WriteBatch method. Frames to one
// peer, of one size but the last, leave as one GSO send; a frame to a group
// MAC goes to every peer, the stations heard broadcasting lately and the
// multicast group. A frame to a MAC the link cannot map to an address is
// dropped and counted (NoRoute), as a frame to an absent station is lost on
// Ethernet; so is one the kernel refuses (no route to the host, say). A full
// send buffer is back-pressure: WriteBatch waits.
func (l *UDPLink) WriteBatch(ms []link.Message) (int, error) {
	if l.closed.Load() {
		return 0, l.opError("write", net.ErrClosed)
	}
	s := l.writers.Get().(*udpWriteScratch)
	defer l.writers.Put(s)
	gso := l.gso.Load()
	i := 0
	for i < len(ms) {
		s.nmsg, s.niov = 0, 0
		for i < len(ms) && s.nmsg < udpMaxMsgs && s.niov < udpMaxMsgs {
			f := ms[i].Buf[:ms[i].N]
			if len(f) < link.EthernetHeaderLen {
				i++
				continue
			}
			if f[0]&1 != 0 {
				targets := l.cast.targets()
				if len(targets) > udpMaxMsgs-s.nmsg && s.nmsg > 0 {
					break // a round of its own
				}
				iov := s.addIov(f)
				for _, t := range targets {
					if s.nmsg == udpMaxMsgs {
						// Too many to send at once: the rest in
						// the next rounds.
						if err := l.sendScratch(s); err != nil {
							return i, err
						}
						s.nmsg, s.niov = 0, 0
						iov = s.addIov(f)
					}
					s.addMsg(l, t, iov, 1, 0)
				}
				i++
				continue
			}
			dst, ok := l.AddrOf([6]byte(f[0:6]))
			if !ok {
				l.noRoute.Add(1)
				i++
				continue
			}
			size := len(f)
			iov := s.addIov(f)
			k, total, last := 1, size, size
			for gso && i+k < len(ms) && k < udpMaxSegments && s.niov < udpMaxMsgs && last == size {
				g := ms[i+k].Buf[:ms[i+k].N]
				if len(g) < link.EthernetHeaderLen || len(g) > size || total+len(g) > udpMaxPayload ||
					[6]byte(g[0:6]) != [6]byte(f[0:6]) {
					break
				}
				s.addIov(g)
				k++
				total += len(g)
				last = len(g)
			}
			seg := 0
			if k > 1 {
				seg = size
				l.gsoRuns.Add(1)
			}
			s.addMsg(l, dst, iov, k, seg)
			i += k
		}
		if err := l.sendScratch(s); err != nil {
			return i, err
		}
	}
	for j := range s.iov {
		s.iov[j].Base = nil // do not keep the caller's buffers alive
	}
	return len(ms), nil
}

// addIov adds a frame's iovec and returns its index.
func (s *udpWriteScratch) addIov(f []byte) int {
	s.iov[s.niov] = unix.Iovec{Base: unsafe.SliceData(f)}
	s.iov[s.niov].SetLen(len(f))
	s.niov++
	return s.niov - 1
}

// addMsg adds a message to dst of count iovecs from iov; seg > 0 makes it
// a GSO run of that segment size.
func (s *udpWriteScratch) addMsg(l *UDPLink, dst netip.AddrPort, iov, count, seg int) {
	k := s.nmsg
	s.nmsg++
	s.first[k], s.count[k], s.dst[k] = iov, count, dst
	m := &s.msg[k]
	*m = mmsghdr{Hdr: unix.Msghdr{Iov: &s.iov[iov]}}
	m.Hdr.SetIovlen(count)
	namelen := l.putSockaddr(&s.names[k], dst)
	m.Hdr.Name = (*byte)(unsafe.Pointer(&s.names[k]))
	m.Hdr.Namelen = namelen
	if seg > 0 {
		c := s.ctrl[k][:]
		h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
		h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
		*(*uint16)(unsafe.Pointer(&c[unix.CmsgLen(0)])) = uint16(seg)
		m.Hdr.Control = &c[0]
		m.Hdr.SetControllen(unix.CmsgSpace(2))
	}
}

// putSockaddr writes dst in the socket's family.
func (l *UDPLink) putSockaddr(sa *unix.RawSockaddrInet6, dst netip.AddrPort) uint32 {
	*sa = unix.RawSockaddrInet6{}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	binary.BigEndian.PutUint16(p[:], dst.Port())
	if !l.v6 {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		sa4.Family = unix.AF_INET
		sa4.Addr = dst.Addr().Unmap().As4()
		return unix.SizeofSockaddrInet4
	}
	sa.Family = unix.AF_INET6
	sa.Addr = dst.Addr().As16()
	if dst.Addr().IsLinkLocalUnicast() {
		sa.Scope_id = l.scope
	}
	return unix.SizeofSockaddrInet6
}

// sendScratch sends the messages in s: back-pressure waits, a full device
// queue backs off, and a message the kernel refuses is dropped (a refused
// GSO run is resent frame by frame, and GSO turned off if the device cannot
// do it).
func (l *UDPLink) sendScratch(s *udpWriteScratch) error {
	s.off = 0
	backoff := minBackoff
	for s.off < s.nmsg {
		if l.closed.Load() {
			return l.opError("write", net.ErrClosed)
		}
		s.got, s.errno = 0, 0
		if err := l.rc.Write(s.sendFn); err != nil {
			return l.opError("write", err)
		}
		s.off += s.got
		switch e := s.errno; {
		case e == 0:
			backoff = minBackoff
		case e == unix.ENOBUFS:
			l.backoffs.Add(1)
			time.Sleep(backoff)
			backoff = min(2*backoff, maxBackoff)
		case (e == unix.EIO || e == unix.EINVAL) && s.count[s.off] > 1:
			if e == unix.EIO {
				l.gso.Store(false) // the device cannot checksum them
			}
			l.sendEach(s, s.off)
			s.off++
		default:
			l.sendErrs.Add(1)
			s.off++
		}
	}
	return nil
}

// sendmmsg is the syscall.RawConn Write callback of sendScratch.
func (s *udpWriteScratch) sendmmsg(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&s.msg[s.off])),
			uintptr(s.nmsg-s.off), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			s.got = int(r)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		s.errno = e
		return true
	}
}

// sendEach sends message k's frames one datagram each.
func (l *UDPLink) sendEach(s *udpWriteScratch, k int) {
	for j := s.first[k]; j < s.first[k]+s.count[k]; j++ {
		one := udpWriteScratch{}
		one.iov[0] = s.iov[j]
		one.msg[0] = mmsghdr{Hdr: unix.Msghdr{Iov: &one.iov[0]}}
		one.msg[0].Hdr.SetIovlen(1)
		one.msg[0].Hdr.Namelen = l.putSockaddr(&one.names[0], s.dst[k])
		one.msg[0].Hdr.Name = (*byte)(unsafe.Pointer(&one.names[0]))
		one.nmsg, one.count[0] = 1, 1
		one.sendFn = one.sendmmsg
		l.sendScratch(&one)
	}
}

// SetFilter implements the link.Link SetFilter method. A UDP socket
// receives only datagrams sent to its address and port, and the stack's
// demultiplexer checks everything a packet socket's filter does: the
// program is not used.
func (l *UDPLink) SetFilter(prog []bpf.RawInstruction) error {
	if l.closed.Load() {
		return l.opError("set", net.ErrClosed)
	}
	return nil
}

// JoinGroup implements the link.Link JoinGroup method: the UDP bearer has
// no multicast MACs (Config.Group joins an IP multicast group instead).
func (l *UDPLink) JoinGroup(group net.HardwareAddr) error {
	return l.opError("set", os.NewSyscallError("setsockopt", unix.EOPNOTSUPP))
}

// LeaveGroup implements the link.Link LeaveGroup method.
func (l *UDPLink) LeaveGroup(group net.HardwareAddr) error {
	return l.opError("set", os.NewSyscallError("setsockopt", unix.EOPNOTSUPP))
}

// Name implements the link.Link Name method.
func (l *UDPLink) Name() string { return l.cfg.Name }

// Index implements the link.Link Index method.
func (l *UDPLink) Index() int { return l.cfg.Index }

// HardwareAddr implements the link.Link HardwareAddr method: the local
// address's virtual MAC.
func (l *UDPLink) HardwareAddr() net.HardwareAddr { return net.HardwareAddr(l.mac[:]) }

// MTU implements the link.Link MTU method: the largest UDP payload less the
// Ethernet header the frames carry.
func (l *UDPLink) MTU() int { return int(l.mtu.Load()) }

// Stats implements the link.Link Stats method: Packets counts frames
// received (the control view's included), Drops the datagrams the kernel
// dropped for want of buffer (SO_RXQ_OVFL).
func (l *UDPLink) Stats() (link.Stats, error) {
	return link.Stats{Packets: l.frames.Load(), Drops: l.rxqDrops.Load()}, nil
}

// Close implements the link.Link Close method: it closes the sockets and
// both views.
func (l *UDPLink) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return l.opError("close", net.ErrClosed)
	}
	l.queue.close()
	err := l.conn.Close()
	if l.group != nil {
		l.group.Close()
	}
	l.wg.Wait()
	if err != nil {
		return l.opError("close", err)
	}
	return nil
}

// Closed reports whether Close has been called.
func (l *UDPLink) Closed() bool { return l.closed.Load() }

// opError wraps err as a *net.OpError naming the local address.
func (l *UDPLink) opError(op string, err error) error {
	if err == nil {
		return nil
	}
	if l.closed.Load() && !errors.Is(err, net.ErrClosed) {
		err = net.ErrClosed
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "udp", Addr: net.UDPAddrFromAddrPort(l.local), Err: err}
}

// udpControl is the control view: it reads the frames the data view's
// reader queued for it and writes through the data view.
type udpControl struct {
	l      *UDPLink
	closed atomic.Bool
	done   chan struct{}
	once   sync.Once
}

// ReadBatch implements the link.Link ReadBatch method: it copies queued
// control frames into ms.
func (c *udpControl) ReadBatch(ms []link.Message) (int, error) {
	for {
		if c.closed.Load() || c.l.closed.Load() {
			return 0, c.l.opError("read", net.ErrClosed)
		}
		if n := c.l.queue.pop(ms); n > 0 {
			return n, nil
		}
		select {
		case <-c.l.queue.ready:
		case <-c.l.queue.done:
		case <-c.done:
		}
	}
}

// WriteBatch implements the link.Link WriteBatch method.
func (c *udpControl) WriteBatch(ms []link.Message) (int, error) {
	if c.closed.Load() {
		return 0, c.l.opError("write", net.ErrClosed)
	}
	return c.l.WriteBatch(ms)
}

func (c *udpControl) SetFilter(prog []bpf.RawInstruction) error { return c.l.SetFilter(prog) }
func (c *udpControl) JoinGroup(group net.HardwareAddr) error    { return c.l.JoinGroup(group) }
func (c *udpControl) LeaveGroup(group net.HardwareAddr) error   { return c.l.LeaveGroup(group) }
func (c *udpControl) Name() string                              { return c.l.Name() }
func (c *udpControl) Index() int                                { return c.l.Index() }
func (c *udpControl) HardwareAddr() net.HardwareAddr            { return c.l.HardwareAddr() }
func (c *udpControl) MTU() int                                  { return c.l.MTU() }

// Stats implements the link.Link Stats method: the frames queued for the
// control view, and those its full queue dropped, as a control socket's
// kernel counters say.
func (c *udpControl) Stats() (link.Stats, error) {
	q := &c.l.queue
	q.mu.Lock()
	defer q.mu.Unlock()
	return link.Stats{Packets: q.queued + q.drops, Drops: q.drops}, nil
}

// Close implements the link.Link Close method: it closes the view, not the
// socket, which the data view's Close closes.
func (c *udpControl) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return c.l.opError("close", net.ErrClosed)
	}
	c.once.Do(func() { close(c.done) })
	return nil
}

// frameQueue holds copies of control frames for the control view, at most
// limit bytes of them.
type frameQueue struct {
	mu     sync.Mutex
	frames [][]byte
	bytes  int
	limit  int
	queued uint64
	drops  uint64
	ready  chan struct{}
	done   chan struct{}
	closed bool
}

func (q *frameQueue) init(limit int) {
	q.limit = limit
	q.ready = make(chan struct{}, 1)
	q.done = make(chan struct{})
}

func (q *frameQueue) push(f []byte) {
	q.mu.Lock()
	if q.closed || q.bytes+len(f) > q.limit {
		q.drops++
		q.mu.Unlock()
		return
	}
	q.frames = append(q.frames, append([]byte(nil), f...))
	q.bytes += len(f)
	q.queued++
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// pop copies up to len(ms) frames into ms.
func (q *frameQueue) pop(ms []link.Message) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := min(len(ms), len(q.frames))
	for i := range n {
		f := q.frames[i]
		ms[i].N = copy(ms[i].Buf, f)
		q.bytes -= len(f)
		q.frames[i] = nil
	}
	q.frames = q.frames[n:]
	if len(q.frames) == 0 {
		q.frames = nil
	} else {
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
	return n
}

func (q *frameQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.done)
	}
}

// udpPeers maps hashed virtual MACs to the addresses they stand for: the
// configured peers, pinned, and those learned from frames (whose source MAC
// was checked against their address) or given by the stack to send to. Two
// generations bound the learned ones: when the current one is full it
// becomes the old one, and the old one goes.
type udpPeers struct {
	mu       sync.RWMutex
	pinned   map[[6]byte]netip.AddrPort
	cur, old map[[6]byte]netip.AddrPort
}

func (t *udpPeers) lookup(mac [6]byte) (netip.AddrPort, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if ap, ok := t.cur[mac]; ok {
		return ap, true
	}
	if ap, ok := t.pinned[mac]; ok {
		return ap, true
	}
	ap, ok := t.old[mac]
	return ap, ok
}

func (t *udpPeers) pin(mac [6]byte, ap netip.AddrPort) {
	if mac[0] == 0x02 {
		return // the IPv4 form needs no table
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pinned == nil {
		t.pinned = make(map[[6]byte]netip.AddrPort)
	}
	t.pinned[mac] = ap
}

func (t *udpPeers) learn(mac [6]byte, ap netip.AddrPort) {
	t.mu.RLock()
	have, ok := t.cur[mac]
	t.mu.RUnlock()
	if ok && have == ap {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur == nil || len(t.cur) >= udpPeersMax {
		t.old, t.cur = t.cur, make(map[[6]byte]netip.AddrPort)
	}
	t.cur[mac] = ap
}

// udpCast is where broadcast frames go: the configured peers and group,
// and the stations heard broadcasting within udpHeardTTL.
type udpCast struct {
	mu        sync.Mutex
	fixed     []netip.AddrPort
	heard     map[netip.AddrPort]time.Time
	lastPrune time.Time
	list      atomic.Pointer[[]netip.AddrPort]
}

func (c *udpCast) targets() []netip.AddrPort { return *c.list.Load() }

// note records a station heard broadcasting.
func (c *udpCast) note(ap netip.AddrPort, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Contains(c.fixed, ap) {
		return
	}
	if c.heard == nil {
		c.heard = make(map[netip.AddrPort]time.Time)
	}
	_, known := c.heard[ap]
	if !known && len(c.heard) >= udpHeardMax {
		c.pruneLocked(now)
		if len(c.heard) >= udpHeardMax {
			return
		}
	}
	c.heard[ap] = now
	if !known || now.Sub(c.lastPrune) > udpHeardTTL/3 {
		c.pruneLocked(now)
		c.rebuildLocked()
	}
}

func (c *udpCast) pruneLocked(now time.Time) {
	c.lastPrune = now
	for ap, at := range c.heard {
		if now.Sub(at) > udpHeardTTL {
			delete(c.heard, ap)
		}
	}
}

func (c *udpCast) rebuild(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastPrune = now
	c.rebuildLocked()
}

func (c *udpCast) rebuildLocked() {
	list := slices.Clone(c.fixed)
	for ap := range c.heard {
		list = append(list, ap)
	}
	slices.SortFunc(list[len(c.fixed):], func(a, b netip.AddrPort) int { return a.Compare(b) })
	c.list.Store(&list)
}
