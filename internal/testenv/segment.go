package testenv

import (
	"net"

	"github.com/myproto/myproto/internal/sys"
)

// A Segment is one Ethernet segment joining several hosts: a bridge (a
// switch) in a network namespace of its own, and a veth pair per host whose
// one end is a port of the bridge and whose other end is the host's
// interface. Like a switch, the bridge learns source MACs and floods
// broadcast, multicast and unicast to MACs it has not learnt.
type Segment struct {
	// Hosts are the hosts on the segment. Host 0 is the test's own
	// namespace, where in-process stacks run; the others are namespaces of
	// their own.
	Hosts []Host
	// Bridge is the bridge's name in NetnsBridge.
	Bridge string
	// NetnsBridge is the namespace of the bridge and its ports.
	NetnsBridge *sys.Netns
}

// A Host is one host on a Segment.
type Host struct {
	// Netns is the host's network namespace: nil for host 0, which is the
	// test's own. Start processes and open sockets for the host inside
	// Netns.Do. Every process on a host shares its interface, and so its
	// MAC.
	Netns *sys.Netns
	// Interface is the host's end of its veth pair, its one interface on
	// the segment.
	Interface *net.Interface
	// Port is the name of the bridge port the host is plugged into, in
	// the segment's NetnsBridge.
	Port string
}
