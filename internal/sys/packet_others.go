//go:build !linux

package sys

import (
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/net/bpf"

	"github.com/myproto/myproto/internal/link"
)

// errPacketUnsupported is what every PacketLink operation returns here:
// packet sockets (packet(7)) exist only on Linux.
var errPacketUnsupported = fmt.Errorf("sys: packet sockets: %w", errors.ErrUnsupported)

// PacketConfig configures OpenPacket. Packet links exist only on Linux.
type PacketConfig struct {
	// EtherType is the EtherType the socket is bound to.
	EtherType uint16
	// Filter is the classic BPF program attached before bind(2).
	Filter []bpf.RawInstruction
	// ReadBuffer and WriteBuffer are the socket's buffer sizes in bytes;
	// zero means 32 MiB.
	ReadBuffer, WriteBuffer int
	// SendSocket sends on a second socket outside the poller.
	SendSocket bool
	// RingSize is the size of OpenQuiet's receive ring.
	RingSize int
}

var _ link.Link = (*PacketLink)(nil)

// A PacketLink is a link.Link over a Linux packet socket. On this system it
// cannot be opened.
type PacketLink struct{}

// OpenPacket opens a packet link. On this system it returns an error
// wrapping errors.ErrUnsupported.
func OpenPacket(ifi *net.Interface, cfg PacketConfig) (*PacketLink, error) {
	return nil, errPacketUnsupported
}

// ReadBatch implements the link.Link ReadBatch method.
func (l *PacketLink) ReadBatch(ms []link.Message) (int, error) { return 0, errPacketUnsupported }

// WriteBatch implements the link.Link WriteBatch method.
func (l *PacketLink) WriteBatch(ms []link.Message) (int, error) { return 0, errPacketUnsupported }

// SetReadDeadline sets the deadline for ReadBatch.
func (l *PacketLink) SetReadDeadline(t time.Time) error { return errPacketUnsupported }

// SetFilter implements the link.Link SetFilter method.
func (l *PacketLink) SetFilter(prog []bpf.RawInstruction) error { return errPacketUnsupported }

// JoinGroup implements the link.Link JoinGroup method.
func (l *PacketLink) JoinGroup(group net.HardwareAddr) error { return errPacketUnsupported }

// LeaveGroup implements the link.Link LeaveGroup method.
func (l *PacketLink) LeaveGroup(group net.HardwareAddr) error { return errPacketUnsupported }

// Name implements the link.Link Name method.
func (l *PacketLink) Name() string { return "" }

// Index implements the link.Link Index method.
func (l *PacketLink) Index() int { return 0 }

// HardwareAddr implements the link.Link HardwareAddr method.
func (l *PacketLink) HardwareAddr() net.HardwareAddr { return nil }

// MTU implements the link.Link MTU method.
func (l *PacketLink) MTU() int { return 0 }

// SetMTU records a new MTU for the interface.
func (l *PacketLink) SetMTU(mtu int) {}

// Stats implements the link.Link Stats method.
func (l *PacketLink) Stats() (link.Stats, error) { return link.Stats{}, errPacketUnsupported }

// SocketBuffers returns the socket's receive and send buffer sizes.
func (l *PacketLink) SocketBuffers() (rcv, snd int, err error) { return 0, 0, errPacketUnsupported }

// Close implements the link.Link Close method.
func (l *PacketLink) Close() error { return errPacketUnsupported }
