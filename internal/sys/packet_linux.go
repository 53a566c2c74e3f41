//go:build linux

package sys

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/myproto/myproto/internal/link"
)

const (
	// defaultSocketBuffer is the receive and send buffer size when the
	// config leaves it zero: 32 MiB removed the drops a flood of frames
	// caused with the kernel's defaults (see DESIGN.md).
	defaultSocketBuffer = 32 << 20

	// maxBatch is the most messages one recvmmsg(2) or sendmmsg(2) moves;
	// past 64 the measured gain is nil and the scratch arrays grow.
	maxBatch = 64

	// Back-off bounds while the transmit queue is full (ENOBUFS).
	minBackoff = 20 * time.Microsecond
	maxBackoff = time.Millisecond
)

// PacketConfig configures OpenPacket.
type PacketConfig struct {
	// EtherType is the EtherType the socket is bound to; it sends and
	// receives frames of this type only. It must not be zero.
	EtherType uint16
	// Filter is the classic BPF program (see Filter) attached before the
	// socket is bound, so no frame it rejects is ever queued. Nil accepts
	// every frame of the EtherType, including unicast frames for other
	// hosts.
	Filter []bpf.RawInstruction
	// ReadBuffer and WriteBuffer are the socket's buffer sizes in bytes
	// (SO_RCVBUF and SO_SNDBUF, socket(7)); zero means 32 MiB.
	ReadBuffer, WriteBuffer int
	// SendSocket makes WriteBatch send on a second packet socket, bound to
	// the interface with protocol 0 (so it receives nothing) and never
	// registered with the runtime's poller, with blocking sendmmsg(2). A
	// socket in the poller wakes it with EPOLLOUT whenever sent frames free
	// buffer space, which under a stream of sends is once per batch (see
	// DESIGN.md, "The data path").
	SendSocket bool
	// RingSize, if above zero, is the size in bytes of a receive ring
	// (TPACKET_V2, see rxRing) that OpenQuiet maps onto the socket: frames
	// then arrive there instead of in the socket's queue, and ReadBuffer
	// bounds nothing. The kernel allocates the ring as the link opens. A
	// slot holds a frame of the interface's MTU whatever the frame's size,
	// where the socket buffer counts each frame's own size: 8 MiB holds
	// 5,120 frames at MTU 1500 and 896 at 9000, and the default socket
	// buffer about 14,000 full frames at 1500 or 40,000 small ones.
	// OpenPacket ignores it.
	RingSize int
}

var _ link.Link = (*PacketLink)(nil)

// A PacketLink is a link.Link over an AF_PACKET socket (packet(7)) of type
// SOCK_RAW: it reads and writes whole Ethernet frames of one EtherType on one
// interface, several at a time with recvmmsg(2) and sendmmsg(2).
type PacketLink struct {
	conn   *packet.Conn
	rc     syscall.RawConn
	closed atomic.Bool

	ifaceInfo

	// Read state, owned by the one goroutine in ReadBatch. readFn is bound
	// once so that passing it to rc.Read allocates nothing.
	rd     recvBatch
	readFn func(fd uintptr) bool

	// writers holds *writeScratch: WriteBatch has concurrent callers.
	writers sync.Pool

	statsMu sync.Mutex
	stats   link.Stats

	// backoffs counts the sleeps on ENOBUFS, for tests.
	backoffs atomic.Uint64

	// snd is the send socket of PacketConfig.SendSocket; nil without one.
	snd *sendSocket
}

// mmsghdr is struct mmsghdr of recvmmsg(2) and sendmmsg(2). Go pads the
// struct to the alignment of Msghdr, as C does: 64 bytes on 64-bit systems,
// 32 on 32-bit ones.
type mmsghdr struct {
	Hdr unix.Msghdr
	Len uint32
}

// setSend points msg[i] at the frame ms[i] holds, Buf[:N], with iov[i]
// as its one iovec, for sendmmsg(2).
func setSend(iov []unix.Iovec, msg []mmsghdr, ms []link.Message) {
	for i := range ms {
		setMsg(&iov[i], &msg[i], ms[i].Buf[:ms[i].N])
	}
}

// setRecv points msg[i] at all of ms[i].Buf, for recvmmsg(2).
func setRecv(iov []unix.Iovec, msg []mmsghdr, ms []link.Message) {
	for i := range ms {
		setMsg(&iov[i], &msg[i], ms[i].Buf)
	}
}

// A recvBatch is one batched read's system-call arguments: the iovecs and
// headers recvmmsg(2) fills, owned by the one goroutine reading. Its try
// method is what a link calls, once or in its wait loop.
type recvBatch struct {
	iov   [maxBatch]unix.Iovec
	msg   [maxBatch]mmsghdr
	n     int           // messages offered to recvmmsg
	got   int           // messages filled
	errno syscall.Errno // recvmmsg's failure other than EAGAIN
}

// start points the batch at ms[:n].
func (b *recvBatch) start(ms []link.Message, n int) {
	setRecv(b.iov[:], b.msg[:], ms[:n])
	b.n, b.got, b.errno = n, 0, 0
}

// try reads what is queued on fd, without waiting. It reports false when
// nothing is (EAGAIN); it is also a syscall.RawConn Read callback, for which
// false makes the poller wait.
func (b *recvBatch) try(fd uintptr) bool {
	got, e := recvNow(fd, &b.msg[0], b.n)
	switch e {
	case 0:
		b.got = got
	case unix.EAGAIN:
		return false
	default:
		b.errno = e
	}
	return true
}

// finish lets go of the caller's buffers and sets the length of each
// message filled; it returns how many were, or recvmmsg's failure. A frame
// longer than its message's Buf was truncated: its N is len(Buf).
func (b *recvBatch) finish(ms []link.Message) (int, error) {
	for i := range b.n {
		b.iov[i].Base = nil // do not keep the caller's buffers alive
	}
	if b.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", b.errno)
	}
	for i := range b.got {
		m := &b.msg[i]
		ms[i].N = min(int(m.Len), len(ms[i].Buf))
		if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
			ms[i].N = len(ms[i].Buf)
		}
	}
	return b.got, nil
}

func setMsg(iov *unix.Iovec, msg *mmsghdr, b []byte) {
	*iov = unix.Iovec{Base: unsafe.SliceData(b)}
	iov.SetLen(len(b))
	*msg = mmsghdr{Hdr: unix.Msghdr{Iov: iov}}
	msg.Hdr.SetIovlen(1)
}

// writeScratch is one WriteBatch call's system-call arguments. sendFn is
// bound once, when the scratch is made, so reusing it allocates nothing.
type writeScratch struct {
	iov    [maxBatch]unix.Iovec
	msg    [maxBatch]mmsghdr
	off, n int // msg[off:n] are still to send
	got    int
	errno  syscall.Errno
	sendFn func(fd uintptr) bool
}

// OpenPacket opens a packet socket on ifi bound to cfg.EtherType, with
// cfg.Filter attached before bind(2). It asks the kernel not to hand the
// socket the frames it sends itself (PACKET_IGNORE_OUTGOING) and sizes its
// buffers with SO_RCVBUFFORCE and SO_SNDBUFFORCE, falling back to the capped
// SO_RCVBUF and SO_SNDBUF without CAP_NET_ADMIN.
//
// Opening a packet socket needs CAP_NET_RAW (see the package documentation);
// without it the error wraps syscall.EPERM.
func OpenPacket(ifi *net.Interface, cfg PacketConfig) (*PacketLink, error) {
	if err := checkOpen("packet link", ifi, cfg); err != nil {
		return nil, err
	}
	rcvbuf, sndbuf := cfg.ReadBuffer, cfg.WriteBuffer
	if rcvbuf == 0 {
		rcvbuf = defaultSocketBuffer
	}
	if sndbuf == 0 {
		sndbuf = defaultSocketBuffer
	}

	conn, err := packet.Listen(ifi, packet.Raw, int(cfg.EtherType), &packet.Config{Filter: cfg.Filter})
	if err != nil {
		return nil, fmt.Errorf("sys: open packet link on %s: %w", ifi.Name, err)
	}
	l, err := newPacketLink(conn, ifi, rcvbuf, sndbuf)
	if err == nil && cfg.SendSocket {
		l.snd, err = openSendSocket(ifi, sndbuf)
	}
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("sys: open packet link on %s: %w", ifi.Name, err)
	}
	return l, nil
}

// newPacketLink sets up the options of the open socket conn and wraps it.
func newPacketLink(conn *packet.Conn, ifi *net.Interface, rcvbuf, sndbuf int) (*PacketLink, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		s := int(fd)
		// Every packet socket on the interface would otherwise also see
		// each frame we transmit.
		if err := unix.SetsockoptInt(s, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
			serr = fmt.Errorf("PACKET_IGNORE_OUTGOING (Linux 4.20): %w", os.NewSyscallError("setsockopt", err))
			return
		}
		if err := setBuffer(s, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, rcvbuf); err != nil {
			serr = err
			return
		}
		serr = setBuffer(s, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, sndbuf)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return nil, err
	}

	l := &PacketLink{conn: conn, rc: rc}
	l.init(ifi)
	l.readFn = l.rd.try
	l.writers.New = func() any {
		s := new(writeScratch)
		s.sendFn = s.sendmmsg
		return s
	}
	return l, nil
}

// setBuffer sets a socket buffer size with the privileged option force,
// which ignores net.core.rmem_max and wmem_max, or with the capped option
// plain when force is not permitted (no CAP_NET_ADMIN, as in a user
// namespace).
func setBuffer(fd, force, plain, size int) error {
	err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size)
	if errors.Is(err, unix.EPERM) {
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size)
	}
	return os.NewSyscallError("setsockopt", err)
}

// ReadBatch implements the link.Link ReadBatch method with recvmmsg(2),
// waiting in the runtime's network poller while no frame is queued. It moves
// at most 64 frames per call and allocates nothing. A frame longer than its
// message's Buf is truncated and its N is len(Buf). ReadBatch keeps its
// system-call arguments in l, so it must not be called by two goroutines at
// once.
func (l *PacketLink) ReadBatch(ms []link.Message) (int, error) {
	if l.closed.Load() {
		return 0, l.opError("read", net.ErrClosed)
	}
	n := min(len(ms), maxBatch)
	if n == 0 {
		return 0, nil
	}
	l.rd.start(ms, n)
	err := l.rc.Read(l.readFn)
	got, ferr := l.rd.finish(ms)
	if err == nil {
		err = ferr
	}
	if err != nil {
		return 0, l.opError("read", err)
	}
	return got, nil
}

// SetReadDeadline sets the deadline for ReadBatch: once it passes, a
// waiting or later ReadBatch fails with an error wrapping
// os.ErrDeadlineExceeded. A deadline in the past cuts a waiting ReadBatch
// short; the zero time means none.
func (l *PacketLink) SetReadDeadline(t time.Time) error {
	return l.opError("set", l.conn.SetReadDeadline(t))
}

// recvNow is recvmmsg(2) of up to n messages into msg and the ones after it,
// without waiting: it returns how many came, or the errno (EAGAIN: none was
// queued). MSG_DONTWAIT never sleeps, so the raw form: entering and leaving
// the scheduler's syscall state per batch costs more than the call, and
// invites sysmon to hand the P away.
func recvNow(fd uintptr, msg *mmsghdr, n int) (int, syscall.Errno) {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(msg)), uintptr(n), unix.MSG_DONTWAIT, 0, 0)
		if e != unix.EINTR {
			return int(r), e
		}
	}
}

// WriteBatch implements the link.Link WriteBatch method with sendmmsg(2), at
// most 64 frames per system call. It is safe for concurrent use. When the
// socket's send buffer is full it waits in the runtime's network poller; when
// the device queue is full (ENOBUFS, which the poller does not signal) it
// sleeps briefly, 20µs at first and up to 1ms, and tries again: frames are
// never dropped here.
func (l *PacketLink) WriteBatch(ms []link.Message) (int, error) {
	if l.closed.Load() {
		return 0, l.opError("write", net.ErrClosed)
	}
	s := l.writers.Get().(*writeScratch)
	defer l.writers.Put(s)
	if l.snd != nil {
		n, err := l.snd.writeBatch(s, ms, &l.backoffs)
		if err != nil {
			err = l.opError("write", err)
		}
		return n, err
	}

	sent := 0
	for sent < len(ms) {
		batch := ms[sent:min(len(ms), sent+maxBatch)]
		setSend(s.iov[:], s.msg[:], batch)
		s.off, s.n = 0, len(batch)
		err := l.sendBatch(s)
		sent += s.off
		if err != nil {
			s.clear()
			return sent, err
		}
	}
	s.clear()
	return sent, nil
}

// sendBatch sends s.msg[s.off:s.n], advancing s.off, until all are sent or
// an error other than back-pressure occurs.
func (l *PacketLink) sendBatch(s *writeScratch) error {
	backoff := minBackoff
	for s.off < s.n {
		if l.closed.Load() {
			return l.opError("write", net.ErrClosed)
		}
		s.got, s.errno = 0, 0
		if err := l.rc.Write(s.sendFn); err != nil {
			return l.opError("write", err)
		}
		s.off += s.got
		switch {
		case s.errno == unix.ENOBUFS:
			l.backoffs.Add(1)
			time.Sleep(backoff)
			backoff = min(2*backoff, maxBackoff)
		case s.errno != 0:
			return l.opError("write", os.NewSyscallError("sendmmsg", s.errno))
		default:
			backoff = minBackoff
		}
	}
	return nil
}

// sendmmsg is the syscall.RawConn Write callback of WriteBatch. It reports
// false, so the poller waits for room, only when the send buffer is full.
// sendmmsg(2) sends what it can and reports an error only when it sent
// nothing, so a partial send comes back here for the rest.
func (s *writeScratch) sendmmsg(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&s.msg[s.off])),
			uintptr(s.n-s.off), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			s.got = int(r)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		s.errno = e
		return true
	}
}

// clear drops the references to the caller's buffers before s is pooled.
func (s *writeScratch) clear() {
	for i := range s.n {
		s.iov[i].Base = nil
	}
}

// SetFilter implements the link.Link SetFilter method: SO_ATTACH_FILTER
// (socket(7)) replaces the program atomically, so no frame is ever seen
// unfiltered.
func (l *PacketLink) SetFilter(prog []bpf.RawInstruction) error {
	if l.closed.Load() {
		return l.opError("set", net.ErrClosed)
	}
	return l.opError("set", l.conn.SetBPF(prog))
}

// JoinGroup implements the link.Link JoinGroup method (PACKET_ADD_MEMBERSHIP,
// packet(7)). Memberships are counted per socket and dropped by Close.
func (l *PacketLink) JoinGroup(group net.HardwareAddr) error {
	if l.closed.Load() {
		return l.opError("set", net.ErrClosed)
	}
	return l.opError("set", l.conn.JoinGroup(group))
}

// LeaveGroup implements the link.Link LeaveGroup method
// (PACKET_DROP_MEMBERSHIP, packet(7)).
func (l *PacketLink) LeaveGroup(group net.HardwareAddr) error {
	if l.closed.Load() {
		return l.opError("set", net.ErrClosed)
	}
	return l.opError("set", l.conn.LeaveGroup(group))
}

// Stats implements the link.Link Stats method. PACKET_STATISTICS (packet(7))
// resets the kernel's counters on every read, so the link adds them up.
func (l *PacketLink) Stats() (link.Stats, error) {
	l.statsMu.Lock()
	defer l.statsMu.Unlock()
	if l.closed.Load() {
		return l.stats, l.opError("stats", net.ErrClosed)
	}
	st, err := l.conn.Stats()
	if err != nil {
		return l.stats, l.opError("stats", err)
	}
	l.stats.Packets += uint64(st.Packets)
	l.stats.Drops += uint64(st.Drops)
	return l.stats, nil
}

// SocketBuffers returns the socket's receive and send buffer sizes
// (SO_RCVBUF and SO_SNDBUF, socket(7)). Linux reports twice the size that was
// set, the rest being its bookkeeping allowance.
func (l *PacketLink) SocketBuffers() (rcv, snd int, err error) {
	if l.closed.Load() {
		return 0, 0, l.opError("get", net.ErrClosed)
	}
	cerr := l.rc.Control(func(fd uintptr) {
		rcv, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		if err != nil {
			err = os.NewSyscallError("getsockopt", err)
			return
		}
		snd, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
		err = os.NewSyscallError("getsockopt", err)
	})
	if cerr != nil {
		err = cerr
	}
	if err != nil {
		return 0, 0, l.opError("get", err)
	}
	return rcv, snd, nil
}

// Close implements the link.Link Close method. It unblocks ReadBatch and
// WriteBatch, which then return errors wrapping net.ErrClosed, as does every
// later call, Close included.
func (l *PacketLink) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return l.opError("close", net.ErrClosed)
	}
	if l.snd != nil {
		l.snd.close()
	}
	if err := l.conn.Close(); err != nil {
		return l.opError("close", err)
	}
	return nil
}

// opError wraps err, a system call error or net.ErrClosed, as a
// *net.OpError naming the interface, and returns nil for a nil err. Whatever
// a closed descriptor made the packages below return (EBADF from
// mdlayher/socket, "use of closed file" from the poller), a closed link
// reports net.ErrClosed.
func (l *PacketLink) opError(op string, err error) error {
	if err == nil {
		return nil
	}
	if l.closed.Load() && !errors.Is(err, net.ErrClosed) {
		err = net.ErrClosed
	}
	// Keep the innermost error: packet already wraps its own *net.OpError.
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "packet", Addr: &packet.Addr{HardwareAddr: l.ifi.HardwareAddr}, Err: err}
}
