//go:build linux

package sys

import (
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// An rxRing is a TPACKET_V2 receive ring (PACKET_RX_RING, packet(7) and the
// kernel's Documentation/networking/packet_mmap.rst) mapped onto a bound
// packet socket. The kernel copies each frame into a slot of memory shared
// with this process as the frame arrives, in softirq, frees the frame's
// buffer on the CPU that allocated it, and marks the slot TP_STATUS_USER:
// reading takes no system call, and no lock the arriving frames contend for
// (recvmmsg(2) takes the socket queue's lock per frame against the softirq
// filling it). Unlike TPACKET_V3, whose blocks are handed over full or after
// a timeout of at least a millisecond, a V2 slot is readable at once and
// wakes poll(2) for its one frame, so an exchange of single frames pays
// nothing for the ring.
//
// The one goroutine reading the link reads the slots in order, copies each
// frame out and gives its slot back at once.
type rxRing struct {
	mem       []byte
	bytes     int // the ring's size, kept when it grows its slots
	frameSize int // bytes per slot
	perBlock  int // slots per block
	blockSize int
	frames    int // slots in all
	head      int // the next slot to read
	// grow is the largest frame seen cut short because its slot was too
	// small (the interface's MTU grew); 0 if none was.
	grow int
	err  error // why the ring is gone: a regrow failed
}

const (
	// rxRingBlock is the size of a ring block, which the kernel allocates
	// as one run of pages (or with vmalloc).
	rxRingBlock = 1 << 16
	// rxRingOverhead is what a slot holds before the frame: the kernel
	// puts a 14-byte Ethernet header at tp_mac = TPACKET_ALIGN(32 + 20 +
	// 16) - 14 = 66, after the tpacket2_hdr and a sockaddr_ll.
	rxRingOverhead = 80
)

// setupRxRing switches the bound socket fd to TPACKET_V2 and maps a ring of
// about bytes bytes whose slots hold frames of maxFrame bytes.
func setupRxRing(fd, maxFrame, bytes int) (*rxRing, error) {
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return nil, fmt.Errorf("PACKET_VERSION: %w", os.NewSyscallError("setsockopt", err))
	}
	r := &rxRing{bytes: bytes}
	if err := r.mapSlots(fd, maxFrame); err != nil {
		return nil, err
	}
	// Frames that came between bind(2) and the ring sit in the socket's
	// ordinary queue, which nobody reads any more: they are the first
	// frames of exchanges, which their senders send again.
	var buf [64]byte
	for {
		if _, _, err := unix.Recvfrom(fd, buf[:], unix.MSG_DONTWAIT|unix.MSG_TRUNC); err != nil {
			break
		}
	}
	return r, nil
}

// mapSlots asks the kernel for a ring of r.bytes with slots for frames of
// maxFrame bytes and maps it.
func (r *rxRing) mapSlots(fd, maxFrame int) error {
	fs := (maxFrame + rxRingOverhead + unix.TPACKET_ALIGNMENT - 1) &^ (unix.TPACKET_ALIGNMENT - 1)
	bs := rxRingBlock
	for bs < fs {
		bs <<= 1
	}
	blocks := max(r.bytes/bs, 2)
	per := bs / fs
	req := unix.TpacketReq{
		Block_size: uint32(bs),
		Block_nr:   uint32(blocks),
		Frame_size: uint32(fs),
		Frame_nr:   uint32(per * blocks),
	}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fmt.Errorf("PACKET_RX_RING: %w", os.NewSyscallError("setsockopt", err))
	}
	mem, err := unix.Mmap(fd, 0, bs*blocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return os.NewSyscallError("mmap", err)
	}
	r.mem, r.frameSize, r.perBlock, r.blockSize, r.frames = mem, fs, per, bs, per*blocks
	r.head, r.grow = 0, 0
	return nil
}

// regrow replaces the ring by one of the same size whose slots hold r.grow
// bytes, for an interface whose MTU grew. The frames in the ring are lost,
// as if dropped on the wire.
func (r *rxRing) regrow(fd int) {
	want := r.grow
	r.close()
	// A zero request takes the old ring down; the kernel refuses it while
	// the ring is mapped.
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &unix.TpacketReq{}); err != nil {
		r.err = fmt.Errorf("PACKET_RX_RING: %w", os.NewSyscallError("setsockopt", err))
		return
	}
	r.err = r.mapSlots(fd, want)
}

// slot returns slot i.
func (r *rxRing) slot(i int) []byte {
	off := i/r.perBlock*r.blockSize + i%r.perBlock*r.frameSize
	return r.mem[off : off+r.frameSize : off+r.frameSize]
}

// readRing copies up to b.n frames from the ring into b's buffers, filling
// b.msg as recvmmsg(2) would, and gives their slots back. It reports false
// when the ring held none. A frame longer than its buffer is cut and marked
// MSG_TRUNC; one the kernel cut to its slot is handed on short (and fails
// the stack's checks) and sets r.grow.
func (b *recvBatch) readRing(r *rxRing) bool {
	got := 0
	for got < b.n {
		s := r.slot(r.head)
		st := (*uint32)(unsafe.Pointer(&s[0]))
		if atomic.LoadUint32(st)&unix.TP_STATUS_USER == 0 {
			break
		}
		h := (*unix.Tpacket2Hdr)(unsafe.Pointer(&s[0]))
		mac, snap, wire := int(h.Mac), int(h.Snaplen), int(h.Len)
		if mac+snap > len(s) {
			snap = max(len(s)-mac, 0) // never trust an offset to leave the slot
		}
		buf := unsafe.Slice(b.iov[got].Base, b.iov[got].Len)
		n := copy(buf, s[mac:mac+snap])
		m := &b.msg[got]
		m.Len, m.Hdr.Flags = uint32(n), 0
		if n == len(buf) && wire > n {
			m.Hdr.Flags = unix.MSG_TRUNC
		}
		if snap < wire && snap < len(buf) {
			r.grow = max(r.grow, wire)
		}
		atomic.StoreUint32(st, unix.TP_STATUS_KERNEL)
		if r.head++; r.head == r.frames {
			r.head = 0
		}
		got++
	}
	if got == 0 {
		return false
	}
	b.got = got
	return true
}

// close unmaps the ring.
func (r *rxRing) close() {
	if r.mem != nil {
		_ = unix.Munmap(r.mem)
		r.mem = nil
	}
}
