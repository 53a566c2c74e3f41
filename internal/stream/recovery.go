package stream

import (
	"time"
)

// Loss detection and recovery constants (RFC 9002 unless said otherwise).
const (
	timerGranularity  = time.Millisecond       // kGranularity: no timer is shorter
	maxAckDelay       = time.Millisecond       // how long a receiver may sit on an ACK; a protocol constant here
	initialRTT        = 100 * time.Millisecond // RTT assumed before any sample (the server without a client estimate)
	maxPTO            = time.Second            // backoff cap (the smoothed RTT if longer): a dead peer is probed at least this often
	packetThreshold   = 3                      // kPacketThreshold
	maxPktThreshold   = 256                    // adaptive reordering threshold cap
	maxPNJump         = 1 << 24                // a packet number this far ahead of the largest seen is not believed
	maxTrackedRanges  = 64                     // received packet-number ranges remembered for ACKs
	maxLostRecords    = 1024                   // recently lost packets kept to recognise spurious losses
	maxNonEliciting   = 16                     // ACK-only packets in a row before one carries a PING
	controlProbeFloor = 250 * time.Millisecond // first probe timeout of a flight without data (ptoPeriod)
	persistentFactor  = 3                      // kPersistentCongestionThreshold
)

// sentPacket is what the sender remembers about a packet until it is
// acknowledged or declared lost.
type sentPacket struct {
	time       time.Duration // when it was sent
	off        uint64        // STREAM range [off, off+n) in virtual offsets (the FIN is the byte at the final size)
	ackLargest uint64        // largest packet number acknowledged by the ACK frame it carried
	n          uint32
	size       uint16 // body bytes; counted in flight when spInFlight
	flags      uint16
	state      uint8
}

// sentPacket flags.
const (
	spInFlight uint16 = 1 << iota // counts towards bytes in flight (ack-eliciting)
	spData                        // carries a STREAM frame
	spRetx                        // the STREAM data was sent before
	spAck                         // carries an ACK frame; ackLargest is valid
	spMaxData                     // carries MAX_DATA
	spBlocked                     // carries DATA_BLOCKED
	spConfirm                     // carries the handshake confirmation
	spPing                        // carries PING
	spSyn                         // a SYN (client, before the handshake completes)
)

// sentPacket states.
const (
	spNone  uint8 = iota // nothing to wait for (ACK-only) or already resolved
	spLive               // in flight, awaiting acknowledgment
	spAcked              // acknowledged
	spLost               // declared lost
)

// sentRing holds sentPacket records for packet numbers [base, base+n),
// consecutive because every packet gets the next number. Resolved records are
// dropped from the front, so base is the oldest packet that may still be
// acknowledged or lost. It grows by doubling from sentRingMin records (an
// idle connection needs a few); Engine.compact gives an empty ring's buffer
// back once the connection has gone quiet.
type sentRing struct {
	buf  []sentPacket
	head int
	n    int
	base uint64
}

func (r *sentRing) reset(base uint64) {
	r.head, r.n, r.base = 0, 0, base
}

// push appends the record for packet number base+n.
func (r *sentRing) push(p sentPacket) {
	if r.n == len(r.buf) {
		nb := make([]sentPacket, max(sentRingMin, 2*len(r.buf)))
		for i := 0; i < r.n; i++ {
			nb[i] = r.buf[(r.head+i)&(len(r.buf)-1)]
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = p
	r.n++
}

// sentRingMin is the records a ring starts with; a power of two.
const sentRingMin = 8

// shrink gives back the buffer of an empty ring.
func (r *sentRing) shrink() {
	if r.n == 0 {
		r.buf, r.head = nil, 0
	}
}

// at returns the record for pn, or nil if pn is outside the ring.
func (r *sentRing) at(pn uint64) *sentPacket {
	if pn < r.base || pn-r.base >= uint64(r.n) {
		return nil
	}
	return &r.buf[(r.head+int(pn-r.base))&(len(r.buf)-1)]
}

// trim drops resolved records from the front.
func (r *sentRing) trim() {
	for r.n > 0 && r.buf[r.head].state != spLive {
		r.head = (r.head + 1) & (len(r.buf) - 1)
		r.n--
		r.base++
	}
}

// lostRecord remembers a packet declared lost, so that a late ACK for it
// shows the loss was spurious (reordering) and its data need not be sent
// again.
type lostRecord struct {
	pn      uint64
	off     uint64
	n       uint32
	flags   uint16
	time    time.Duration // when it was declared lost
	largest uint64        // largest acknowledged when it was declared lost
	event   uint64        // the congestion event (window cut) it belongs to
}

// onAckFrame processes an ACK frame (RFC 9002 §A.7).
// ackPlausible reports whether a acknowledges only packets we sent.
func (e *Engine) ackPlausible(a *ackFrame) bool {
	return a.largest() < e.nextPN && a.ranges[a.n-1].lo >= e.firstPN
}

func (e *Engine) onAckFrame(t time.Duration, a *ackFrame) {
	largest := a.largest()
	if !e.ackPlausible(a) {
		return // acknowledges packets we never sent: ignore the frame
	}
	priorInFlight := e.bytesInFlight
	ccNotified := false
	newlyAcked, elicitAcked, largestNew := false, false, false
	var largestSent time.Duration
	// Ascending order, so congestion control sees packets as sent.
	for i := a.n - 1; i >= 0; i-- {
		r := a.ranges[i]
		e.checkSpurious(t, r)
		lo := max(r.lo, e.sent.base)
		for pn := lo; pn <= r.hi; pn++ {
			p := e.sent.at(pn)
			if p == nil {
				break
			}
			if p.state != spLive {
				continue // already acknowledged, or lost (checkSpurious saw it)
			}
			p.state = spAcked
			newlyAcked = true
			if pn == largest {
				largestNew, largestSent = true, p.time
			}
			if p.flags&spInFlight != 0 {
				elicitAcked = true
				e.bytesInFlight -= int(p.size)
				e.elicitInFlight--
				if !ccNotified {
					e.cc.onAck(t, priorInFlight)
					ccNotified = true
				}
				e.cc.onPacketAcked(t, pn, int(p.size), p.time)
			}
			if p.flags&spData != 0 {
				e.onDataAcked(p.off, uint64(p.n))
			}
			if p.flags&spAck != 0 {
				e.onAckAcked(p.ackLargest)
			}
			if p.flags&spConfirm != 0 {
				e.confirmPending = false
			}
		}
	}
	if !e.haveAcked || largest > e.largestAcked {
		e.largestAcked, e.haveAcked = largest, true
	}
	if !newlyAcked {
		return
	}
	if largestNew && elicitAcked {
		delay := time.Duration(min(a.delay, uint64(maxAckDelay/time.Microsecond))) * time.Microsecond
		e.rtt.update(t-largestSent, delay)
		e.cc.onRTTSample(e.rtt.latest)
	}
	e.detectLost(t)
	e.ptoCount = 0
	if elicitAcked {
		if e.awaitingAck() {
			e.unackedSince = t
		} else {
			e.unackedSince = 0
		}
	}
	e.sent.trim()
	e.maybeFinish(t)
}

// onDataAcked records that the virtual stream range [off, off+n) arrived.
func (e *Engine) onDataAcked(off, n uint64) {
	lo, hi := max(off, e.sndUna), off+n
	if lo >= hi {
		return // a copy of data already acknowledged
	}
	e.acked.add(lo, hi)
	e.lost.remove(lo, hi)
	if f := e.acked.first(); f.lo <= e.sndUna {
		e.sndUna = f.hi
		e.acked.removeBelow(f.hi)
		e.sbuf.ackTo(e.sndUna)
		if e.finQueued && e.sndUna > e.finOff {
			e.finAcked = true
		}
	}
}

// onAckAcked is called when the peer acknowledges a packet of ours that
// carried an ACK frame whose largest acknowledged was largest: the peer knows
// about every packet up to it, so we stop reporting them (RFC 9000 §13.2.4).
// The largest packet number received stays, so an ACK (a challenge ACK above
// all) can always be built.
func (e *Engine) onAckAcked(largest uint64) {
	if f := min(largest+1, e.largestRcvd); f > e.rcvdFloor {
		e.rcvdFloor = f
		e.rcvd.removeBelow(f)
	}
}

// checkSpurious looks for packets in the acknowledged range r that were
// declared lost: their loss was spurious (they were only reordered). Their
// data no longer needs retransmitting, and the packet threshold grows to the
// reordering seen, as RFC 9002 §6.1.1 allows.
func (e *Engine) checkSpurious(t time.Duration, r pnRange) {
	if len(e.lostRecs) == 0 || e.lostRecs[len(e.lostRecs)-1].pn < r.lo || e.lostRecs[0].pn > r.hi {
		return
	}
	// Binary search for the first record at or above r.lo.
	lo, hi := 0, len(e.lostRecs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if e.lostRecs[m].pn < r.lo {
			lo = m + 1
		} else {
			hi = m
		}
	}
	for i := lo; i < len(e.lostRecs) && e.lostRecs[i].pn <= r.hi; i++ {
		lr := &e.lostRecs[i]
		if lr.flags == 0 {
			continue // already handled
		}
		e.stats.Spurious++
		if lr.flags&spData != 0 && lr.off+uint64(lr.n) > e.sndUna {
			e.onDataAcked(lr.off, uint64(lr.n))
		}
		if d := lr.largest - lr.pn + 1; d > e.pktThreshold {
			e.pktThreshold = min(d, maxPktThreshold)
		}
		if lr.event == e.ccEvent && e.ccEvent != 0 {
			e.ccEventSpurious++
			if e.ccEventSpurious == e.ccEventLost {
				e.cc.undo() // the cut was for nothing
				e.stats.Undos++
			}
		}
		lr.flags = 0
	}
}

// detectLost declares lost the packets sent long enough before, or enough
// packet numbers below, the largest acknowledged (RFC 9002 §6.1), and sets
// the time-threshold timer for the others.
func (e *Engine) detectLost(t time.Duration) {
	e.lossTime = 0
	if !e.haveAcked {
		return
	}
	lossDelay := e.rtt.lossDelay()
	lostSendTime := t - lossDelay
	nLost := 0
	var newestLost, runStart time.Duration
	persistent := false
	runOpen := false
	pto := e.rtt.pto()
	end := min(e.largestAcked, e.sent.base+uint64(e.sent.n))
	for pn := e.sent.base; pn < end; pn++ {
		p := e.sent.at(pn)
		switch p.state {
		case spAcked:
			runOpen = false
			continue
		case spLive:
		default:
			continue
		}
		if p.time > lostSendTime && e.largestAcked < pn+e.pktThreshold {
			lt := p.time + lossDelay
			if e.lossTime == 0 || lt < e.lossTime {
				e.lossTime = lt
			}
			runOpen = false
			continue
		}
		e.onLost(t, pn, p)
		nLost++
		newestLost = max(newestLost, p.time)
		if p.flags&spInFlight != 0 {
			if !runOpen {
				runOpen, runStart = true, p.time
			} else if p.time-runStart > persistentFactor*pto && e.rtt.hasSample {
				persistent = true
			}
		}
	}
	if nLost > 0 {
		if !e.awaitingAck() {
			e.unackedSince = 0 // only frames nobody needs again were lost (a PING)
		}
		// Losses in a recovery period that already cut belong to its event:
		// the cut is undone only if every one of them proves spurious.
		if e.cc.onCongestionEvent(t, newestLost) {
			e.ccEvent++
			e.ccEventLost, e.ccEventSpurious = 0, 0
		}
		e.ccEventLost += nLost
		for i := max(len(e.lostRecs)-nLost, 0); i < len(e.lostRecs); i++ {
			e.lostRecs[i].event = e.ccEvent
		}
		if persistent {
			e.cc.onPersistentCongestion()
			e.stats.Persistent++
		}
	}
}

// onLost handles one packet declared lost: whatever it carried that still
// matters is queued again. Data goes to the retransmission set minus what
// has been acknowledged since.
func (e *Engine) onLost(t time.Duration, pn uint64, p *sentPacket) {
	p.state = spLost
	e.stats.PacketsLost++
	if p.flags&spInFlight != 0 {
		e.bytesInFlight -= int(p.size)
		e.elicitInFlight--
	}
	if p.flags&spData != 0 {
		lo, hi := max(p.off, e.sndUna), p.off+uint64(p.n)
		for lo < hi {
			g := e.acked.firstGap(lo, hi)
			if g.lo >= g.hi {
				break
			}
			e.lost.add(g.lo, g.hi)
			lo = g.hi
		}
	}
	if p.flags&spMaxData != 0 {
		e.maxDataPending = true
	}
	if p.flags&spBlocked != 0 {
		e.blockedSent = noLimit // say it again if still blocked
	}
	// Remember it to recognise a spurious loss.
	e.expireLostRecs(t)
	if len(e.lostRecs) == maxLostRecords {
		copy(e.lostRecs, e.lostRecs[1:])
		e.lostRecs = e.lostRecs[:len(e.lostRecs)-1]
	}
	e.lostRecs = append(e.lostRecs, lostRecord{
		pn: pn, off: p.off, n: p.n, flags: p.flags | spInFlight, time: t, largest: e.largestAcked,
	})
}

// expireLostRecs forgets losses old enough that a reordered original can no
// longer be expected: a probe timeout.
func (e *Engine) expireLostRecs(t time.Duration) {
	horizon := t - e.rtt.pto()
	i := 0
	for i < len(e.lostRecs) && e.lostRecs[i].time < horizon {
		i++
	}
	if i > 0 {
		n := copy(e.lostRecs, e.lostRecs[i:])
		e.lostRecs = e.lostRecs[:n]
	}
}

// lossTimer is when the time-threshold or probe timer fires; 0 for none.
// While the sender is blocked by flow control with nothing in flight, a
// persist timer with its own backoff sends DATA_BLOCKED probes (TCP's
// zero-window probes), so a lost window update cannot stall the connection;
// acknowledgments of the probes do not reset that backoff, so a reader that
// stays stalled costs at most one probe per maxPTO.
func (e *Engine) lossTimer() time.Duration {
	if e.lossTime != 0 {
		return e.lossTime
	}
	if e.elicitInFlight > 0 {
		return e.lastElicitSent + e.ptoPeriod()
	}
	if e.flowBlocked() {
		return e.lastElicitSent + e.backoff(e.persistCount)
	}
	return 0
}

// ptoPeriod is the current probe timeout with exponential backoff. A
// flight of nothing but PING, ACK and CONFIRM frames (a keepalive, a probe
// on a hint, the handshake's third packet) starts from at least
// controlProbeFloor: nothing waits on it but the detection of a dead peer,
// which takes the keepalive probe timeout or the user timeout anyway. On a
// LAN whose probe timeout is a millisecond or two, a peer busy for a tenth
// of a second would otherwise draw half a dozen probes from every one of
// its connections at once: 100,000 idle connections probed twice as often
// as they pinged, and a busier moment grew into a storm of probes that
// overflowed the peer's socket and failed connections.
func (e *Engine) ptoPeriod() time.Duration {
	if e.controlOnly() {
		limit := e.cfg.UserTimeout
		if ka := e.cfg.KeepAlive; ka > 0 {
			limit = min(limit, ka, keepAliveProbeTimeout)
		}
		floor := min(controlProbeFloor, limit/8)
		return min(max(e.basePTO(), floor)<<min(e.ptoCount, 20), max(maxPTO, limit/4, e.rtt.smoothed))
	}
	return e.backoff(e.ptoCount)
}

// controlOnly reports whether every packet in flight carries nothing but
// PING, ACK and CONFIRM frames.
func (e *Engine) controlOnly() bool {
	if e.elicitInFlight == 0 {
		return false
	}
	for i := range e.sent.n {
		p := e.sent.at(e.sent.base + uint64(i))
		if p.state == spLive && p.flags&^(spInFlight|spPing|spAck|spConfirm) != 0 {
			return false
		}
	}
	return true
}

// backoff is the base probe timeout doubled count times, capped at maxPTO or
// the smoothed RTT, whichever is larger. The cap holds even when the base is
// larger: an RTT of seconds on a link that has microseconds means an
// overloaded host, not a far one, and a tail loss must still be probed for
// several times within the user timeout. But it never goes below the
// smoothed RTT: a probe sent before the last one could have been
// acknowledged only lengthens the queues that made the RTT long, and on a
// starved host with many connections, probes at a rate that ignores the RTT
// outgrow what the host can take in (SPEC.md §7.3).
func (e *Engine) backoff(count int) time.Duration {
	return min(e.basePTO()<<min(count, 20), max(maxPTO, e.rtt.smoothed))
}

// basePTO is the probe timeout without backoff; before any RTT sample it
// assumes initialRTT (RFC 9002 §6.2.2).
func (e *Engine) basePTO() time.Duration {
	if !e.rtt.hasSample {
		return 3*initialRTT + maxAckDelay
	}
	return e.rtt.pto()
}

// onLossTimer runs the time-threshold loss detection or fires a probe
// timeout (RFC 9002 §6.2): one probe packet the first time and two on later
// ones, sent whatever the congestion window says. A probe declares nothing
// lost.
func (e *Engine) onLossTimer(t time.Duration) {
	if e.lossTime != 0 {
		if t >= e.lossTime {
			e.detectLost(t)
			e.sent.trim()
		}
		return
	}
	switch {
	case e.elicitInFlight > 0:
		if t < e.lastElicitSent+e.ptoPeriod() {
			return
		}
		e.ptoCount++
		e.stats.PTOs++
		e.probes = 1
		if e.ptoCount > 1 && !e.controlOnly() {
			// Two, so that one gets through a lossy path. A flight
			// without data gets one: what delays its answer is more
			// likely a busy peer, whom a second would only load more.
			e.probes = 2
		}
	case e.flowBlocked():
		if t < e.lastElicitSent+e.backoff(e.persistCount) {
			return
		}
		e.persistCount++
		e.stats.PTOs++
		e.blockedSent = noLimit // DATA_BLOCKED again
	default:
		return
	}
	// The probe goes out now; its send time restarts the timer.
	e.lastElicitSent = t
}
