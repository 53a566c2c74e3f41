package myproto

import (
	"sync"
	"time"
)

// demux hands a decoded frame to the socket it is for and says why not when
// it can't. Frames for ports or connections nobody here owns are dropped
// silently: every process on the host gets its own copy of each frame, so
// another process may well own them.
func (s *stack) demux(ep *endpoint, h *header, body []byte) dropReason {
	switch h.typ {
	case typeDatagram:
		b := s.lookup(h.dstPort)
		if b == nil || b.pc == nil || (b.ifindex != 0 && b.ifindex != ep.index) {
			return dropNoSocket
		}
		return b.pc.deliver(ep, h, body)
	default:
		return dropNoSocket
	}
}

// rateLimiter is a token bucket: rate tokens a second, burst at most.
type rateLimiter struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

const (
	refuseRate  = 1000
	refuseBurst = 100
)

func (r *rateLimiter) allow(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last.IsZero() {
		r.tokens = refuseBurst
	} else {
		r.tokens = min(refuseBurst, r.tokens+now.Sub(r.last).Seconds()*refuseRate)
	}
	r.last = now
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	return true
}
