// Package link defines how the myproto stack moves Ethernet frames: a small
// interface with its implementations: the packet-socket link and the UDP
// bearer's link in internal/sys, and the in-memory link with deterministic
// impairments in internal/memlink.
//
// The stack above never learns which one it runs on, which is what lets the
// stream engine be tested without privileges and the real path be tested with
// the very same code.
package link

import (
	"net"

	"golang.org/x/net/bpf"
)

// EthernetHeaderLen is the length of the Ethernet II header every frame starts
// with: destination MAC, source MAC, EtherType. VLAN tags are not used.
const EthernetHeaderLen = 14

// A Message is one whole Ethernet frame, header included.
type Message struct {
	// Buf is the frame's storage. For reads its length is the largest frame the
	// caller accepts (FrameSize); for writes Buf[:N] is sent.
	Buf []byte
	// N is the number of bytes of Buf that hold the frame.
	N int
}

// Stats are a link's kernel-side counters since it was opened.
type Stats struct {
	// Packets is how many frames the kernel handed to the socket (after the
	// filter), including those it then dropped.
	Packets uint64
	// Drops is how many frames the kernel dropped because the socket's receive
	// buffer was full. Such drops look exactly like loss on the wire.
	Drops uint64
}

// A Link moves frames of one EtherType on one interface. Every method is safe
// for concurrent use; ReadBatch is called by one goroutine at a time.
type Link interface {
	// ReadBatch blocks until at least one frame has arrived, then fills up to
	// len(ms) messages and returns how many it filled. Frames longer than a
	// message's Buf are truncated to it. A link may instead point a
	// message's Buf at memory of its own, valid until the next ReadBatch
	// (the UDP link hands out received super-datagrams cut into frames so):
	// callers use Buf[:N] and are done with it before they call again.
	// After Close it returns an error that wraps net.ErrClosed.
	ReadBatch(ms []Message) (int, error)

	// WriteBatch sends every message's Buf[:N] and returns how many were
	// sent. A full transmit queue is back-pressure: WriteBatch waits rather
	// than dropping. After Close it returns an error that wraps net.ErrClosed.
	WriteBatch(ms []Message) (int, error)

	// SetFilter atomically replaces the classic BPF program that decides which
	// frames reach ReadBatch (see internal/sys.Filter).
	SetFilter(prog []bpf.RawInstruction) error

	// JoinGroup and LeaveGroup add and remove a multicast hardware address the
	// interface accepts (PACKET_ADD_MEMBERSHIP, packet(7)).
	JoinGroup(group net.HardwareAddr) error
	LeaveGroup(group net.HardwareAddr) error

	// Name, Index, HardwareAddr and MTU describe the interface. MTU excludes
	// the Ethernet header; the largest frame is MTU()+EthernetHeaderLen.
	Name() string
	Index() int
	HardwareAddr() net.HardwareAddr
	MTU() int

	// Stats reports the kernel's counters, accumulated since the link opened.
	Stats() (Stats, error)

	// Close closes the link and unblocks ReadBatch and WriteBatch.
	Close() error
}
