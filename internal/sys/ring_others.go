//go:build !linux

package sys

import (
	"net"
	"time"

	"golang.org/x/net/bpf"

	"github.com/myproto/myproto/internal/link"
)

// RingConfig configures OpenRing. Rings exist only on Linux.
type RingConfig struct {
	EtherType     uint16
	Filter        []bpf.RawInstruction
	BlockSize     int
	Blocks        int
	RetireTimeout time.Duration
}

// RingStats are a ring's kernel-side counters.
type RingStats struct {
	Packets, Drops, FreezeQueue uint64
}

// A Ring is a TPACKET_V3 receive ring on a Linux packet socket. On this
// system it cannot be opened.
type Ring struct{}

// OpenRing returns an error wrapping errors.ErrUnsupported.
func OpenRing(ifi *net.Interface, cfg RingConfig) (*Ring, error) { return nil, errPacketUnsupported }

// ReadBatch implements the link.Link ReadBatch method.
func (r *Ring) ReadBatch(ms []link.Message) (int, error) { return 0, errPacketUnsupported }

// ReadFunc passes received frames to fn in place.
func (r *Ring) ReadFunc(fn func(frame []byte)) (int, error) { return 0, errPacketUnsupported }

// SetReadDeadline sets the deadline for ReadBatch and ReadFunc.
func (r *Ring) SetReadDeadline(t time.Time) error { return errPacketUnsupported }

// HardwareAddr returns the interface's MAC address.
func (r *Ring) HardwareAddr() net.HardwareAddr { return nil }

// Stats returns the kernel's counters.
func (r *Ring) Stats() (RingStats, error) { return RingStats{}, errPacketUnsupported }

// Close closes the ring.
func (r *Ring) Close() error { return errPacketUnsupported }

// A Sender sends frames with blocking sendmmsg(2) on Linux. On this system
// it cannot be opened.
type Sender struct{}

// OpenSender returns an error wrapping errors.ErrUnsupported.
func OpenSender(ifi *net.Interface) (*Sender, error) { return nil, errPacketUnsupported }

// WriteBatch sends whole Ethernet frames.
func (s *Sender) WriteBatch(ms []link.Message) (int, error) { return 0, errPacketUnsupported }

// Backoffs returns how many times WriteBatch waited for the device queue.
func (s *Sender) Backoffs() uint64 { return 0 }

// HardwareAddr returns the interface's MAC address.
func (s *Sender) HardwareAddr() net.HardwareAddr { return nil }

// MTU returns the interface's MTU.
func (s *Sender) MTU() int { return 0 }

// Close closes the sender.
func (s *Sender) Close() error { return errPacketUnsupported }
