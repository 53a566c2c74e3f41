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
	mu     sync.Mutex
	at     time.Time // the deadline set; zero: none
	timer  *time.Timer
	cancel chan struct{} // closed when the deadline has passed; nil while none was set
}

func makeDeadline() deadline {
	return deadline{}
}

// set sets the deadline; the zero time means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.at = t

	// A timer that already fired has closed cancel; one we stop in time has not.
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // wait for the firing timer's close to be visible
	}
	d.timer = nil

	closed := isClosedChan(d.cancel)
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
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	// A deadline in the past fails calls at once.
	if d.cancel == nil {
		d.cancel = make(chan struct{})
	}
	if !closed {
		close(d.cancel)
	}
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
