// Package stream is myproto's stream transport engine (SPEC.md): an Engine
// is one connection's protocol state, a CookieJar answers a listener's SYNs
// without keeping state. It is pure logic: no goroutines, no syscalls, no
// locks and no clock of its own; it imports neither os, syscall, net nor
// sync (TestPure checks). The conn layer (the root package's Conn)
// serialises calls with a mutex and drives an Engine:
//
//   - after Receive, Write, Read, CloseWrite, Close, Abort or OnTimer, call
//     NextPacket until it returns 0 and send the bodies as one batch;
//   - arm a timer for NextTimer and call OnTimer when it fires.
//
// Times are passed in; the engine keeps them as durations since an origin
// of its own, so tests run it on a virtual clock.
package stream

import (
	"math"
	"time"
)

// Config configures a connection. Zero fields take defaults, except
// NoDelay: the conn layer sets it to true by default, as Go's TCP does.
type Config struct {
	MaxPacket        int           // max stream body bytes per packet (MTU-24), ≥ 256; default 1476
	SendBuffer       int           // bytes of unacknowledged+unsent data held; default 4 MiB, of which at most 256 KiB unsent (sendLimit)
	RecvBuffer       int           // max receive window / reassembly bytes, default 4 MiB (auto-tuned window grows up to this)
	UserTimeout      time.Duration // data unacknowledged this long fails the connection (ErrTimeout); default 30s
	KeepAlive        time.Duration // idle time before a keepalive PING; 0 = off
	NoDelay          bool          // send small writes at once; false: Nagle
	HandshakeTimeout time.Duration // SYN-SENT gives up after this (ErrTimeout); default 20s
	Chunks           ChunkPool     // lends buffer memory; nil: the heap, without reuse
	NodeID           uint64        // this end's stack, told to the peer in the handshake
}

// Defaults for zero Config fields.
const (
	// DefaultBuffer is the send and receive buffer size.
	DefaultBuffer = 4 << 20
	// DefaultHandshakeTimeout is how long SYN-SENT lasts before it fails.
	DefaultHandshakeTimeout = 20 * time.Second
)

const (
	defaultMaxPacket   = 1476 // a 1500-byte Ethernet MTU less the common myproto header
	maxStreamBuffer    = 1 << 30
	defaultUserTimeout = 30 * time.Second
	initialRecvWindow  = 256 << 10 // first Max Data; auto-tuning grows it up to RecvBuffer

	// SYNs are retransmitted after 200 ms, doubling up to 3.2 s. Before any
	// RTT sample only the handshake is at stake; on one Ethernet segment a
	// SYN-ACK (stateless, computed by the listener on receipt) comes back in
	// well under a millisecond, so 200 ms is two orders of magnitude of
	// margin while a lost SYN costs 5× less than TCP's 1 s (RFC 6298).
	synInitialRTO = 200 * time.Millisecond
	synMaxRTO     = 3200 * time.Millisecond

	challengeInterval = 100 * time.Millisecond // at most one challenge ACK per this, per connection
	resetInterval     = time.Millisecond       // at most one RST per this while lingering after a reset
	minResetLinger    = 250 * time.Millisecond // how long an engine that sent RST answers stray packets
	minTimeWait       = 100 * time.Millisecond // TIME-WAIT lasts this or 3 PTOs, whichever is longer
	userTimeoutRTTs   = 4                      // the user timeout lasts at least this many smoothed RTTs
	maxFloorRTT       = time.Minute            // ... counting at most this much of each (rttEstimator.floor)
	maxSeedRTT        = 10 * time.Second       // a client's claimed RTT is capped at this (rttEstimator.seed)
	verifyInterval    = 100 * time.Millisecond // at most one Verify probe per this, per connection
	idleCompact       = time.Second            // quiet this long, a connection gives back memory (compact)
	// A keepalive PING unanswered for this long (or the keepalive period,
	// if shorter) fails the connection: with the probe timeout capped at
	// 1 s, that is several probes.
	keepAliveProbeTimeout = 5 * time.Second
	noLimit               = math.MaxUint64
	ackReserve            = 32 // bytes of each full packet kept for ACK and control frames
)

func (c Config) withDefaults() Config {
	if c.MaxPacket <= 0 {
		c.MaxPacket = defaultMaxPacket
	}
	c.MaxPacket = min(max(c.MaxPacket, MinMaxPacket), maxMaxPacket)
	if c.SendBuffer <= 0 {
		c.SendBuffer = DefaultBuffer
	}
	c.SendBuffer = min(c.SendBuffer, maxStreamBuffer)
	if c.RecvBuffer <= 0 {
		c.RecvBuffer = DefaultBuffer
	}
	c.RecvBuffer = min(c.RecvBuffer, maxStreamBuffer)
	if c.UserTimeout <= 0 {
		c.UserTimeout = defaultUserTimeout
	}
	if c.KeepAlive < 0 {
		c.KeepAlive = 0
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.Chunks == nil {
		c.Chunks = heapChunks{}
	}
	return c
}

// initialWindow is the Max Data a connection starts with.
func (c Config) initialWindow() int { return min(c.RecvBuffer, initialRecvWindow) }

type connState uint8

const (
	_ connState = iota
	stateSynSent
	stateEstablished // including the closing states: see Info for the TCP name
	stateClosed      // terminal; may still linger (lingerUntil) to answer stray packets
)

// An Engine is one connection. See the package comment for how it is driven.
type Engine struct {
	cfg      Config
	t0       time.Time // origin of the engine's clock; every internal time is > 0
	state    connState
	client   bool
	localCID uint64
	peerCID  uint64
	peerNode uint64 // the peer's stack, from the handshake
	failure  error  // what Err returns

	// Handshake.
	synNext        time.Duration // when the next SYN goes out (client, SYN-SENT)
	synRTO         time.Duration
	hsDeadline     time.Duration
	confirm        confirmFrame // the client's handshake confirmation
	confirmPending bool         // the server may not have state for us yet
	confirmSend    bool         // send it even with nothing else to send (the third packet)

	// Packet numbers we send, and what is in flight.
	firstPN         uint64
	nextPN          uint64
	sent            sentRing
	lostRecs        []lostRecord
	sendMax         int // largest body we send: min(our MaxPacket, the peer's)
	bytesInFlight   int
	elicitInFlight  int
	lastElicitSent  time.Duration
	nonEliciting    int // ACK-only packets sent since the last ack-eliciting one
	probes          int // probe packets the probe timer asked for
	ptoCount        int
	lossTime        time.Duration
	pktThreshold    uint64
	largestAcked    uint64
	haveAcked       bool
	rtt             rttEstimator
	cc              congestionController
	ccEvent         uint64        // number of window cuts so far
	ccEventLost     int           // packets declared lost in the current one
	ccEventSpurious int           // of which acknowledged later
	unackedSince    time.Duration // oldest unacknowledged ack-eliciting data, for UserTimeout

	// Send stream: offsets in [sndUna, sbuf.end) are held; the FIN is the
	// virtual byte at finOff, acknowledged and retransmitted like data.
	sbuf         sendBuffer
	capUnsent    bool     // the buffer holds at most unsentMax unsent (sendLimit)
	sized        bool     // ... never again (SizeSendBuffer)
	sndUna       uint64   // every virtual byte below is acknowledged
	sndNxt       uint64   // next never-sent virtual byte
	acked        rangeSet // acknowledged ranges above sndUna (SACK)
	lost         rangeSet // ranges to retransmit
	finQueued    bool
	finOff       uint64
	finAcked     bool
	peerMaxData  uint64 // flow control: we may send data below this offset
	blockedSent  uint64 // the limit a DATA_BLOCKED was sent for; noLimit for none
	persistCount int    // DATA_BLOCKED probes sent at this limit (their backoff)

	// Receive stream.
	rbuf recvBuffer
	// direct is a blocked reader's buffer (ReadInto): in-order bytes go
	// there, after its first len(direct), instead of through the ring.
	direct         []byte
	rcvMaxAdv      uint64 // Max Data advertised
	rcvWindow      uint64 // current window (auto-tuned up to RecvBuffer)
	rcvCap         int    // SetRecvCap's; 0: none
	maxDataPending bool
	epochStart     time.Duration // auto-tuning epoch
	epochOff       uint64
	peerFin        bool
	peerFinOff     uint64

	// Received packet numbers and ACK scheduling.
	rcvd         rangeSet
	rcvdFloor    uint64 // packet numbers below are no longer reported
	largestRcvd  uint64
	largestRTime time.Duration
	haveRcvd     bool
	ackEliciting int           // ack-eliciting packets since the last ACK
	ackBytes     int           // STREAM payload received since the last ACK
	ackImmediate bool          // send an ACK now
	ackDeadline  time.Duration // delayed ACK timer; 0 for none
	challengeAt  time.Duration // last challenge ACK
	challenge    bool

	// Liveness.
	lastRecv   time.Duration
	pingSend   bool
	probeSend  bool          // the next PING is a probe (FlagProbe)
	lastVerify time.Duration // when Verify last asked for a probe
	kaProbeAt  time.Duration // keepalive probe outstanding since; 0 for none

	// Closing.
	appClosed    bool
	closedAt     time.Duration // our FIN acknowledged after close: FIN-WAIT-2 starts
	timeWait     time.Duration // both directions done: TIME-WAIT ends then
	resetPending bool
	lastReset    time.Duration
	lingerUntil  time.Duration // closed engine answers stray packets with RST until then

	stats Stats
}

// Stats are an engine's cumulative counters (Engine.Stats); Info reports
// the first nine. Persistent counts persistent congestion, Undos window cuts
// undone as spurious, Dups duplicate packets, Malformed bodies dropped as
// malformed or implausible (blind guesses), FlowViolations stream data
// beyond the window or the final size, Challenges resets not believed and
// ChallengeAcks the challenge ACKs sent for them.
type Stats struct {
	BytesSent, BytesRetx, BytesRecv             uint64
	PacketsSent, PacketsRecv, PacketsRetx       uint64
	PacketsLost, Spurious, PTOs, Persistent     uint64
	Undos, ChallengeAcks                        uint64
	Dups, Malformed, FlowViolations, Challenges uint64
	MemDrops                                    uint64 // packets dropped by SetRecvCap
}

// NewClient returns an engine in SYN-SENT; its first NextPacket is the
// SYN. localCID (random, non-zero) is where the server will send.
func NewClient(cfg Config, localCID uint64, now time.Time) *Engine {
	e := newEngine(cfg, localCID, now)
	e.client = true
	e.state = stateSynSent
	e.firstPN = initialPN(localCID)
	e.nextPN = e.firstPN
	e.sent.reset(e.firstPN)
	e.synNext = e.clock(now)
	e.synRTO = synInitialRTO
	e.hsDeadline = e.clock(now) + e.cfg.HandshakeTimeout
	return e
}

// NewServer returns an established engine for a connection whose
// cookie (localCID) CookieJar.Accept verified; the caller then passes the
// packet that carried the confirmation to Receive.
func NewServer(cfg Config, localCID uint64, p HandshakeParams, now time.Time) *Engine {
	e := newEngine(cfg, localCID, now)
	e.firstPN = initialPN(localCID) // the stateless SYN-ACK's
	e.nextPN = e.firstPN + 1
	e.sent.reset(e.nextPN)
	e.peerCID, e.peerNode = p.peerCID, p.peerNode
	e.peerMaxData = min(p.peerMaxData, maxStreamOffset)
	if p.localMaxData > 0 {
		e.rcvMaxAdv = min(p.localMaxData, uint64(e.cfg.RecvBuffer))
		e.rcvWindow = max(e.rcvWindow, e.rcvMaxAdv)
	}
	if p.rtt > 0 {
		e.rtt.seed(p.rtt)
	}
	e.establish(e.clock(now), p.peerMaxPacket)
	return e
}

func newEngine(cfg Config, localCID uint64, now time.Time) *Engine {
	capUnsent := cfg.SendBuffer <= 0
	cfg = cfg.withDefaults()
	e := &Engine{
		cfg:          cfg,
		capUnsent:    capUnsent,
		t0:           now.Add(-time.Second),
		localCID:     localCID,
		sbuf:         newSendBuffer(cfg.SendBuffer, cfg.Chunks),
		rbuf:         newRecvBuffer(cfg.RecvBuffer, cfg.Chunks),
		rcvWindow:    uint64(cfg.initialWindow()),
		rcvMaxAdv:    uint64(cfg.initialWindow()),
		blockedSent:  noLimit,
		pktThreshold: packetThreshold,
	}
	e.epochStart = e.clock(now)
	return e
}

// establish finishes the handshake on either side.
func (e *Engine) establish(t time.Duration, peerMaxPacket int) {
	e.state = stateEstablished
	e.sendMax = min(e.cfg.MaxPacket, max(peerMaxPacket, MinMaxPacket))
	e.cc = newNewReno(e.sendMax)
	e.lastRecv = t
	e.epochStart = t
}

// clock converts a caller's time to the engine's.
func (e *Engine) clock(now time.Time) time.Duration {
	d := now.Sub(e.t0)
	if d < 1 {
		d = 1
	}
	return d
}

func (e *Engine) wall(d time.Duration) time.Time { return e.t0.Add(d) }

// ---- Application side ------------------------------------------------------

// Write copies as much of p as the send buffer has room for and returns how
// much it took: 0 when full, or when the Write side is closed or failed.
func (e *Engine) Write(p []byte) int {
	if e.finQueued || e.state == stateClosed {
		return 0
	}
	return e.sbuf.write(p, e.sendLimit())
}

// Writable is how many bytes Write would take now.
func (e *Engine) Writable() int {
	if e.finQueued || e.state == stateClosed {
		return 0
	}
	return e.sbuf.free(e.sendLimit())
}

// unsentMax bounds what a send buffer of the default size holds beyond what
// was sent (as TCP_NOTSENT_LOWAT does for Linux's TCP) while the peer's
// window lets data out. Unsent bytes only wait, and a bulk writer keeps a
// buffer full: sixteen connections of 4 MiB each spread 64 MiB over the
// cache, so every byte was cold by the time it was copied into a frame
// (-P 16 at 0.8–0.9× one connection; with unsent bytes bounded, 1.1–1.4×,
// one connection unchanged). What was sent and not yet acknowledged
// is bounded by the buffer only: the window a long path needs. And once
// the peer holds all it acknowledged and its window is full (it does not
// read), the whole buffer takes writes, as it would without the bound: a
// writer that finishes writing before its peer starts reading must not
// block where it did not. (A window full only while data is in flight,
// as a slow reader's often is, keeps the bound: lifting it then gave back
// most of the gain.)
const unsentMax = 256 << 10

// sendLimit is how much the send buffer may hold now: its size, and unless
// that was set (Config.SendBuffer, SetSendBuffer) or a whole message must
// fit (SizeSendBuffer), no more than unsentMax beyond what was sent, unless
// the peer acknowledged everything and its window is full.
func (e *Engine) sendLimit() int {
	if !e.capUnsent || e.sndNxt >= e.peerMaxData && e.sndUna == e.sndNxt {
		return e.sbuf.limit
	}
	return min(e.sbuf.limit, int(e.sndNxt-e.sbuf.una)+unsentMax)
}

// Unacked is how many bytes Write took that the peer has not acknowledged
// yet: sent or still queued. A reader that waits while some are is most
// likely waiting for the answer to them.
func (e *Engine) Unacked() int { return int(e.sbuf.end - e.sbuf.una) }

// Read copies in-order received bytes into p. Reading frees window; the
// conn layer calls NextPacket afterwards so a window update can go out.
func (e *Engine) Read(p []byte) int {
	return e.rbuf.read(p)
}

// ReadInto lends the engine a blocked reader's buffer p: until the caller
// takes it back with TakeRead, data that arrives in order while nothing
// else is readable is copied straight into p, saving the copy through the
// receive buffer. Out-of-order data, and what does not fit, is buffered as
// usual. p must not be touched until TakeRead.
func (e *Engine) ReadInto(p []byte) {
	if e.rbuf.readable() == 0 {
		e.direct = p[:0:len(p)] // no further than len(p), whatever its capacity
	}
}

// TakeRead takes back the buffer lent with ReadInto and returns how many
// bytes went into it; they are read, as if by Read. Calling it with no
// buffer lent returns 0.
func (e *Engine) TakeRead() int {
	n := len(e.direct)
	e.direct = nil
	return n
}

// SetRecvCap caps what the connection holds received and unread, in the
// span from the read offset to the highest byte held, at n bytes (0: no
// cap but the window), for a caller short of memory. The window already
// given cannot be taken back, so a packet whose stream data would extend
// the span beyond n is dropped whole, unacknowledged, as if lost: the peer
// sends it again later; and Max Data grants no more than n past the read
// offset, nor does the window grow. Data that fills the span's holes, or
// that a reader waiting with ReadInto takes, always comes in, so the reader
// can always make progress.
func (e *Engine) SetRecvCap(n int) { e.rcvCap = n }

// Held is the span of the receive buffer: from the read offset to the
// highest byte received (what SetRecvCap caps).
func (e *Engine) Held() int { return int(e.rbuf.highest() - e.rbuf.readOff) }

// overCap reports whether pv's stream data would extend the receive span
// beyond rcvCap.
func (e *Engine) overCap(pv *packetView) bool {
	held := e.rbuf.highest()
	end := held
	for i := 0; i < pv.nframes; i++ {
		if f := &pv.frames[i]; f.typ == sfStream {
			end = max(end, f.value+uint64(len(f.data)))
		}
	}
	if end == held {
		return false
	}
	// In-order data for a waiting reader goes into its buffer.
	if held == e.rbuf.readOff && len(e.direct) < cap(e.direct) && end-held <= uint64(cap(e.direct)-len(e.direct)) {
		return false
	}
	return end-e.rbuf.readOff > uint64(e.rcvCap)
}

// Readable is how many bytes Read would return now, or are waiting in the
// buffer lent with ReadInto.
func (e *Engine) Readable() int { return e.rbuf.readable() + len(e.direct) }

// EOF reports whether the peer's FIN has been reached by the reader.
func (e *Engine) EOF() bool { return e.peerFin && e.rbuf.readOff == e.peerFinOff }

// Established reports whether the handshake completed (and the connection
// has not failed before it did).
func (e *Engine) Established() bool {
	return e.state == stateEstablished || (e.state == stateClosed && e.cc != nil)
}

// Err is the connection's failure, sticky: ErrRefused, ErrReset or
// ErrTimeout, or the error passed to Fail.
// A reader should still drain Readable() first: data that arrived in order
// before a reset is delivered before the error.
func (e *Engine) Err() error { return e.failure }

// CloseWrite queues our FIN after the data written so far (shutdown(2)
// SHUT_WR).
func (e *Engine) CloseWrite() {
	if e.finQueued || e.state == stateClosed {
		return
	}
	e.finQueued = true
	e.finOff = e.sbuf.end
}

// Close is the application closing the connection: if received data is unread (or arrives later) the
// connection is reset, as TCP does; otherwise our FIN follows the queued data
// and the engine lingers until it is acknowledged and the peer's FIN came, or
// UserTimeout passes. reset reports whether a RST was sent.
func (e *Engine) Close() (reset bool) {
	if e.state == stateClosed {
		return false
	}
	if e.state == stateSynSent {
		e.state = stateClosed
		return false
	}
	if e.appClosed {
		return false
	}
	e.appClosed = true
	if e.rbuf.buffered() > 0 {
		e.Abort()
		return true
	}
	e.CloseWrite()
	return false
}

// Abort resets the connection now (SO_LINGER 0): a RST goes out and every
// buffer is freed.
func (e *Engine) Abort() {
	switch e.state {
	case stateSynSent:
		e.state = stateClosed
	case stateEstablished:
		e.state = stateClosed
		e.resetPending = true
		e.appClosed = true
		e.sbuf.ring.releaseAll()
		e.rbuf.release()
	}
}

// Done reports whether the engine is finished: closed, and not lingering to
// answer stray packets. The conn layer may forget it once the application
// has closed too.
func (e *Engine) Done() bool {
	return e.state == stateClosed && !e.resetPending && e.lingerUntil == 0
}

// Fail ends the connection with err (the conn layer's own, such as its
// interface going down), which Err then returns. In-order received data
// stays readable; everything else is dropped.
func (e *Engine) Fail(err error) {
	if e.state == stateClosed {
		return
	}
	e.state = stateClosed
	e.failure = err
	e.sbuf.ring.releaseAll()
	e.rbuf.dropUnordered()
	e.resetPending = false
	e.lingerUntil = 0
}

// Reset ends the connection with err, as Fail does, but resets the peer
// too: a RESET goes out (its proof makes the peer believe it) before the
// engine is done, as after Abort.
func (e *Engine) Reset(err error) {
	if e.state != stateEstablished {
		e.Fail(err)
		return
	}
	e.Abort()
	e.failure = err
}

// ---- Receiving -------------------------------------------------------------

// Receive processes one received typeStream body (already CRC-checked and
// demultiplexed by connection ID). flags is the header's; nothing depends on
// it. Malformed bodies are dropped whole.
func (e *Engine) Receive(now time.Time, flags uint16, body []byte) {
	// The parsed packet lives on the caller's stack, not in the engine: it
	// is as big as an idle engine, and only one packet at a time needs it.
	var view packetView
	pv := &view
	if !parsePacket(body, pv) {
		e.stats.Malformed++
		return
	}
	t := e.clock(now)
	switch e.state {
	case stateSynSent:
		e.receiveSynSent(t, pv)
		return
	case stateClosed:
		e.receiveClosed(t, pv)
		return
	}
	if pv.hasSyn || pv.hasSA {
		return // a stale handshake packet (a duplicate SYN-ACK): nothing for us
	}
	pn := pv.pn
	// Packet numbers far from those seen, either way, are a blind guess
	// (RFC 5961's in-window check): nothing in the packet is believed.
	if e.haveRcvd && (pn > e.largestRcvd+maxPNJump || pn+maxPNJump < e.largestRcvd) {
		e.stats.Malformed++
		return
	}
	// So is a packet acknowledging packets we never sent. It must not be
	// recorded either: our ACKs would then report a number the peer never
	// used, and it would rightly ignore them all.
	if pv.hasAck && !e.ackPlausible(&pv.ack) {
		e.stats.Malformed++
		return
	}
	if pn >= e.rcvdFloor && e.rcvd.contains(pn) {
		e.stats.Dups++
		if pv.elicit {
			e.ackImmediate = true // our ACK may have been lost
			e.notePending(t)
		}
		return
	}
	if e.rcvCap > 0 && e.overCap(pv) {
		e.stats.MemDrops++
		return
	}
	if pv.hasReset {
		e.onReset(t, pv.proof)
		return
	}
	e.stats.PacketsRecv++
	e.lastRecv = t
	e.kaProbeAt = 0
	// Only a server with state for us sends anything but a SYN-ACK.
	e.confirmPending = false
	if pv.hasAck {
		e.onAckFrame(t, &pv.ack)
	}
	for i := 0; i < pv.nframes; i++ {
		f := &pv.frames[i]
		switch f.typ {
		case sfStream:
			e.onStream(t, f)
		case sfMaxData:
			if f.value > e.peerMaxData {
				e.peerMaxData = f.value
				e.persistCount = 0
			}
		case sfDataBlocked:
			e.onDataBlocked(t, f.value)
		case sfPing:
			e.ackImmediate = true
		}
		if e.state == stateClosed {
			return // the stream frame made us reset
		}
	}
	// The client's confirm is acknowledged in time, not at once: a
	// client that dialed and wrote has its request on the way, and the
	// ACK rides on the answer (the client repeats the confirm meanwhile).
	e.notePacket(t, pn, pv.elicit)
	e.maybeFinish(t)
}

// notePacket records a received packet number for ACKs.
func (e *Engine) notePacket(t time.Duration, pn uint64, elicit bool) {
	if e.haveRcvd && pn != e.largestRcvd+1 && elicit {
		e.ackImmediate = true // reordering or loss: tell the sender now
	}
	if !e.haveRcvd || pn > e.largestRcvd {
		e.largestRcvd, e.largestRTime, e.haveRcvd = pn, t, true
	}
	if pn < e.rcvdFloor {
		return // we stopped reporting this far back; the peer has given up on it
	}
	e.rcvd.add(pn, pn+1)
	if len(e.rcvd.r) > maxTrackedRanges {
		e.rcvdFloor = e.rcvd.r[1].lo
		e.rcvd.removeBelow(e.rcvdFloor)
	}
	if elicit {
		e.notePending(t)
	}
}

func (e *Engine) notePending(t time.Duration) {
	e.ackEliciting++
	if e.ackDeadline == 0 {
		e.ackDeadline = t + maxAckDelay
	}
}

// receiveSynSent handles the SYN-ACK (or a refusal) of our SYN.
func (e *Engine) receiveSynSent(t time.Duration, pv *packetView) {
	if pv.hasReset {
		// Refused: believed only if it echoes one of our SYNs.
		if pv.proof >= e.firstPN && pv.proof < e.nextPN {
			e.Fail(ErrRefused)
		}
		return
	}
	if !pv.hasSA || !pv.hasAck || pv.synAck.cid == 0 || int(pv.synAck.maxPacket) < MinMaxPacket {
		return
	}
	// The SYN-ACK must acknowledge one of our SYNs; the newest one it
	// acknowledges gives the first RTT sample (each SYN has its own number,
	// so the sample is unambiguous).
	var synPN uint64
	found := false
	for i := 0; i < pv.ack.n; i++ {
		r := pv.ack.ranges[i]
		if r.hi >= e.firstPN && r.lo < e.nextPN {
			synPN, found = min(r.hi, e.nextPN-1), true
			break
		}
	}
	if !found {
		return
	}
	if p := e.sent.at(synPN); p != nil {
		e.rtt.init(t - p.time)
	}
	sa := pv.synAck
	e.peerCID, e.peerNode = sa.cid, sa.node
	e.peerMaxData = min(sa.maxData, maxStreamOffset)
	e.sent.reset(e.nextPN) // the SYNs are done with
	e.largestRcvd, e.largestRTime, e.haveRcvd = pv.pn, t, true
	e.rcvdFloor = pv.pn + 1 // the SYN-ACK itself is not acknowledged
	e.establish(t, int(sa.maxPacket))
	e.confirm = confirmFrame{
		client:    hsParams{cid: e.localCID, maxData: e.rcvMaxAdv, maxPacket: uint16(e.cfg.MaxPacket), node: e.cfg.NodeID},
		server:    hsParams{maxData: sa.maxData, maxPacket: sa.maxPacket},
		rttMicros: uint32(min(e.rtt.smoothed/time.Microsecond, math.MaxUint32)),
	}
	e.confirmPending, e.confirmSend = true, true
}

// receiveClosed answers a packet that reaches a closed engine still
// lingering after it sent a RST: the peer has not seen it, so say it again.
func (e *Engine) receiveClosed(t time.Duration, pv *packetView) {
	if e.lingerUntil == 0 || pv.hasReset {
		return
	}
	if !e.haveRcvd || pv.pn > e.largestRcvd {
		e.largestRcvd, e.haveRcvd = pv.pn, true
	}
	if t-e.lastReset >= resetInterval {
		e.resetPending = true
	}
}

// onReset handles a RST. It carries the largest packet number the peer
// received from us; it is honoured only if that is one we sent and no older
// than the largest the peer has acknowledged (RFC 5961 in spirit: a blind
// attacker must guess a number within the packets in flight). Otherwise a
// challenge ACK, rate-limited per connection, tells a genuine peer that lost
// its state where we are.
func (e *Engine) onReset(t time.Duration, proof uint64) {
	floor := e.firstPN
	if e.haveAcked {
		floor = e.largestAcked
	}
	if proof >= floor && proof < e.nextPN {
		e.Fail(ErrReset)
		return
	}
	e.stats.Challenges++
	if e.challengeAt == 0 || t-e.challengeAt >= challengeInterval {
		e.challenge = true
		e.challengeAt = t
	}
}

// StatelessReset handles a stateless reset (SPEC.md §10.4): the peer's
// host says the connection is gone, echoing the packet number pn of a
// packet we sent it. As for a RESET's proof, pn must be one of ours and no
// older than the largest the peer acknowledged, so a blind attacker must
// guess a number in flight; then the connection fails with ErrReset and
// StatelessReset reports true. Unlike a RESET, a bad one is not
// challenged: the peer (if it lives) did not send it.
func (e *Engine) StatelessReset(now time.Time, pn uint64) bool {
	if e.state != stateEstablished {
		return false
	}
	floor := e.firstPN
	if e.haveAcked {
		floor = e.largestAcked
	}
	if pn < floor || pn >= e.nextPN {
		e.stats.Challenges++
		return false
	}
	e.Fail(ErrReset)
	return true
}

// Verify makes the connection probe its peer now (a PING carrying
// FlagProbe), on a hint that the peer may be gone: a live peer acknowledges
// it and nothing changes; a dead one's host answers with a stateless reset.
// Calls closer together than 100 ms are ignored, so hints cannot make a
// connection flood its peer.
func (e *Engine) Verify(now time.Time) {
	t := e.clock(now)
	if e.state != stateEstablished || (e.lastVerify != 0 && t-e.lastVerify < verifyInterval) {
		return
	}
	e.lastVerify = t
	e.pingSend, e.probeSend = true, true
}

// PeerCID is the connection ID the peer chose (zero before the handshake
// completes), which its packets' receiver demultiplexes by.
func (e *Engine) PeerCID() uint64 { return e.peerCID }

// PeerNode is the peer's stack as it told in the handshake (zero before it
// completes).
func (e *Engine) PeerNode() uint64 { return e.peerNode }

// onStream takes a STREAM frame.
func (e *Engine) onStream(t time.Duration, f *wireFrame) {
	off, end := f.value, f.value+uint64(len(f.data))
	if f.fin {
		if (e.peerFin && end != e.peerFinOff) || (!e.peerFin && end < e.rbuf.highest()) {
			e.stats.FlowViolations++
			return // contradicts what we know of the final size
		}
		if !e.peerFin {
			e.peerFin, e.peerFinOff = true, end
		}
		if e.finQueued {
			// Our FIN is written already: nothing of ours will
			// carry the ACK, and the peer's close waits on it.
			e.ackImmediate = true
		}
		// Else, as Linux does (pingpong mode after a FIN), the ACK
		// waits for what the application answers to the end of the
		// stream: usually its own FIN, a moment later.
	} else if e.peerFin && end > e.peerFinOff {
		e.stats.FlowViolations++
		return
	}
	hi := min(end, e.rcvMaxAdv)
	if end > e.rcvMaxAdv {
		e.stats.FlowViolations++ // beyond the window we gave: dropped
	}
	if off >= hi {
		return
	}
	if off != e.rbuf.contiguous() {
		e.ackImmediate = true // out of order, or filling a hole
	}
	data := f.data[:hi-off]
	e.ackBytes += len(data)
	if e.direct != nil && !e.appClosed && off <= e.rbuf.readOff && hi > e.rbuf.readOff && e.rbuf.readable() == 0 {
		// The next bytes in order, nothing ahead of them to read, and
		// a reader waiting: straight into its buffer, up to the first
		// piece already buffered.
		skip := e.rbuf.readOff - off
		n := min(uint64(cap(e.direct)-len(e.direct)), hi-e.rbuf.readOff)
		if !e.rbuf.have.empty() {
			n = min(n, e.rbuf.have.first().lo-e.rbuf.readOff)
		}
		if n > 0 {
			e.direct = append(e.direct, data[skip:skip+n]...)
			e.rbuf.consumeInOrder(int(n))
			e.stats.BytesRecv += n
			data, off = data[skip+n:], off+skip+n
		}
	}
	fresh, _ := e.rbuf.insert(off, data)
	e.stats.BytesRecv += uint64(fresh)
	if fresh > 0 && e.appClosed {
		e.Abort() // data nobody will read: reset, as TCP does after close
	}
}

// onDataBlocked answers the peer's DATA_BLOCKED: it is stuck at limit. We
// re-send Max Data (it may have lost our last one) and, if our reader has
// drained everything, the window was what held it back, so it grows.
func (e *Engine) onDataBlocked(t time.Duration, limit uint64) {
	e.maxDataPending = true
	e.ackImmediate = true
	if limit >= e.rcvMaxAdv && e.rbuf.buffered() == 0 && e.rcvWindow < uint64(e.cfg.RecvBuffer) && e.rcvCap == 0 {
		e.rcvWindow = min(2*e.rcvWindow, uint64(e.cfg.RecvBuffer))
		e.rcvMaxAdv = max(e.rcvMaxAdv, e.rbuf.readOff+e.rcvWindow)
	}
}

// updateWindow advances Max Data as the reader consumes data: once a quarter
// of the window can be granted again, auto-tuning first doubles the window
// (up to RecvBuffer) if the last one lasted less than two RTTs' worth of
// consumption, as quic-go does.
func (e *Engine) updateWindow(t time.Duration) {
	if e.appClosed || e.peerFin {
		return
	}
	readOff := e.rbuf.readOff
	if e.rcvCap > 0 {
		// Short of memory: grant no more than the cap allows, so the
		// peer sends nothing the cap would drop, and do not grow.
		win := min(e.rcvWindow, uint64(e.rcvCap))
		if readOff+win >= e.rcvMaxAdv+win/4 {
			e.rcvMaxAdv = readOff + win
			e.maxDataPending = true
		}
		return
	}
	if readOff+e.rcvWindow < e.rcvMaxAdv+e.rcvWindow/4 {
		return
	}
	if consumed := readOff - e.epochOff; consumed > e.rcvWindow/2 {
		frac := float64(consumed) / float64(e.rcvWindow)
		if e.rtt.hasSample && e.rcvWindow < uint64(e.cfg.RecvBuffer) &&
			float64(t-e.epochStart) < 4*frac*float64(e.rtt.smoothed) {
			e.rcvWindow = min(2*e.rcvWindow, uint64(e.cfg.RecvBuffer))
		}
		e.epochStart, e.epochOff = t, readOff
	}
	e.rcvMaxAdv = readOff + e.rcvWindow
	e.maxDataPending = true
}

// maybeFinish moves a connection whose both directions are done into
// TIME-WAIT (a few probe timeouts to acknowledge a retransmitted FIN), and
// notices the end of an orphaned FIN-WAIT-2.
func (e *Engine) maybeFinish(t time.Duration) {
	if e.state != stateEstablished {
		return
	}
	if e.appClosed && e.finAcked && e.closedAt == 0 {
		e.closedAt = t
	}
	if e.timeWait == 0 && e.finAcked && e.eofReached() {
		e.timeWait = t + max(3*e.basePTO(), minTimeWait)
	}
}

// ---- Sending ---------------------------------------------------------------

// NextPacket builds the next packet to send now into out (which must hold
// the configured MaxPacket) and returns its length, the header flags and the
// destination connection ID; n is 0 when there is nothing to send. It
// respects the congestion window (except for probes and small control
// frames), flow control and Nagle.
func (e *Engine) NextPacket(now time.Time, out []byte) (n int, flags uint16, dstCID uint64) {
	t := e.clock(now)
	switch e.state {
	case stateSynSent:
		if t < e.synNext || len(out) < pnLen+synFrameLen {
			return 0, 0, 0
		}
		return e.buildSyn(t, out), FlagSYN, 0
	case stateClosed:
		if !e.resetPending || len(out) < pnLen+resetFrameLen {
			return 0, 0, 0
		}
		return e.buildReset(t, out), 0, e.peerCID
	}
	n, probe := e.buildPacket(t, out)
	if probe {
		return n, FlagProbe, e.peerCID
	}
	return n, 0, e.peerCID
}

func (e *Engine) buildSyn(t time.Duration, out []byte) int {
	pn := e.nextPN
	n := putPN(out, pn)
	n += putHandshakeFrame(out[n:], sfSyn, hsParams{cid: e.localCID, maxData: e.rcvMaxAdv, maxPacket: uint16(e.cfg.MaxPacket), node: e.cfg.NodeID})
	e.nextPN++
	e.sent.push(sentPacket{time: t, size: uint16(n), flags: spSyn, state: spNone})
	e.synNext = t + e.synRTO
	e.synRTO = min(2*e.synRTO, synMaxRTO)
	e.stats.PacketsSent++
	return n
}

func (e *Engine) buildReset(t time.Duration, out []byte) int {
	n := putPN(out, e.nextPN)
	e.nextPN++
	n += putU64Frame(out[n:], sfReset, e.largestRcvd)
	e.resetPending = false
	e.lastReset = t
	if e.lingerUntil == 0 {
		e.lingerUntil = t + max(3*e.basePTO(), minResetLinger)
	}
	e.stats.PacketsSent++
	return n
}

// userTimeout is how long ack-eliciting packets may stay unacknowledged
// before the connection fails: the configured UserTimeout, but at least
// userTimeoutRTTs smoothed RTTs. Once the RTT is seconds long, as on a
// starved host, probes go out once a smoothed RTT (see backoff), and a
// shorter timeout would give up on a live peer before its answers to them
// could come back.
func (e *Engine) userTimeout() time.Duration {
	return max(e.cfg.UserTimeout, userTimeoutRTTs*e.rtt.floor())
}

// awaitingAck reports whether data or frames we sent are unacknowledged:
// the UserTimeout clock runs.
func (e *Engine) awaitingAck() bool { return e.elicitInFlight > 0 || !e.lost.empty() }

// segSize is the most STREAM payload a packet carries: the packet size less
// the packet number, the STREAM header and ackReserve bytes for an ACK frame
// and control frames.
func (e *Engine) segSize() int {
	return e.sendMax - pnLen - streamFrameHdrLen - ackReserve
}

// flowBlocked reports whether data is waiting only for the peer's window.
func (e *Engine) flowBlocked() bool {
	return e.sndNxt >= e.peerMaxData && e.sbuf.end > e.peerMaxData && e.lost.empty()
}

// ackDue reports whether an ACK must go out now even without data.
func (e *Engine) ackDue(t time.Duration) bool {
	if e.challenge {
		return true
	}
	// Every second packet, as RFC 9000 and Linux do, but only once they
	// hold more than one full segment (Linux's rule): two small packets
	// of a request are acknowledged by the answer, not by an ACK of their
	// own, which costs the sender a system call and the receiver a wake-up
	// (unlike a kernel's ACK, ours are handled in user space).
	return e.ackEliciting > 0 && (e.ackImmediate || (e.ackEliciting >= 2 && e.ackBytes > e.segSize()) || t >= e.ackDeadline)
}

// buildPacket assembles one packet of an established connection: control
// frames, one STREAM frame, then an ACK frame in the room left. It returns 0,
// having changed nothing but the window bookkeeping, when nothing needs
// sending.
//
// probe reports whether the packet asks if the peer is alive: a probe
// timeout's, a keepalive's or Verify's; the header then carries FlagProbe.
func (e *Engine) buildPacket(t time.Duration, out []byte) (n int, probe bool) {
	limit := min(len(out), e.sendMax)
	if limit < pnLen+streamFrameHdrLen+1 {
		return 0, false
	}
	e.updateWindow(t)
	pn := e.nextPN
	n = putPN(out, pn)
	var rec sentPacket
	ackDue := e.ackDue(t)
	ackWanted := (e.ackEliciting > 0 || e.challenge) && !e.rcvd.empty()
	ptoProbe := e.probes > 0
	if e.confirmPending {
		n += putConfirmFrame(out[n:], &e.confirm)
		rec.flags |= spConfirm
	}
	if e.maxDataPending || (ptoProbe && !e.peerFin && !e.appClosed) {
		// A probe repeats Max Data too: if the peer is waiting for it, the
		// probe is what it needs.
		n += putU64Frame(out[n:], sfMaxData, e.rcvMaxAdv)
		rec.flags |= spMaxData
	}
	if e.flowBlocked() && e.blockedSent != e.peerMaxData {
		// Once per limit, again when lost or when the persist timer fires.
		n += putU64Frame(out[n:], sfDataBlocked, e.peerMaxData)
		rec.flags |= spBlocked
	}
	// Data, if the window allows (probes ignore it). Segments are at most
	// segSize, for new data and retransmissions alike, and the ACK frame
	// goes last in whatever room remains: so a lost packet's data fits in
	// one retransmission whatever the ACK frame has grown to.
	delay := uint64(max(t-e.largestRTime, 0) / time.Microsecond)
	minAck := 0
	if ackWanted {
		minAck = minAckLen(&e.rcvd, delay)
	}
	room := min(e.segSize(), limit-n-streamFrameHdrLen-minAck)
	if room > 0 && (ptoProbe || e.bytesInFlight < e.cc.window()) {
		if r, retx := e.pickData(room, ptoProbe); r.lo < r.hi {
			dataEnd := e.sbuf.end
			if e.finQueued {
				dataEnd = e.finOff
			}
			dlen := int(min(r.hi, dataEnd) - r.lo)
			fin := e.finQueued && r.hi == e.finOff+1
			n += putStreamHeader(out[n:], r.lo, dlen, fin)
			e.sbuf.ring.read(r.lo, out[n:n+dlen])
			n += dlen
			rec.flags |= spData
			rec.off, rec.n = r.lo, uint32(r.hi-r.lo)
			if retx {
				rec.flags |= spRetx
				e.lost.remove(r.lo, r.hi)
				e.stats.PacketsRetx++
				e.stats.BytesRetx += uint64(dlen)
			} else {
				e.sndNxt = max(e.sndNxt, r.hi)
				e.stats.BytesSent += uint64(dlen)
			}
		}
	}
	if ackWanted {
		if k := putAckFrame(out[n:], limit-n-1, &e.rcvd, delay); k > 0 {
			rec.flags |= spAck
			rec.ackLargest = e.rcvd.last().hi - 1
			n += k
		}
	}
	elicit := rec.flags&(spData|spMaxData|spBlocked) != 0 || e.confirmSend
	if !elicit && (ptoProbe || e.pingSend || (ackDue && rec.flags&spAck != 0 && e.nonEliciting >= maxNonEliciting)) {
		// An ACK-only packet now and then carries a PING so the peer
		// acknowledges it and we learn which ACK ranges to stop repeating.
		out[n] = sfPing
		n++
		rec.flags |= spPing
		elicit = true
	}
	if !elicit && !(ackDue && rec.flags&spAck != 0) {
		return 0, false
	}
	probe = ptoProbe || (e.probeSend && rec.flags&spPing != 0)
	// Commit.
	e.nextPN++
	e.stats.PacketsSent++
	rec.time = t
	rec.size = uint16(n)
	if rec.flags&spAck != 0 {
		if e.challenge {
			e.stats.ChallengeAcks++
		}
		e.ackEliciting, e.ackBytes, e.ackImmediate, e.ackDeadline, e.challenge = 0, 0, false, 0, false
	}
	if rec.flags&spMaxData != 0 {
		e.maxDataPending = false
	}
	e.confirmSend = false
	if rec.flags&spBlocked != 0 {
		e.blockedSent = e.peerMaxData
	}
	if rec.flags&spPing != 0 {
		e.pingSend, e.probeSend = false, false
		// Only an idle connection's PING is a keepalive probe: with data
		// in flight, a PING is a loss probe, and the user timeout rules.
		if e.kaProbeAt == 0 && e.elicitInFlight == 0 && e.cfg.KeepAlive > 0 && t-e.lastRecv >= e.keepAliveIdle() {
			e.kaProbeAt = t
		}
	}
	if elicit {
		rec.flags |= spInFlight
		rec.state = spLive
		e.bytesInFlight += n
		e.elicitInFlight++
		e.lastElicitSent = t
		e.nonEliciting = 0
		if e.unackedSince == 0 {
			e.unackedSince = t
		}
		if ptoProbe {
			e.probes--
		}
		e.cc.onPacketSent(t, pn, n)
	} else {
		e.nonEliciting++
	}
	e.sent.push(rec)
	e.sent.trim()
	return n, probe
}

// pickData chooses the STREAM range (virtual offsets) for a packet with
// room bytes of payload: lost data first, then new data within the peer's
// window (holding a sub-packet tail back under Nagle while data is
// unacknowledged), and for a probe with neither, the oldest unacknowledged
// data again.
func (e *Engine) pickData(room int, probe bool) (r seqRange, retx bool) {
	if !e.lost.empty() {
		l := e.lost.first()
		return seqRange{l.lo, min(l.hi, l.lo+uint64(room))}, true
	}
	if probe && e.ptoCount > 1 {
		// A probe timer that fired twice in a row: the peer took none
		// of the last probe, whose new data may be what it cannot take
		// (a receiver short of memory, SetRecvCap, drops what lies
		// beyond what it holds). The oldest data it lacks it always
		// takes, as a TCP retransmission timeout resends it.
		if g := e.acked.firstGap(e.sndUna, e.sndNxt); g.lo < g.hi {
			return seqRange{g.lo, min(g.hi, g.lo+uint64(room))}, true
		}
	}
	vEnd, lim := e.sbuf.end, min(e.sbuf.end, e.peerMaxData)
	if e.finQueued {
		vEnd = e.finOff + 1
		if e.peerMaxData >= e.finOff {
			lim = vEnd
		}
	}
	if e.sndNxt < lim {
		end := min(lim, e.sndNxt+uint64(room))
		full := end-e.sndNxt == uint64(room)
		finNow := e.finQueued && end == vEnd
		if !e.cfg.NoDelay && !probe && !full && !finNow && e.sndNxt > e.sndUna {
			return seqRange{}, false // Nagle: a small tail waits for the ACK or a full packet
		}
		return seqRange{e.sndNxt, end}, false
	}
	if probe && e.sndUna < e.sndNxt {
		g := e.acked.firstGap(e.sndUna, e.sndNxt)
		if g.lo < g.hi {
			return seqRange{g.lo, min(g.hi, g.lo+uint64(room))}, true
		}
	}
	return seqRange{}, false
}

// ---- Timers ----------------------------------------------------------------

// NextTimer is when OnTimer should run next; the zero time means no timer.
func (e *Engine) NextTimer() time.Time {
	var d time.Duration
	at := func(x time.Duration) {
		if x != 0 && (d == 0 || x < d) {
			d = x
		}
	}
	switch e.state {
	case stateSynSent:
		at(e.synNext)
		at(e.hsDeadline)
	case stateClosed:
		at(e.lingerUntil)
	case stateEstablished:
		if e.ackEliciting > 0 {
			at(e.ackDeadline)
		}
		at(e.lossTimer())
		if e.unackedSince != 0 && e.awaitingAck() {
			at(e.unackedSince + e.userTimeout())
		}
		if ka := e.cfg.KeepAlive; ka > 0 {
			if e.kaProbeAt != 0 {
				at(e.kaProbeAt + e.keepAliveTimeout())
			} else if e.elicitInFlight == 0 {
				at(e.lastRecv + e.keepAliveIdle())
			}
		}
		at(e.timeWait)
		if e.closedAt != 0 && !e.peerFin {
			at(e.closedAt + e.cfg.UserTimeout)
		}
	}
	if d == 0 {
		return time.Time{}
	}
	return e.wall(d)
}

// OnTimer runs whatever timers have expired by now.
func (e *Engine) OnTimer(now time.Time) {
	t := e.clock(now)
	switch e.state {
	case stateSynSent:
		if t >= e.hsDeadline {
			e.Fail(ErrTimeout)
		}
		return
	case stateClosed:
		if e.lingerUntil != 0 && t >= e.lingerUntil {
			e.lingerUntil = 0
			e.resetPending = false
		}
		return
	}
	if e.unackedSince != 0 && e.awaitingAck() && t-e.unackedSince >= e.userTimeout() {
		e.Fail(ErrTimeout)
		return
	}
	e.compact(t)
	if ka := e.cfg.KeepAlive; ka > 0 {
		if e.kaProbeAt != 0 && t-e.kaProbeAt >= e.keepAliveTimeout() {
			e.Fail(ErrTimeout)
			return
		}
		if e.kaProbeAt == 0 && e.elicitInFlight == 0 && t-e.lastRecv >= e.keepAliveIdle() {
			e.pingSend, e.probeSend = true, true
		}
	}
	if e.timeWait != 0 && t >= e.timeWait {
		e.state = stateClosed
		e.sbuf.ring.releaseAll()
		return
	}
	if e.closedAt != 0 && !e.peerFin && t-e.closedAt >= e.cfg.UserTimeout {
		e.state = stateClosed // orphaned FIN-WAIT-2 gives up silently, as Linux does
		e.rbuf.release()
		return
	}
	e.onLossTimer(t)
}

// keepAliveIdle is how long the connection idles before a keepalive PING:
// the period less a jitter of up to an eighth of it, drawn afresh for each
// idle stretch from the connection ID and the time it began. Both ends of
// a connection start idling at the same packet; without jitter their PINGs
// cross and both are answered, while with it one end's PING comes first
// and restarts the other's idle time, so an idle connection costs one PING
// and one ACK a period, not two of each. It also spreads the PINGs of
// connections opened together.
func (e *Engine) keepAliveIdle() time.Duration {
	ka := e.cfg.KeepAlive
	return ka - time.Duration(mix64(e.localCID^uint64(e.lastRecv))%uint64(ka/8+1))
}

// keepAliveTimeout is how long a keepalive probe may go unanswered: the
// keepalive period or keepAliveProbeTimeout, whichever is shorter, but as
// the user timeout, never under userTimeoutRTTs smoothed RTTs. On a host
// starved of CPU, RTT samples reach seconds; a probe timeout shorter than
// the RTT would fail a live connection whose answer is merely queued.
func (e *Engine) keepAliveTimeout() time.Duration {
	return max(min(e.cfg.KeepAlive, keepAliveProbeTimeout), userTimeoutRTTs*e.rtt.floor())
}

// mix64 is splitmix64's finaliser: a cheap, well-spread hash.
func mix64(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// compact gives back the memory a connection grew for traffic it no longer
// has, once it has sent and received nothing for idleCompact: the sent
// packet records, the buffers' chunk slots, the lost-packet records. Busy
// connections keep what they grew, so moving data allocates nothing, while
// one left idle after a bulk transfer shrinks to the size of a new one at
// its next timer (the keepalive, say).
func (e *Engine) compact(t time.Duration) {
	if t-e.lastElicitSent < idleCompact || t-e.lastRecv < idleCompact {
		return
	}
	e.sent.shrink()
	e.sbuf.ring.shrink()
	e.rbuf.ring.shrink()
	if len(e.lostRecs) == 0 {
		e.lostRecs = nil
	}
}

// ---- Introspection ---------------------------------------------------------

// Info is a snapshot of a connection's state (the root package's Conn.Info).
type Info struct {
	State                           string // TCP's name for the state
	SRTT, RTTVar, MinRTT, LatestRTT time.Duration
	PTO                             time.Duration // current probe timeout, with backoff
	Cwnd, Ssthresh, BytesInFlight   int
	BytesSent, BytesReceived        uint64 // stream bytes: first transmissions; fresh bytes received
	BytesRetransmitted              uint64
	PacketsSent, PacketsReceived    uint64
	PacketsRetransmitted            uint64 // packets carrying retransmitted data
	PacketsLost, SpuriousLosses     uint64
	ProbeTimeouts                   uint64
	SendWindow                      uint64 // peer's Max Data minus our next offset
	RecvWindow                      uint64 // our Max Data minus what the reader consumed
	SendBuffered, RecvBuffered      int    // bytes held
	MemoryHeld                      int    // bytes of chunks held by both buffers
	PacketThreshold                 uint64 // current reordering threshold
}

// Info returns a snapshot of the connection.
func (e *Engine) Info(now time.Time) Info {
	in := Info{
		State:                e.stateName(),
		SRTT:                 e.rtt.smoothed,
		RTTVar:               e.rtt.variance,
		MinRTT:               e.rtt.min,
		LatestRTT:            e.rtt.latest,
		PTO:                  e.ptoPeriod(),
		BytesInFlight:        e.bytesInFlight,
		BytesSent:            e.stats.BytesSent,
		BytesReceived:        e.stats.BytesRecv,
		BytesRetransmitted:   e.stats.BytesRetx,
		PacketsSent:          e.stats.PacketsSent,
		PacketsReceived:      e.stats.PacketsRecv,
		PacketsRetransmitted: e.stats.PacketsRetx,
		PacketsLost:          e.stats.PacketsLost,
		SpuriousLosses:       e.stats.Spurious,
		ProbeTimeouts:        e.stats.PTOs,
		SendBuffered:         int(e.sbuf.end - e.sbuf.una),
		RecvBuffered:         e.rbuf.buffered(),
		MemoryHeld:           (e.sbuf.ring.held + e.rbuf.ring.held) * chunkSize,
		PacketThreshold:      e.pktThreshold,
	}
	if e.cc != nil {
		in.Cwnd, in.Ssthresh = e.cc.window(), e.cc.slowStartThreshold()
	}
	if e.peerMaxData > e.sndNxt {
		in.SendWindow = e.peerMaxData - e.sndNxt
	}
	if e.rcvMaxAdv > e.rbuf.readOff {
		in.RecvWindow = e.rcvMaxAdv - e.rbuf.readOff
	}
	return in
}

// Stats returns the connection's cumulative counters.
func (e *Engine) Stats() Stats { return e.stats }

// Config returns the configuration in effect: defaults filled in and
// changed by the Set methods since.
func (e *Engine) Config() Config { return e.cfg }

// PacketLimit is the largest packet body the connection sends: the smaller
// of both ends' MaxPacket, lowered by LimitPacket; 0 before the handshake.
func (e *Engine) PacketLimit() int { return e.sendMax }

// Delivered reports whether everything written, and the FIN once Close or
// CloseWrite queued it, is acknowledged, or the connection is over: what a
// lingering close waits for.
func (e *Engine) Delivered() bool {
	return e.state == stateClosed || e.failure != nil || e.sbuf.una == e.sbuf.end && (!e.finQueued || e.finAcked)
}

// LargestReceived is the largest packet number received from the peer.
func (e *Engine) LargestReceived() uint64 { return e.largestRcvd }

func (e *Engine) stateName() string {
	switch e.state {
	case stateSynSent:
		return "SYN-SENT"
	case stateClosed:
		return "CLOSED"
	}
	switch {
	case e.timeWait != 0:
		return "TIME-WAIT"
	case e.finQueued && e.peerFin && !e.finAcked:
		if e.eofReached() {
			return "LAST-ACK"
		}
		return "CLOSING"
	case e.finQueued && e.finAcked:
		return "FIN-WAIT-2"
	case e.finQueued:
		return "FIN-WAIT-1"
	case e.peerFin:
		return "CLOSE-WAIT"
	}
	return "ESTABLISHED"
}

// eofReached reports whether every byte up to the peer's FIN has arrived.
func (e *Engine) eofReached() bool { return e.peerFin && e.rbuf.contiguous() >= e.peerFinOff }
