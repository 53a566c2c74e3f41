package stream

import (
	"math"
	"time"
)

// HyStart++ (RFC 9406) constants. The RTT threshold is clamped to
// [250 µs, 16 ms] rather than the RFC's [4 ms, 16 ms]: a LAN's base RTT is
// 20–100 µs, so 4 ms (or even 1 ms) of queueing is 10–200 base RTTs, and with
// the window doubling every round slow start would overshoot by megabytes
// before noticing (measured in TestSimHyStart: 1 ms let a 100 µs path reach a
// 2.8 MB window and 23 ms of queue; 250 µs stops it at 430 KB). 250 µs is
// still several times the scheduling jitter of a LAN host, and the per-round
// minimum over at least 8 samples filters that jitter; a spurious exit costs
// little where congestion avoidance adds a segment every ~100 µs.
const (
	hystartMinRTTThresh = 250 * time.Microsecond
	hystartMaxRTTThresh = 16 * time.Millisecond
	hystartNRTTSample   = 8
	hystartCSSDivisor   = 4
	hystartCSSRounds    = 5
	hystartL            = 8 // segments of growth per ACK in slow start, unpaced
	initialWindowPkts   = 10
	minWindowPkts       = 2
)

// newReno is RFC 9002's NewReno with HyStart++ to leave slow start before
// the first loss: AIMD with β = ½, one window cut per recovery period (a loss
// of a packet sent before the last cut does not cut again), and window growth
// only while the window is what limits the sender.
type newReno struct {
	mss           int
	cwnd          int
	ssthresh      int
	recoveryStart time.Duration // 0: never cut; packets sent at or before it are forgiven
	caAcked       int           // bytes acked towards the next +1 MSS in congestion avoidance
	limited       bool          // this ACK found the window full enough to grow it

	// State before the last cut, for undo.
	priorCwnd, priorSsthresh int
	priorRecovery            time.Duration

	// HyStart++ round tracking.
	largestSent     uint64
	windowEnd       uint64 // the round ends when a packet after this is acked
	roundStarted    bool
	lastRoundMinRTT time.Duration
	curRoundMinRTT  time.Duration
	rttSamples      int
	inCSS           bool
	cssBaseline     time.Duration
	cssRounds       int
}

func newNewReno(mss int) *newReno {
	return &newReno{
		mss:             mss,
		cwnd:            initialWindowPkts * mss,
		ssthresh:        math.MaxInt,
		lastRoundMinRTT: math.MaxInt64,
		curRoundMinRTT:  math.MaxInt64,
	}
}

func (c *newReno) window() int             { return c.cwnd }
func (c *newReno) slowStartThreshold() int { return c.ssthresh }
func (c *newReno) minWindow() int          { return minWindowPkts * c.mss }

func (c *newReno) onPacketSent(now time.Duration, pn uint64, bytes int) {
	c.largestSent = max(c.largestSent, pn)
	if !c.roundStarted {
		c.roundStarted = true
		c.windowEnd = pn
	}
}

func (c *newReno) onAck(now time.Duration, priorInFlight int) {
	// Grow only when the window limits the sender (RFC 9002 §7.8): in slow
	// start when at least half of it was used, in congestion avoidance when
	// it was within a few packets of full.
	if c.cwnd < c.ssthresh {
		c.limited = 2*priorInFlight >= c.cwnd
	} else {
		c.limited = priorInFlight+3*c.mss >= c.cwnd
	}
}

func (c *newReno) onPacketAcked(now time.Duration, pn uint64, bytes int, sentTime time.Duration) {
	if c.roundStarted && pn > c.windowEnd {
		c.newRound()
	}
	if c.recoveryStart != 0 && sentTime <= c.recoveryStart {
		return // in recovery: no growth until a packet sent after the cut is acked
	}
	if !c.limited {
		return
	}
	if c.cwnd < c.ssthresh {
		inc := min(bytes, hystartL*c.mss)
		if c.inCSS {
			inc /= hystartCSSDivisor
		}
		c.cwnd += inc
		return
	}
	c.caAcked += bytes
	if c.caAcked >= c.cwnd {
		c.caAcked -= c.cwnd
		c.cwnd += c.mss
	}
}

// newRound starts a HyStart++ round: one window's worth of packets.
func (c *newReno) newRound() {
	c.windowEnd = c.largestSent
	c.lastRoundMinRTT = c.curRoundMinRTT
	c.curRoundMinRTT = math.MaxInt64
	c.rttSamples = 0
	if c.inCSS {
		c.cssRounds++
		if c.cssRounds >= hystartCSSRounds && c.cwnd < c.ssthresh {
			c.ssthresh = c.cwnd // conservative slow start is over
			c.inCSS = false
		}
	}
}

func (c *newReno) onRTTSample(latest time.Duration) {
	if c.cwnd >= c.ssthresh {
		return
	}
	c.curRoundMinRTT = min(c.curRoundMinRTT, latest)
	c.rttSamples++
	if c.rttSamples < hystartNRTTSample || c.lastRoundMinRTT == math.MaxInt64 {
		return
	}
	if !c.inCSS {
		thresh := min(max(c.lastRoundMinRTT/8, hystartMinRTTThresh), hystartMaxRTTThresh)
		if c.curRoundMinRTT >= c.lastRoundMinRTT+thresh {
			c.inCSS = true
			c.cssBaseline = c.curRoundMinRTT
			c.cssRounds = 0
		}
		return
	}
	if c.curRoundMinRTT < c.cssBaseline {
		c.inCSS = false // the RTT rise was spurious: back to slow start
	}
}

func (c *newReno) onCongestionEvent(now, sentTime time.Duration) bool {
	if c.recoveryStart != 0 && sentTime <= c.recoveryStart {
		return false
	}
	c.priorCwnd, c.priorSsthresh, c.priorRecovery = c.cwnd, c.ssthresh, c.recoveryStart
	c.recoveryStart = max(now, 1)
	c.ssthresh = max(c.cwnd/2, c.minWindow())
	c.cwnd = c.ssthresh
	c.caAcked = 0
	c.inCSS = false
	return true
}

func (c *newReno) undo() {
	if c.priorCwnd == 0 {
		return
	}
	c.cwnd = max(c.cwnd, c.priorCwnd)
	c.ssthresh = c.priorSsthresh
	c.recoveryStart = c.priorRecovery
	c.priorCwnd = 0
}

func (c *newReno) onPersistentCongestion() {
	c.cwnd = c.minWindow()
	c.caAcked = 0
	c.inCSS = false
}
