package stream

import "time"

// A congestionController decides how many bytes may be in flight. The engine
// tells it about every packet that counts towards bytes in flight; times are
// the engine's monotonic clock (a duration since the engine started).
// Implementations are NewReno with HyStart++ (newreno.go); another (CUBIC,
// BBR) can be dropped in behind the same interface.
type congestionController interface {
	// onPacketSent is called for each packet counted in flight.
	onPacketSent(now time.Duration, pn uint64, bytes int)
	// onAck is called once per ACK frame that newly acknowledges packets,
	// before onPacketAcked for each of them; priorInFlight is the bytes in
	// flight before the ACK, which tells whether the window was the limit.
	onAck(now time.Duration, priorInFlight int)
	// onPacketAcked is called for each newly acknowledged in-flight packet.
	onPacketAcked(now time.Duration, pn uint64, bytes int, sentTime time.Duration)
	// onRTTSample passes every RTT sample (for HyStart++).
	onRTTSample(latest time.Duration)
	// onCongestionEvent is called once per loss detection pass that declared
	// packets lost; sentTime is when the newest of them was sent. A loss of
	// a packet sent before the current recovery period began is ignored, so
	// the window is cut once per flight. It reports whether it cut.
	onCongestionEvent(now, sentTime time.Duration) bool
	// undo reverts the last cut: every loss that caused it turned out to be
	// spurious (the packets were reordered, not lost).
	undo()
	// onPersistentCongestion collapses the window to its minimum (RFC 9002
	// §7.6).
	onPersistentCongestion()
	// window is the congestion window in bytes; never below two packets.
	window() int
	// slowStartThreshold is the current ssthresh (for Info).
	slowStartThreshold() int
}

// rttEstimator follows RFC 9002 §5. Every value is at least 1 ns once a
// sample exists, and the timers built from it add the 1 ms granularity, so a
// 10 µs or even 0 µs RTT makes neither a zero window nor a zero timer.
type rttEstimator struct {
	latest, min, smoothed, variance time.Duration
	hasSample                       bool
	// seeded says the values are the peer's word (a server's, from the
	// client's CONFIRM), not a sample of ours. Anyone who completes a
	// handshake can claim any RTT, up to 71 minutes: the first sample of
	// ours replaces the claim, and until one comes the claim does not
	// stretch the timeouts a silent peer is given (floor).
	seeded bool
}

// init starts the estimator from a first sample of ours, as the client's
// from its SYN to the SYN-ACK.
func (r *rttEstimator) init(rtt time.Duration) {
	rtt = max(rtt, time.Nanosecond)
	r.latest, r.min, r.smoothed, r.variance = rtt, rtt, rtt, rtt/2
	r.hasSample, r.seeded = true, false
}

// seed starts it from the peer's estimate, capped at maxSeedRTT: probe
// timeouts start from it, saving a slow path the handshake's spurious
// probes, but nothing else trusts it.
func (r *rttEstimator) seed(rtt time.Duration) {
	r.init(min(rtt, maxSeedRTT))
	r.seeded = true
}

// floor is the smoothed RTT that the user and keepalive timeouts stretch
// to cover (userTimeoutRTTs of it): 0 while only seeded, and at most
// maxFloorRTT, so that a peer that inflated our samples by holding back
// its ACKs and then went silent is still given up on within minutes.
func (r *rttEstimator) floor() time.Duration {
	if r.seeded {
		return 0
	}
	return min(r.smoothed, maxFloorRTT)
}

// update takes an RTT sample and the peer's reported ACK delay, already
// capped at the maximum ACK delay.
func (r *rttEstimator) update(sample, ackDelay time.Duration) {
	sample = max(sample, time.Nanosecond)
	r.latest = sample
	if !r.hasSample || r.seeded {
		r.init(sample)
		return
	}
	r.min = min(r.min, sample)
	adjusted := sample
	if sample >= r.min+ackDelay {
		adjusted = sample - ackDelay
	}
	d := r.smoothed - adjusted
	if d < 0 {
		d = -d
	}
	r.variance = (3*r.variance + d) / 4
	r.smoothed = max((7*r.smoothed+adjusted)/8, time.Nanosecond)
}

// pto is the probe timeout before backoff: srtt + max(4·rttvar, granularity)
// + the peer's maximum ACK delay.
func (r *rttEstimator) pto() time.Duration {
	return r.smoothed + max(4*r.variance, timerGranularity) + maxAckDelay
}

// lossDelay is the time threshold of RFC 9002 §6.1.2: 9/8 of the larger of
// the smoothed and latest RTT, at least the timer granularity.
func (r *rttEstimator) lossDelay() time.Duration {
	return max(max(r.smoothed, r.latest)*9/8, timerGranularity)
}
