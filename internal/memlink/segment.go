// Package memlink is an in-memory implementation of link.Link: Ethernet
// segments that live inside the test process and impair frames on purpose
// (loss, duplication, reordering, corruption, delay, jitter, a rate limit)
// with decisions drawn from a seeded generator.
//
// The stack runs unchanged on a memlink.Link and on the packet-socket link, so
// its tests need no privileges, and a test that fails under impairments
// replays from its seed: every decision depends only on Config.Seed and the
// order in which frames reach the segment.
//
// A receiving Link behaves as a packet socket would: it runs the classic BPF
// program set by SetFilter on every frame (golang.org/x/net/bpf, with the
// packet-type and protocol extensions emulated), truncates to the program's
// verdict, and queues at most Impairments.QueueLen frames, counting overruns
// in link.Stats.Drops.
package memlink

import (
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/myproto/myproto/internal/link"
)

// Impairments says what a Segment does to the frames it carries. The zero
// value is a perfect wire: no loss, no delay, no rate limit.
type Impairments struct {
	// Loss, Duplicate, Reorder and Corrupt are per-frame probabilities in
	// [0, 1]. A duplicated frame is delivered twice in a row. A reordered
	// frame is held back and delivered right behind the next frame that
	// passes the segment (or after ReorderTimeout if none does). A corrupted
	// frame has one random bit flipped after the Ethernet header, where the
	// myproto CRC32C must catch it; header damage would only look like loss.
	Loss, Duplicate, Reorder, Corrupt float64

	// Delay is the one-way latency added to every frame; Jitter adds a
	// further uniformly random [0, Jitter] per frame, which reorders frames
	// sent closer together than the jitter, as on a real path.
	Delay, Jitter time.Duration

	// Rate limits the segment to this many bytes per second, 0 meaning
	// unlimited. Frames are serialised one after another at Rate; up to
	// QueueLen frames wait their turn and later ones are tail-dropped
	// (SegmentStats.RateDrops), like a router queue in front of a slow link.
	Rate int64

	// QueueLen bounds both the rate limiter's queue and each receiving
	// link's queue, in frames. 0 means DefaultQueueLen.
	QueueLen int
}

// DefaultQueueLen is the queue length used when Impairments.QueueLen is 0.
const DefaultQueueLen = 4096

// DefaultMTU is the MTU used when Config.MTU is 0.
const DefaultMTU = 1500

// ReorderTimeout is how long a frame held back for reordering waits for a
// following frame before it is delivered anyway, so a lone last frame is late
// rather than lost.
const ReorderTimeout = time.Millisecond

// Config configures a Segment.
type Config struct {
	// Seed seeds the generator behind every impairment decision.
	Seed int64
	// MTU is the initial MTU of every attached link, excluding the Ethernet
	// header. 0 means DefaultMTU.
	MTU int
	// Impairments are the initial impairments; see Segment.SetImpairments.
	Impairments Impairments
}

// SegmentStats counts what a Segment did with the frames written to it.
// A frame sent to several links (broadcast, multicast, a MAC shared by
// several links) counts once per receiving link in the receive-side fields.
type SegmentStats struct {
	Sent       uint64 // frames accepted by WriteBatch
	Lost       uint64 // dropped by Impairments.Loss
	Dropped    uint64 // dropped by the SetDrop predicate
	Duplicated uint64 // delivered an extra time by Impairments.Duplicate
	Reordered  uint64 // held back behind a later frame by Impairments.Reorder
	Corrupted  uint64 // had a bit flipped by Impairments.Corrupt
	RateDrops  uint64 // tail-dropped by the rate limiter's full queue
	Unroutable uint64 // unicast to a MAC that no other attached link has
	Down       uint64 // addressed to a link that was down
	Oversize   uint64 // longer than the receiving link's MTU allows
	Filtered   uint64 // rejected by the receiving link's BPF filter
	QueueDrops uint64 // arrived at a full receive queue (link.Stats.Drops)
	Delivered  uint64 // placed in a receive queue, ready for ReadBatch
}

// A Segment is a shared Ethernet segment, like a hub or the two ends of a
// veth: a unicast frame goes to every other attached link whose MAC is its
// destination, and a broadcast or multicast frame (destination bit 0 of
// byte 0 set) to every other attached link. Its methods are safe for
// concurrent use.
type Segment struct {
	mtu   int
	epoch time.Time
	pool  sync.Pool // of *packet

	// mu orders everything that happens on the segment: impairment decisions,
	// scheduling and delivery. Links' own locks nest inside it.
	mu       sync.Mutex
	rng      *rand.Rand
	im       Impairments
	drop     func(frame []byte) bool // SetDrop's predicate; nil for none
	links    []*Link
	nextIdx  int
	stats    SegmentStats
	nextFree int64       // rate limiter: when the wire is free, ns since epoch
	rateQ    []int64     // rate limiter: departure times of queued frames, FIFO
	rateHead int         // rate limiter: index of the first queued frame in rateQ
	pending  pendingHeap // frames waiting for their delivery time
	held     []heldFrame // frames held back for reordering
	seq      uint64      // tie-break that keeps equal delivery times FIFO
	timer    *time.Timer // fires deliverDue; nil until first needed
}

// A packet is a frame in flight, pooled so that steady traffic does not
// allocate.
type packet struct {
	b []byte
}

// heldFrame is a frame held back for reordering.
type heldFrame struct {
	p        *packet
	src      *Link
	deadline int64 // deliver by then even if no later frame comes
}

// NewSegment returns an empty segment configured by cfg.
func NewSegment(cfg Config) *Segment {
	mtu := cfg.MTU
	if mtu <= 0 {
		mtu = DefaultMTU
	}
	seed := uint64(cfg.Seed)
	return &Segment{
		mtu:   mtu,
		epoch: time.Now(),
		// The second PCG word is fixed so that the seed alone names a run.
		rng: rand.New(rand.NewPCG(seed, 0x6d7970726f746f)),
		im:  cfg.Impairments,
	}
}

// Pair returns two links on a new segment configured by cfg, named "mem0" and
// "mem1", with the locally administered MACs 02:00:5e:10:00:01 and
// 02:00:5e:10:00:02.
func Pair(cfg Config) (a, b *Link) {
	s := NewSegment(cfg)
	a = s.Attach("mem0", net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01})
	b = s.Attach("mem1", net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x02})
	return a, b
}

// Attach adds a link named name with hardware address mac to the segment.
// The link starts up, with the segment's MTU and no filter. Several links may
// share a MAC, like several packet sockets on one interface: each gets its
// own copy of the frames addressed to it.
func (s *Segment) Attach(name string, mac net.HardwareAddr) *Link {
	l := &Link{
		seg:   s,
		name:  name,
		mac:   append(net.HardwareAddr(nil), mac...),
		ready: make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	l.mtu.Store(int64(s.mtu))
	l.up.Store(true)
	s.mu.Lock()
	s.nextIdx++
	l.index = s.nextIdx
	s.links = append(s.links, l)
	s.mu.Unlock()
	return l
}

// SetImpairments replaces the segment's impairments, for frames written from
// now on; frames already in flight keep their fate.
func (s *Segment) SetImpairments(im Impairments) {
	s.mu.Lock()
	s.im = im
	s.mu.Unlock()
}

// SetDrop makes the segment drop every frame written from now on for which
// drop returns true, before any impairment; nil stops it. It lets a test
// lose one kind of frame (window updates, say) rather than a random share.
// drop runs with the segment locked and must not keep frame.
func (s *Segment) SetDrop(drop func(frame []byte) bool) {
	s.mu.Lock()
	s.drop = drop
	s.mu.Unlock()
}

// Impairments returns the segment's current impairments.
func (s *Segment) Impairments() Impairments {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.im
}

// Stats returns the segment's counters.
func (s *Segment) Stats() SegmentStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// now is the segment's clock: monotonic nanoseconds since it was created.
func (s *Segment) now() int64 { return int64(time.Since(s.epoch)) }

// queueLen is the effective queue length. s.mu must be held.
func (s *Segment) queueLen() int {
	if s.im.QueueLen > 0 {
		return s.im.QueueLen
	}
	return DefaultQueueLen
}

// newPacket returns a pooled packet holding a copy of b.
func (s *Segment) newPacket(b []byte) *packet {
	p, _ := s.pool.Get().(*packet)
	if p == nil {
		p = new(packet)
	}
	if cap(p.b) < len(b) {
		p.b = make([]byte, len(b), max(len(b), s.mtu+link.EthernetHeaderLen))
	}
	p.b = p.b[:len(b)]
	copy(p.b, b)
	return p
}

// freePacket returns p to the pool.
func (s *Segment) freePacket(p *packet) {
	s.pool.Put(p)
}

// unit maps a random word to [0, 1).
func unit(u uint64) float64 { return float64(u>>11) / (1 << 53) }

// send runs one frame through the impairments and schedules or delivers
// what survives. s.mu must be held. The generator is advanced by the same
// number of draws for every frame, whatever the impairments, so that a
// seed's sequence of decisions does not shift when a test changes them.
func (s *Segment) send(src *Link, b []byte, now int64) {
	var r [6]uint64
	for i := range r {
		r[i] = s.rng.Uint64()
	}
	im := &s.im
	s.stats.Sent++
	if s.drop != nil && s.drop(b) {
		s.stats.Dropped++
		return
	}
	if unit(r[0]) < im.Loss {
		s.stats.Lost++
		return
	}

	at := now
	if im.Rate > 0 {
		// Departures that have happened leave the queue; the slice is
		// compacted only now and then so a full queue costs O(1) per frame.
		for s.rateHead < len(s.rateQ) && s.rateQ[s.rateHead] <= now {
			s.rateHead++
		}
		if s.rateHead == len(s.rateQ) || s.rateHead > 1024 && 2*s.rateHead > len(s.rateQ) {
			s.rateQ = s.rateQ[:copy(s.rateQ, s.rateQ[s.rateHead:])]
			s.rateHead = 0
		}
		if len(s.rateQ)-s.rateHead >= s.queueLen() {
			s.stats.RateDrops++
			return
		}
		start := max(now, s.nextFree)
		tx := int64(math.Ceil(float64(len(b)) * 1e9 / float64(im.Rate)))
		s.nextFree = start + tx
		s.rateQ = append(s.rateQ, s.nextFree)
		at = s.nextFree
	} else {
		s.rateQ, s.rateHead = s.rateQ[:0], 0
		s.nextFree = 0
	}
	at += int64(im.Delay)
	if im.Jitter > 0 {
		at += int64(r[5] % uint64(im.Jitter+1))
	}

	p := s.newPacket(b)
	if unit(r[3]) < im.Corrupt && len(b) > link.EthernetHeaderLen {
		bit := r[4] % uint64((len(b)-link.EthernetHeaderLen)*8)
		p.b[link.EthernetHeaderLen+int(bit/8)] ^= 1 << (bit % 8)
		s.stats.Corrupted++
	}
	var dup *packet
	if unit(r[1]) < im.Duplicate {
		s.stats.Duplicated++
		dup = s.newPacket(p.b)
	}
	if unit(r[2]) < im.Reorder {
		s.stats.Reordered++
		s.held = append(s.held, heldFrame{p, src, at + int64(ReorderTimeout)})
		if dup != nil {
			s.held = append(s.held, heldFrame{dup, src, at + int64(ReorderTimeout)})
		}
		s.arm(now)
		return
	}
	s.schedule(p, src, at, now)
	if dup != nil {
		s.schedule(dup, src, at, now)
	}
	// Frames held back go right behind this one.
	for i, h := range s.held {
		s.schedule(h.p, h.src, at, now)
		s.held[i] = heldFrame{}
	}
	s.held = s.held[:0]
}

// schedule delivers p now if its time has come, else queues it for the
// timer. s.mu must be held.
func (s *Segment) schedule(p *packet, src *Link, at, now int64) {
	if at <= now && len(s.pending) == 0 {
		s.deliver(p, src)
		return
	}
	s.seq++
	s.pending.push(pending{at: at, seq: s.seq, p: p, src: src})
	s.arm(now)
}

// arm makes sure the timer fires by the earliest pending or held deadline.
// s.mu must be held.
func (s *Segment) arm(now int64) {
	next := int64(math.MaxInt64)
	if len(s.pending) > 0 {
		next = s.pending[0].at
	}
	for _, h := range s.held {
		next = min(next, h.deadline)
	}
	if next == math.MaxInt64 {
		return
	}
	d := time.Duration(max(next-now, 0))
	if s.timer == nil {
		s.timer = time.AfterFunc(d, s.deliverDue)
	} else {
		s.timer.Reset(d)
	}
}

// deliverDue is the timer's function: it delivers every frame whose time
// has come, in time order, and re-arms the timer for the rest.
func (s *Segment) deliverDue() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	// Held frames past their deadline join the pending ones, behind what is
	// already due, so a timed-out hold still ends up late.
	kept := s.held[:0]
	for _, h := range s.held {
		if h.deadline <= now {
			s.seq++
			s.pending.push(pending{at: h.deadline, seq: s.seq, p: h.p, src: h.src})
		} else {
			kept = append(kept, h)
		}
	}
	clear(s.held[len(kept):])
	s.held = kept
	for len(s.pending) > 0 && s.pending[0].at <= now {
		e := s.pending.pop()
		s.deliver(e.p, e.src)
	}
	s.arm(now)
}

// deliver hands p, sent by src, to every link it is addressed to, and takes
// ownership of p. s.mu must be held.
func (s *Segment) deliver(p *packet, src *Link) {
	dst := p.b[:6]
	group := dst[0]&1 != 0
	pktType := packetHost
	if group {
		pktType = packetMulticast
		if isBroadcast(dst) {
			pktType = packetBroadcast
		}
	}
	// Count the receivers first so the last one can take p itself.
	n := 0
	for _, l := range s.links {
		if l != src && (group || macEqual(l.mac, dst)) {
			n++
		}
	}
	if n == 0 {
		if !group {
			s.stats.Unroutable++
		}
		s.freePacket(p)
		return
	}
	for _, l := range s.links {
		if l == src || !(group || macEqual(l.mac, dst)) {
			continue
		}
		q := p
		if n--; n > 0 {
			q = s.newPacket(p.b)
		}
		l.receive(q, pktType)
	}
}

// detach removes l from the segment; when no link is left, frames in flight
// are discarded and the timer stopped, so nothing outlives the last Close.
func (s *Segment) detach(l *Link) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.links {
		if x == l {
			s.links = append(s.links[:i], s.links[i+1:]...)
			break
		}
	}
	if len(s.links) > 0 {
		return
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	for len(s.pending) > 0 {
		s.freePacket(s.pending.pop().p)
	}
	for _, h := range s.held {
		s.freePacket(h.p)
	}
	clear(s.held)
	s.held = s.held[:0]
}

func isBroadcast(mac []byte) bool {
	return mac[0]&mac[1]&mac[2]&mac[3]&mac[4]&mac[5] == 0xff
}

func macEqual(a net.HardwareAddr, b []byte) bool {
	return len(a) == 6 && [6]byte(a) == [6]byte(b)
}

// pending is a frame waiting for its delivery time.
type pending struct {
	at  int64
	seq uint64
	p   *packet
	src *Link
}

// pendingHeap is a binary min-heap by (at, seq). It is written out rather
// than built on container/heap, whose interface{} Push allocates per frame.
type pendingHeap []pending

func (h pendingHeap) less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}

func (h *pendingHeap) push(e pending) {
	*h = append(*h, e)
	a := *h
	for i := len(a) - 1; i > 0; {
		parent := (i - 1) / 2
		if !a.less(i, parent) {
			break
		}
		a[i], a[parent] = a[parent], a[i]
		i = parent
	}
}

func (h *pendingHeap) pop() pending {
	a := *h
	top := a[0]
	last := len(a) - 1
	a[0] = a[last]
	a[last] = pending{}
	a = a[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(a) && a.less(l, m) {
			m = l
		}
		if r < len(a) && a.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
	*h = a
	return top
}
