package myproto

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/myproto/myproto/internal/stream"
)

// demux hands a decoded frame to the socket it is for and says why not when
// it can't. Frames for ports or connections nobody here owns are dropped
// silently: every process on the host gets its own copy of each frame, so
// another process may well own them.
func (s *stack) demux(ep *endpoint, h *header, body []byte) dropReason {
	switch h.typ {
	case typeDatagram:
		b := s.lookupDgram(h.dstPort)
		if b == nil || b.pc == nil || (b.ifindex != 0 && b.ifindex != ep.index) {
			return dropNoSocket
		}
		return b.pc.deliver(ep, h, body)
	case typeStream:
		switch {
		case h.dst[0]&1 != 0:
			return dropNotForUs // streams are unicast: see controlStream
		case h.flags&stream.FlagSYN != 0:
			// The control socket's: the data socket's filter passes
			// none but while it is being replaced.
			return dropNoSocket
		case h.flags&stream.FlagReset != 0:
			return s.resetInput(ep, h, body)
		case h.connID != 0:
			if c, ok := s.conns.Load(h.connID); ok {
				return c.(*Conn).input(ep, h, body)
			}
		}
		b := s.lookup(h.dstPort)
		if b == nil {
			if ep.udp != nil && s.resets.allow(time.Now()) {
				// A UDP bearer's address is this process's alone, so
				// this process answers, as a host agent does for a
				// port nobody holds.
				ep.statelessReset(h, body, nil)
			}
			return dropNoSocket // another process's, or a stale filter's
		}
		if b.ln != nil && (b.ifindex == 0 || b.ifindex == ep.index) {
			if reason := b.ln.input(ep, h, body); reason != dropNoSocket {
				return reason // a new connection, or a full backlog
			}
		}
		// Our port, and no connection of ours: one that ended, or whose
		// handshake we never saw. Tell the sender, so that it does not
		// wait for a timeout.
		if _, ok := s.conns.Load(h.connID); !ok && s.resets.allow(time.Now()) {
			ep.statelessReset(h, body, nil)
		}
		return dropNoSocket
	default:
		return dropNoSocket
	}
}

// rateLimiter is a token bucket: rate tokens a second, burst at most; the
// zero value has the refusal rates.
type rateLimiter struct {
	rate, burst float64
	mu          sync.Mutex
	b           tokenBucket
}

// tokenBucket is a token bucket's state; its user holds a lock.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

// take takes a token if there is one, refilling at rate a second up to
// burst; a new bucket starts full.
func (b *tokenBucket) take(now time.Time, rate, burst float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

const (
	refuseRate  = 1000
	refuseBurst = 100
	// Stateless resets cost no more than what they answer and go only to
	// its sender, so they may be many: a process dying with thousands of
	// connections leaves as many peers to tell.
	resetRate  = 10000
	resetBurst = 2000
	// Hints that a peer died make every connection to it probe; a few a
	// second are plenty for real deaths.
	verifyRate  = 20
	verifyBurst = 20
)

// peerKey identifies a connection by its peer's side: its MAC and the
// connection ID it chose.
type peerKey struct {
	mac [6]byte
	cid uint64
}

// resetInput handles a stateless reset: the peer's host says the
// connection is gone, echoing the peer's connection ID (the header's) and
// one of our packet numbers, which the connection checks.
func (s *stack) resetInput(ep *endpoint, h *header, body []byte) dropReason {
	v, ok := s.peers.Load(peerKey{h.src, h.connID})
	if !ok || len(body) < stream.PNLen {
		return dropNoSocket
	}
	return v.(*Conn).statelessReset(ep, h, binary.BigEndian.Uint64(body))
}

func (r *rateLimiter) allow(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	rate, burst := r.rate, r.burst
	if rate == 0 {
		rate, burst = refuseRate, refuseBurst
	}
	return r.b.take(now, rate, burst)
}
