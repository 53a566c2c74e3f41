package myproto

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/myproto/myproto/internal/link"
	"github.com/myproto/myproto/internal/sys"
)

// rxBatch is how many frames one ReadBatch may return: recvmmsg(2) amortises
// the syscall over this many frames under load.
const rxBatch = 64

// An endpoint is the stack on one interface: one link (packet socket) shared
// by every socket of the process on that interface, and the goroutine that
// reads it and demultiplexes frames to sockets.
type endpoint struct {
	s   *stack
	l   link.Link // the data socket: everything but SYNs and discovery
	ctl link.Link // the control socket: SYNs and discovery (see controlLoop)
	// udp is l when the endpoint is a UDP bearer (bearer.go): a station of
	// its own, which no other process shares.
	udp   *sys.UDPLink
	name  string
	index int
	// mac is the interface MAC in the low 48 bits; it changes only with a
	// link event, so senders and the reader load it without a lock.
	mac  atomic.Uint64
	refs int // under s.mu

	done chan struct{} // closed when readLoop has returned
	// ctlOut collects the control loop's answers to send as one batch.
	// Control loop only.
	ctlOut ctlBatch

	groupMu sync.Mutex
	groups  map[[6]byte]int // multicast memberships by group, counted

	txPool     sync.Pool // *txBuf
	batchPool  sync.Pool // *txBatch
	connTxPool sync.Pool // *connTx
	stats      endpointStats

	// disc is neighbour discovery on this interface.
	disc *discovery
	// down is set while the interface is down (rtnetlink link events):
	// its connections have failed and datagram writes fail.
	down atomic.Bool
	// mtu is the interface MTU, from the link when opened and from link
	// events after.
	mtu atomic.Int64

	// rx is who reads the link: the endpoint's read loop, or a blocked
	// Read or Write that drives it (receive.go).
	rx rxState

	// pending are connections that received frames in the current batch;
	// the reader flushes each once after the batch, all in rxTx. Under
	// rx.mu.
	pending []*Conn
	rxTx    connTx
	// heard and heardFrom: a valid packet came in this batch, and the last
	// one's sender. Under rx.mu.
	heard     bool
	heardFrom [6]byte
	// rxNow is when the current batch was read. Under rx.mu.
	rxNow time.Time
}

// endpointStats are the per-interface counters behind Stats.
type endpointStats struct {
	framesIn, bytesIn   atomic.Uint64
	framesOut, bytesOut atomic.Uint64
	drops               [dropReasonCount]atomic.Uint64
	filterUpdates       atomic.Uint64 // filters re-attached
	filterErrors        atomic.Uint64
}

// txBuf is a frame under construction, pooled so sending allocates nothing.
type txBuf struct {
	buf []byte
	ms  [1]link.Message
}

// newEndpoint wraps the link opened on ifi. The index and name come from
// ifi, the stack's view of the interface, which is what bindings record.
func newEndpoint(s *stack, ifi *net.Interface, l, ctl link.Link) *endpoint {
	ep := &endpoint{
		s:      s,
		l:      l,
		ctl:    ctl,
		name:   ifi.Name,
		index:  ifi.Index,
		done:   make(chan struct{}),
		groups: make(map[[6]byte]int),
	}
	ep.rxTx.ep = ep
	ep.rx.init(l)
	ep.udp, _ = l.(*sys.UDPLink)
	ep.setHwaddr(l.HardwareAddr())
	ep.mtu.Store(int64(l.MTU()))
	ep.ctlOut.ep = ep
	return ep
}

// hwaddr returns the interface's MAC address.
func (ep *endpoint) hwaddr() [6]byte {
	v := ep.mac.Load()
	return [6]byte{byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

func (ep *endpoint) hwaddrSlice() []byte {
	m := ep.hwaddr()
	return m[:]
}

func (ep *endpoint) setHwaddr(mac net.HardwareAddr) {
	var v uint64
	for _, b := range mac[:6] {
		v = v<<8 | uint64(b)
	}
	ep.mac.Store(v)
}

// frameSize is the largest frame the link carries, Ethernet header included.
func (ep *endpoint) frameSize() int {
	return int(ep.mtu.Load()) + link.EthernetHeaderLen
}

// maxPayload is the largest body a frame on this link can carry.
func (ep *endpoint) maxPayload() int {
	return min(int(ep.mtu.Load())-headerLen, maxBodyLen)
}

// input decodes one frame and hands it to its socket.
func (ep *endpoint) input(frame []byte) {
	ep.stats.framesIn.Add(1)
	ep.stats.bytesIn.Add(uint64(len(frame)))
	h, body, reason := parseFrame(frame, ep.s.etherType)
	if reason == dropNone && h.dst[0]&1 == 0 && h.dst != ep.hwaddr() {
		// Unicast for another station: the kernel filter should have
		// stopped it, but the user-space check is what guarantees it.
		reason = dropNotForUs
	}
	if reason == dropNone {
		reason = ep.s.demux(ep, &h, body)
		if reason == dropNone && h.typ != typeDiscovery {
			ep.heard, ep.heardFrom = true, h.src
		}
	}
	if reason != dropNone {
		ep.stats.drops[reason].Add(1)
	}
}

// send builds a frame from h and payload and writes it. h.src and
// h.etherType are filled in here.
func (ep *endpoint) send(h *header, payload []byte) error {
	if len(payload) > ep.maxPayload() {
		return errTooBig
	}
	tb := ep.getTx()
	defer ep.txPool.Put(tb)
	return ep.sendBuilt(tb, h, copy(tb.buf[offBody:], payload))
}

// sendBuilt sends a frame whose body (bodyLen bytes) is already in tb.
func (ep *endpoint) sendBuilt(tb *txBuf, h *header, bodyLen int) error {
	h.src = ep.hwaddr()
	h.etherType = ep.s.etherType
	n := marshalFrame(tb.buf, h, bodyLen)
	tb.ms[0] = link.Message{Buf: tb.buf, N: n}
	if _, err := ep.l.WriteBatch(tb.ms[:]); err != nil {
		return errClosedFrom(err)
	}
	ep.stats.framesOut.Add(1)
	ep.stats.bytesOut.Add(uint64(n))
	return nil
}

func (ep *endpoint) getTx() *txBuf {
	fs := ep.frameSize()
	if tb, ok := ep.txPool.Get().(*txBuf); ok && len(tb.buf) >= fs {
		return tb
	}
	return &txBuf{buf: make([]byte, fs)}
}

// joinGroup adds a multicast membership on the interface, counted so the
// kernel membership lasts while any socket wants it.
func (ep *endpoint) joinGroup(g [6]byte) error {
	ep.groupMu.Lock()
	defer ep.groupMu.Unlock()
	if ep.groups[g] == 0 {
		if err := ep.l.JoinGroup(g[:]); err != nil {
			return err
		}
	}
	ep.groups[g]++
	return nil
}

func (ep *endpoint) leaveGroup(g [6]byte) error {
	ep.groupMu.Lock()
	defer ep.groupMu.Unlock()
	switch ep.groups[g] {
	case 0:
		return nil
	case 1:
		delete(ep.groups, g)
		return ep.l.LeaveGroup(g[:])
	default:
		ep.groups[g]--
		return nil
	}
}

// close closes the link; the reader sees that and returns. It does not
// wait for the reader, because the last user can let go of an endpoint from
// the reader goroutine itself (a connection retired while flushing).
func (ep *endpoint) close() {
	ep.disc.stop()
	ep.l.Close()
	ep.ctl.Close()
	ep.needReader() // the read loop may stand aside: it must see the close
}
