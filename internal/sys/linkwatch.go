package sys

import "net"

// A LinkEvent is the state of one network interface after a change, as an
// RTM_NEWLINK or RTM_DELLINK notification of rtnetlink's RTNLGRP_LINK group
// reports it (rtnetlink(7)). Each carries the whole state, not the change, so
// the latest event for an index is that interface's current state.
type LinkEvent struct {
	// Index is the interface index, which identifies the interface for its
	// lifetime; names can change and be reused.
	Index int
	// Name is the interface name (IFLA_IFNAME).
	Name string
	// Up reports whether the interface can carry frames: its flags have
	// both IFF_UP (administratively up, as ip link set up makes it) and
	// IFF_RUNNING, which the kernel sets while the interface is up and its
	// operational state (RFC 2863) is UP or UNKNOWN, as loopback's is. A
	// veth whose peer is down, or a NIC without carrier, is IFF_UP but not
	// IFF_RUNNING (operational state LOWERLAYERDOWN or DOWN), so not Up.
	// Up matches net.FlagUp and net.FlagRunning both set in net.Interface.
	// IFF_RUNNING follows IFF_UP through the kernel's linkwatch work, so
	// bringing an interface up may give an event with IFF_UP alone before
	// the one with Up true: at once when linkwatch deems the change
	// urgent, up to a second later when not.
	Up bool
	// MTU is the interface's MTU in bytes (IFLA_MTU).
	MTU int
	// HardwareAddr is the interface's link-layer address (IFLA_ADDRESS),
	// nil for interfaces without one.
	HardwareAddr net.HardwareAddr
	// Deleted reports an RTM_DELLINK: the interface is gone from the
	// namespace, deleted or moved to another namespace. The other fields
	// give its last state.
	Deleted bool
}
