package memlink

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/net/bpf"

	"github.com/myproto/myproto/internal/link"
)

var _ link.Link = (*Link)(nil)

// A Link is one station on a Segment; it implements link.Link. Its methods
// are safe for concurrent use.
type Link struct {
	seg   *Segment
	name  string
	mac   net.HardwareAddr
	index int

	mtu    atomic.Int64
	up     atomic.Bool
	closed atomic.Bool
	filter atomic.Pointer[filterVMs]

	ready chan struct{} // capacity 1: a frame may be waiting
	done  chan struct{} // closed by Close

	mu     sync.Mutex
	q      []*packet // receive ring
	head   int       // index of the oldest frame in q
	n      int       // frames in q
	stats  link.Stats
	groups map[[6]byte]int
}

// Name implements the link.Link Name method.
func (l *Link) Name() string { return l.name }

// Index implements the link.Link Index method. Indexes count from 1 in the
// order links were attached to their segment.
func (l *Link) Index() int { return l.index }

// HardwareAddr implements the link.Link HardwareAddr method.
func (l *Link) HardwareAddr() net.HardwareAddr { return l.mac }

// MTU implements the link.Link MTU method.
func (l *Link) MTU() int { return int(l.mtu.Load()) }

// Segment returns the segment l is attached to.
func (l *Link) Segment() *Segment { return l.seg }

// SetMTU changes l's MTU, within the limits veth(4) accepts (68 to 65535).
// Writes longer than the new MTU fail and longer arriving frames are dropped
// (SegmentStats.Oversize), as a veth drops frames its peer cannot take.
func (l *Link) SetMTU(mtu int) error {
	if mtu < 68 || mtu > 65535 {
		return fmt.Errorf("memlink: %s: MTU %d out of range [68, 65535]: %w", l.name, mtu, syscall.EINVAL)
	}
	l.mtu.Store(int64(mtu))
	return nil
}

// SetUp brings l up or down. While l is down, WriteBatch fails with an error
// wrapping syscall.ENETDOWN and frames addressed to l are dropped
// (SegmentStats.Down); frames already queued can still be read.
func (l *Link) SetUp(up bool) { l.up.Store(up) }

// Up reports whether l is up.
func (l *Link) Up() bool { return l.up.Load() }

// ReadBatch implements the link.Link ReadBatch method.
func (l *Link) ReadBatch(ms []link.Message) (int, error) {
	if len(ms) == 0 {
		return 0, nil
	}
	for {
		if l.closed.Load() {
			return 0, l.closedErr("read")
		}
		l.mu.Lock()
		if l.n > 0 {
			k := 0
			for k < len(ms) && l.n > 0 {
				p := l.q[l.head]
				l.q[l.head] = nil
				l.head = (l.head + 1) % len(l.q)
				l.n--
				ms[k].N = copy(ms[k].Buf, p.b)
				l.seg.freePacket(p)
				k++
			}
			more := l.n > 0
			l.mu.Unlock()
			if more {
				// Pass the wake-up on to a concurrent reader, if any.
				l.signal()
			}
			return k, nil
		}
		l.mu.Unlock()
		select {
		case <-l.ready:
		case <-l.done:
		}
	}
}

// WriteBatch implements the link.Link WriteBatch method. It copies every
// frame, so the caller may reuse the buffers at once, and never blocks: the
// segment's rate limiter drops rather than pushes back. A frame shorter than
// an Ethernet header or longer than MTU()+link.EthernetHeaderLen fails with
// an error wrapping syscall.EINVAL or syscall.EMSGSIZE, as send(2) on a packet
// socket would.
func (l *Link) WriteBatch(ms []link.Message) (int, error) {
	s := l.seg
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.closed.Load() {
		return 0, l.closedErr("write")
	}
	if !l.up.Load() {
		return 0, fmt.Errorf("memlink: write %s: %w", l.name, syscall.ENETDOWN)
	}
	maxLen := l.MTU() + link.EthernetHeaderLen
	now := s.now()
	for i, m := range ms {
		switch {
		case m.N < link.EthernetHeaderLen || m.N > len(m.Buf):
			return i, fmt.Errorf("memlink: write %s: frame of %d bytes (buffer %d): %w", l.name, m.N, len(m.Buf), syscall.EINVAL)
		case m.N > maxLen:
			return i, fmt.Errorf("memlink: write %s: frame of %d bytes exceeds MTU %d: %w", l.name, m.N, maxLen-link.EthernetHeaderLen, syscall.EMSGSIZE)
		}
		s.send(l, m.Buf[:m.N], now)
	}
	return len(ms), nil
}

// receive is how the segment hands p to l; it takes ownership of p.
// The segment's lock is held.
func (l *Link) receive(p *packet, pktType int) {
	s := l.seg
	if !l.up.Load() {
		s.stats.Down++
		s.freePacket(p)
		return
	}
	if len(p.b) > l.MTU()+link.EthernetHeaderLen {
		s.stats.Oversize++
		s.freePacket(p)
		return
	}
	if f := l.filter.Load(); f != nil {
		// As the kernel does: 0 rejects, and a shorter verdict truncates.
		k, err := f[pktType].Run(p.b)
		if err != nil || k <= 0 {
			s.stats.Filtered++
			s.freePacket(p)
			return
		}
		if k < len(p.b) {
			p.b = p.b[:k]
		}
	}
	l.mu.Lock()
	if l.closed.Load() {
		l.mu.Unlock()
		s.freePacket(p)
		return
	}
	l.stats.Packets++
	if l.n >= s.queueLen() {
		l.stats.Drops++
		s.stats.QueueDrops++
		l.mu.Unlock()
		s.freePacket(p)
		return
	}
	if l.n == len(l.q) {
		l.grow()
	}
	l.q[(l.head+l.n)%len(l.q)] = p
	l.n++
	s.stats.Delivered++
	l.mu.Unlock()
	l.signal()
}

// grow doubles the receive ring, which starts small so that idle links cost
// little. l.mu must be held.
func (l *Link) grow() {
	q := make([]*packet, max(16, 2*len(l.q)))
	for i := range l.n {
		q[i] = l.q[(l.head+i)%len(l.q)]
	}
	l.q, l.head = q, 0
}

// signal wakes a reader blocked in ReadBatch, if any.
func (l *Link) signal() {
	select {
	case l.ready <- struct{}{}:
	default:
	}
}

// SetFilter implements the link.Link SetFilter method. An empty program
// removes the filter, so that every frame is accepted. The program runs in
// golang.org/x/net/bpf's VM with the packet-type, protocol and
// interface-index extensions emulated; a program using another extension
// fails with an error wrapping syscall.EINVAL.
func (l *Link) SetFilter(prog []bpf.RawInstruction) error {
	if l.closed.Load() {
		return l.closedErr("setfilter")
	}
	if len(prog) == 0 {
		l.filter.Store(nil)
		return nil
	}
	f, err := compileFilter(prog, l.index)
	if err != nil {
		return fmt.Errorf("memlink: setfilter %s: %w", l.name, err)
	}
	l.filter.Store(f)
	return nil
}

// JoinGroup implements the link.Link JoinGroup method. Membership is
// recorded (see Groups) but, as on a veth, every multicast frame reaches the
// link anyway and only the BPF filter decides.
func (l *Link) JoinGroup(group net.HardwareAddr) error {
	if err := checkGroup(group); err != nil {
		return fmt.Errorf("memlink: join %s %v: %w", l.name, group, err)
	}
	if l.closed.Load() {
		return l.closedErr("join")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.groups == nil {
		l.groups = make(map[[6]byte]int)
	}
	l.groups[[6]byte(group)]++
	return nil
}

// LeaveGroup implements the link.Link LeaveGroup method. Leaving a group not
// joined fails with an error wrapping syscall.EADDRNOTAVAIL, as
// PACKET_DROP_MEMBERSHIP does.
func (l *Link) LeaveGroup(group net.HardwareAddr) error {
	if err := checkGroup(group); err != nil {
		return fmt.Errorf("memlink: leave %s %v: %w", l.name, group, err)
	}
	if l.closed.Load() {
		return l.closedErr("leave")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := [6]byte(group)
	switch l.groups[k] {
	case 0:
		return fmt.Errorf("memlink: leave %s %v: %w", l.name, group, syscall.EADDRNOTAVAIL)
	case 1:
		delete(l.groups, k)
	default:
		l.groups[k]--
	}
	return nil
}

// Groups returns the multicast groups l has joined, in no particular order.
func (l *Link) Groups() []net.HardwareAddr {
	l.mu.Lock()
	defer l.mu.Unlock()
	gs := make([]net.HardwareAddr, 0, len(l.groups))
	for g := range l.groups {
		gs = append(gs, append(net.HardwareAddr(nil), g[:]...))
	}
	return gs
}

func checkGroup(group net.HardwareAddr) error {
	if len(group) != 6 || group[0]&1 == 0 {
		return errors.Join(errors.New("not an Ethernet multicast address"), syscall.EINVAL)
	}
	return nil
}

// Stats implements the link.Link Stats method.
func (l *Link) Stats() (link.Stats, error) {
	if l.closed.Load() {
		return link.Stats{}, l.closedErr("stats")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats, nil
}

// Close implements the link.Link Close method. It detaches l from its
// segment, discards the frames it had queued and unblocks ReadBatch. Later
// calls, Close included, fail with an error wrapping net.ErrClosed.
func (l *Link) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return l.closedErr("close")
	}
	l.seg.detach(l)
	l.mu.Lock()
	for l.n > 0 {
		l.seg.freePacket(l.q[l.head])
		l.q[l.head] = nil
		l.head = (l.head + 1) % len(l.q)
		l.n--
	}
	l.mu.Unlock()
	close(l.done)
	return nil
}

func (l *Link) closedErr(op string) error {
	return fmt.Errorf("memlink: %s %s: %w", op, l.name, net.ErrClosed)
}

// String returns the link's name and MAC, for test logs.
func (l *Link) String() string { return fmt.Sprintf("%s(%v)", l.name, l.mac) }
