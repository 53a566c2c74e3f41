//go:build linux

package sys

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
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

// Ring defaults (see DESIGN.md: a 64 MiB TPACKET_V3 ring took a sendmmsg
// flood without a drop).
const (
	defaultRingBlockSize = 1 << 20
	defaultRingBlocks    = 64
	// ringFrameSize is the tp_frame_size the kernel wants for its checks.
	// TPACKET_V3 packs frames of any size into a block, so it bounds
	// nothing.
	ringFrameSize = 2048
	// blockStatusOff is the offset of block_status in struct
	// tpacket_block_desc: version and offset_to_priv come first.
	blockStatusOff = 8
)

// RingConfig configures OpenRing.
type RingConfig struct {
	// EtherType is the EtherType the socket is bound to. It must not be
	// zero.
	EtherType uint16
	// Filter is the classic BPF program attached before bind(2), as in
	// PacketConfig. Nil accepts every frame of the EtherType.
	Filter []bpf.RawInstruction
	// BlockSize is the size of one ring block in bytes, a multiple of the
	// page size; 0 means 1 MiB. A block must hold the largest frame.
	BlockSize int
	// Blocks is the number of blocks; 0 means 64.
	Blocks int
	// RetireTimeout is how long the kernel fills a block before it hands
	// the block over partly full (tp_retire_blk_tov); 0 means 1 ms, the
	// smallest it takes. Under a trickle of frames it is the latency a ring
	// adds.
	RetireTimeout time.Duration
}

// RingStats are a ring's kernel-side counters since it was opened.
type RingStats struct {
	// Packets is how many frames passed the filter, dropped ones included.
	Packets uint64
	// Drops is how many of them the kernel dropped because every block
	// was still held by user space.
	Drops uint64
	// FreezeQueue counts the times the ring filled up and the kernel froze
	// it (tp_freeze_q_cnt).
	FreezeQueue uint64
}

// A Ring receives frames of one EtherType on one interface through a
// TPACKET_V3 receive ring (PACKET_RX_RING, packet(7) and the kernel's
// Documentation/networking/packet_mmap.rst): the kernel copies frames into
// blocks of memory shared with this process and hands over a whole block at
// a time, so reading takes no system call per frame or per batch, only a
// wait in the runtime's network poller when no block is ready.
//
// It reads with ReadBatch, which has the semantics of link.Link's, or with
// ReadFunc, which hands out the frames in place without copying them. One
// goroutine reads at a time.
type Ring struct {
	conn   *packet.Conn
	rc     syscall.RawConn
	closed atomic.Bool
	ifi    net.Interface

	// mu is held by the reader while it touches mem, and by Close to unmap
	// it, so that the mapping never goes away under a reader.
	mu        sync.Mutex
	mem       []byte
	blockSize int
	blocks    int
	cur       int    // the block being read, or waited for
	left      uint32 // frames of block cur not yet read; 0: not open
	off       uint32 // offset in block cur of the next frame
	waitFn    func(fd uintptr) bool

	statsMu sync.Mutex
	stats   RingStats
}

// OpenRing opens a packet socket on ifi bound to cfg.EtherType, with
// cfg.Filter attached before bind(2), and maps a TPACKET_V3 receive ring
// onto it. Frames the socket itself sends are not received
// (PACKET_IGNORE_OUTGOING).
//
// Like OpenPacket it needs CAP_NET_RAW; without it the error wraps
// syscall.EPERM.
func OpenRing(ifi *net.Interface, cfg RingConfig) (*Ring, error) {
	if ifi == nil {
		return nil, errors.New("sys: open ring: nil interface")
	}
	if cfg.EtherType == 0 {
		return nil, fmt.Errorf("sys: open ring on %s: EtherType must not be zero", ifi.Name)
	}
	bs, nr := cfg.BlockSize, cfg.Blocks
	if bs == 0 {
		bs = defaultRingBlockSize
	}
	if nr == 0 {
		nr = defaultRingBlocks
	}
	if bs <= 0 || bs%os.Getpagesize() != 0 || nr <= 0 || bs > 1<<30/nr {
		return nil, fmt.Errorf("sys: open ring on %s: %d blocks of %d bytes: %w", ifi.Name, nr, bs, unix.EINVAL)
	}
	tov := cfg.RetireTimeout
	if tov <= 0 {
		tov = time.Millisecond
	}
	conn, err := packet.Listen(ifi, packet.Raw, int(cfg.EtherType), &packet.Config{Filter: cfg.Filter})
	if err != nil {
		return nil, fmt.Errorf("sys: open ring on %s: %w", ifi.Name, err)
	}
	r := &Ring{conn: conn, ifi: *ifi, blockSize: bs, blocks: nr}
	r.ifi.HardwareAddr = slices.Clone(ifi.HardwareAddr)
	r.waitFn = r.blockReady
	if err := r.setup(uint32(tov.Milliseconds())); err != nil {
		if r.mem != nil {
			unix.Munmap(r.mem)
		}
		conn.Close()
		return nil, fmt.Errorf("sys: open ring on %s: %w", ifi.Name, err)
	}
	return r, nil
}

// setup switches the bound socket to TPACKET_V3, maps the ring and
// discards what was queued the old way in the meantime.
func (r *Ring) setup(tovMillis uint32) error {
	rc, err := r.conn.SyscallConn()
	if err != nil {
		return err
	}
	r.rc = rc
	var serr error
	err = rc.Control(func(fd uintptr) {
		s := int(fd)
		if err := unix.SetsockoptInt(s, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
			serr = fmt.Errorf("PACKET_IGNORE_OUTGOING (Linux 4.20): %w", os.NewSyscallError("setsockopt", err))
			return
		}
		if err := unix.SetsockoptInt(s, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
			serr = fmt.Errorf("PACKET_VERSION: %w", os.NewSyscallError("setsockopt", err))
			return
		}
		req := unix.TpacketReq3{
			Block_size:     uint32(r.blockSize),
			Block_nr:       uint32(r.blocks),
			Frame_size:     ringFrameSize,
			Frame_nr:       uint32(r.blockSize / ringFrameSize * r.blocks),
			Retire_blk_tov: tovMillis,
		}
		if err := unix.SetsockoptTpacketReq3(s, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
			serr = fmt.Errorf("PACKET_RX_RING: %w", os.NewSyscallError("setsockopt", err))
			return
		}
		mem, err := unix.Mmap(s, 0, r.blockSize*r.blocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			serr = os.NewSyscallError("mmap", err)
			return
		}
		r.mem = mem
		// Frames that arrived between bind(2) and the ring went to the
		// socket's ordinary queue; left there they would keep the socket
		// readable for the poller forever.
		buf := make([]byte, 64)
		for {
			_, _, err := unix.Recvfrom(s, buf, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
			if err != nil {
				break
			}
		}
	})
	if err == nil {
		err = serr
	}
	return err
}

// status returns the address of block i's block_status word.
func (r *Ring) status(i int) *uint32 {
	return (*uint32)(unsafe.Pointer(&r.mem[i*r.blockSize+blockStatusOff]))
}

// blockReady is the syscall.RawConn Read callback that waits for block cur:
// it reports false, so the poller waits, while the kernel still owns it. The
// kernel makes the socket readable when it hands a block over.
func (r *Ring) blockReady(uintptr) bool {
	return atomic.LoadUint32(r.status(r.cur))&unix.TP_STATUS_USER != 0
}

// open makes block cur the one being read.
func (r *Ring) open() {
	bd := (*unix.TpacketHdrV1)(unsafe.Pointer(&r.mem[r.cur*r.blockSize+blockStatusOff]))
	r.left, r.off = bd.Num_pkts, bd.Offset_to_first_pkt
	if r.left == 0 {
		r.release()
	}
}

// release hands block cur back to the kernel and moves on to the next.
func (r *Ring) release() {
	atomic.StoreUint32(r.status(r.cur), unix.TP_STATUS_KERNEL)
	r.left = 0
	r.cur = (r.cur + 1) % r.blocks
}

// next returns the next frame of the open block, truncated to what the
// block holds, and advances past it.
func (r *Ring) next() []byte {
	base := r.cur * r.blockSize
	h := (*unix.Tpacket3Hdr)(unsafe.Pointer(&r.mem[base+int(r.off)]))
	start := base + int(r.off) + int(h.Mac)
	frame := r.mem[start : start+int(h.Snaplen) : start+int(h.Snaplen)]
	r.off += h.Next_offset
	if r.left--; r.left == 0 {
		r.release()
	}
	return frame
}

// wait returns once block cur holds frames, waiting in the poller if it
// must. It is called with r.mu held.
func (r *Ring) wait() error {
	for r.left == 0 {
		if r.closed.Load() {
			return r.opError("read", net.ErrClosed)
		}
		if !r.blockReady(0) {
			if err := r.rc.Read(r.waitFn); err != nil {
				return r.opError("read", err)
			}
		}
		r.open()
	}
	return nil
}

// ReadBatch implements the link.Link ReadBatch method: it blocks until at
// least one frame has arrived, then copies up to len(ms) frames into the
// messages, truncating those longer than a message's Buf, and returns how
// many it filled. It never waits once it holds a frame. After Close, or once
// a deadline set with SetReadDeadline has passed, it returns an error.
func (r *Ring) ReadBatch(ms []link.Message) (int, error) {
	if len(ms) == 0 {
		return 0, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.wait(); err != nil {
		return 0, err
	}
	n := 0
	for n < len(ms) {
		if r.left == 0 {
			if !r.blockReady(0) {
				break
			}
			if r.open(); r.left == 0 {
				continue
			}
		}
		ms[n].N = copy(ms[n].Buf, r.next())
		n++
	}
	return n, nil
}

// ReadFunc blocks until at least one frame has arrived, then calls fn with
// each frame of the block the kernel handed over, in place, and returns how
// many frames it passed. The frame is valid only until fn returns, and fn
// must not call the Ring's methods. Errors are those of ReadBatch.
func (r *Ring) ReadFunc(fn func(frame []byte)) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.wait(); err != nil {
		return 0, err
	}
	n := 0
	for r.left > 0 {
		fn(r.next())
		n++
	}
	return n, nil
}

// SetReadDeadline sets the deadline for ReadBatch and ReadFunc, as
// net.Conn's does; past it they return an error wrapping
// os.ErrDeadlineExceeded. A zero t means no deadline.
func (r *Ring) SetReadDeadline(t time.Time) error {
	if r.closed.Load() {
		return r.opError("set", net.ErrClosed)
	}
	return r.opError("set", r.conn.SetReadDeadline(t))
}

// HardwareAddr returns the interface's MAC address. It is shared by all
// calls; do not modify it.
func (r *Ring) HardwareAddr() net.HardwareAddr { return r.ifi.HardwareAddr }

// Stats returns the kernel's counters (PACKET_STATISTICS, packet(7)),
// accumulated since the ring was opened: the kernel resets them on every
// read.
func (r *Ring) Stats() (RingStats, error) {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	if r.closed.Load() {
		return r.stats, r.opError("stats", net.ErrClosed)
	}
	var st *unix.TpacketStatsV3
	var serr error
	err := r.rc.Control(func(fd uintptr) {
		st, serr = unix.GetsockoptTpacketStatsV3(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
	})
	if err == nil {
		err = os.NewSyscallError("getsockopt", serr)
	}
	if err != nil {
		return r.stats, r.opError("stats", err)
	}
	r.stats.Packets += uint64(st.Packets)
	r.stats.Drops += uint64(st.Drops)
	r.stats.FreezeQueue += uint64(st.Freeze_q_cnt)
	return r.stats, nil
}

// Close closes the socket, which unblocks a waiting ReadBatch or ReadFunc,
// and unmaps the ring once no reader uses it. Later calls, Close included,
// return errors wrapping net.ErrClosed.
func (r *Ring) Close() error {
	if !r.closed.CompareAndSwap(false, true) {
		return r.opError("close", net.ErrClosed)
	}
	err := r.conn.Close()
	r.mu.Lock()
	if r.mem != nil {
		if merr := unix.Munmap(r.mem); err == nil && merr != nil {
			err = os.NewSyscallError("munmap", merr)
		}
		r.mem = nil
	}
	r.mu.Unlock()
	return r.opError("close", err)
}

// opError wraps err as PacketLink.opError does.
func (r *Ring) opError(op string, err error) error {
	if err == nil {
		return nil
	}
	if r.closed.Load() && !errors.Is(err, net.ErrClosed) {
		err = net.ErrClosed
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "packet", Addr: &packet.Addr{HardwareAddr: r.ifi.HardwareAddr}, Err: err}
}

// A Sender sends frames on one interface with blocking sendmmsg(2), at
// most 64 per system call, on a packet socket bound to the interface with
// protocol 0: it receives nothing and is never registered with the
// runtime's poller, so a send that finds the socket buffer full sleeps in
// the kernel instead of waking the poller (see DESIGN.md, "The data path").
// Its socket buffer is 32 MiB.
type Sender struct {
	mu     sync.Mutex // serialises WriteBatch, and Close with it
	fd     int
	closed atomic.Bool
	ifi    net.Interface
	iov    [maxBatch]unix.Iovec
	msg    [maxBatch]mmsghdr

	backoffs atomic.Uint64
}

// OpenSender opens a Sender on ifi. It needs CAP_NET_RAW, as OpenPacket
// does.
func OpenSender(ifi *net.Interface) (*Sender, error) {
	if ifi == nil {
		return nil, errors.New("sys: open sender: nil interface")
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sys: open sender on %s: %w", ifi.Name, os.NewSyscallError("socket", err))
	}
	err = unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index})
	if err != nil {
		err = os.NewSyscallError("bind", err)
	} else {
		err = setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, defaultSocketBuffer)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sys: open sender on %s: %w", ifi.Name, err)
	}
	s := &Sender{fd: fd, ifi: *ifi}
	s.ifi.HardwareAddr = slices.Clone(ifi.HardwareAddr)
	return s, nil
}

// WriteBatch sends every message's Buf[:N], whole Ethernet frames, and
// returns how many were sent. It blocks while the socket buffer is full;
// when the device queue is full (ENOBUFS) it sleeps briefly, 20µs at first
// and up to 1ms, and tries again, so frames are never dropped here. Calls
// are serialised.
func (s *Sender) WriteBatch(ms []link.Message) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sent := 0
	for sent < len(ms) {
		if s.closed.Load() {
			return sent, s.opError("write", net.ErrClosed)
		}
		batch := ms[sent:min(len(ms), sent+maxBatch)]
		setSend(s.iov[:], s.msg[:], batch)
		off, backoff := 0, minBackoff
		for off < len(batch) {
			r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.msg[off])),
				uintptr(len(batch)-off), 0, 0, 0)
			switch e {
			case 0:
				off += int(r)
				backoff = minBackoff
			case unix.EINTR:
			case unix.ENOBUFS:
				s.backoffs.Add(1)
				time.Sleep(backoff)
				backoff = min(2*backoff, maxBackoff)
			default:
				s.clear(len(batch))
				return sent + off, s.opError("write", os.NewSyscallError("sendmmsg", e))
			}
		}
		s.clear(len(batch))
		sent += len(batch)
	}
	return sent, nil
}

// clear drops the references to the caller's buffers.
func (s *Sender) clear(n int) {
	for i := range n {
		s.iov[i].Base = nil
	}
}

// Backoffs returns how many times WriteBatch slept because the device
// queue was full.
func (s *Sender) Backoffs() uint64 { return s.backoffs.Load() }

// HardwareAddr returns the interface's MAC address. It is shared by all
// calls; do not modify it.
func (s *Sender) HardwareAddr() net.HardwareAddr { return s.ifi.HardwareAddr }

// MTU returns the interface's MTU when the Sender was opened.
func (s *Sender) MTU() int { return s.ifi.MTU }

// Close closes the socket once no WriteBatch runs; a WriteBatch blocked on
// a full socket buffer finishes first. Later calls, Close included, return
// errors wrapping net.ErrClosed.
func (s *Sender) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return s.opError("close", net.ErrClosed)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opError("close", os.NewSyscallError("close", unix.Close(s.fd)))
}

// opError wraps err as PacketLink.opError does.
func (s *Sender) opError(op string, err error) error {
	if err == nil {
		return nil
	}
	return &net.OpError{Op: op, Net: "packet", Addr: &packet.Addr{HardwareAddr: s.ifi.HardwareAddr}, Err: err}
}
