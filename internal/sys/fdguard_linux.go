//go:build linux

package sys

import "sync"

// An fdGuard closes a socket's file descriptors only once Close has been
// asked for and no system call is using them any more: a number closed
// under a blocked system call could be reused by an unrelated file. The
// links on raw descriptors (QuietLink, the send socket) stay outside Go's
// poller, which would otherwise do this for them.
type fdGuard struct {
	mu      sync.Mutex
	release func() // closes the descriptors; run once, under mu
	users   int
	closing bool
}

// use reports whether the descriptors may be used for one call; done must
// follow a true result.
func (g *fdGuard) use() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	g.users++
	return true
}

func (g *fdGuard) done() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.users--
	g.closeIfIdleLocked()
}

// shut marks the descriptors for closing, runs wake (if not nil) while they
// are still open so that it can unblock their users, and closes them once
// unused. It reports false if they were shut already.
func (g *fdGuard) shut(wake func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	g.closing = true
	if wake != nil {
		wake()
	}
	g.closeIfIdleLocked()
	return true
}

func (g *fdGuard) closeIfIdleLocked() {
	if g.closing && g.users == 0 && g.release != nil {
		g.release()
		g.release = nil
	}
}
