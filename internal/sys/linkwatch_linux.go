package sys

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// A LinkWatcher receives link notifications (LinkEvents) from one network
// namespace. Its socket is the queue: events wait in the kernel's socket
// buffer until Next reads them, and the watcher starts no goroutine.
type LinkWatcher struct {
	c      *netlink.Conn
	closed atomic.Bool

	mu      sync.Mutex        // serializes Next; guards pending
	pending []netlink.Message // received and not yet returned by Next
}

// WatchLinks subscribes to the link notifications of ns (nil: the calling
// thread's namespace, as for CreateVeth) and returns a watcher that reports
// every change made from then on. To track interfaces, call WatchLinks
// first and then read the current ones (net.Interfaces, inside ns), so no
// change falls between the two; applying later events on top converges on
// the current state, since each event holds an interface's whole state.
//
// The watcher's socket is opened inside ns and stays there, so Next may be
// called from any goroutine, and the watcher keeps the namespace alive
// until Close even if ns is closed.
//
// # Privileges
//
// Subscribing needs none: rtnetlink(7) sends link notifications to any
// socket in the namespace. Entering a namespace other than the caller's
// does (see Netns.Do); without it WatchLinks fails with an error wrapping
// syscall.EPERM.
func WatchLinks(ns *Netns) (*LinkWatcher, error) {
	var c *netlink.Conn
	err := inNetns(ns, func() (err error) {
		c, err = netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Groups: unix.RTMGRP_LINK})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sys: watch links: rtnetlink: %w", err)
	}
	return &LinkWatcher{c: c}, nil
}

// Next blocks until the next link event and returns it. Calls from several
// goroutines are serialized.
//
// If the kernel dropped notifications because the socket buffer was full,
// Next returns an error wrapping syscall.ENOBUFS (netlink(7)). It then has
// discarded the events queued before the loss, so that the caller can read
// the current state again and apply the later events on top, as after
// WatchLinks. The watcher stays usable after that error, after one wrapping
// os.ErrDeadlineExceeded (see SetReadDeadline), and after a notification
// that fails to decode; after Close, Next returns errors wrapping
// net.ErrClosed.
//
// Notifications of families other than AF_UNSPEC are skipped, such as the
// AF_BRIDGE ones bridges send about their ports: they describe a port's
// bridge membership, and their RTM_DELLINK means leaving the bridge, not the
// interface going away.
func (w *LinkWatcher) Next() (LinkEvent, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		if w.closed.Load() {
			return LinkEvent{}, w.error(net.ErrClosed)
		}
		for len(w.pending) > 0 {
			m := w.pending[0]
			w.pending[0] = netlink.Message{} // let the buffer go with the last message
			w.pending = w.pending[1:]
			ev, ok, err := decodeLinkEvent(m)
			if err != nil {
				return LinkEvent{}, w.error(err)
			}
			if ok {
				return ev, nil
			}
		}
		msgs, err := w.c.Receive()
		if errors.Is(err, unix.ENOBUFS) {
			return LinkEvent{}, w.error(w.discard(err))
		}
		if err != nil {
			return LinkEvent{}, w.error(err)
		}
		w.pending = msgs
	}
}

// decodeLinkEvent decodes m, reporting false for messages that are not
// link notifications of the AF_UNSPEC family.
func decodeLinkEvent(m netlink.Message) (LinkEvent, bool, error) {
	var deleted bool
	switch m.Header.Type {
	case unix.RTM_NEWLINK:
	case unix.RTM_DELLINK:
		deleted = true
	default:
		return LinkEvent{}, false, nil
	}
	var lm rtnetlink.LinkMessage
	if err := lm.UnmarshalBinary(m.Data); err != nil {
		return LinkEvent{}, false, fmt.Errorf("decode notification (type %d, index %d): %w", m.Header.Type, lm.Index, err)
	}
	if lm.Family != unix.AF_UNSPEC {
		return LinkEvent{}, false, nil
	}
	ev := LinkEvent{
		Index:   int(lm.Index),
		Up:      lm.Flags&(unix.IFF_UP|unix.IFF_RUNNING) == unix.IFF_UP|unix.IFF_RUNNING,
		Deleted: deleted,
	}
	if a := lm.Attributes; a != nil {
		ev.Name = a.Name
		ev.MTU = int(a.MTU)
		// A copy, so that the event does not keep the whole receive
		// buffer alive.
		ev.HardwareAddr = slices.Clone(net.HardwareAddr(a.Address))
	}
	return ev, true, nil
}

// discard drops the events queued when the kernel reported the
// notification loss lost, and returns lost. They predate the loss, so a
// caller that applied them on top of state read afterwards would go back in
// time, with no later event to correct it. Events queued after the loss are
// harmless either way; discard stops once it has read as many bytes as the
// socket buffer holds, so a storm of them cannot keep it reading.
func (w *LinkWatcher) discard(lost error) error {
	w.pending = nil
	rc, err := w.c.SyscallConn()
	if err != nil {
		return errors.Join(lost, err)
	}
	var buf [64]byte
	var opErr error
	err = rc.Read(func(fd uintptr) bool {
		rcvbuf, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		if err != nil {
			opErr = os.NewSyscallError("getsockopt", err)
			return true
		}
		for read := 0; read < rcvbuf; {
			// MSG_TRUNC drops a longer message whole and returns its length.
			n, _, err := unix.Recvfrom(int(fd), buf[:], unix.MSG_DONTWAIT|unix.MSG_TRUNC)
			switch err {
			case nil:
				read += n
			case unix.EINTR, unix.ENOBUFS:
				// ENOBUFS again: more was lost meanwhile; the caller
				// rereads the state anyway.
			case unix.EAGAIN:
				return true
			default:
				opErr = os.NewSyscallError("recvfrom", err)
				return true
			}
		}
		return true
	})
	return errors.Join(lost, err, opErr)
}

// SetReadDeadline sets the deadline for Next: once it passes, Next fails
// with an error wrapping os.ErrDeadlineExceeded instead of waiting for
// notifications, a blocked Next included, and they stay queued for after
// the deadline is moved. A zero t means no deadline.
func (w *LinkWatcher) SetReadDeadline(t time.Time) error {
	if w.closed.Load() {
		return w.error(net.ErrClosed)
	}
	return w.error(w.c.SetReadDeadline(t))
}

// Close closes the watcher's socket. It unblocks Next, which then returns
// an error wrapping net.ErrClosed, as does every later call, Close
// included.
func (w *LinkWatcher) Close() error {
	if !w.closed.CompareAndSwap(false, true) {
		return w.error(net.ErrClosed)
	}
	if err := w.c.Close(); err != nil {
		// Not through w.error, which would turn it into net.ErrClosed.
		return fmt.Errorf("sys: link events: %w", err)
	}
	return nil
}

// error wraps err, returning nil for nil. Whatever a closed descriptor made
// the packages below return (EBADF, "use of closed file"), a closed watcher
// reports net.ErrClosed.
func (w *LinkWatcher) error(err error) error {
	if err == nil {
		return nil
	}
	if w.closed.Load() && !errors.Is(err, net.ErrClosed) {
		err = net.ErrClosed
	}
	return fmt.Errorf("sys: link events: %w", err)
}
