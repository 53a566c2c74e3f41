package sys

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/myproto/myproto/internal/link"
)

// blockingSendTimeout bounds a blocked sendmmsg(2) of a BlockingLink, so
// that a Close while the send buffer is full ends it.
const blockingSendTimeout = 100 * time.Millisecond

var _ link.Link = (*BlockingLink)(nil)

// A BlockingLink is a link.Link over an AF_PACKET socket (packet(7)) that
// is not in the runtime's network poller: ReadBatch waits in ppoll(2) and
// WriteBatch in a blocking sendmmsg(2), each on the calling thread, which
// suits a goroutine locked to its thread (runtime.LockOSThread).
//
// A socket in the poller makes the kernel wake the poller's thread for
// every frame it queues while nobody reads it (the poller is edge-triggered
// and re-armed by each frame), and for every sent frame that frees buffer
// space (EPOLLOUT). For a socket that a flood keeps full while its reader
// deliberately sleeps, such as the stack's control socket, those wake-ups
// cost as much CPU as the reading. Nothing wakes for a BlockingLink but its
// reader, and only while it waits.
//
// It is otherwise what a PacketLink is: frames of one EtherType on one
// interface, the filter attached before bind(2), PACKET_IGNORE_OUTGOING, up
// to 64 frames per system call.
type BlockingLink struct {
	ifaceInfo

	// fd and efd (an eventfd(2) that Close signals, so that a ReadBatch
	// waiting in ppoll(2) returns), closed by guard.
	fd, efd int
	guard   fdGuard
	closed  atomic.Bool

	// Read state, owned by the one goroutine in ReadBatch. short says
	// the last batch took fewer frames than asked: the socket was empty.
	rd    recvBatch
	short bool
	// Write state, under wmu.
	wmu sync.Mutex
	wr  struct {
		iov [maxBatch]unix.Iovec
		msg [maxBatch]mmsghdr
	}

	statsMu sync.Mutex
	stats   link.Stats
}

// OpenBlocking opens a BlockingLink on ifi bound to cfg.EtherType, with
// cfg.Filter attached before bind(2) and the buffer sizes of cfg, as
// OpenPacket does. It needs CAP_NET_RAW; without it the error wraps
// syscall.EPERM.
func OpenBlocking(ifi *net.Interface, cfg PacketConfig) (*BlockingLink, error) {
	if err := checkOpen("blocking packet link", ifi, cfg); err != nil {
		return nil, err
	}
	l, err := openBlocking(ifi, cfg)
	if err != nil {
		return nil, fmt.Errorf("sys: open blocking packet link on %s: %w", ifi.Name, err)
	}
	return l, nil
}

func openBlocking(ifi *net.Interface, cfg PacketConfig) (*BlockingLink, error) {
	fd, err := openRawPacket(ifi, cfg)
	if err != nil {
		return nil, err
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	l := &BlockingLink{fd: fd, efd: efd}
	l.init(ifi)
	l.guard.release = func() {
		unix.Close(l.fd)
		unix.Close(l.efd)
		l.fd, l.efd = -1, -1
	}
	return l, nil
}

// openRawPacket opens a packet socket outside the runtime's poller, bound to
// cfg.EtherType on ifi with cfg.Filter attached first, as OpenPacket's is:
// PACKET_IGNORE_OUTGOING, cfg's buffer sizes, and SO_SNDTIMEO so that a
// blocked send ends for a Close.
func openRawPacket(ifi *net.Interface, cfg PacketConfig) (int, error) {
	rcvbuf, sndbuf := cfg.ReadBuffer, cfg.WriteBuffer
	if rcvbuf == 0 {
		rcvbuf = defaultSocketBuffer
	}
	if sndbuf == 0 {
		sndbuf = defaultSocketBuffer
	}
	// Protocol 0 receives nothing until bind(2) names the EtherType, by
	// when the filter is in place.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	fail := func(err error) (int, error) {
		unix.Close(fd)
		return -1, err
	}
	if cfg.Filter != nil {
		if err := attachFilter(fd, cfg.Filter); err != nil {
			return fail(err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fail(fmt.Errorf("PACKET_IGNORE_OUTGOING (Linux 4.20): %w", os.NewSyscallError("setsockopt", err)))
	}
	if err := setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, rcvbuf); err != nil {
		return fail(err)
	}
	if err := setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, sndbuf); err != nil {
		return fail(err)
	}
	tv := unix.NsecToTimeval(blockingSendTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return fail(os.NewSyscallError("setsockopt", err))
	}
	proto := htons(cfg.EtherType)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		return fail(os.NewSyscallError("bind", err))
	}
	return fd, nil
}

// htons converts a 16-bit value from host to network byte order, as
// sockaddr_ll's protocol wants it.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// attachFilter attaches prog to fd (SO_ATTACH_FILTER, socket(7)), replacing
// any program there atomically.
func attachFilter(fd int, prog []bpf.RawInstruction) error {
	if len(prog) == 0 {
		return errors.New("empty filter")
	}
	insns := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		insns[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	fp := unix.SockFprog{Len: uint16(len(insns)), Filter: &insns[0]}
	return os.NewSyscallError("setsockopt", unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp))
}

// use returns the socket and eventfd for one call, or false once Close has
// been called; done must follow a successful use.
func (l *BlockingLink) use() (fd, efd int, ok bool) {
	if !l.guard.use() {
		return -1, -1, false
	}
	return l.fd, l.efd, true
}

func (l *BlockingLink) done() { l.guard.done() }

// ReadBatch implements the link.Link ReadBatch method with recvmmsg(2),
// waiting in ppoll(2) on the calling thread while no frame is queued. It
// moves at most 64 frames per call and allocates nothing. A frame longer
// than its message's Buf is truncated and its N is len(Buf). One goroutine
// reads at a time.
func (l *BlockingLink) ReadBatch(ms []link.Message) (int, error) {
	fd, efd, ok := l.use()
	if !ok {
		return 0, l.opError("read", net.ErrClosed)
	}
	defer l.done()
	n := min(len(ms), maxBatch)
	if n == 0 {
		return 0, nil
	}
	rd := &l.rd
	rd.start(ms, n)
	pfd := [2]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(efd), Events: unix.POLLIN}}
	var err error
	// After a short batch the socket was empty a moment ago: wait
	// first rather than ask recvmmsg(2) for the EAGAIN it most likely
	// has (ppoll returns at once if a frame came meanwhile).
	wait := l.short
	for wait || !rd.try(uintptr(fd)) {
		wait = false
		if l.closed.Load() {
			err = net.ErrClosed
			break
		}
		if _, perr := unix.Ppoll(pfd[:], nil, nil); perr != nil && !errors.Is(perr, unix.EINTR) {
			err = os.NewSyscallError("ppoll", perr)
			break
		}
	}
	l.short = rd.got < n
	got, ferr := rd.finish(ms)
	if err == nil {
		err = ferr
	}
	if err != nil {
		return 0, l.opError("read", err)
	}
	return got, nil
}

// WriteBatch implements the link.Link WriteBatch method with blocking
// sendmmsg(2), at most 64 frames per system call, on the calling thread. It
// is safe for concurrent use. When the device queue is full (ENOBUFS) it
// sleeps briefly, 20µs at first and up to 1ms, and tries again: frames are
// never dropped here.
func (l *BlockingLink) WriteBatch(ms []link.Message) (int, error) {
	fd, _, ok := l.use()
	if !ok {
		return 0, l.opError("write", net.ErrClosed)
	}
	defer l.done()
	l.wmu.Lock()
	defer l.wmu.Unlock()
	wr := &l.wr
	sent := 0
	for sent < len(ms) {
		batch := ms[sent:min(len(ms), sent+maxBatch)]
		setSend(wr.iov[:], wr.msg[:], batch)
		off, backoff := 0, minBackoff
		var err error
		for off < len(batch) && err == nil {
			if l.closed.Load() {
				err = l.opError("write", net.ErrClosed)
				break
			}
			r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&wr.msg[off])),
				uintptr(len(batch)-off), 0, 0, 0)
			switch e {
			case 0:
				off += int(r)
				backoff = minBackoff
			case unix.EINTR, unix.EAGAIN: // EAGAIN: SO_SNDTIMEO passed
			case unix.ENOBUFS:
				time.Sleep(backoff)
				backoff = min(2*backoff, maxBackoff)
			default:
				err = l.opError("write", os.NewSyscallError("sendmmsg", e))
			}
		}
		for i := range batch {
			wr.iov[i].Base = nil
		}
		sent += off
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// SetFilter implements the link.Link SetFilter method: SO_ATTACH_FILTER
// (socket(7)) replaces the program atomically.
func (l *BlockingLink) SetFilter(prog []bpf.RawInstruction) error {
	fd, _, ok := l.use()
	if !ok {
		return l.opError("set", net.ErrClosed)
	}
	defer l.done()
	return l.opError("set", attachFilter(fd, prog))
}

// JoinGroup implements the link.Link JoinGroup method
// (PACKET_ADD_MEMBERSHIP, packet(7)).
func (l *BlockingLink) JoinGroup(group net.HardwareAddr) error {
	return l.membership(unix.PACKET_ADD_MEMBERSHIP, group)
}

// LeaveGroup implements the link.Link LeaveGroup method
// (PACKET_DROP_MEMBERSHIP, packet(7)).
func (l *BlockingLink) LeaveGroup(group net.HardwareAddr) error {
	return l.membership(unix.PACKET_DROP_MEMBERSHIP, group)
}

func (l *BlockingLink) membership(opt int, group net.HardwareAddr) error {
	fd, _, ok := l.use()
	if !ok {
		return l.opError("set", net.ErrClosed)
	}
	defer l.done()
	return l.opError("set", setMembership(fd, l.ifi.Index, opt, group))
}

// setMembership adds (PACKET_ADD_MEMBERSHIP) or drops a multicast group of
// the interface index to packet socket fd.
func setMembership(fd, index, opt int, group net.HardwareAddr) error {
	if len(group) > 8 {
		return os.NewSyscallError("setsockopt", unix.EINVAL)
	}
	mreq := unix.PacketMreq{Ifindex: int32(index), Type: unix.PACKET_MR_MULTICAST, Alen: uint16(len(group))}
	copy(mreq.Address[:], group)
	return os.NewSyscallError("setsockopt", unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, opt, &mreq))
}

// Stats implements the link.Link Stats method, adding up the kernel's
// PACKET_STATISTICS, which reset on every read.
func (l *BlockingLink) Stats() (link.Stats, error) {
	l.statsMu.Lock()
	defer l.statsMu.Unlock()
	fd, _, ok := l.use()
	if !ok {
		return l.stats, l.opError("stats", net.ErrClosed)
	}
	defer l.done()
	err := addStats(fd, &l.stats)
	return l.stats, l.opError("stats", err)
}

// addStats adds packet socket fd's PACKET_STATISTICS, which reset on every
// read, to st.
func addStats(fd int, st *link.Stats) error {
	ps, err := unix.GetsockoptTpacketStats(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return os.NewSyscallError("getsockopt", err)
	}
	st.Packets += uint64(ps.Packets)
	st.Drops += uint64(ps.Drops)
	return nil
}

// Close implements the link.Link Close method. It unblocks ReadBatch and
// WriteBatch (within 100 ms if the send buffer is full), which then return
// errors wrapping net.ErrClosed, as does every later call, Close included.
func (l *BlockingLink) Close() error {
	if !l.guard.shut(func() {
		l.closed.Store(true)
		signalEventfd(l.efd)
	}) {
		return l.opError("close", net.ErrClosed)
	}
	return nil
}

// signalEventfd adds to the counter of eventfd efd, which ends a ppoll(2)
// waiting on it. The counter is host-endian; any non-zero value will do.
func signalEventfd(efd int) {
	one := [8]byte{0: 1}
	_, _ = unix.Write(efd, one[:])
}

// opError wraps err as a *net.OpError naming the interface, as PacketLink
// does, and returns nil for a nil err.
func (l *BlockingLink) opError(op string, err error) error {
	return rawOpError(&l.closed, l.ifi.HardwareAddr, op, err)
}

// rawOpError is the opError of the links on raw descriptors: err as a
// *net.OpError naming the interface by hw, net.ErrClosed once closed is set,
// nil for a nil err.
func rawOpError(closed *atomic.Bool, hw net.HardwareAddr, op string, err error) error {
	if err == nil {
		return nil
	}
	if closed.Load() && !errors.Is(err, net.ErrClosed) {
		err = net.ErrClosed
	}
	return &net.OpError{Op: op, Net: "packet", Addr: &packet.Addr{HardwareAddr: hw}, Err: err}
}
