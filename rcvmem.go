package myproto

import (
	"sync/atomic"
	"time"

	"github.com/myproto/myproto/internal/sys"
)

// Receive memory. A connection's window is credit its peer may spend at
// once, 256 KiB at first, and a connection whose application does not read
// keeps what came. A process holding many such connections (slow readers,
// or a peer opening thousands and filling them on purpose) would hold it
// all: 100,000 connections, 25 GiB. So, as Linux bounds its TCP sockets
// together (tcp_mem), a stack bounds what its connections hold received and
// unread: over the budget, no connection that its application is not
// reading (capFor) may grow its buffer beyond max(minRecvShare, what it
// holds now). A packet that would grow it is dropped unacknowledged, as if
// lost, and its sender sends it again later (stream.Engine.SetRecvCap),
// once the application reads.

// minRecvShare is what a connection may always hold, budget or not.
const minRecvShare = 16 << 10

// rcvMem counts what a stack's connections hold, against its budget.
type rcvMem struct {
	held   atomic.Int64
	budget int64
	_      [48]byte // held changes with every batch: keep it off others' cache lines
}

// recvBudget is cfg's ReceiveMemory, or by default a sixteenth of the
// memory the process may use, at least 64 MiB (Linux's tcp_mem puts TCP
// under pressure at about as much).
func recvBudget(cfg *Config) int64 {
	if cfg.ReceiveMemory > 0 {
		return cfg.ReceiveMemory
	}
	return max(64<<20, int64(sys.MemoryLimit()/16))
}

// readingLately is how recently a connection's application must have read
// for the budget to spare it.
const readingLately = 10 * time.Millisecond

// capFor is the cap (stream.Engine.SetRecvCap) of c at now: 0, none, while
// the stack is within its budget or c's application is reading it. A
// reader drains what it is sent, so what it holds does not pile up; and the
// packets the cap would drop (the rest of a window given before the budget
// ran out) would cost it a probe timeout each to recover.
func (m *rcvMem) capFor(c *Conn, now time.Time) int {
	if m.held.Load() <= m.budget || c.reading.Load() ||
		time.Duration(int64(now.Sub(timerEpoch))-c.readAt.Load()) < readingLately {
		return 0
	}
	return max(minRecvShare, c.held)
}

// countHeldLocked brings the stack's count up to date with what c holds.
// The caller holds c.mu.
func (c *Conn) countHeldLocked() {
	if h := c.e.Held(); h != c.held && !c.done {
		c.s.rmem.held.Add(int64(h - c.held))
		c.held = h
	}
}
