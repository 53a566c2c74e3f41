package myproto

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/myproto/myproto/internal/link"
)

// Who reads an endpoint's link.
//
// Each endpoint has a read loop (readLoop) that reads the link in batches and
// hands every frame to its socket. A Read that finds nothing to read, or a
// Write that finds the send buffer full, would then wait for the read loop to
// wake it: a hand-off between goroutines per batch, which on a small machine
// costs a futex wake and often a context switch (DESIGN.md, "The data
// path"). Where the link can bound a wait (SetReadDeadline), such a call
// drives the link itself instead: it takes the receive lock, reads one batch,
// runs every frame of it through the stack exactly as the read loop would,
// and looks again at its own connection. The read loop, meanwhile, stands
// aside: while callers drive, and for a grace period after the last one, it
// sleeps; when it holds the link and a caller wants it, the caller cuts its
// wait short with a read deadline in the past.
//
// So the goroutine the poller wakes for a frame is the one that wants it.

const (
	// driveSlice bounds one wait of a driving call in the poller, so that it
	// notices its own deadline and Close (which also cut it short).
	driveSlice = 2 * time.Millisecond
	// driveGrace is how long the read loop stands aside after a caller
	// drove the link: a Read returns, the application handles the data
	// and calls Read again, and the link waits for it meanwhile.
	driveGrace = time.Millisecond
)

// rxState is an endpoint's receive side.
type rxState struct {
	// dl is the link, when it can bound a read; nil: only the read loop
	// reads.
	dl deadlineLink

	mu   sync.Mutex     // held to read the link and handle what came
	ms   []link.Message // the batch's buffers, under mu
	size int            // the frame size they were made for

	waiters atomic.Int32  // calls waiting to drive
	gen     atomic.Uint64 // counts drives, so the read loop sees activity
	loopIn  atomic.Bool   // the read loop holds mu and reads
	driving atomic.Bool   // a call holds mu and reads
	aside   atomic.Bool   // the read loop stands aside (sleeps)
	free    chan struct{} // a token when the link was let go with callers waiting
	wake    chan struct{} // a token to end the read loop's standing aside
}

// deadlineLink is a link whose ReadBatch can be cut short by a read deadline,
// failing with an error that wraps os.ErrDeadlineExceeded.
type deadlineLink interface {
	link.Link
	SetReadDeadline(t time.Time) error
}

// aLongTimeAgo is a read deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

func (rx *rxState) init(l link.Link) {
	rx.dl, _ = l.(deadlineLink)
	rx.free = make(chan struct{}, 1)
	rx.wake = make(chan struct{}, 1)
}

// needReader makes sure someone reads the link soon: a call about to wait
// for frames that only the read loop would handle (a handshake's, a
// datagram's) ends its standing aside.
func (ep *endpoint) needReader() {
	if ep.rx.aside.Load() {
		signal(ep.rx.wake)
	}
}

// needReaders is needReader for every endpoint of the stack.
func (s *stack) needReaders() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ep := range s.endpoints {
		ep.needReader()
	}
}

// readLoop reads frames in batches until the link closes, standing aside
// while callers drive it.
func (ep *endpoint) readLoop() {
	defer close(ep.done)
	rx := &ep.rx
	var idle *time.Timer
	var seen uint64
	for {
		if rx.dl != nil {
			if g := rx.gen.Load(); rx.waiters.Load() > 0 || g != seen {
				seen = g
				if idle == nil {
					idle = time.NewTimer(driveGrace)
				} else {
					idle.Reset(driveGrace)
				}
				rx.aside.Store(true)
				woken := false
				select {
				case <-idle.C:
				case <-rx.wake:
					woken = true
				}
				rx.aside.Store(false)
				if !woken {
					continue
				}
				// Asked to read: read until a caller drives again.
				seen = rx.gen.Load()
			}
		}
		rx.mu.Lock()
		rx.loopIn.Store(true)
		err := ep.readBatch()
		rx.loopIn.Store(false)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Cut short for a caller (or a driver's deadline left
			// behind): the read loop's reads have none.
			_ = rx.dl.SetReadDeadline(time.Time{})
			err = nil
		}
		rx.mu.Unlock()
		ep.letGo()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient failure (an interface going down, say): don't spin.
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// readBatch reads one batch from the link and handles it: every frame to its
// socket, then the answers of the whole batch. The caller holds rx.mu.
func (ep *endpoint) readBatch() error {
	rx := &ep.rx
	// Size buffers for the current MTU; it can grow with link events. (A
	// link may point Buf at memory of its own: the size is kept apart.)
	if fs := ep.frameSize(); fs > rx.size {
		rx.size = fs
		rx.ms = make([]link.Message, rxBatch)
		for i := range rx.ms {
			rx.ms[i].Buf = make([]byte, fs)
		}
	}
	n, err := ep.l.ReadBatch(rx.ms)
	if err != nil {
		return err
	}
	// One clock read for the batch, not one per frame.
	ep.rxNow = time.Now()
	for i := range n {
		ep.input(rx.ms[i].Buf[:rx.ms[i].N])
	}
	if ep.heard {
		// Reachability is confirmed once a batch, for its last
		// sender: one clock read, not one per frame.
		ep.disc.confirmFrom(ep.heardFrom, ep.rxNow)
		ep.heard = false
	}
	// The answers of the whole batch go out together, and a connection
	// busy elsewhere is left to whoever is at it: the reader never waits
	// for a connection.
	for i, c := range ep.pending {
		c.pending.Store(false)
		ep.rxTx.add(c)
		ep.pending[i] = nil
	}
	ep.pending = ep.pending[:0]
	ep.rxTx.send()
	return nil
}

// drive is what a call of c does instead of waiting for ready (a token
// channel of c) while the link can be driven: it reads and handles one batch
// itself if nobody else reads the link; or else, if the read loop reads it,
// cuts that short, and waits for ready, the link (rx.free), d's deadline or
// Close. It reports false, and does nothing, where the link cannot be
// driven: the caller waits as before. drove says it read the link; a call
// that did lets go of it with letGo when it returns.
func (c *Conn) drive(ready <-chan struct{}, d *deadline) (ok, drove bool) {
	rx := &c.ep.rx
	if rx.dl == nil {
		return false, false
	}
	// Counted before trying, so that a driver letting go meanwhile
	// hands the link over (see letGo).
	rx.waiters.Add(1)
	if rx.mu.TryLock() {
		rx.waiters.Add(-1)
		rx.gen.Add(1)
		limit := time.Now().Add(driveSlice)
		if at := d.when(); !at.IsZero() && at.Before(limit) {
			limit = at
		}
		var err error
		if err = rx.dl.SetReadDeadline(limit); err == nil {
			rx.driving.Store(true)
			err = c.ep.readBatch()
			rx.driving.Store(false)
		}
		rx.mu.Unlock()
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			return true, true
		}
		// Closed or failing: leave the link to the read loop, and wait
		// as without driving this once.
		return false, true
	}
	if rx.loopIn.Load() {
		_ = rx.dl.SetReadDeadline(aLongTimeAgo)
	}
	select {
	case <-ready:
	case <-rx.free:
	case <-d.wait():
	case <-c.closed:
	}
	rx.waiters.Add(-1)
	return true, false
}

// letGo hands the link to a call waiting for it, as a call that drove it
// returns.
func (ep *endpoint) letGo() {
	if ep.rx.waiters.Load() > 0 {
		signal(ep.rx.free)
	}
}

// kickDriver cuts short a wait in the poller, so that a driving call sees
// Close or a new deadline at once.
func (ep *endpoint) kickDriver() {
	if ep.rx.dl != nil && ep.rx.driving.Load() {
		_ = ep.rx.dl.SetReadDeadline(aLongTimeAgo)
	}
}
