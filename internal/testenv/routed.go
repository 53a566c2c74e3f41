package testenv

import (
	"net"
	"net/netip"

	"github.com/myproto/myproto/internal/sys"
)

// A Routed is two hosts on two IP subnets joined by a router, A — R — B,
// each a network namespace of its own: A's interface and R's first are on
// 10.1.1.0/24 and fd00:1::/64, R's second and B's on 10.1.2.0/24 and
// fd00:2::/64, the hosts' default routes go through R, and R forwards
// IPv4 and IPv6. No Ethernet frame crosses from A to B: only IP does.
type Routed struct {
	// A, R and B are the namespaces of host A, the router and host B.
	A, R, B *sys.Netns
	// AIf and BIf are the hosts' interfaces (in A and B).
	AIf, BIf *net.Interface
	// RA and RB name the router's interfaces toward A and toward B.
	RA, RB string
	// A4 and B4 are the hosts' IPv4 addresses, 10.1.1.2 and 10.1.2.2; A6
	// and B6 their IPv6 addresses, fd00:1::2 and fd00:2::2, invalid when
	// the kernel has no IPv6.
	A4, B4, A6, B6 netip.Addr
}
