//go:build !linux

package sys

import "net"

// A QuietLink is a link.Link over a Linux packet socket that wakes the
// runtime's poller only while a read waits. On this system it cannot be
// opened.
type QuietLink = PacketLink

// OpenQuiet opens a QuietLink. On this system it returns an error wrapping
// errors.ErrUnsupported.
func OpenQuiet(ifi *net.Interface, cfg PacketConfig) (*QuietLink, error) {
	return nil, errPacketUnsupported
}
