package myproto

import (
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
)

var _ net.PacketConn = &PacketConn{}

// defaultPacketReadBuffer bounds the memory held by datagrams queued for a
// PacketConn's reader, like SO_RCVBUF for UDP: each is charged its truesize.
const defaultPacketReadBuffer = 4 << 20

// A PacketConn is a myproto datagram socket. It implements net.PacketConn.
//
// Datagrams are unreliable and unordered, as UDP's are: one that arrives
// while the read buffer is full is dropped and counted (Stats.Drops.QueueFull).
type PacketConn struct {
	s     *stack
	b     *binding
	eps   []*endpoint // the interfaces the socket is on; fixed at bind
	local *Addr

	mu      sync.Mutex
	queue   dgramQueue
	qBytes  int // the truesize of the queued datagrams
	rcvBuf  int
	groups  map[groupKey]struct{}
	bcast   bool
	notify  chan struct{} // a token when a datagram is queued
	closed  chan struct{}
	closeMu sync.Once

	rd, wd deadline
}

// groupKey is one multicast membership: a group on an interface.
type groupKey struct {
	ifindex int
	group   [6]byte
}

// datagram is a received datagram waiting for ReadFrom. It is pooled with
// its buffer, whose capacity is one of dgramSizes.
type datagram struct {
	buf  []byte
	n    int
	src  [6]byte
	port uint16
	ep   *endpoint
}

// dgramSizes are the buffer sizes a received datagram is copied into, the
// smallest that holds it: small datagrams cost little to queue, and a
// buffer of each size is reused through its pool. Each is a size the Go
// allocator hands out exactly (a size class, or whole pages past 32 KiB), so
// a buffer costs its capacity; the last holds maxBodyLen.
var dgramSizes = [...]int{128, 512, 2048, 9472, 65536}

// dgramOverhead is what a queued datagram costs besides its buffer: the
// datagram (48 bytes) and up to two queue slots, the ring being at most
// twice as long as what it holds. TestPacketConnTruesize measures it.
const dgramOverhead = 64

// dgramPools hold free datagrams, one pool per buffer size.
var dgramPools [len(dgramSizes)]sync.Pool

func init() {
	for i, size := range dgramSizes {
		dgramPools[i].New = func() any { return &datagram{buf: make([]byte, size)} }
	}
}

// dgramClass returns the index in dgramSizes of the smallest buffer that
// holds n bytes.
func dgramClass(n int) int {
	for i, size := range dgramSizes[:len(dgramSizes)-1] {
		if n <= size {
			return i
		}
	}
	return len(dgramSizes) - 1
}

// truesize is what a datagram of n bytes costs to queue, charged against
// the read buffer as Linux charges an skb's truesize against SO_RCVBUF.
func truesize(n int) int { return dgramSizes[dgramClass(n)] + dgramOverhead }

// getDatagram returns a free datagram whose buffer holds n bytes.
func getDatagram(n int) *datagram {
	return dgramPools[dgramClass(n)].Get().(*datagram)
}

// putDatagram returns d to its pool.
func putDatagram(d *datagram) {
	d.ep = nil
	dgramPools[dgramClass(cap(d.buf))].Put(d)
}

// dgramQueue is a FIFO of datagrams in a ring that doubles when full and is
// let go of when emptied past a small size, so what it holds bounds it.
type dgramQueue struct {
	ring []*datagram // len is 0 or a power of two
	head int         // index of the oldest
	n    int         // how many are queued
}

// dgramQueueKeep is the ring length kept when the queue empties; a longer
// ring was grown by a burst and is let go of.
const dgramQueueKeep = 1024

func (q *dgramQueue) push(d *datagram) {
	if q.n == len(q.ring) {
		ring := make([]*datagram, max(16, 2*len(q.ring)))
		for i := range q.n {
			ring[i] = q.ring[(q.head+i)&(len(q.ring)-1)]
		}
		q.ring, q.head = ring, 0
	}
	q.ring[(q.head+q.n)&(len(q.ring)-1)] = d
	q.n++
}

// pop takes the oldest datagram, or nil.
func (q *dgramQueue) pop() *datagram {
	if q.n == 0 {
		return nil
	}
	d := q.ring[q.head]
	q.ring[q.head] = nil
	q.head = (q.head + 1) & (len(q.ring) - 1)
	q.n--
	if q.n == 0 {
		q.head = 0
		if len(q.ring) > dgramQueueKeep {
			q.ring = nil
		}
	}
	return d
}

// ListenPacket announces on the local address and returns a datagram socket,
// as net.ListenPacket does. The network must be "myproto". The address is
// "iface:port" (one interface), "[mac]:port" or "[mac%iface]:port" (the
// interface with that hardware address), or ":port" (every up Ethernet
// interface, and the UDP bearers when Config.Bearers lists them); a UDP
// bearer is "udp:port" or its IP address, "192.0.2.7:port". Port 0 picks an
// ephemeral port.
//
// The port is owned host-wide: no other datagram socket in this or any
// other process in the network namespace can bind it until this one is
// closed. Streams have ports of their own, as TCP's are apart from UDP's: a
// Listener may hold the same number.
//
// ListenConfig.ListenPacket does the same with a stack configuration.
func ListenPacket(network, address string) (*PacketConn, error) {
	var lc ListenConfig
	return lc.listenPacket(network, address)
}

func (s *stack) listenPacket(netw, address string) (*PacketConn, error) {
	c := &PacketConn{
		s:      s,
		rcvBuf: defaultPacketReadBuffer,
		groups: make(map[groupKey]struct{}),
		notify: make(chan struct{}, 1),
		closed: make(chan struct{}),
		rd:     makeDeadline(),
		wd:     makeDeadline(),
	}
	c.b = &binding{pc: c}
	var err error
	if c.local, err = s.bindLocal(netw, address, c.b); err != nil {
		return nil, err
	}
	c.eps = slices.Clone(c.b.eps)
	s.socketEvent(EventListen, "datagram", c.local)
	return c, nil
}

// parseLocal checks the network and splits an address.
func (s *stack) parseLocal(netw, address string) (addrParts, error) {
	if netw != network {
		return addrParts{}, net.UnknownNetworkError(netw)
	}
	return parseAddress(address)
}

// deliver queues a datagram received on ep, or says why it can't.
func (c *PacketConn) deliver(ep *endpoint, h *header, body []byte) dropReason {
	c.mu.Lock()
	defer c.mu.Unlock()
	if isClosedChan(c.closed) {
		return dropNoSocket
	}
	if h.dst[0]&1 != 0 && h.dst != broadcastMAC {
		if _, ok := c.groups[groupKey{ep.index, h.dst}]; !ok {
			return dropNotForUs
		}
	}
	// As UDP on Linux, an empty queue takes any datagram, so a read buffer
	// smaller than one still receives.
	ts := truesize(len(body))
	if c.qBytes > 0 && c.qBytes+ts > c.rcvBuf {
		return dropQueueFull
	}
	d := getDatagram(len(body))
	d.n = copy(d.buf[:cap(d.buf)], body)
	d.src, d.port, d.ep = h.src, h.srcPort, ep
	c.queue.push(d)
	c.qBytes += ts
	select {
	case c.notify <- struct{}{}:
	default:
	}
	return dropNone
}

var broadcastMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// pop takes the oldest queued datagram, or nil. The caller holds c.mu.
func (c *PacketConn) pop() *datagram {
	d := c.queue.pop()
	if d != nil {
		c.qBytes -= truesize(d.n)
	}
	return d
}

// ReadFrom implements the net.PacketConn ReadFrom method. As with UDP, a
// datagram longer than p is truncated to len(p) and the rest discarded. The
// returned address carries the interface the datagram arrived on as its zone,
// so WriteTo with it answers on the same interface.
func (c *PacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.readFrom(p)
	if err != nil {
		return 0, nil, opError("read", c.local, nil, err)
	}
	return n, addr, nil
}

func (c *PacketConn) readFrom(p []byte) (int, *Addr, error) {
	for {
		switch {
		case isClosedChan(c.closed):
			return 0, nil, net.ErrClosed
		case c.rd.expired():
			return 0, nil, os.ErrDeadlineExceeded
		}
		c.mu.Lock()
		d := c.pop()
		c.mu.Unlock()
		if d != nil {
			n := copy(p, d.buf[:d.n])
			addr := d.ep.peerAddr(d.src, d.port)
			putDatagram(d)
			return n, addr, nil
		}
		c.s.needReaders()
		select {
		case <-c.notify:
		case <-c.rd.wait():
		case <-c.closed:
		}
	}
}

// WriteTo implements the net.PacketConn WriteTo method. addr must be an
// *Addr with a hardware address, or an IP address for a station of a UDP
// bearer; its zone picks the interface, and may be left out when the socket
// is on only one (or on one UDP bearer, for an IP address). A payload larger than the
// interface MTU less the 24-byte header fails with EMSGSIZE, and sending to
// the broadcast address needs SetBroadcast(true) first (EACCES otherwise),
// both as for UDP.
func (c *PacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	a, ok := addr.(*Addr)
	if !ok || a == nil {
		return 0, opError("write", c.local, nil, &net.AddrError{Err: "not a myproto address", Addr: addrString(addr)})
	}
	if err := c.writeTo(p, a); err != nil {
		return 0, opError("write", c.local, a, err)
	}
	return len(p), nil
}

func addrString(a net.Addr) string {
	if a == nil {
		return "<nil>"
	}
	return a.String()
}

func (c *PacketConn) writeTo(p []byte, a *Addr) error {
	switch {
	case isClosedChan(c.closed):
		return net.ErrClosed
	case c.wd.expired():
		return os.ErrDeadlineExceeded
	case len(a.HardwareAddr) != 6 && !a.IP.IsValid():
		return &net.AddrError{Err: "missing or invalid hardware address", Addr: a.String()}
	}
	ep, err := c.route(a)
	if err != nil {
		return err
	}
	if ep.down.Load() {
		return os.NewSyscallError("sendmmsg", syscall.ENETDOWN)
	}
	h := header{typ: typeDatagram, srcPort: c.local.Port, dstPort: a.Port}
	if a.IP.IsValid() {
		// A UDP bearer station.
		if h.dst, err = ep.udpPeerMAC(a); err != nil {
			return err
		}
	} else {
		copy(h.dst[:], a.HardwareAddr)
	}
	if h.dst == broadcastMAC {
		c.mu.Lock()
		ok := c.bcast
		c.mu.Unlock()
		if !ok {
			return errBroadcast
		}
	}
	return ep.send(&h, p)
}

// route picks the endpoint a datagram to a leaves by.
func (c *PacketConn) route(a *Addr) (*endpoint, error) {
	eps := c.eps
	if a.Zone == "" {
		if len(eps) == 1 {
			return eps[0], nil
		}
		if ep := onlyUDP(eps); ep != nil && a.IP.IsValid() {
			return ep, nil
		}
		return nil, &net.AddrError{Err: "zone needed to choose among several interfaces", Addr: a.String()}
	}
	for _, ep := range eps {
		if ep.name == a.Zone {
			return ep, nil
		}
	}
	return nil, &net.AddrError{Err: "socket is not bound on that interface", Addr: a.String()}
}

// Close closes the socket, releases its port and unblocks any blocked
// ReadFrom or WriteTo, which then return an error wrapping net.ErrClosed.
// Closing a closed socket returns such an error too and does nothing else.
func (c *PacketConn) Close() error {
	first := false
	c.closeMu.Do(func() {
		first = true
		c.mu.Lock()
		close(c.closed)
		c.rd.stop()
		c.wd.stop()
		for d := c.pop(); d != nil; d = c.pop() {
			putDatagram(d)
		}
		groups := c.groups
		c.groups = nil
		c.mu.Unlock()
		for k := range groups {
			for _, ep := range c.eps {
				if ep.index == k.ifindex {
					ep.leaveGroup(k.group)
				}
			}
		}
		c.s.socketEvent(EventListenClose, "datagram", c.local)
		c.s.release(c.b)
	})
	if !first {
		return opError("close", c.local, nil, net.ErrClosed)
	}
	return nil
}

// LocalAddr implements the net.PacketConn LocalAddr method. The address has
// no hardware address or zone when the socket is on every interface.
func (c *PacketConn) LocalAddr() net.Addr { return c.local }

// SetDeadline implements the net.PacketConn SetDeadline method.
func (c *PacketConn) SetDeadline(t time.Time) error {
	if isClosedChan(c.closed) {
		return opError("set", nil, c.local, net.ErrClosed)
	}
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

// SetReadDeadline implements the net.PacketConn SetReadDeadline method.
func (c *PacketConn) SetReadDeadline(t time.Time) error {
	if isClosedChan(c.closed) {
		return opError("set", nil, c.local, net.ErrClosed)
	}
	c.rd.set(t)
	return nil
}

// SetWriteDeadline implements the net.PacketConn SetWriteDeadline method. A
// frame the kernel has accepted is not recalled; the deadline bounds the
// wait before it.
func (c *PacketConn) SetWriteDeadline(t time.Time) error {
	if isClosedChan(c.closed) {
		return opError("set", nil, c.local, net.ErrClosed)
	}
	c.wd.set(t)
	return nil
}

// SetReadBuffer sets how much memory received datagrams may hold while they
// wait for ReadFrom; those that arrive past it are dropped and counted
// (Stats.Drops.QueueFull). As SO_RCVBUF (socket(7)) does for UDP, it bounds
// what datagrams cost, not their length: each is charged its truesize, the
// buffer it was copied into (the smallest of 128, 512, 2048, 9472 or 65536
// bytes that holds it) plus 64 bytes of bookkeeping, so the default 4 MiB
// holds 21,845 datagrams of up to 128 bytes, or 1,985 of 1,500. A queue
// that is empty takes any datagram, so a buffer smaller than one still
// receives. Lowering it drops nothing already queued.
func (c *PacketConn) SetReadBuffer(bytes int) error {
	if bytes <= 0 {
		return opError("set", nil, c.local, os.NewSyscallError("setsockopt", syscall.EINVAL))
	}
	c.mu.Lock()
	c.rcvBuf = bytes
	c.mu.Unlock()
	return nil
}

// SetWriteBuffer sets the send buffer size, as SO_SNDBUF does for UDP. It
// exists so that code written for *net.UDPConn (quic-go, for one) finds it:
// a PacketConn queues nothing on the way out — each WriteTo hands its
// datagram to the interface's packet socket before it returns — so there
// is no buffer of its own to size, and the value only has to be positive.
// The packet socket's buffer is Config.WriteBuffer.
func (c *PacketConn) SetWriteBuffer(bytes int) error {
	if isClosedChan(c.closed) {
		return opError("set", nil, c.local, net.ErrClosed)
	}
	if bytes <= 0 {
		return opError("set", nil, c.local, os.NewSyscallError("setsockopt", syscall.EINVAL))
	}
	return nil
}

// SetBroadcast enables or disables sending to the broadcast hardware address
// ff:ff:ff:ff:ff:ff, like SO_BROADCAST (socket(7)). It is off by default so a
// program does not flood a segment by mistake. Receiving broadcasts needs no
// opt-in.
func (c *PacketConn) SetBroadcast(enable bool) error {
	if isClosedChan(c.closed) {
		return opError("set", nil, c.local, net.ErrClosed)
	}
	c.mu.Lock()
	c.bcast = enable
	c.mu.Unlock()
	return nil
}

// JoinGroup joins the multicast group (a hardware address with the group
// bit set) on the interface ifi, which may be nil when the socket is on one
// interface only. The interface is told to accept the group
// (PACKET_ADD_MEMBERSHIP, packet(7)), and datagrams to the group and this
// socket's port are delivered until LeaveGroup.
func (c *PacketConn) JoinGroup(ifi *net.Interface, group net.HardwareAddr) error {
	ep, g, err := c.groupArgs(ifi, group)
	if err != nil {
		return opError("set", nil, c.local, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.groups == nil {
		return opError("set", nil, c.local, net.ErrClosed)
	}
	k := groupKey{ep.index, g}
	if _, ok := c.groups[k]; ok {
		return opError("set", nil, c.local, os.NewSyscallError("setsockopt", syscall.EADDRINUSE))
	}
	if err := ep.joinGroup(g); err != nil {
		return opError("set", nil, c.local, err)
	}
	c.groups[k] = struct{}{}
	return nil
}

// LeaveGroup leaves a multicast group joined with JoinGroup.
func (c *PacketConn) LeaveGroup(ifi *net.Interface, group net.HardwareAddr) error {
	ep, g, err := c.groupArgs(ifi, group)
	if err != nil {
		return opError("set", nil, c.local, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k := groupKey{ep.index, g}
	if _, ok := c.groups[k]; !ok {
		return opError("set", nil, c.local, os.NewSyscallError("setsockopt", syscall.EADDRNOTAVAIL))
	}
	delete(c.groups, k)
	if err := ep.leaveGroup(g); err != nil {
		return opError("set", nil, c.local, err)
	}
	return nil
}

// groupArgs validates JoinGroup/LeaveGroup arguments.
func (c *PacketConn) groupArgs(ifi *net.Interface, group net.HardwareAddr) (*endpoint, [6]byte, error) {
	var g [6]byte
	if len(group) != 6 || group[0]&1 == 0 || [6]byte(group) == broadcastMAC {
		return nil, g, &net.AddrError{Err: "not a multicast hardware address", Addr: group.String()}
	}
	copy(g[:], group)
	eps := c.eps
	if ifi == nil {
		if len(eps) == 1 {
			return eps[0], g, nil
		}
		return nil, g, &net.AddrError{Err: "interface needed to choose among several", Addr: group.String()}
	}
	for _, ep := range eps {
		if ep.name == ifi.Name {
			return ep, g, nil
		}
	}
	return nil, g, errNoInterface(ifi.Name)
}
