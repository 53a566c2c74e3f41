package myproto

import (
	"math/bits"
	"sync"
	"time"
)

// timerQueue runs the connections' timers of one stack on one goroutine: a
// heap of connections ordered by deadline. A time.Timer per connection
// would fire each in a goroutine of its own: 10,000 connections expiring
// together (a peer that went away) would start 10,000 goroutines, all
// queueing for the same locks. Here they expire one after the other, what
// they send leaves in shared sendmmsg(2) batches (connTx), and the goroutine
// exists only while some timer is armed.
//
// Far deadlines get a little slack: one d away may fire up to d/16 late,
// at most maxTimerSlack, on a grid all connections share, so that timers
// set at different moments fall due together and fire in one batch. Idle
// connections' keepalive PINGs thus leave, and their ACKs come back, a
// hundred at a time at 100,000 connections rather than each with a wake-up
// of its own on both sides: 16 % of a CPU per side instead of 23 %.
// Deadlines within 16 ms (delayed ACKs, loss detection and probe timeouts
// with data in flight) are exact. The slack is kept small: 268 ms let a
// thousand PINGs leave at once, whose ACKs came back later than a LAN's
// probe timeout, and the probes that drew fed a storm.
type timerQueue struct {
	wg      *sync.WaitGroup // the stack's goroutines
	mu      sync.Mutex
	h       timerHeap
	running bool
	kick    chan struct{} // the queue emptied: the goroutine may go
	// t is the running goroutine's timer, reset under mu by whoever
	// moves the earliest deadline earlier than tAt, the deadline (ns
	// since timerEpoch) t is armed for: moving it earlier wakes nobody.
	t   *time.Timer
	tAt int64
}

// timerSlot is a connection's place in the queue; guarded by the queue's mu.
type timerSlot struct {
	idx int // index in the heap; -1 when not queued
}

// A timerEntry is a connection in the heap with its deadline, kept in the
// entry so that ordering the heap reads no connection.
type timerEntry struct {
	at int64 // ns since timerEpoch
	c  *Conn
}

// timerEpoch is the origin of the queue's clock, which is monotonic.
var timerEpoch = time.Now()

const (
	// maxTimerSlack bounds the slack of far deadlines (2^24 ns, 16.8 ms).
	maxTimerSlack = 1 << 24
	// timerBatch is how many due connections the queue fires at a time.
	timerBatch = 256
)

// slack returns the deadline at (ns since timerEpoch) rounded up to its
// grid: the largest power of two ns not above a sixteenth of the wait, at
// most maxTimerSlack; a wait under 16 ms is left exact.
func slack(at, now int64) int64 {
	g := (at - now) / 16
	if g < int64(time.Millisecond) {
		return at
	}
	g = min(int64(1)<<(bits.Len64(uint64(g))-1), maxTimerSlack)
	return (at + g - 1) &^ (g - 1)
}

func newTimerQueue(wg *sync.WaitGroup) *timerQueue {
	return &timerQueue{wg: wg, kick: make(chan struct{}, 1)}
}

// set arms c's timer for at, or disarms it if at is zero.
//
// A deadline that moves later moves in the heap too: left in place, it
// fired for nothing, and the connection was locked, looked at and flushed
// only to be re-armed. A connection of one request and one answer had one
// such fire in two (the delayed ACK its answer carried, the probe timeout of
// the answer the next request acknowledged), a stream one per probe timeout
// that ACKs pushed back. The goroutine's timer does not follow it later: it
// is reset only for a deadline earlier than the one it is armed for (tAt),
// since resetting a Go timer earlier may wake a thread (the poller's or an
// idle P's), and a timer kept exact would be reset earlier again at the
// next delayed ACK, every exchange of a request/response connection (rr
// p50 doubled in some runs). When it fires early, the goroutine finds
// nothing due and sleeps until the new earliest.
func (q *timerQueue) set(c *Conn, at time.Time) {
	ns := slack(int64(at.Sub(timerEpoch)), int64(time.Since(timerEpoch)))
	q.mu.Lock()
	defer q.mu.Unlock()
	ts := &c.tslot
	switch {
	case at.IsZero():
		if ts.idx >= 0 {
			q.h.remove(ts.idx)
			if len(q.h) == 0 && q.running {
				// Let the goroutine go now rather than at the deadline
				// it sleeps for: a closing stack waits for it.
				select {
				case q.kick <- struct{}{}:
				default:
				}
			}
		}
		return
	case ts.idx >= 0 && ns == q.h[ts.idx].at:
		return
	case ts.idx >= 0 && ns > q.h[ts.idx].at:
		q.h[ts.idx].at = ns
		q.h.down(ts.idx)
		return
	case ts.idx >= 0:
		q.h[ts.idx].at = ns
		q.h.up(ts.idx)
	default:
		q.h.push(timerEntry{ns, c})
	}
	if !q.running {
		q.running = true
		q.wg.Add(1)
		go func() {
			defer q.wg.Done()
			q.run()
		}()
	} else if q.t != nil && ns < q.tAt {
		q.tAt = ns
		q.t.Reset(time.Duration(max(ns-int64(time.Since(timerEpoch)), 0)))
	}
}

// run fires due timers until none is armed.
func (q *timerQueue) run() {
	t := time.NewTimer(time.Hour)
	q.mu.Lock()
	q.t, q.tAt = t, int64(time.Since(timerEpoch)+time.Hour)
	q.mu.Unlock()
	defer t.Stop()
	due := make([]*Conn, 0, timerBatch)
	for {
		q.mu.Lock()
		if len(q.h) == 0 {
			q.running = false
			q.t = nil
			q.mu.Unlock()
			return
		}
		now := int64(time.Since(timerEpoch))
		if wait := q.h[0].at - now; wait > 0 {
			// Since Go 1.23 no stale tick survives Reset or Stop.
			q.tAt = q.h[0].at
			t.Reset(time.Duration(wait))
			q.mu.Unlock()
			select {
			case <-t.C:
			case <-q.kick:
				t.Stop()
			}
			continue
		}
		for len(q.h) > 0 && q.h[0].at <= now && len(due) < cap(due) {
			due = append(due, q.h.pop())
		}
		q.mu.Unlock()
		fire(due)
		clear(due)
		due = due[:0]
	}
}

// fire runs the timers of the connections in due, sending what they send
// in batches per endpoint.
func fire(due []*Conn) {
	var tx *connTx
	for _, c := range due {
		if tx != nil && tx.ep != c.ep {
			tx.send()
			tx.ep.putConnTx(tx)
			tx = nil
		}
		if tx == nil {
			tx = c.ep.getConnTx()
		}
		c.onTimer(tx)
	}
	if tx != nil {
		tx.send()
		tx.ep.putConnTx(tx)
	}
}

// timerHeap is a min-heap of connections by deadline. Each connection's
// tslot.idx follows its entry. (container/heap would box every entry.)
type timerHeap []timerEntry

func (h timerHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].c.tslot.idx = i
	h[j].c.tslot.idx = j
}

// up moves entry i towards the root while it is earlier than its parent.
func (h timerHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].at <= h[i].at {
			return
		}
		h.swap(i, p)
		i = p
	}
}

// down moves entry i towards the leaves while a child is earlier.
func (h timerHeap) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h[r].at < h[l].at {
			m = r
		}
		if h[i].at <= h[m].at {
			return
		}
		h.swap(i, m)
		i = m
	}
}

func (h *timerHeap) push(e timerEntry) {
	e.c.tslot.idx = len(*h)
	*h = append(*h, e)
	h.up(len(*h) - 1)
}

// pop removes the earliest entry and returns its connection.
func (h *timerHeap) pop() *Conn {
	c := (*h)[0].c
	h.remove(0)
	return c
}

// remove removes entry i.
func (h *timerHeap) remove(i int) {
	old := *h
	c := old[i].c
	last := len(old) - 1
	if i != last {
		old.swap(i, last)
	}
	old[last] = timerEntry{}
	*h = old[:last]
	if i != last {
		h.down(i)
		h.up(i)
	}
	c.tslot.idx = -1
}
