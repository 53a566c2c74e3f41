package stream

// A deterministic network simulator for the stream engine: hosts with a
// minimal stack (demultiplexing by connection ID, the stateless listener,
// refusal of SYNs to unowned ports), links with delay, bandwidth and a
// drop-tail queue, random loss, reordering, duplication and corruption, and
// a virtual clock driven by an event queue. Nothing sleeps; a test moving
// 64 MiB each way over a lossy 10 Gbit/s link runs in about a second.

import (
	"bytes"
	"container/heap"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash"
	"math/rand/v2"
	"testing"
	"time"
)

var simSeedFlag = flag.Uint64("sim.seed", 0, "seed for the engine simulator (0: each test's fixed default)")

// simSeed returns the seed a simulator test uses and makes sure a failure
// prints it.
func simSeed(t testing.TB, def uint64) uint64 {
	seed := def
	if *simSeedFlag != 0 {
		seed = *simSeedFlag
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("simulator seed %d (rerun with -sim.seed=%d)", seed, seed)
		}
	})
	return seed
}

var simEpoch = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

// ---- Event queue -------------------------------------------------------------

type simEvent struct {
	at  time.Duration
	seq uint64
	fn  func()
}

type simQueue []simEvent

func (q simQueue) Len() int { return len(q) }
func (q simQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q simQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *simQueue) Push(x any)   { *q = append(*q, x.(simEvent)) }
func (q *simQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// ---- Network -----------------------------------------------------------------

type simNet struct {
	t     testing.TB
	rng   *rand.Rand
	now   time.Duration
	seq   uint64
	q     simQueue
	links map[[2]*simHost]*simLink
	hosts []*simHost
	steps int
	check bool   // verify engine invariants after every step
	wbuf  []byte // the writers' scratch
}

func newSimNet(t testing.TB, seed uint64) *simNet {
	return &simNet{
		t:     t,
		rng:   rand.New(rand.NewPCG(seed, seed^0x5eed)),
		links: make(map[[2]*simHost]*simLink),
		check: true,
		wbuf:  make([]byte, 256<<10),
	}
}

func (n *simNet) wall() time.Time { return simEpoch.Add(n.now) }

func (n *simNet) at(d time.Duration, fn func()) {
	n.seq++
	heap.Push(&n.q, simEvent{at: max(d, n.now), seq: n.seq, fn: fn})
}

// run processes events until cond holds or virtual time passes limit; it
// reports whether cond held.
func (n *simNet) run(limit time.Duration, cond func() bool) bool {
	end := n.now + limit
	for {
		if cond != nil && cond() {
			return true
		}
		if len(n.q) == 0 || n.q[0].at > end {
			n.now = max(n.now, end)
			return cond != nil && cond()
		}
		ev := heap.Pop(&n.q).(simEvent)
		n.now = ev.at
		ev.fn()
		n.steps++
	}
}

// simPacket is a frame in flight: the parts of the header the stack uses.
type simPacket struct {
	src, dst         *simHost
	srcPort, dstPort uint16
	cid              uint64
	flags            uint16
	body             []byte
}

// simLink is one direction between hosts (possibly shared, as a bottleneck).
type simLink struct {
	delay      time.Duration // propagation
	rate       float64       // bytes per second; 0 is infinite
	queueLimit int           // bytes queued before tail drop; 0 is unlimited
	loss       float64       // random loss probability
	corrupt    float64       // corruption probability: the CRC drops it, so it is loss
	dup        float64       // duplication probability
	reorder    float64       // probability of an extra delay of up to reorderBy
	reorderBy  time.Duration
	drop       func(p *simPacket) bool // deterministic drops (tests)

	busyUntil time.Duration
	// Counters.
	sent, delivered, lost, queueDrops, dropped, dups int
	bytes                                            int
	lostData                                         int // lost packets that carried STREAM data
}

func (n *simNet) link(a, b *simHost) *simLink {
	l := n.links[[2]*simHost{a, b}]
	if l == nil {
		l = &simLink{delay: 50 * time.Microsecond, rate: 10e9 / 8, queueLimit: 1 << 20}
		n.links[[2]*simHost{a, b}] = l
	}
	return l
}

// setLink makes l the link from a to b.
func (n *simNet) setLink(a, b *simHost, l *simLink) { n.links[[2]*simHost{a, b}] = l }

// hasData reports whether body carries a STREAM frame (for loss accounting).
func hasData(body []byte) bool {
	var pv packetView
	if !parsePacket(body, &pv) {
		return false
	}
	for i := 0; i < pv.nframes; i++ {
		if pv.frames[i].typ == sfStream && len(pv.frames[i].data) > 0 {
			return true
		}
	}
	return false
}

func (n *simNet) send(p *simPacket) {
	l := n.link(p.src, p.dst)
	l.sent++
	size := len(p.body) + headerLen + 14
	l.bytes += size
	if l.drop != nil && l.drop(p) {
		l.dropped++
		return
	}
	depart := n.now
	if l.rate > 0 {
		start := max(n.now, l.busyUntil)
		queued := float64(start-n.now) / float64(time.Second) * l.rate
		if l.queueLimit > 0 && int(queued)+size > l.queueLimit {
			l.queueDrops++
			if hasData(p.body) {
				l.lostData++
			}
			return
		}
		l.busyUntil = start + time.Duration(float64(size)/l.rate*float64(time.Second))
		depart = l.busyUntil
	}
	if l.loss > 0 && n.rng.Float64() < l.loss || l.corrupt > 0 && n.rng.Float64() < l.corrupt {
		l.lost++
		if hasData(p.body) {
			l.lostData++
		}
		return
	}
	copies := 1
	if l.dup > 0 && n.rng.Float64() < l.dup {
		copies = 2
		l.dups++
	}
	for range copies {
		arrive := depart + l.delay
		if l.reorder > 0 && n.rng.Float64() < l.reorder {
			arrive += time.Duration(n.rng.Int64N(int64(l.reorderBy) + 1))
		}
		body := bytes.Clone(p.body)
		q := *p
		q.body = body
		n.at(arrive, func() {
			l.delivered++
			q.dst.deliver(&q)
		})
	}
}

// ---- Hosts and the minimal stack -----------------------------------------------

type simHost struct {
	net      *simNet
	name     string
	mac      [6]byte
	conns    map[uint64]*simConn // by local connection ID
	listen   map[uint16]*simListener
	nextPort uint16
	buf      []byte
}

type simListener struct {
	jar    *CookieJar
	cfg    Config
	accept func(c *simConn) // configures the app side of a new connection
}

func (n *simNet) host(name string) *simHost {
	h := &simHost{
		net:      n,
		name:     name,
		conns:    make(map[uint64]*simConn),
		listen:   make(map[uint16]*simListener),
		nextPort: 49152,
		buf:      make([]byte, 65536),
	}
	h.mac = [6]byte{2, 0, 0x5e, 0x10, 0, byte(len(n.hosts) + 1)}
	n.hosts = append(n.hosts, h)
	return h
}

func (h *simHost) listenOn(port uint16, cfg Config, accept func(c *simConn)) *simListener {
	cfg = pooled(cfg)
	l := &simListener{jar: NewCookieJar([]byte("sim secret "+h.name), cfg), cfg: cfg, accept: accept}
	h.listen[port] = l
	return l
}

// deliver is the stack's receive path for one frame.
func (h *simHost) deliver(p *simPacket) {
	n := h.net
	if p.cid == 0 {
		if p.flags&FlagSYN == 0 {
			return
		}
		l := h.listen[p.dstPort]
		var k int
		var dst uint64
		var ok bool
		if l != nil {
			k, dst, ok = l.jar.RespondSYN(n.wall(), p.src.mac, p.srcPort, p.dstPort, p.body, h.buf)
		} else {
			k, dst, ok = RefuseSYN(p.body, h.buf)
		}
		if ok {
			n.send(&simPacket{src: h, dst: p.src, srcPort: p.dstPort, dstPort: p.srcPort, cid: dst, body: bytes.Clone(h.buf[:k])})
		}
		return
	}
	c := h.conns[p.cid]
	if c == nil {
		l := h.listen[p.dstPort]
		if l == nil {
			return
		}
		params, ok := l.jar.Accept(n.wall(), p.src.mac, p.srcPort, p.dstPort, p.cid, p.body)
		if !ok {
			return
		}
		c = &simConn{host: h, peer: p.src, port: p.dstPort, peerPort: p.srcPort}
		c.e = NewServer(l.cfg, p.cid, params, n.wall())
		h.conns[p.cid] = c
		if l.accept != nil {
			l.accept(c)
		}
	}
	c.e.Receive(n.wall(), p.flags, p.body)
	c.pump()
}

// ---- Connections and applications ----------------------------------------------

// simConn is one connection and its application: a writer producing a
// deterministic byte stream and a reader hashing what it reads.
type simConn struct {
	host, peer     *simHost
	port, peerPort uint16
	e              *Engine
	timerAt        time.Duration // scheduled onTimer; 0 for none
	timerGen       int

	// Application.
	toSend     int64 // bytes the writer still has to write; -1: endless
	written    int64
	src        *rand.Rand // the byte stream
	srcBuf     [8]byte
	srcLeft    int
	sendHash   hash.Hash
	closeAfter bool // CloseWrite once everything is written
	closed     bool
	stalled    bool // the reader does not read
	readN      int64
	recvHash   hash.Hash
	readBuf    []byte
	readLimit  int64 // stop reading after this many bytes; 0: no limit
	onPump     func(c *simConn)
	sentPkts   int
	maxMem     int // largest MemoryHeld seen
	maxSendBuf int
	maxRecvBuf int
}

// dial opens a client connection from h to port on peer.
func (h *simHost) dial(peer *simHost, port uint16, cfg Config) *simConn {
	n := h.net
	cid := n.rng.Uint64() | 1
	c := &simConn{host: h, peer: peer, port: h.nextPort, peerPort: port}
	h.nextPort++
	c.e = NewClient(pooled(cfg), cid, n.wall())
	h.conns[cid] = c
	n.at(n.now, c.pump)
	return c
}

// stream configures the application: write total bytes (from a stream seeded
// by seed; -1 for endless) then CloseWrite if closeAfter; read everything.
func (c *simConn) stream(total int64, seed uint64, closeAfter bool) {
	c.toSend = total
	c.src = rand.New(rand.NewPCG(seed, 7))
	c.sendHash = sha256.New()
	c.closeAfter = closeAfter
	c.ensureReader()
}

func (c *simConn) ensureReader() {
	if c.recvHash == nil {
		c.recvHash = sha256.New()
		c.readBuf = make([]byte, 64<<10)
	}
}

// app runs the application side once.
func (c *simConn) app() {
	e := c.e
	c.ensureReader()
	if c.src != nil && e.Established() && (c.toSend < 0 || c.written < c.toSend) {
		for {
			w := e.Writable()
			if w == 0 {
				break
			}
			if c.toSend >= 0 {
				w = int(min(int64(w), c.toSend-c.written))
			}
			w = min(w, len(c.net().wbuf))
			if w == 0 {
				break
			}
			b := c.net().wbuf[:w]
			c.fill(b)
			k := e.Write(b)
			if k != w {
				c.net().t.Fatalf("write took %d of %d writable", k, w)
			}
			c.sendHash.Write(b)
			c.written += int64(k)
		}
	}
	if c.closeAfter && !c.closed && c.toSend >= 0 && c.written == c.toSend && e.Established() {
		e.CloseWrite()
		c.closed = true
	}
	if !c.stalled {
		for {
			lim := len(c.readBuf)
			if c.readLimit > 0 {
				lim = int(min(int64(lim), c.readLimit-c.readN))
			}
			if lim == 0 {
				break
			}
			k := e.Read(c.readBuf[:lim])
			if k == 0 {
				break
			}
			c.recvHash.Write(c.readBuf[:k])
			c.readN += int64(k)
		}
	}
	if c.onPump != nil {
		c.onPump(c)
	}
}

// fill produces the next len(b) bytes of the writer's stream.
func (c *simConn) fill(b []byte) {
	for len(b) > 0 {
		if c.srcLeft == 0 {
			binary.LittleEndian.PutUint64(c.srcBuf[:], c.src.Uint64())
			c.srcLeft = 8
		}
		k := copy(b, c.srcBuf[8-c.srcLeft:])
		c.srcLeft -= k
		b = b[k:]
	}
}

func (c *simConn) net() *simNet { return c.host.net }

// pump runs the application, sends what the engine has, and re-arms its
// timer: what the conn layer does after every event.
func (c *simConn) pump() {
	n := c.net()
	e := c.e
	c.app()
	for i := 0; ; i++ {
		k, flags, dst := e.NextPacket(n.wall(), c.host.buf)
		if k == 0 {
			break
		}
		if i > 100000 {
			n.t.Fatalf("%s: nextPacket never returns 0", c.host.name)
		}
		if k > e.cfg.MaxPacket {
			n.t.Fatalf("%s: packet of %d bytes exceeds MaxPacket %d", c.host.name, k, e.cfg.MaxPacket)
		}
		c.sentPkts++
		n.send(&simPacket{src: c.host, dst: c.peer, srcPort: c.port, dstPort: c.peerPort, cid: dst, flags: flags, body: c.host.buf[:k]})
	}
	if n.check {
		c.checkInvariants()
	}
	next := e.NextTimer()
	var at time.Duration
	if !next.IsZero() {
		at = max(next.Sub(simEpoch), n.now)
	}
	if at != c.timerAt {
		c.timerAt = at
		c.timerGen++
		if at != 0 {
			gen := c.timerGen
			n.at(at, func() {
				if c.timerGen != gen {
					return
				}
				c.timerAt = 0
				e.OnTimer(n.wall())
				c.pump()
			})
		}
	}
}

// checkInvariants verifies what must hold between calls.
func (c *simConn) checkInvariants() {
	e := c.e
	t := c.net().t
	if e.bytesInFlight < 0 || e.elicitInFlight < 0 {
		t.Fatalf("%s: bytes in flight %d, ack-eliciting in flight %d", c.host.name, e.bytesInFlight, e.elicitInFlight)
	}
	if e.cc != nil && e.cc.window() < 2*MinMaxPacket {
		t.Fatalf("%s: congestion window %d", c.host.name, e.cc.window())
	}
	sb := int(e.sbuf.end - e.sbuf.una)
	if sb > e.cfg.SendBuffer {
		t.Fatalf("%s: send buffer holds %d > %d", c.host.name, sb, e.cfg.SendBuffer)
	}
	rb := e.rbuf.buffered()
	if rb > e.cfg.RecvBuffer {
		t.Fatalf("%s: receive buffer holds %d > %d", c.host.name, rb, e.cfg.RecvBuffer)
	}
	if e.rcvMaxAdv > e.rbuf.readOff+uint64(e.cfg.RecvBuffer) {
		t.Fatalf("%s: advertised %d beyond read offset %d + buffer %d", c.host.name, e.rcvMaxAdv, e.rbuf.readOff, e.cfg.RecvBuffer)
	}
	if e.sbuf.ring.held*chunkSize > e.cfg.SendBuffer+2*chunkSize {
		t.Fatalf("%s: send chunks %d", c.host.name, e.sbuf.ring.held)
	}
	if e.rbuf.ring.held*chunkSize > e.cfg.RecvBuffer+2*chunkSize {
		t.Fatalf("%s: receive chunks %d", c.host.name, e.rbuf.ring.held)
	}
	c.maxMem = max(c.maxMem, (e.sbuf.ring.held+e.rbuf.ring.held)*chunkSize)
	c.maxSendBuf = max(c.maxSendBuf, sb)
	c.maxRecvBuf = max(c.maxRecvBuf, rb)
}

// finished reports whether the connection's writer wrote everything and the
// reader read the peer's whole stream up to its FIN.
func (c *simConn) finished() bool {
	return c.written == c.toSend && c.e.EOF()
}

// ---- Helpers ------------------------------------------------------------------------

// pair sets up a client on host a and a server on host b with the given
// configurations, both running app, and returns them once established.
type simPair struct {
	n              *simNet
	a, b           *simHost
	client, server *simConn
}

func newSimPair(t testing.TB, seed uint64, cfg Config) *simPair {
	n := newSimNet(t, seed)
	p := &simPair{n: n, a: n.host("client"), b: n.host("server")}
	p.b.listenOn(80, cfg, func(c *simConn) { p.server = c })
	return p
}

func (p *simPair) dial(cfg Config) {
	p.client = p.a.dial(p.b, 80, cfg)
}

func sameHash(a, b hash.Hash) bool {
	return bytes.Equal(a.Sum(nil), b.Sum(nil))
}

func defaultSimConfig() Config {
	return Config{NoDelay: true}
}

func mbps(bytes int64, d time.Duration) float64 {
	return float64(bytes) * 8 / d.Seconds() / 1e6
}

func (l *simLink) String() string {
	return fmt.Sprintf("sent %d delivered %d lost %d (data %d) queue-drops %d dropped %d dups %d",
		l.sent, l.delivered, l.lost, l.lostData, l.queueDrops, l.dropped, l.dups)
}

// ---- Scenarios ------------------------------------------------------------------------

func TestSimHandshake(t *testing.T) {
	p := newSimPair(t, simSeed(t, 1), defaultSimConfig())
	p.dial(defaultSimConfig())
	if !p.n.run(time.Second, func() bool { return p.client.e.Established() && p.server != nil }) {
		t.Fatalf("not established: client %s", p.client.e.stateName())
	}
	ci := p.client.e.Info(p.n.wall())
	if ci.SRTT < 100*time.Microsecond || ci.SRTT > 200*time.Microsecond {
		t.Errorf("client srtt %v after handshake, want about 100µs", ci.SRTT)
	}
	// The client's confirmation is acknowledged.
	if !p.n.run(time.Second, func() bool { return !p.client.e.confirmPending }) {
		t.Fatal("handshake never confirmed")
	}
}

func TestSimTransferSmall(t *testing.T) {
	p := newSimPair(t, simSeed(t, 2), defaultSimConfig())
	p.b.listen[80].accept = func(c *simConn) {
		p.server = c
		c.stream(300_000, 22, true)
	}
	p.dial(defaultSimConfig())
	p.client.stream(1_000_000, 11, true)
	if !p.n.run(10*time.Second, func() bool {
		return p.server != nil && p.client.finished() && p.server.finished()
	}) {
		t.Fatalf("transfer incomplete: client wrote %d read %d, server %+v", p.client.written, p.client.readN, p.server)
	}
	if !sameHash(p.client.sendHash, p.server.recvHash) || !sameHash(p.server.sendHash, p.client.recvHash) {
		t.Fatal("data corrupted")
	}
	t.Logf("done at %v, %d steps", p.n.now, p.n.steps)
}

// bulkResult summarises a bulk transfer.
type bulkResult struct {
	elapsed    time.Duration
	lostData   int // data packets the network dropped, both directions
	retx       uint64
	spurious   uint64
	ptos       uint64
	goodputAB  float64 // Mbit/s
	goodputBA  float64
	steps      int
	wallTime   time.Duration
	clientInfo Info
	serverInfo Info
}

// runBulk moves size bytes each way at once over links configured by
// setup and checks that both streams arrive byte-exact.
func runBulk(t *testing.T, seed uint64, size int64, setup func(ab, ba *simLink)) bulkResult {
	t.Helper()
	start := time.Now()
	cfg := defaultSimConfig()
	p := newSimPair(t, seed, cfg)
	ab, ba := p.n.link(p.a, p.b), p.n.link(p.b, p.a)
	for _, l := range []*simLink{ab, ba} {
		l.delay = 50 * time.Microsecond
		l.rate = 10e9 / 8
		l.queueLimit = 512 << 10
	}
	setup(ab, ba)
	p.b.listen[80].accept = func(c *simConn) {
		p.server = c
		c.stream(size, seed+2, true)
	}
	p.dial(cfg)
	p.client.stream(size, seed+1, true)
	var doneAB, doneBA time.Duration
	ok := p.n.run(10*time.Minute, func() bool {
		if p.server == nil {
			return false
		}
		if doneAB == 0 && p.server.e.EOF() {
			doneAB = p.n.now
		}
		if doneBA == 0 && p.client.e.EOF() {
			doneBA = p.n.now
		}
		return doneAB != 0 && doneBA != 0
	})
	if !ok {
		ci, si := p.client.e.Info(p.n.wall()), p.server.e.Info(p.n.wall())
		t.Fatalf("transfer stalled at %v: client wrote %d read %d %+v\nserver wrote %d read %d %+v\nab %v\nba %v",
			p.n.now, p.client.written, p.client.readN, ci, p.server.written, p.server.readN, si, ab, ba)
	}
	if p.client.readN != size || p.server.readN != size {
		t.Fatalf("read %d and %d bytes, want %d", p.client.readN, p.server.readN, size)
	}
	if !sameHash(p.client.sendHash, p.server.recvHash) || !sameHash(p.server.sendHash, p.client.recvHash) {
		t.Fatal("SHA-256 mismatch: data corrupted")
	}
	ci, si := p.client.e.Info(p.n.wall()), p.server.e.Info(p.n.wall())
	elapsed := p.n.now
	// Both closed their write side after the data: both finish cleanly.
	if !p.n.run(5*time.Second, func() bool { return p.client.e.Done() && p.server.e.Done() }) {
		t.Fatalf("not done after the transfer: %s / %s", p.client.e.stateName(), p.server.e.stateName())
	}
	if p.client.e.Err() != nil || p.server.e.Err() != nil {
		t.Fatalf("errors after a clean transfer: %v / %v", p.client.e.Err(), p.server.e.Err())
	}
	return bulkResult{
		elapsed:    elapsed,
		lostData:   ab.lostData + ba.lostData,
		retx:       ci.PacketsRetransmitted + si.PacketsRetransmitted,
		spurious:   ci.SpuriousLosses + si.SpuriousLosses,
		ptos:       ci.ProbeTimeouts + si.ProbeTimeouts,
		goodputAB:  mbps(size, doneAB),
		goodputBA:  mbps(size, doneBA),
		steps:      p.n.steps,
		wallTime:   time.Since(start),
		clientInfo: ci,
		serverInfo: si,
	}
}

// bulkSize is 64 MiB each way, or 8 MiB with -short.
func bulkSize() int64 {
	if testing.Short() {
		return 8 << 20
	}
	return 64 << 20
}

func TestSimBulk(t *testing.T) {
	for _, tc := range []struct {
		name     string
		loss     float64
		maxRatio float64 // retransmitted packets per data packet lost, at most
	}{
		{"loss0", 0, 0},
		{"loss1", 0.01, 1.5},
		{"loss5", 0.05, 1.5},
		{"loss20", 0.20, 1.7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			size := bulkSize()
			r := runBulk(t, simSeed(t, 100), size, func(ab, ba *simLink) {
				for _, l := range []*simLink{ab, ba} {
					l.loss = tc.loss
					l.dup = 0.01
					l.reorder = 0.01
					l.reorderBy = 30 * time.Microsecond
					if tc.loss > 0 {
						l.corrupt = 0.001
					}
				}
			})
			ratio := 0.0
			if r.lostData > 0 {
				ratio = float64(r.retx) / float64(r.lostData)
			}
			t.Logf("%d MiB each way: virtual %v, goodput %.0f / %.0f Mbit/s; data packets lost %d, retransmitted %d (ratio %.2f), spurious %d, PTOs %d; %d events in %v",
				size>>20, r.elapsed, r.goodputAB, r.goodputBA, r.lostData, r.retx, ratio, r.spurious, r.ptos, r.steps, r.wallTime)
			t.Logf("client: cwnd %d srtt %v pkt threshold %d; server: cwnd %d srtt %v", r.clientInfo.Cwnd, r.clientInfo.SRTT, r.clientInfo.PacketThreshold, r.serverInfo.Cwnd, r.serverInfo.SRTT)
			if tc.maxRatio > 0 && ratio > tc.maxRatio {
				t.Errorf("retransmission ratio %.2f > %.2f", ratio, tc.maxRatio)
			}
		})
	}
}

// dropNth returns a drop predicate that drops the packets for which match
// holds, the first count times.
func dropMatching(count int, match func(p *simPacket, pv *packetView) bool) func(p *simPacket) bool {
	return func(p *simPacket) bool {
		if count == 0 {
			return false
		}
		var pv packetView
		if !parsePacket(p.body, &pv) || !match(p, &pv) {
			return false
		}
		count--
		return true
	}
}

func isSyn(p *simPacket, pv *packetView) bool    { return pv.hasSyn }
func isSynAck(p *simPacket, pv *packetView) bool { return pv.hasSA }
func isConfirm(p *simPacket, pv *packetView) bool {
	return pv.hasConf
}

// handshake runs a dial with the given drops and returns the pair once
// both sides are established and confirmed.
func handshakeWith(t *testing.T, seed uint64, dropAB, dropBA func(*simPacket) bool, clientData int64) (*simPair, time.Duration) {
	p := newSimPair(t, seed, defaultSimConfig())
	p.n.link(p.a, p.b).drop = dropAB
	p.n.link(p.b, p.a).drop = dropBA
	p.b.listen[80].accept = func(c *simConn) {
		p.server = c
		c.stream(0, seed, false)
	}
	p.dial(defaultSimConfig())
	p.client.stream(clientData, seed+1, true)
	ok := p.n.run(5*time.Second, func() bool {
		return p.client.e.Established() && p.server != nil && !p.client.e.confirmPending &&
			p.server.readN == clientData && p.server.e.EOF()
	})
	if !ok {
		t.Fatalf("handshake/transfer incomplete at %v: client %s confirmPending %v, server %v",
			p.n.now, p.client.e.stateName(), p.client.e.confirmPending, p.server != nil)
	}
	if !sameHash(p.client.sendHash, p.server.recvHash) {
		t.Fatal("data corrupted")
	}
	return p, p.n.now
}

// TestSimDeterministic: the same seed gives the same run, event for event.
func TestSimDeterministic(t *testing.T) {
	seed := simSeed(t, 16)
	lossy := func(ab, ba *simLink) {
		for _, l := range []*simLink{ab, ba} {
			l.loss, l.dup, l.reorder, l.reorderBy = 0.05, 0.01, 0.02, 30*time.Microsecond
		}
	}
	a := runBulk(t, seed, 2<<20, lossy)
	b := runBulk(t, seed, 2<<20, lossy)
	a.wallTime, b.wallTime = 0, 0
	if a != b {
		t.Fatalf("two runs with seed %d differ:\n%+v\n%+v", seed, a, b)
	}
	c := runBulk(t, seed+1, 2<<20, lossy)
	if c.steps == a.steps && c.elapsed == a.elapsed {
		t.Fatal("another seed gave the same run")
	}
}

func TestSimHandshakeLosses(t *testing.T) {
	seed := simSeed(t, 3)
	_, base := handshakeWith(t, seed, nil, nil, 0)
	t.Logf("no loss: established, confirmed and closed in %v", base)

	_, d := handshakeWith(t, seed, dropMatching(1, isSyn), nil, 0)
	t.Logf("lost SYN: %v", d)
	if d < synInitialRTO || d > synInitialRTO+10*time.Millisecond {
		t.Errorf("lost SYN recovered after %v, want just over the %v SYN timeout", d, synInitialRTO)
	}

	_, d = handshakeWith(t, seed, dropMatching(2, isSyn), nil, 0)
	t.Logf("two lost SYNs: %v", d)
	if d < 3*synInitialRTO || d > 3*synInitialRTO+10*time.Millisecond {
		t.Errorf("two lost SYNs recovered after %v, want just over %v (200+400 ms backoff)", d, 3*synInitialRTO)
	}

	_, d = handshakeWith(t, seed, nil, dropMatching(1, isSynAck), 0)
	t.Logf("lost SYN-ACK: %v", d)
	if d < synInitialRTO || d > synInitialRTO+10*time.Millisecond {
		t.Errorf("lost SYN-ACK recovered after %v", d)
	}

	// The third packet (the confirmation alone) is lost: the client's probe
	// timeout repeats it.
	_, d = handshakeWith(t, seed, dropMatching(1, isConfirm), nil, 0)
	t.Logf("lost third packet, no data: %v", d)
	if d > 100*time.Millisecond {
		t.Errorf("lost third packet recovered after %v", d)
	}

	// The client writes at once: the first packets carry the confirmation
	// and data. Drop the first two; the server builds its state from a later
	// data packet whose offset is not 0, and the lost data is retransmitted.
	var firstOff uint64
	var seen int
	p, d := handshakeWith(t, seed, func(p *simPacket) bool {
		var pv packetView
		if !parsePacket(p.body, &pv) || !pv.hasConf {
			return false
		}
		seen++
		if seen <= 2 {
			return true
		}
		if seen == 3 {
			for i := 0; i < pv.nframes; i++ {
				if pv.frames[i].typ == sfStream {
					firstOff = pv.frames[i].value
				}
			}
		}
		return false
	}, nil, 100_000)
	t.Logf("lost third and fourth packets with data: %v; server state built from a packet at offset %d", d, firstOff)
	if firstOff == 0 {
		t.Error("server state was not built from a later data packet")
	}
	if i := p.client.e.Info(p.n.wall()); i.PacketsRetransmitted == 0 {
		t.Error("no retransmission of the lost data")
	}
}

func TestSimRefused(t *testing.T) {
	p := newSimPair(t, simSeed(t, 4), defaultSimConfig())
	c := p.a.dial(p.b, 81, defaultSimConfig()) // nobody listens on 81
	if !p.n.run(time.Second, func() bool { return c.e.Err() != nil }) {
		t.Fatal("dial to an unowned port not refused")
	}
	if !errors.Is(c.e.Err(), ErrRefused) {
		t.Fatalf("err = %v, want ECONNREFUSED", c.e.Err())
	}
	if p.n.now > time.Millisecond {
		t.Errorf("refused after %v, want one round trip", p.n.now)
	}
	if !c.e.Done() {
		t.Error("refused engine not done")
	}

	// A RST that does not echo our SYN's packet number is ignored.
	p = newSimPair(t, simSeed(t, 4), defaultSimConfig())
	p.n.link(p.b, p.a).drop = func(sp *simPacket) bool {
		var pv packetView
		if parsePacket(sp.body, &pv) && pv.hasReset {
			binary.BigEndian.PutUint64(sp.body[len(sp.body)-8:], pv.proof+1000) // forge the proof
		}
		return false
	}
	c = p.a.dial(p.b, 81, Config{NoDelay: true, HandshakeTimeout: 2 * time.Second})
	p.n.run(time.Second, nil)
	if c.e.Err() != nil {
		t.Fatalf("RST with a wrong proof accepted: %v", c.e.Err())
	}
	p.n.run(2*time.Second, func() bool { return c.e.Err() != nil })
	if !errors.Is(c.e.Err(), ErrTimeout) {
		t.Fatalf("err = %v after the handshake timeout, want ETIMEDOUT", c.e.Err())
	}
}

func TestSimHandshakeTimeout(t *testing.T) {
	p := newSimPair(t, simSeed(t, 5), defaultSimConfig())
	var synTimes []time.Duration
	p.n.link(p.a, p.b).drop = func(sp *simPacket) bool {
		synTimes = append(synTimes, p.n.now)
		return true
	}
	c := p.a.dial(p.b, 80, Config{NoDelay: true, HandshakeTimeout: 10 * time.Second})
	p.n.run(time.Minute, func() bool { return c.e.Err() != nil })
	if !errors.Is(c.e.Err(), ErrTimeout) {
		t.Fatalf("err = %v, want ETIMEDOUT", c.e.Err())
	}
	if p.n.now != 10*time.Second {
		t.Errorf("timed out at %v, want 10s", p.n.now)
	}
	t.Logf("SYNs sent at %v", synTimes)
	want := []time.Duration{0, 200 * time.Millisecond, 600 * time.Millisecond, 1400 * time.Millisecond, 3000 * time.Millisecond, 6200 * time.Millisecond, 9400 * time.Millisecond}
	if len(synTimes) != len(want) {
		t.Fatalf("%d SYNs, want %d", len(synTimes), len(want))
	}
	for i := range want {
		if synTimes[i] != want[i] {
			t.Errorf("SYN %d at %v, want %v", i, synTimes[i], want[i])
		}
	}
}

// streamPrefixHash is the SHA-256 of the first n bytes of the writer stream
// seeded by seed.
func streamPrefixHash(seed uint64, n int64) []byte {
	c := &simConn{}
	c.stream(n, seed, false)
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for n > 0 {
		k := int(min(n, int64(len(buf))))
		c.fill(buf[:k])
		h.Write(buf[:k])
		n -= int64(k)
	}
	return h.Sum(nil)
}

func TestSimStalledReader(t *testing.T) {
	seed := simSeed(t, 6)
	const size = 16 << 20
	ccfg := Config{NoDelay: true, SendBuffer: 1 << 20}
	scfg := Config{NoDelay: true, RecvBuffer: 512 << 10}
	p := newSimPair(t, seed, scfg)
	p.b.listen[80].accept = func(c *simConn) {
		p.server = c
		c.stalled = true
	}
	p.dial(ccfg)
	p.client.stream(size, seed, true)
	// Let the window and the send buffer fill, then watch the stall.
	p.n.run(100*time.Millisecond, nil)
	ci := p.client.e.Info(p.n.wall())
	si := p.server.e.Info(p.n.wall())
	// Stall for longer than UserTimeout: the peer answers the probes, so a
	// zero window is no reason to give up.
	sentBefore := p.client.sentPkts
	p.n.run(40*time.Second, nil)
	probes := p.client.sentPkts - sentBefore
	t.Logf("stalled: client holds %d bytes (max %d, chunks %d bytes), send window %d; server buffers %d (max %d), receive window %d; %d client packets in 40 s of stall",
		ci.SendBuffered, p.client.maxSendBuf, p.client.maxMem, ci.SendWindow, si.RecvBuffered, p.server.maxRecvBuf, si.RecvWindow, probes)
	if p.client.maxSendBuf > ccfg.SendBuffer {
		t.Errorf("sender held %d bytes > SendBuffer %d", p.client.maxSendBuf, ccfg.SendBuffer)
	}
	if p.client.maxMem > ccfg.SendBuffer+scfg.RecvBuffer+4*chunkSize {
		t.Errorf("client memory %d", p.client.maxMem)
	}
	if p.server.maxRecvBuf > scfg.RecvBuffer {
		t.Errorf("receiver held %d bytes > RecvBuffer %d", p.server.maxRecvBuf, scfg.RecvBuffer)
	}
	// The window does not grow while nobody reads: the receiver holds
	// exactly the window it advertised, the sender its whole buffer.
	if si.RecvBuffered != int(si.RecvWindow) || ci.SendBuffered != ccfg.SendBuffer {
		t.Errorf("buffers not full while stalled: receiver %d (window %d), sender %d", si.RecvBuffered, si.RecvWindow, ci.SendBuffered)
	}
	// One DATA_BLOCKED probe per second at most once backed off, plus the
	// ACK of the receiver's answering Max Data.
	if probes > 2*40+20 {
		t.Errorf("%d packets sent during a 40 s stall: probes must back off", probes)
	}
	if p.client.e.Err() != nil || p.server.e.Err() != nil {
		t.Fatalf("a stalled reader broke the connection: %v %v", p.client.e.Err(), p.server.e.Err())
	}
	// The reader wakes up: the flow resumes and completes.
	p.server.stalled = false
	at := p.n.now
	p.n.at(p.n.now, p.server.pump)
	if !p.n.run(10*time.Second, func() bool { return p.server.e.EOF() }) {
		t.Fatalf("flow did not resume: server read %d", p.server.readN)
	}
	t.Logf("resumed: rest of the %d MiB read in %v", size>>20, p.n.now-at)
	if p.server.readN != size || !sameHash(p.client.sendHash, p.server.recvHash) {
		t.Fatal("data corrupted")
	}
	if p.n.now-at > time.Second+100*time.Millisecond {
		t.Errorf("resuming took %v", p.n.now-at)
	}
}

// TestSimLostWindowUpdates drops every packet carrying MAX_DATA from the
// receiver for a while: the sender's DATA_BLOCKED probes and the receiver's
// retransmissions get the flow going again once they pass.
func TestSimLostWindowUpdates(t *testing.T) {
	seed := simSeed(t, 7)
	const size = 8 << 20
	cfg := Config{NoDelay: true, RecvBuffer: 256 << 10}
	p := newSimPair(t, seed, cfg)
	p.b.listen[80].accept = func(c *simConn) { p.server = c }
	dropping := false
	dropped := 0
	p.n.link(p.b, p.a).drop = func(sp *simPacket) bool {
		var pv packetView
		if !dropping || !parsePacket(sp.body, &pv) {
			return false
		}
		for i := 0; i < pv.nframes; i++ {
			if pv.frames[i].typ == sfMaxData {
				dropped++
				return true
			}
		}
		return false
	}
	p.dial(cfg)
	p.client.stream(size, seed, true)
	p.n.run(2*time.Millisecond, nil)
	dropping = true
	p.n.run(300*time.Millisecond, nil)
	dropping = false
	readAtEnd := p.server.readN
	at := p.n.now
	if !p.n.run(10*time.Second, func() bool { return p.server.e.EOF() }) {
		t.Fatalf("stalled for good after lost window updates: read %d of %d", p.server.readN, size)
	}
	t.Logf("%d MAX_DATA packets dropped in 300 ms; %d bytes had been read; the rest took %v after the drops stopped",
		dropped, readAtEnd, p.n.now-at)
	if !sameHash(p.client.sendHash, p.server.recvHash) {
		t.Fatal("data corrupted")
	}
	if p.n.now-at > 1100*time.Millisecond {
		t.Errorf("recovery took %v, more than the 1 s probe cap", p.n.now-at)
	}
}

func TestSimHalfClose(t *testing.T) {
	seed := simSeed(t, 8)
	p := newSimPair(t, seed, defaultSimConfig())
	const req, resp = 50_000, 3 << 20
	p.b.listen[80].accept = func(c *simConn) {
		p.server = c
		c.ensureReader()
		// The server answers only after it has read the whole request (EOF),
		// like a server of a half-closed request.
		c.onPump = func(c *simConn) {
			if c.e.EOF() && c.src == nil {
				c.stream(resp, seed+2, true)
				c.app()
			}
		}
	}
	p.dial(defaultSimConfig())
	p.client.stream(req, seed+1, true)
	if !p.n.run(5*time.Second, func() bool { return p.client.e.EOF() }) {
		t.Fatalf("response incomplete: client read %d", p.client.readN)
	}
	if p.server.readN != req || p.client.readN != resp {
		t.Fatalf("read %d and %d", p.server.readN, p.client.readN)
	}
	if !sameHash(p.client.sendHash, p.server.recvHash) || !sameHash(p.server.sendHash, p.client.recvHash) {
		t.Fatal("data corrupted")
	}
	if !p.n.run(time.Second, func() bool { return p.client.e.Done() && p.server.e.Done() }) {
		t.Fatalf("not done: client %s server %s", p.client.e.stateName(), p.server.e.stateName())
	}
	if p.client.e.Err() != nil || p.server.e.Err() != nil {
		t.Fatalf("errors after a clean close: %v %v", p.client.e.Err(), p.server.e.Err())
	}
	t.Logf("request %d B, response %d B, both done at %v", req, resp, p.n.now)
}

func TestSimCloseUnreadResets(t *testing.T) {
	seed := simSeed(t, 9)
	p := newSimPair(t, seed, defaultSimConfig())
	p.b.listen[80].accept = func(c *simConn) {
		p.server = c
		c.stream(10_000, seed+2, false) // the client never reads this
		c.stalled = true                // nor does the server read, yet
	}
	p.dial(defaultSimConfig())
	p.client.stream(1<<20, seed+1, false)
	p.client.stalled = true
	p.n.run(20*time.Millisecond, func() bool { return p.client.written == 1<<20 && p.client.e.Readable() == 10_000 })
	if p.client.e.Close() != true {
		t.Fatal("close with unread data did not reset")
	}
	p.n.at(p.n.now, p.client.pump)
	if !p.n.run(time.Second, func() bool { return p.server.e.Err() != nil }) {
		t.Fatal("server never saw the reset")
	}
	// The server's reader still gets the bytes that arrived in order, then
	// ECONNRESET.
	avail := p.server.e.Readable()
	p.server.stalled = false
	p.server.app()
	if p.server.readN != int64(avail) || avail == 0 {
		t.Fatalf("reader got %d bytes after the reset, %d were readable", p.server.readN, avail)
	}
	if !bytes.Equal(p.server.recvHash.Sum(nil), streamPrefixHash(seed+1, p.server.readN)) {
		t.Fatal("data delivered after a reset is not the stream's prefix")
	}
	if !errors.Is(p.server.e.Err(), ErrReset) {
		t.Fatalf("err = %v, want ECONNRESET", p.server.e.Err())
	}
	if p.server.e.EOF() {
		t.Fatal("reset reported as EOF")
	}
	p.n.run(time.Second, nil)
	if !p.client.e.Done() || !p.server.e.Done() {
		t.Fatalf("not done after reset: %v %v", p.client.e.Done(), p.server.e.Done())
	}
	t.Logf("reset after %d of %d bytes; the reader got them all, then %v", avail, p.client.written, p.server.e.Err())
}

// TestSimForgedReset sends RSTs with wrong proofs: the connection survives
// and answers with challenge ACKs, at most one per 100 ms.
func TestSimForgedReset(t *testing.T) {
	seed := simSeed(t, 10)
	p := newSimPair(t, seed, defaultSimConfig())
	p.b.listen[80].accept = func(c *simConn) {
		p.server = c
		c.stream(2<<20, seed+2, true)
	}
	// 16 Mbit/s, so the 2 MiB transfers last the whole second of the attack.
	p.n.link(p.a, p.b).rate, p.n.link(p.b, p.a).rate = 2e6, 2e6
	p.dial(defaultSimConfig())
	p.client.stream(2<<20, seed+1, true)
	p.n.run(time.Second, func() bool { return p.server != nil })
	attacker := p.n.host("attacker")
	forged := 0
	var inject func()
	inject = func() {
		if forged == 1000 {
			return
		}
		forged++
		body := make([]byte, pnLen+resetFrameLen)
		// A plausible packet number (an attacker that knows the connection
		// ID and roughly where the numbers are); only the proof is wrong.
		binary.BigEndian.PutUint64(body, p.server.e.nextPN+p.n.rng.Uint64N(1000))
		putU64Frame(body[pnLen:], sfReset, p.n.rng.Uint64())
		p.n.send(&simPacket{src: attacker, dst: p.a, srcPort: 80, dstPort: p.client.port, cid: p.client.e.localCID, body: body})
		p.n.at(p.n.now+time.Millisecond, inject)
	}
	p.n.setLink(attacker, p.a, &simLink{delay: 10 * time.Microsecond})
	inject()
	if !p.n.run(5*time.Second, func() bool { return p.client.finished() && p.server.finished() && forged == 1000 }) {
		t.Fatalf("transfer under forged RSTs incomplete: %v", p.client.e.Err())
	}
	if p.client.e.Err() != nil {
		t.Fatalf("forged RST accepted: %v", p.client.e.Err())
	}
	if !sameHash(p.client.sendHash, p.server.recvHash) || !sameHash(p.server.sendHash, p.client.recvHash) {
		t.Fatal("data corrupted")
	}
	st := p.client.e.stats
	t.Logf("%d forged RSTs over %v: %d seen, %d challenge ACKs", forged, p.n.now, st.Challenges, st.ChallengeAcks)
	if st.Challenges < 900 {
		t.Errorf("only %d of the forged RSTs reached a live connection", st.Challenges)
	}
	if st.ChallengeAcks == 0 || st.ChallengeAcks > uint64(p.n.now/challengeInterval)+1 {
		t.Errorf("%d challenge ACKs in %v: not rate-limited to one per %v", st.ChallengeAcks, p.n.now, challengeInterval)
	}
}

// kill makes h unreachable both ways from now on, and records when the
// packets that go nowhere were sent.
func (p *simPair) kill(h *simHost, sendTimes *[]time.Duration) {
	for _, o := range p.n.hosts {
		if o == h {
			continue
		}
		p.n.link(o, h).drop = func(sp *simPacket) bool {
			if sendTimes != nil {
				*sendTimes = append(*sendTimes, p.n.now)
			}
			return true
		}
		p.n.link(h, o).drop = func(*simPacket) bool { return true }
	}
}

func TestSimPeerDies(t *testing.T) {
	seed := simSeed(t, 11)
	p := newSimPair(t, seed, defaultSimConfig())
	p.b.listen[80].accept = func(c *simConn) { p.server = c }
	p.dial(defaultSimConfig()) // UserTimeout: the default 30 s
	p.client.stream(-1, seed, false)
	p.n.run(20*time.Millisecond, nil)
	var sends []time.Duration
	died := p.n.now
	p.kill(p.b, &sends)
	// What was sent in the first 100 ms is the window in flight; after that
	// only probes, at most two per probe timeout.
	if !p.n.run(time.Minute, func() bool { return p.client.e.Err() != nil }) {
		t.Fatal("dead peer never noticed")
	}
	after := p.n.now - died
	t.Logf("peer died; ETIMEDOUT after %v; %d packets sent meanwhile", after, len(sends))
	if !errors.Is(p.client.e.Err(), ErrTimeout) {
		t.Fatalf("err = %v, want ETIMEDOUT", p.client.e.Err())
	}
	if after < defaultUserTimeout || after > defaultUserTimeout+10*time.Millisecond {
		t.Errorf("timed out %v after the last acknowledgment, want the 30 s UserTimeout", after)
	}
	late := 0
	for _, at := range sends {
		if at-died > 100*time.Millisecond {
			late++
		}
	}
	t.Logf("%d packets after the first 100 ms", late)
	if late > 2*int(defaultUserTimeout/maxPTO)+10 {
		t.Errorf("%d packets to a dead peer after 100 ms: probes must back off", late)
	}
	if !p.client.e.Done() {
		t.Error("timed-out engine not done")
	}
}

// TestSimTinyRTT runs a 10 µs RTT: the transfer works, timers never drop
// below the 1 ms granularity, and the probe timeout backs off exponentially
// up to the cap when the peer goes away.
func TestSimTinyRTT(t *testing.T) {
	seed := simSeed(t, 12)
	p := newSimPair(t, seed, defaultSimConfig())
	for _, l := range []*simLink{p.n.link(p.a, p.b), p.n.link(p.b, p.a)} {
		l.delay = 5 * time.Microsecond
		l.rate = 10e9 / 8
		l.queueLimit = 256 << 10
		l.loss = 0.01
	}
	p.b.listen[80].accept = func(c *simConn) {
		p.server = c
		c.stream(8<<20, seed+2, true)
	}
	p.dial(defaultSimConfig())
	p.client.stream(8<<20, seed+1, true)
	if !p.n.run(10*time.Second, func() bool { return p.server != nil && p.client.finished() && p.server.finished() }) {
		t.Fatal("transfer incomplete")
	}
	if !sameHash(p.client.sendHash, p.server.recvHash) || !sameHash(p.server.sendHash, p.client.recvHash) {
		t.Fatal("data corrupted")
	}
	in := p.client.e.Info(p.n.wall())
	t.Logf("8 MiB each way at 1%% loss in %v (%.0f Mbit/s): srtt %v rttvar %v min %v, PTO %v, cwnd %d",
		p.n.now, mbps(8<<20, p.n.now), in.SRTT, in.RTTVar, in.MinRTT, in.PTO, in.Cwnd)
	if in.MinRTT > 30*time.Microsecond {
		t.Errorf("min RTT %v, want about 10 µs", in.MinRTT)
	}
	if in.PTO < timerGranularity {
		t.Errorf("PTO %v below the granularity", in.PTO)
	}

	// Zero-delay links: RTT samples of 0 must not make a zero window or timer.
	q := newSimPair(t, seed, defaultSimConfig())
	q.n.link(q.a, q.b).delay, q.n.link(q.b, q.a).delay = 0, 0
	q.b.listen[80].accept = func(c *simConn) { q.server = c }
	q.dial(defaultSimConfig())
	q.client.stream(1<<20, seed, true)
	if !q.n.run(time.Second, func() bool { return q.server != nil && q.server.e.EOF() }) {
		t.Fatal("zero-RTT transfer incomplete")
	}
	if in := q.client.e.Info(q.n.wall()); in.PTO < timerGranularity || in.Cwnd < 2*MinMaxPacket {
		t.Fatalf("zero RTT: PTO %v cwnd %d", in.PTO, in.Cwnd)
	}

	// Backoff: a stream to a peer that vanishes.
	r := newSimPair(t, seed, defaultSimConfig())
	r.n.link(r.a, r.b).delay, r.n.link(r.b, r.a).delay = 5*time.Microsecond, 5*time.Microsecond
	r.n.link(r.a, r.b).queueLimit = 32 << 10
	r.b.listen[80].accept = func(c *simConn) { r.server = c }
	r.dial(Config{NoDelay: true, UserTimeout: 10 * time.Second})
	r.client.stream(-1, seed, false)
	var lastElicit time.Duration
	var probes []time.Duration
	dead := false
	var ptos uint64
	r.n.link(r.a, r.b).drop = func(sp *simPacket) bool {
		var pv packetView
		if parsePacket(sp.body, &pv) && pv.elicit {
			// The first packet after each probe timeout is its probe; the
			// others are ordinary sends (ACKs in flight still arrive).
			if p := r.client.e.stats.PTOs; p > ptos {
				ptos = p
				probes = append(probes, r.n.now)
			} else if len(probes) == 0 {
				lastElicit = r.n.now
			}
		}
		return dead
	}
	r.n.run(5*time.Millisecond, nil)
	base := r.client.e.basePTO()
	ptos = r.client.e.stats.PTOs
	dead = true
	r.n.link(r.b, r.a).drop = func(*simPacket) bool { return true }
	r.n.run(20*time.Second, func() bool { return r.client.e.Err() != nil })
	if !errors.Is(r.client.e.Err(), ErrTimeout) {
		t.Fatalf("err = %v", r.client.e.Err())
	}
	// Probe timeouts: when each burst of probes left, after the last
	// ack-eliciting packet before the peer vanished.
	var gaps []time.Duration
	prev := lastElicit
	for _, at := range probes {
		gaps = append(gaps, at-prev)
		prev = at
	}
	t.Logf("base PTO %v; probe timeouts to a dead peer: %v", base, gaps)
	if len(gaps) < 10 {
		t.Fatalf("only %d probe timeouts", len(gaps))
	}
	if base < 2*timerGranularity || base > 3*timerGranularity {
		t.Errorf("base PTO %v, want srtt + 1 ms granularity + 1 ms max ACK delay", base)
	}
	for i, g := range gaps {
		want := min(base<<i, maxPTO)
		if d := g - want; d < -want/100 || d > want/100 { // srtt moved a little since base was read
			t.Errorf("probe timeout %d after %v, want %v (doubling from %v up to %v)", i, g, want, base, maxPTO)
		}
	}
}

func TestSimKeepAlive(t *testing.T) {
	seed := simSeed(t, 13)
	cfg := Config{NoDelay: true, KeepAlive: 5 * time.Second}
	p := newSimPair(t, seed, cfg)
	p.b.listen[80].accept = func(c *simConn) { p.server = c }
	p.dial(cfg)
	p.client.stream(1000, seed, false)
	// Idle but alive for a minute: keepalives are answered.
	if p.n.run(time.Minute, func() bool { return p.client.e.Err() != nil || p.server != nil && p.server.e.Err() != nil }) {
		t.Fatalf("live idle connection failed: %v %v", p.client.e.Err(), p.server.e.Err())
	}
	pings := p.client.sentPkts
	t.Logf("a minute idle: client sent %d packets, server %d", pings, p.server.sentPkts)
	if pings < 10 || pings > 40 {
		t.Errorf("%d client packets in a minute with a 5 s keepalive", pings)
	}
	// The server dies: the idle client notices within two keepalive periods.
	died := p.n.now
	p.kill(p.b, nil)
	if !p.n.run(time.Minute, func() bool { return p.client.e.Err() != nil }) {
		t.Fatal("dead idle peer never noticed")
	}
	t.Logf("dead idle peer noticed after %v: %v", p.n.now-died, p.client.e.Err())
	if !errors.Is(p.client.e.Err(), ErrTimeout) || p.n.now-died > 2*cfg.KeepAlive+time.Millisecond {
		t.Fatalf("err %v after %v", p.client.e.Err(), p.n.now-died)
	}
	// Without keepalive an idle connection never notices.
	q := newSimPair(t, seed, defaultSimConfig())
	q.b.listen[80].accept = func(c *simConn) { q.server = c }
	q.dial(defaultSimConfig())
	q.n.run(5*time.Millisecond, nil) // the confirm acknowledged (delayed ACK)
	q.kill(q.b, nil)
	if q.n.run(10*time.Minute, func() bool { return q.client.e.Err() != nil }) {
		t.Fatalf("idle connection without keepalive failed: %v", q.client.e.Err())
	}
}

// TestSimKeepAliveSlowPeer: an idle connection's keepalive PINGs are not
// probed again on a LAN's millisecond probe timeout when the peer answers
// late (a busy host): a probe timeout of 2 ms against answers 20 ms late
// made every keepalive cost three spurious probes and their ACKs.
func TestSimKeepAliveSlowPeer(t *testing.T) {
	seed := simSeed(t, 15)
	cfg := Config{NoDelay: true, KeepAlive: 5 * time.Second}
	p := newSimPair(t, seed, cfg)
	p.b.listen[80].accept = func(c *simConn) { p.server = c }
	p.dial(cfg)
	p.n.run(10*time.Millisecond, nil)
	p.n.link(p.a, p.b).delay, p.n.link(p.b, p.a).delay = 10*time.Millisecond, 10*time.Millisecond
	if p.n.run(time.Minute, func() bool { return p.client.e.Err() != nil || p.server.e.Err() != nil }) {
		t.Fatalf("live idle connection failed: %v %v", p.client.e.Err(), p.server.e.Err())
	}
	c, s := p.client.e.Stats(), p.server.e.Stats()
	t.Logf("a minute idle, 20 ms RTT: client sent %d packets, %d probe timeouts; server %d, %d", c.PacketsSent, c.PTOs, s.PacketsSent, s.PTOs)
	if c.PTOs+s.PTOs > 0 {
		t.Errorf("%d probe timeouts on an idle connection whose peer answers within 20 ms", c.PTOs+s.PTOs)
	}
	// A dead peer is still noticed within the probe timeout.
	died := p.n.now
	p.kill(p.b, nil)
	if !p.n.run(time.Minute, func() bool { return p.client.e.Err() != nil }) {
		t.Fatal("dead idle peer never noticed")
	}
	if d := p.n.now - died; !errors.Is(p.client.e.Err(), ErrTimeout) || d > cfg.KeepAlive+keepAliveProbeTimeout+time.Millisecond {
		t.Fatalf("err %v after %v", p.client.e.Err(), d)
	}
	if n := p.client.e.Stats().PTOs - c.PTOs; n < 3 {
		t.Errorf("%d keepalive probes to a dead peer, want several", n)
	}
}

// TestSimGarbage throws random packets at hosts and connections during a
// transfer: random connection IDs, random packet numbers, random bodies and
// structurally valid frames with nonsense values. Nothing panics and the
// transfer stays byte-exact.
func TestSimGarbage(t *testing.T) {
	seed := simSeed(t, 14)
	p := newSimPair(t, seed, defaultSimConfig())
	p.b.listen[80].accept = func(c *simConn) {
		p.server = c
		c.stream(4<<20, seed+2, true)
	}
	p.dial(defaultSimConfig())
	p.client.stream(4<<20, seed+1, true)
	p.n.run(time.Second, func() bool { return p.server != nil })
	attacker := p.n.host("attacker")
	p.n.setLink(attacker, p.a, &simLink{delay: 10 * time.Microsecond})
	p.n.setLink(attacker, p.b, &simLink{delay: 10 * time.Microsecond})
	rng := p.n.rng
	sent := 0
	var inject func()
	inject = func() {
		if p.client.finished() && p.server.finished() {
			return
		}
		for range 4 {
			sent++
			dst, c := p.a, p.client
			if rng.IntN(2) == 0 {
				dst, c = p.b, p.server
			}
			cid := c.e.localCID
			switch rng.IntN(4) {
			case 0:
				cid = rng.Uint64()
			case 1:
				cid = 0
			}
			body := garbageBody(rng, c.e)
			flags := uint16(0)
			if rng.IntN(4) == 0 {
				flags = FlagSYN
			}
			p.n.send(&simPacket{src: attacker, dst: dst, srcPort: uint16(rng.Uint32()), dstPort: 80, cid: cid, flags: flags, body: body})
		}
		p.n.at(p.n.now+20*time.Microsecond, inject)
	}
	inject()
	if !p.n.run(30*time.Second, func() bool { return p.client.finished() && p.server.finished() }) {
		t.Fatalf("transfer incomplete under garbage: %v %v", p.client.e.Err(), p.server.e.Err())
	}
	if !sameHash(p.client.sendHash, p.server.recvHash) || !sameHash(p.server.sendHash, p.client.recvHash) {
		t.Fatal("data corrupted")
	}
	t.Logf("%d garbage packets; client dropped %d malformed, server %d; transfer done at %v",
		sent, p.client.e.stats.Malformed, p.server.e.stats.Malformed, p.n.now)
}

// garbageBody makes a random body: bytes, or frames with random fields that
// cannot touch the stream (offsets and packet numbers far out of range).
func garbageBody(rng *rand.Rand, e *Engine) []byte {
	b := make([]byte, 8+64+rng.IntN(200))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	if rng.IntN(2) == 0 {
		return b
	}
	binary.BigEndian.PutUint64(b, e.largestRcvd+maxPNJump+1+rng.Uint64N(1<<40)) // beyond belief
	n := pnLen
	switch rng.IntN(6) {
	case 0:
		rs := rangeSet{}
		rs.add(rng.Uint64N(1<<61), 1<<61+rng.Uint64N(1<<60))
		n += putAckFrame(b[n:], len(b)-n, &rs, rng.Uint64N(1<<20))
	case 1:
		n += putU64Frame(b[n:], sfMaxData, rng.Uint64())
	case 2:
		n += putU64Frame(b[n:], sfDataBlocked, rng.Uint64())
	case 3:
		n += putU64Frame(b[n:], sfReset, rng.Uint64())
	case 4:
		if len(b) >= n+confirmFrameLen {
			n += putConfirmFrame(b[n:], &confirmFrame{client: hsParams{cid: rng.Uint64(), maxData: rng.Uint64(), maxPacket: uint16(rng.Uint32())}})
		}
	case 5:
		if len(b) < n+synFrameLen {
			break
		}
		n += putHandshakeFrame(b[n:], sfSyn, hsParams{cid: rng.Uint64(), maxData: rng.Uint64(), maxPacket: uint16(rng.Uint32())})
	}
	return b[:n]
}

func jain(x ...float64) float64 {
	var s, s2 float64
	for _, v := range x {
		s += v
		s2 += v * v
	}
	return s * s / (float64(len(x)) * s2)
}

// TestSimFairness runs two flows through one 1 Gbit/s drop-tail bottleneck:
// the first alone, then both. The first backs off when the second arrives
// and they converge to a fair share.
func TestSimFairness(t *testing.T) {
	seed := simSeed(t, 15)
	n := newSimNet(t, seed)
	a1, a2, b := n.host("a1"), n.host("a2"), n.host("b")
	bottleneck := &simLink{delay: 50 * time.Microsecond, rate: 1e9 / 8, queueLimit: 128 << 10}
	n.setLink(a1, b, bottleneck)
	n.setLink(a2, b, bottleneck)
	var servers []*simConn
	b.listenOn(80, defaultSimConfig(), func(c *simConn) { servers = append(servers, c) })
	c1 := a1.dial(b, 80, defaultSimConfig())
	c1.stream(-1, seed+1, false)

	rate := func(c *simConn, d time.Duration) float64 {
		before := c.readN
		n.run(d, nil)
		return mbps(c.readN-before, d)
	}
	n.run(100*time.Millisecond, func() bool { return len(servers) == 1 })
	n.run(100*time.Millisecond, nil)
	alone := rate(servers[0], 100*time.Millisecond)
	cuts := c1.e.ccEvent
	t.Logf("flow 1 alone: %.0f Mbit/s, cwnd %d, %d window cuts so far", alone, c1.e.cc.window(), cuts)

	c2 := a2.dial(b, 80, defaultSimConfig())
	c2.stream(-1, seed+2, false)
	n.run(100*time.Millisecond, func() bool { return len(servers) == 2 })
	// Let them converge, then measure over a second (half in -short).
	conv, periods := 500*time.Millisecond, 10
	if testing.Short() {
		conv, periods = 300*time.Millisecond, 5
	}
	n.run(conv, nil)
	r1, r2 := servers[0].readN, servers[1].readN
	start := n.now
	var samples [][2]float64
	for range periods {
		p1, p2 := servers[0].readN, servers[1].readN
		n.run(100*time.Millisecond, nil)
		samples = append(samples, [2]float64{mbps(servers[0].readN-p1, 100*time.Millisecond), mbps(servers[1].readN-p2, 100*time.Millisecond)})
	}
	d := n.now - start
	x1, x2 := mbps(servers[0].readN-r1, d), mbps(servers[1].readN-r2, d)
	j := jain(x1, x2)
	t.Logf("both: flow 1 %.0f Mbit/s, flow 2 %.0f Mbit/s (sum %.0f), Jain index %.3f; flow 1 cut its window %d times after flow 2 arrived",
		x1, x2, x1+x2, j, c1.e.ccEvent-cuts)
	t.Logf("per 100 ms: %.0f", samples)
	t.Logf("bottleneck: %v", bottleneck)
	if j < 0.8 {
		t.Errorf("Jain index %.3f < 0.8", j)
	}
	if x1 > 0.75*alone {
		t.Errorf("flow 1 did not back off: %.0f Mbit/s alone, %.0f shared", alone, x1)
	}
	if x1+x2 < 0.8*1000 {
		t.Errorf("bottleneck underused: %.0f Mbit/s", x1+x2)
	}
}

// TestSimHyStart: on a bottleneck with a deep queue, HyStart++ sees the RTT
// rise and leaves slow start before the queue overflows.
func TestSimHyStart(t *testing.T) {
	seed := simSeed(t, 17)
	p := newSimPair(t, seed, defaultSimConfig())
	ab := p.n.link(p.a, p.b)
	ab.rate, ab.queueLimit = 1e9/8, 4<<20 // 1 Gbit/s, 33 ms of queue
	p.b.listen[80].accept = func(c *simConn) { p.server = c }
	p.dial(defaultSimConfig())
	p.client.stream(-1, seed, false)
	var exitAt time.Duration
	var exitCwnd int
	p.client.onPump = func(c *simConn) {
		if exitAt == 0 && c.e.cc != nil && c.e.cc.slowStartThreshold() != int(^uint(0)>>1) {
			exitAt, exitCwnd = p.n.now, c.e.cc.window()
		}
	}
	p.n.run(500*time.Millisecond, nil)
	in := p.client.e.Info(p.n.wall())
	t.Logf("slow start ended at %v with cwnd %d (BDP %d); after 500 ms: %d packets lost, queue drops %d, srtt %v, cwnd %d, %.0f Mbit/s",
		exitAt, exitCwnd, int(1e9/8*100e-6), in.PacketsLost, ab.queueDrops, in.SRTT, in.Cwnd, mbps(p.server.readN, p.n.now))
	if exitAt == 0 || exitAt > 20*time.Millisecond || exitCwnd > 1<<20 {
		t.Fatalf("slow start ended at %v with cwnd %d: too late", exitAt, exitCwnd)
	}
	if ab.queueDrops != 0 || in.PacketsLost != 0 {
		t.Errorf("slow start overflowed the queue: %d drops", ab.queueDrops)
	}
}
