package myproto

import (
	"sync"
	"time"
)

// deadline is one direction's deadline, in user space because many sockets
// share one packet socket: the net.Pipe pattern. wait returns a channel that
// is closed when the deadline passes; setting a new deadline re-arms it with a
// fresh channel, so a timeout never breaks the stream and a deadline moved
// into the future lets blocked and later calls proceed.
//
// The zero value has no deadline and no channel yet: one is made when a
// deadline is set or a call waits, so a connection nobody reads or writes
// (idle ones held by the thousand) allocates none.
type deadline struct {
	mu sync.Mutex
	at time.Time // the deadline set; zero: none
	// timer closes cancel when it fires. Stopped in time, it is kept and
	// reset for the next deadline: net/http moves a connection's read
	// deadline for every request, and a new timer each time would
	// allocate. It is dropped whenever cancel is closed or replaced.
	timer   *time.Timer
	armed   bool          // timer runs
	cancel  chan struct{} // closed when the deadline has passed; nil while none was set
	stopped bool          // the connection closed: no timer any more (see stop)
}

func makeDeadline() deadline {
	return deadline{}
}

// set sets the deadline; the zero time means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.at = t
	if d.stopped {
		return // a set racing with Close: calls fail with ErrClosed anyway
	}

	// A timer that already fired has closed cancel; one we stop in time has
	// not, and can be reset.
	if d.armed {
		d.armed = false
		if !d.timer.Stop() {
			<-d.cancel // wait for the firing timer's close to be visible
		}
	}
	closed := isClosedChan(d.cancel)
	if closed {
		d.timer = nil // it would close a closed channel
	}
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed || d.cancel == nil {
			d.cancel = make(chan struct{})
		}
		if d.timer == nil {
			cancel := d.cancel
			d.timer = time.AfterFunc(dur, func() { close(cancel) })
		} else {
			d.timer.Reset(dur)
		}
		d.armed = true
		return
	}
	// A deadline in the past fails calls at once.
	if d.cancel == nil {
		d.cancel = make(chan struct{})
	}
	if !closed {
		close(d.cancel)
		d.timer = nil
	}
}

// stop stops the deadline's timer, as Close does: calls on a closed
// connection fail at once whatever the deadline, and a timer left running
// would stay in the runtime's timer heap until the deadline, where every
// timer moved earlier costs the scheduler a walk over all of them (a server
// setting a 10 s read deadline per connection had thousands there, as
// net/http's ReadTimeout would). Go's own sockets stop theirs on Close too.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopped = true
	if d.armed {
		d.timer.Stop()
	}
	d.timer, d.armed = nil, false
}

// wait returns a channel that is closed when the deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cancel == nil {
		// A deadline set while the caller waits must close this one.
		d.cancel = make(chan struct{})
	}
	return d.cancel
}

// when returns the deadline set, the zero time for none.
func (d *deadline) when() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.at
}

// expired reports whether the deadline has passed.
func (d *deadline) expired() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return isClosedChan(d.cancel)
}

func isClosedChan(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
