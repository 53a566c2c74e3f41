//go:build linux

package sys

import (
	"net"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/myproto/myproto/internal/link"
)

// A sendSocket is the send half of a PacketLink opened with
// PacketConfig.SendSocket: a packet socket bound to the interface with
// protocol 0, so it receives nothing, and never registered with the
// runtime's poller. Sends block in the kernel, on the calling thread, while
// its buffer is full; SO_SNDTIMEO bounds each wait so that a Close ends it.
type sendSocket struct {
	fd     int
	guard  fdGuard // closes fd
	closed atomic.Bool
}

func openSendSocket(ifi *net.Interface, sndbuf int) (*sendSocket, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	tv := unix.NsecToTimeval(blockingSendTimeout.Nanoseconds())
	err = unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index})
	if err != nil {
		err = os.NewSyscallError("bind", err)
	} else if err = setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, sndbuf); err == nil {
		err = os.NewSyscallError("setsockopt", unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv))
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	s := &sendSocket{fd: fd}
	s.guard.release = func() {
		unix.Close(s.fd)
		s.fd = -1
	}
	return s, nil
}

func (s *sendSocket) use() (int, bool) {
	if !s.guard.use() {
		return -1, false
	}
	return s.fd, true
}

func (s *sendSocket) done() { s.guard.done() }

func (s *sendSocket) close() {
	s.closed.Store(true)
	s.guard.shut(nil)
}

// writeBatch sends every message's Buf[:N] with blocking sendmmsg(2), using
// the scratch w, and returns how many were sent. When the device queue is
// full (ENOBUFS) it sleeps briefly and tries again, counting the sleeps in
// backoffs: frames are never dropped here.
func (s *sendSocket) writeBatch(w *writeScratch, ms []link.Message, backoffs *atomic.Uint64) (int, error) {
	fd, ok := s.use()
	if !ok {
		return 0, net.ErrClosed
	}
	defer s.done()
	sent := 0
	for sent < len(ms) {
		batch := ms[sent:min(len(ms), sent+maxBatch)]
		setSend(w.iov[:], w.msg[:], batch)
		w.n = len(batch)
		off, backoff := 0, minBackoff
		var err error
		for off < len(batch) && err == nil {
			if s.closed.Load() {
				err = net.ErrClosed
				break
			}
			// First without waiting, in the raw form (see
			// PacketLink.recvmmsg); only a full buffer makes it a
			// blocking call the scheduler knows of.
			r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&w.msg[off])),
				uintptr(len(batch)-off), unix.MSG_DONTWAIT, 0, 0)
			if e == unix.EAGAIN {
				r, _, e = unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&w.msg[off])),
					uintptr(len(batch)-off), 0, 0, 0)
			}
			switch e {
			case 0:
				off += int(r)
				backoff = minBackoff
			case unix.EINTR, unix.EAGAIN: // EAGAIN: SO_SNDTIMEO passed
			case unix.ENOBUFS:
				backoffs.Add(1)
				time.Sleep(backoff)
				backoff = min(2*backoff, maxBackoff)
			default:
				err = os.NewSyscallError("sendmmsg", e)
			}
		}
		w.clear()
		sent += off
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}
