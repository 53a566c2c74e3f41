package myproto

import (
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
// Deadlines are exact. (Slack that made far ones fall due together, to send
// keepalives in batches, was tried and made things worse: 100,000
// keepalive PINGs in a few bursts a second came back acknowledged later
// than a LAN's probe timeout of a millisecond or two, and the spurious
// probes doubled the traffic.)
type timerQueue struct {
	mu      sync.Mutex
	h       timerHeap
	running bool
	kick    chan struct{} // the earliest deadline moved earlier
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

// timerBatch is how many due connections the queue fires at a time.
const timerBatch = 256

func newTimerQueue() *timerQueue {
	return &timerQueue{kick: make(chan struct{}, 1)}
}

// set arms c's timer for at, or disarms it if at is zero. A deadline later
// than the one queued keeps the earlier one: when that fires, the connection
// finds nothing due and arms the later one (see Conn.onTimer). Moving a
// deadline later thus costs nothing, which is what most moves do (every
// acknowledgment pushes the probe timeout back).
func (q *timerQueue) set(c *Conn, at time.Time) {
	ns := int64(at.Sub(timerEpoch))
	q.mu.Lock()
	defer q.mu.Unlock()
	ts := &c.tslot
	switch {
	case at.IsZero():
		if ts.idx >= 0 {
			q.h.remove(ts.idx)
		}
		return
	case ts.idx >= 0 && ns >= q.h[ts.idx].at:
		return
	case ts.idx >= 0:
		q.h[ts.idx].at = ns
		q.h.up(ts.idx)
	default:
		q.h.push(timerEntry{ns, c})
	}
	if !q.running {
		q.running = true
		go q.run()
	} else if q.h[0].c == c {
		select {
		case q.kick <- struct{}{}:
		default:
		}
	}
}

// run fires due timers until none is armed.
func (q *timerQueue) run() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	due := make([]*Conn, 0, timerBatch)
	for {
		q.mu.Lock()
		if len(q.h) == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		now := int64(time.Since(timerEpoch))
		if wait := q.h[0].at - now; wait > 0 {
			q.mu.Unlock()
			t.Reset(time.Duration(wait))
			select {
			case <-t.C:
			case <-q.kick:
				t.Stop() // since Go 1.23 no stale tick survives Stop or Reset
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
