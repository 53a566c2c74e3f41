package myproto

import (
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
		b := s.lookup(h.dstPort)
		if b == nil || b.pc == nil || (b.ifindex != 0 && b.ifindex != ep.index) {
			return dropNoSocket
		}
		return b.pc.deliver(ep, h, body)
	case typeDiscovery:
		return s.discInput(ep, h, body)
	case typeStream:
		if h.connID != 0 {
			if c, ok := s.conns.Load(h.connID); ok {
				return c.(*Conn).input(ep, h, body)
			}
		}
		b := s.lookup(h.dstPort)
		switch {
		case b != nil && b.ln != nil && (b.ifindex == 0 || b.ifindex == ep.index):
			return b.ln.input(ep, h, body)
		case b == nil && h.flags&stream.FlagSYN != 0:
			s.refuseSYN(ep, h, body)
		}
		return dropNoSocket
	default:
		return dropNoSocket
	}
}

// refuseSYN answers a SYN to a port no process on this host owns with a RST,
// so the dialer fails at once with ECONNREFUSED instead of timing out. Every
// process's stack sees the SYN; those that own nothing check the host-wide
// reservation first, so a port owned by another process is never refused.
func (s *stack) refuseSYN(ep *endpoint, h *header, body []byte) {
	if s.prov.owned(s.etherType, h.dstPort) || !s.refuse.allow(time.Now()) {
		return
	}
	tb := ep.getTx()
	defer ep.txPool.Put(tb)
	n, dst, ok := stream.RefuseSYN(body, tb.buf[offBody:ep.frameSize()])
	if !ok {
		return
	}
	ep.sendBuilt(tb, &header{dst: h.src, typ: typeStream, srcPort: h.dstPort, dstPort: h.srcPort, connID: dst}, n)
}

// rateLimiter is a token bucket: rate tokens a second, burst at most; the
// zero value has the refusal rates.
type rateLimiter struct {
	rate, burst float64
	mu          sync.Mutex
	tokens      float64
	last        time.Time
}

const (
	refuseRate  = 1000
	refuseBurst = 100
)

func (r *rateLimiter) allow(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	rate, burst := r.rate, r.burst
	if rate == 0 {
		rate, burst = refuseRate, refuseBurst
	}
	if r.last.IsZero() {
		r.tokens = burst
	} else {
		r.tokens = min(burst, r.tokens+now.Sub(r.last).Seconds()*rate)
	}
	r.last = now
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	return true
}
