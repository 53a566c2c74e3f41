//go:build !linux

package sys

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/bpf"

	"github.com/myproto/myproto/internal/link"
)

// errUDPUnsupported is what every UDPLink operation returns here: the UDP
// bearer's batching and offload (recvmmsg, UDP_SEGMENT, UDP_GRO) are
// Linux's.
var errUDPUnsupported = fmt.Errorf("sys: udp bearer: %w", errors.ErrUnsupported)

// UDPConfig configures OpenUDP. UDP links exist only on Linux.
type UDPConfig struct {
	Name                    string
	Index                   int
	Local                   netip.AddrPort
	BearerPort              uint16
	Peers                   []netip.AddrPort
	Group                   netip.AddrPort
	MTU                     int
	ReadBuffer, WriteBuffer int
	NoGSO, NoGRO            bool
	Control                 func(frame []byte) bool
}

var _ link.Link = (*UDPLink)(nil)

// A UDPLink is a link.Link over a UDP socket. On this system it cannot be
// opened.
type UDPLink struct{}

// OpenUDP opens a UDP link. On this system it returns an error wrapping
// errors.ErrUnsupported.
func OpenUDP(cfg UDPConfig) (*UDPLink, error) { return nil, errUDPUnsupported }

func (l *UDPLink) Control() link.Link                        { return l }
func (l *UDPLink) LocalAddr() netip.AddrPort                 { return netip.AddrPort{} }
func (l *UDPLink) BearerPort() uint16                        { return 0 }
func (l *UDPLink) GSO() bool                                 { return false }
func (l *UDPLink) GRO() bool                                 { return false }
func (l *UDPLink) Rejected() uint64                          { return 0 }
func (l *UDPLink) NoRoute() uint64                           { return 0 }
func (l *UDPLink) AddrOf(mac [6]byte) (netip.AddrPort, bool) { return netip.AddrPort{}, false }
func (l *UDPLink) AddPeer(ap netip.AddrPort) [6]byte         { return [6]byte{} }
func (l *UDPLink) Closed() bool                              { return true }
func (l *UDPLink) ReadBatch(ms []link.Message) (int, error)  { return 0, errUDPUnsupported }
func (l *UDPLink) WriteBatch(ms []link.Message) (int, error) { return 0, errUDPUnsupported }
func (l *UDPLink) SetFilter(prog []bpf.RawInstruction) error { return errUDPUnsupported }
func (l *UDPLink) JoinGroup(group net.HardwareAddr) error    { return errUDPUnsupported }
func (l *UDPLink) LeaveGroup(group net.HardwareAddr) error   { return errUDPUnsupported }
func (l *UDPLink) Name() string                              { return "" }
func (l *UDPLink) Index() int                                { return 0 }
func (l *UDPLink) HardwareAddr() net.HardwareAddr            { return nil }
func (l *UDPLink) MTU() int                                  { return 0 }
func (l *UDPLink) Stats() (link.Stats, error)                { return link.Stats{}, errUDPUnsupported }
func (l *UDPLink) Close() error                              { return errUDPUnsupported }
