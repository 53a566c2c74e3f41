package myproto

import (
	"container/heap"
	"sync"
	"time"
)

// timerQueue runs the connections' timers of one stack on one goroutine: a
// heap of connections ordered by deadline. A time.Timer per connection
// would fire each in a goroutine of its own: 10,000 connections expiring
// together (a peer that went away) would start 10,000 goroutines, all
// queueing for the same locks. Here they expire one after the other, and
// the goroutine exists only while some timer is armed.
type timerQueue struct {
	wg      *sync.WaitGroup // the stack's goroutines
	mu      sync.Mutex
	h       timerHeap
	running bool
	kick    chan struct{} // the earliest deadline moved earlier
}

// timerSlot is a connection's place in the queue; guarded by the queue's mu.
type timerSlot struct {
	at  time.Time
	idx int // index in the heap; -1 when not queued
}

func newTimerQueue(wg *sync.WaitGroup) *timerQueue {
	return &timerQueue{wg: wg, kick: make(chan struct{}, 1)}
}

// set arms c's timer for at, or disarms it if at is zero. A deadline later
// than the one queued keeps the earlier one: when that fires, the connection
// finds nothing due and arms the later one (see Conn.onTimer). Moving a
// deadline later thus costs nothing, which is what most moves do (every
// acknowledgment pushes the probe timeout back).
func (q *timerQueue) set(c *Conn, at time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	ts := &c.tslot
	switch {
	case at.IsZero():
		if ts.idx >= 0 {
			heap.Remove(&q.h, ts.idx)
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
	case ts.idx >= 0 && !at.Before(ts.at):
		return
	case ts.idx >= 0:
		ts.at = at
		heap.Fix(&q.h, ts.idx)
	default:
		ts.at = at
		heap.Push(&q.h, c)
	}
	if !q.running {
		q.running = true
		q.wg.Add(1)
		go func() {
			defer q.wg.Done()
			q.run()
		}()
	} else if q.h[0] == c {
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
	for {
		q.mu.Lock()
		if len(q.h) == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		now := time.Now()
		c := q.h[0]
		if wait := c.tslot.at.Sub(now); wait > 0 {
			q.mu.Unlock()
			t.Reset(wait)
			select {
			case <-t.C:
			case <-q.kick:
				t.Stop() // since Go 1.23 no stale tick survives Stop or Reset
			}
			continue
		}
		heap.Pop(&q.h)
		q.mu.Unlock()
		c.onTimer()
	}
}

// timerHeap is a min-heap of connections by deadline.
type timerHeap []*Conn

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].tslot.at.Before(h[j].tslot.at) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].tslot.idx = i
	h[j].tslot.idx = j
}

func (h *timerHeap) Push(x any) {
	c := x.(*Conn)
	c.tslot.idx = len(*h)
	*h = append(*h, c)
}

func (h *timerHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.tslot.idx = -1
	return c
}
