//go:build !linux

package sys

import "net"

// A BlockingLink is a link.Link over a Linux packet socket outside the
// runtime's poller. On this system it cannot be opened.
type BlockingLink = PacketLink

// OpenBlocking opens a BlockingLink. On this system it returns an error
// wrapping errors.ErrUnsupported.
func OpenBlocking(ifi *net.Interface, cfg PacketConfig) (*BlockingLink, error) {
	return nil, errPacketUnsupported
}
