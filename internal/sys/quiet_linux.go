//go:build linux

package sys

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/myproto/myproto/internal/link"
)

var _ link.Link = (*QuietLink)(nil)

// A QuietLink is a link.Link over an AF_PACKET socket that wakes the
// runtime's poller only while a ReadBatch waits for it.
//
// A socket registered with the poller (a PacketLink's) is edge-triggered:
// the kernel wakes the thread blocked in epoll_wait for every frame queued,
// whether or not a goroutine waits for it. With GOMAXPROCS above 1 an idle
// P's thread sits there, so a sender taking in acknowledgments between its
// sends (TryReadBatch), or a reader busy with the last batch, has another
// thread woken, and put to sleep again, for each frame that arrives: 5-9k
// times a second in a bulk transfer on 2 vCPUs, where GOMAXPROCS=1 moved
// 30 % more.
//
// So the socket stays out of the poller. The poller watches an epoll
// instance of the link's own, in which the socket is registered (armed,
// EPOLLIN) only when a ReadBatch finds it empty, and from which it is
// taken out again once a stream of frames comes in, or by TryReadBatch
// (see recvmmsg). A wait in a stream costs two epoll_ctl(2) calls more; an
// exchange of single frames leaves the socket registered and costs
// nothing more. Read deadlines, and a Close that unblocks a read, work as
// with any pollable file. It sends on a second socket outside the poller,
// as a PacketLink with PacketConfig.SendSocket does.
//
// With PacketConfig.RingSize, frames arrive in a receive ring (TPACKET_V2,
// rxRing): the kernel copies each into memory mapped into the process as
// it arrives, so a read takes them without a system call, and without the
// socket queue's lock, which the softirq filling the queue contends for
// under a stream.
//
// The price is in request/response latency: the socket wakes its epoll
// instance, which wakes the poller's, and the second wake-up is not a
// synchronous one (WF_SYNC), so the scheduler does not move the woken
// thread to the waker's CPU. So a reader waiting for an answer uses
// ReadBatchOnThread, which waits on its own thread and keeps it. Every
// wait there would not do: in a stream the synchronous wake-up puts sender
// and receiver on one CPU (bulk at MTU 9000 fell by a quarter when all
// waits were made so).
type QuietLink struct {
	ifaceInfo

	fd     int          // the packet socket, closed by guard
	ring   *rxRing      // fd's receive ring, or nil; unmapped by guard
	slots  atomic.Int64 // the ring's slots, for RingSlots
	guard  fdGuard      //
	closed atomic.Bool

	ep *os.File        // the epoll instance, in the poller
	rc syscall.RawConn // ep's

	// Read state, owned by the one goroutine in ReadBatch or
	// TryReadBatch. The functions are bound once so that passing them to
	// rc allocates nothing.
	rd struct {
		recvBatch
		armed bool  // the socket is registered in ep
		err   error // epoll_ctl's failure
	}
	readFn   func(epfd uintptr) bool
	disarmFn func(epfd uintptr)

	// For ReadBatchOnThread: efd, an eventfd(2) that a new deadline or
	// Close signals, closed by guard; dl, the read deadline in ns since
	// monoEpoch (noDeadline for none); threadWaiting says a thread waits in
	// ppoll(2), so that a new deadline must wake it.
	efd           int
	dl            atomic.Int64
	threadWaiting atomic.Bool

	snd      *sendSocket
	writers  sync.Pool // *writeScratch
	backoffs atomic.Uint64

	statsMu sync.Mutex
	stats   link.Stats
}

// OpenQuiet opens a QuietLink on ifi bound to cfg.EtherType, with
// cfg.Filter attached before bind(2) and the buffer sizes of cfg, as
// OpenPacket does; cfg.SendSocket is implied. It needs CAP_NET_RAW; without
// it the error wraps syscall.EPERM.
func OpenQuiet(ifi *net.Interface, cfg PacketConfig) (*QuietLink, error) {
	if err := checkOpen("packet link", ifi, cfg); err != nil {
		return nil, err
	}
	l, err := openQuiet(ifi, cfg)
	if err != nil {
		return nil, fmt.Errorf("sys: open packet link on %s: %w", ifi.Name, err)
	}
	return l, nil
}

func openQuiet(ifi *net.Interface, cfg PacketConfig) (*QuietLink, error) {
	fd, err := openRawPacket(ifi, cfg)
	if err != nil {
		return nil, err
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	// Non-blocking, so that os.NewFile puts it in the poller. The socket
	// is not registered in it until a read waits.
	if err = unix.SetNonblock(epfd, true); err != nil {
		err = os.NewSyscallError("fcntl", err)
		unix.Close(fd)
		unix.Close(epfd)
		return nil, err
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	var ring *rxRing
	if cfg.RingSize > 0 {
		if ring, err = setupRxRing(fd, ifi.MTU+link.EthernetHeaderLen, cfg.RingSize); err != nil {
			unix.Close(fd)
			unix.Close(epfd)
			unix.Close(efd)
			return nil, err
		}
	}
	l := &QuietLink{fd: fd, efd: efd, ring: ring, ep: os.NewFile(uintptr(epfd), "packet-epoll")}
	if ring != nil {
		l.slots.Store(int64(ring.frames))
	}
	l.init(ifi)
	l.dl.Store(noDeadline)
	l.guard.release = func() {
		unix.Close(l.fd)
		unix.Close(l.efd)
		l.fd, l.efd = -1, -1
		if l.ring != nil {
			l.ring.close()
		}
	}
	fail := func(err error) (*QuietLink, error) {
		l.ep.Close()
		unix.Close(fd)
		unix.Close(efd)
		return nil, err
	}
	if l.rc, err = l.ep.SyscallConn(); err != nil {
		return fail(err)
	}
	if l.snd, err = openSendSocket(ifi, cfg.WriteBuffer); err != nil {
		return fail(err)
	}
	l.readFn = l.recvmmsg
	l.disarmFn = l.disarm
	l.writers.New = func() any {
		s := new(writeScratch)
		s.sendFn = s.sendmmsg
		return s
	}
	return l, nil
}

// ReadBatch implements the link.Link ReadBatch method with recvmmsg(2),
// waiting in the runtime's poller while no frame is queued. It moves at most
// 64 frames per call and allocates nothing. A frame longer than its
// message's Buf is truncated and its N is len(Buf).
func (l *QuietLink) ReadBatch(ms []link.Message) (int, error) {
	return l.read(ms, inPoller)
}

// TryReadBatch is ReadBatch that never waits: it returns 0 and no error when
// no frame is queued, and ignores the read deadline.
func (l *QuietLink) TryReadBatch(ms []link.Message) (int, error) {
	return l.read(ms, noWait)
}

// ReadBatchOnThread is ReadBatch that, while no frame is queued, waits in
// ppoll(2) on the calling thread (a blocking system call) instead of in the
// runtime's poller. The kernel then wakes the thread directly and
// synchronously (WF_SYNC), which lets the scheduler run it on the CPU of
// whoever sent the frame, about to wait itself: in an exchange of single
// frames, request and answer, that saves a wake-up of the other CPU each
// way. In a stream it would put receiver and sender on one CPU, so a caller
// uses it only when it waits for an answer. The read deadline and Close
// cut it short as they do ReadBatch.
func (l *QuietLink) ReadBatchOnThread(ms []link.Message) (int, error) {
	return l.read(ms, onThread)
}

// How a read waits while no frame is queued.
type waitMode int

const (
	noWait   waitMode = iota // TryReadBatch
	inPoller                 // ReadBatch
	onThread                 // ReadBatchOnThread
)

func (l *QuietLink) read(ms []link.Message, how waitMode) (int, error) {
	if !l.guard.use() {
		return 0, l.opError("read", net.ErrClosed)
	}
	defer l.guard.done()
	n := min(len(ms), maxBatch)
	if n == 0 {
		return 0, nil
	}
	rd := &l.rd
	rd.start(ms, n)
	rd.err = nil
	var err error
	switch how {
	case inPoller:
		err = l.rc.Read(l.readFn)
		if err != nil && rd.armed {
			// Cut short (a deadline, Close): no frame may wake the
			// poller from now on.
			_ = l.rc.Control(l.disarmFn)
		}
	default:
		if rd.armed {
			// Nobody waits in the poller: a caller that polls
			// between sends, or waits on its own thread.
			_ = l.rc.Control(l.disarmFn)
		}
		if how == onThread {
			err = l.waitOnThread()
		} else {
			l.try()
		}
	}
	got, ferr := rd.finish(ms)
	if err == nil {
		err = rd.err
	}
	if err == nil {
		err = ferr
	}
	if err != nil {
		return 0, l.opError("read", err)
	}
	return got, nil
}

// waitOnThread reads into the batch, waiting in ppoll(2) on the socket and
// the eventfd until a frame comes, the deadline passes or Close.
func (l *QuietLink) waitOnThread() error {
	pfd := [2]unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLIN}, {Fd: int32(l.efd), Events: unix.POLLIN}}
	var drain [8]byte
	// Without a ring a look at the queue is a system call, and the
	// answer to what the reader just sent is seldom there yet: ppoll
	// first, which returns at once if a frame is. Past the deadline one
	// look decides: a frame queued is taken, else the read times out.
	dl := l.dl.Load()
	skip := l.ring == nil && (dl == noDeadline || dl > int64(time.Since(monoEpoch)))
	for skip || !l.try() {
		skip = false
		if l.closed.Load() {
			return net.ErrClosed
		}
		// Waiting is announced before the deadline is read, and
		// SetReadDeadline stores before it looks: one of the two sees
		// the other.
		l.threadWaiting.Store(true)
		var ts *unix.Timespec
		if dl := l.dl.Load(); dl != noDeadline {
			left := dl - int64(time.Since(monoEpoch))
			if left <= 0 {
				l.threadWaiting.Store(false)
				return os.ErrDeadlineExceeded
			}
			t := unix.NsecToTimespec(left)
			ts = &t
		}
		_, err := unix.Ppoll(pfd[:], ts, nil)
		l.threadWaiting.Store(false)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return os.NewSyscallError("ppoll", err)
		}
		if pfd[1].Revents != 0 {
			_, _ = unix.Read(l.efd, drain[:])
		}
	}
	return nil
}

// try reads what is queued, from the ring if there is one, without
// waiting. It reports false when nothing is; true when it read frames or
// failed (rd.errno, rd.err).
func (l *QuietLink) try() bool {
	r := l.ring
	if r == nil {
		return l.rd.try(uintptr(l.fd))
	}
	if r.err != nil {
		l.rd.err = r.err
		return true
	}
	got := l.rd.readRing(r)
	if r.grow > 0 {
		// The MTU grew since the ring was made: the frames that do
		// not fit are lost until it is made again.
		r.regrow(l.fd)
		l.slots.Store(int64(r.frames))
	}
	return got
}

// RingSlots returns how many frames the receive ring holds, or 0 if the
// link has none (PacketConfig.RingSize).
func (l *QuietLink) RingSlots() int { return int(l.slots.Load()) }

// recvmmsg is the syscall.RawConn Read callback of ReadBatch, called with
// the epoll instance. It reports false, so the poller waits, only when
// nothing is queued and the socket's registration is armed.
//
// Once frames came it disarms the registration if they were more than
// disarmAfter: a stream is coming in, whose next frames would wake the
// poller while the caller handles these. A frame or a few are most often
// an answer, or a new connection's confirm and request, after which the
// caller sends and waits again: it stays armed, which saves the next wait
// two system calls (TryReadBatch disarms it, should a sender poll next).
func (l *QuietLink) recvmmsg(epfd uintptr) bool {
	rd := &l.rd
	if l.try() {
		if rd.armed && rd.got > disarmAfter {
			l.disarm(epfd)
		}
		return true
	}
	if rd.armed {
		return false
	}
	// A new registration: epoll_ctl(2) signals at once a socket that is
	// ready as it registers it, so a frame that came since the read above
	// wakes the poller too. (Re-arming a kept registration with
	// EPOLL_CTL_MOD would not: it signals only a registration off the
	// instance's ready list, and nobody calls epoll_wait on the instance
	// to take it off.)
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	if err := unix.EpollCtl(int(epfd), unix.EPOLL_CTL_ADD, l.fd, &ev); err != nil {
		rd.err = os.NewSyscallError("epoll_ctl", err)
		return true
	}
	rd.armed = true
	return false
}

// disarmAfter is the most frames a read may take and leave the socket armed.
// With 1, the two or three frames that open a connection (confirm,
// request, the last one's FIN) cost a listener two epoll_ctl(2) calls each;
// with 3 a --crr server made 3 system calls fewer per connection and 20 %
// more connections a second (6 of 6 alternating rounds), while bulk, whose
// batches run to dozens of frames, moved the same.
const disarmAfter = 3

// disarm takes the socket out of the epoll instance epfd, so that frames
// arriving wake nobody.
func (l *QuietLink) disarm(epfd uintptr) {
	l.rd.armed = false
	_ = unix.EpollCtl(int(epfd), unix.EPOLL_CTL_DEL, l.fd, nil)
}

// SetReadDeadline sets the deadline for ReadBatch: once it passes, a
// waiting or later ReadBatch fails with an error wrapping
// os.ErrDeadlineExceeded. A deadline in the past cuts a waiting ReadBatch
// short; the zero time means none.
func (l *QuietLink) SetReadDeadline(t time.Time) error {
	dl := int64(noDeadline)
	if !t.IsZero() {
		dl = int64(t.Sub(monoEpoch))
	}
	l.dl.Store(dl)
	if l.threadWaiting.Load() {
		l.signal() // a ReadBatchOnThread looks again
	}
	return l.opError("set", l.ep.SetReadDeadline(t))
}

// signal wakes a ReadBatchOnThread waiting in ppoll(2).
func (l *QuietLink) signal() {
	if !l.guard.use() {
		return
	}
	defer l.guard.done()
	signalEventfd(l.efd)
}

// monoEpoch is the origin of ReadBatchOnThread's deadlines, which are
// monotonic; noDeadline stands for none.
var monoEpoch = time.Now()

const noDeadline = math.MaxInt64

// WriteBatch implements the link.Link WriteBatch method with blocking
// sendmmsg(2) on the send socket, at most 64 frames per system call. It is
// safe for concurrent use. When the device queue is full (ENOBUFS) it
// sleeps briefly and tries again: frames are never dropped here.
func (l *QuietLink) WriteBatch(ms []link.Message) (int, error) {
	if l.closed.Load() {
		return 0, l.opError("write", net.ErrClosed)
	}
	s := l.writers.Get().(*writeScratch)
	defer l.writers.Put(s)
	n, err := l.snd.writeBatch(s, ms, &l.backoffs)
	return n, l.opError("write", err)
}

// SetFilter implements the link.Link SetFilter method: SO_ATTACH_FILTER
// (socket(7)) replaces the program atomically.
func (l *QuietLink) SetFilter(prog []bpf.RawInstruction) error {
	if !l.guard.use() {
		return l.opError("set", net.ErrClosed)
	}
	defer l.guard.done()
	return l.opError("set", attachFilter(l.fd, prog))
}

// JoinGroup implements the link.Link JoinGroup method
// (PACKET_ADD_MEMBERSHIP, packet(7)).
func (l *QuietLink) JoinGroup(group net.HardwareAddr) error {
	return l.membership(unix.PACKET_ADD_MEMBERSHIP, group)
}

// LeaveGroup implements the link.Link LeaveGroup method
// (PACKET_DROP_MEMBERSHIP, packet(7)).
func (l *QuietLink) LeaveGroup(group net.HardwareAddr) error {
	return l.membership(unix.PACKET_DROP_MEMBERSHIP, group)
}

func (l *QuietLink) membership(opt int, group net.HardwareAddr) error {
	if !l.guard.use() {
		return l.opError("set", net.ErrClosed)
	}
	defer l.guard.done()
	return l.opError("set", setMembership(l.fd, l.ifi.Index, opt, group))
}

// Stats implements the link.Link Stats method, adding up the kernel's
// PACKET_STATISTICS, which reset on every read.
func (l *QuietLink) Stats() (link.Stats, error) {
	l.statsMu.Lock()
	defer l.statsMu.Unlock()
	if !l.guard.use() {
		return l.stats, l.opError("stats", net.ErrClosed)
	}
	defer l.guard.done()
	err := addStats(l.fd, &l.stats)
	return l.stats, l.opError("stats", err)
}

// Close implements the link.Link Close method. It unblocks ReadBatch and
// WriteBatch (within 100 ms if the send buffer is full), which then return
// errors wrapping net.ErrClosed, as does every later call, Close included.
func (l *QuietLink) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return l.opError("close", net.ErrClosed)
	}
	l.snd.close()
	err := l.ep.Close() // ends a waiting ReadBatch
	l.signal()          // and a ReadBatchOnThread
	l.guard.shut(nil)
	if err != nil {
		return l.opError("close", err)
	}
	return nil
}

// opError wraps err as a *net.OpError naming the interface, as PacketLink
// does, and returns nil for a nil err.
func (l *QuietLink) opError(op string, err error) error {
	return rawOpError(&l.closed, l.ifi.HardwareAddr, op, err)
}
