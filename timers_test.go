package myproto

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestTimerSlack: near deadlines are exact, far ones fire late by at most
// a sixteenth of the wait and maxTimerSlack, never early, on a grid.
func TestTimerSlack(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		now := rng.Int64N(int64(time.Hour))
		wait := rng.Int64N(int64(time.Minute))
		if rng.IntN(2) == 0 {
			wait = rng.Int64N(int64(100 * time.Millisecond))
		}
		at := now + wait
		got := slack(at, now)
		switch {
		case got < at:
			t.Fatalf("slack(%d, %d) = %d: early", at, now, got)
		case wait < int64(16*time.Millisecond) && got != at:
			t.Fatalf("a wait of %v got slack %v", time.Duration(wait), time.Duration(got-at))
		case got-at > wait/16 || got-at >= maxTimerSlack:
			t.Fatalf("a wait of %v got slack %v", time.Duration(wait), time.Duration(got-at))
		}
	}
	// Deadlines a second apart in time set at different moments share a
	// grid point.
	if a, b := slack(int64(time.Second)+1, 0), slack(int64(time.Second)+2, int64(100*time.Millisecond)); a != b {
		t.Errorf("%d and %d: no common grid point", a, b)
	}
}

// TestTimerHeap checks the heap's order and the connections' indexes
// through random pushes, moves and removals.
func TestTimerHeap(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var h timerHeap
	conns := make([]*Conn, 500)
	for i := range conns {
		conns[i] = &Conn{tslot: timerSlot{idx: -1}}
	}
	check := func() {
		t.Helper()
		for i, e := range h {
			if e.c.tslot.idx != i {
				t.Fatalf("entry %d has index %d", i, e.c.tslot.idx)
			}
			if p := (i - 1) / 2; i > 0 && h[p].at > e.at {
				t.Fatalf("entry %d (%d) earlier than its parent (%d)", i, e.at, h[p].at)
			}
		}
	}
	for range 20000 {
		c := conns[rng.IntN(len(conns))]
		switch {
		case c.tslot.idx < 0:
			h.push(timerEntry{rng.Int64N(1000), c})
		case rng.IntN(3) == 0:
			h.remove(c.tslot.idx)
		case rng.IntN(2) == 0 && len(h) > 0:
			min := h[0].at
			if got := h.pop(); got.tslot.idx != -1 {
				t.Fatal("popped entry still indexed")
			}
			for _, e := range h {
				if e.at < min {
					t.Fatalf("popped %d before %d", min, e.at)
				}
			}
		default:
			h[c.tslot.idx].at -= rng.Int64N(100)
			h.up(c.tslot.idx)
		}
		check()
	}
}

// TestTimerQueueMovesLater: a deadline moved later moves in the heap, so
// that it does not fire for nothing; the goroutine's timer is reset for an
// earlier deadline than the one it is armed for, and only then.
func TestTimerQueueMovesLater(t *testing.T) {
	var wg sync.WaitGroup
	q := newTimerQueue(&wg)
	q.running = true // no goroutine: the test watches its timer instead
	q.t = time.NewTimer(time.Hour)
	q.tAt = int64(time.Since(timerEpoch) + time.Hour)
	defer q.t.Stop()
	a, b := &Conn{tslot: timerSlot{idx: -1}}, &Conn{tslot: timerSlot{idx: -1}}
	now := time.Now()
	q.set(a, now.Add(10*time.Millisecond))
	armed := q.tAt
	if armed != q.h[0].at {
		t.Fatalf("timer armed for %d, earliest deadline %d", armed, q.h[0].at)
	}
	q.set(b, now.Add(20*time.Millisecond))
	q.set(a, now.Add(time.Second))
	if q.h[0].c != b {
		t.Fatal("a connection whose deadline moved later is still first")
	}
	if at := q.h[a.tslot.idx].at; at < int64(now.Add(time.Second).Sub(timerEpoch)) {
		t.Fatalf("moved to %v, queued for %v", time.Second, time.Duration(at-int64(now.Sub(timerEpoch))))
	}
	if q.tAt != armed {
		t.Fatal("the timer was reset for a later deadline")
	}
	q.set(b, now.Add(time.Millisecond))
	if q.tAt != q.h[0].at {
		t.Fatal("the timer was not reset for an earlier deadline")
	}
	select {
	case <-q.t.C:
	case <-time.After(5 * time.Second):
		t.Fatal("the goroutine's timer did not fire")
	}
}
