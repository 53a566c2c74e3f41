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
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{} // closed when the deadline has passed
}

func makeDeadline() deadline {
	return deadline{cancel: make(chan struct{})}
}

// set sets the deadline; the zero time means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()

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
		if closed {
			d.cancel = make(chan struct{})
		}
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	// A deadline in the past fails calls at once.
	if !closed {
		close(d.cancel)
	}
}

// wait returns a channel that is closed when the deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

// expired reports whether the deadline has passed.
func (d *deadline) expired() bool {
	return isClosedChan(d.wait())
}

func isClosedChan(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
