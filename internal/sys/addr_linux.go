package sys

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"
)

// AddAddress assigns an IP address with its prefix to the interface name in
// ns (nil: the caller's namespace). myproto needs no IP; benchmarks use it
// to run kernel TCP over the same veth pair for comparison.
func AddAddress(ns *Netns, name string, p netip.Prefix) error {
	family := uint8(unix.AF_INET6)
	if p.Addr().Is4() {
		family = unix.AF_INET
	}
	ip := net.IP(p.Addr().AsSlice())
	err := withLink(ns, name, func(c *rtnetlink.Conn, lm rtnetlink.LinkMessage) error {
		return c.Address.New(&rtnetlink.AddressMessage{
			Family:       family,
			PrefixLength: uint8(p.Bits()),
			Scope:        unix.RT_SCOPE_UNIVERSE,
			Index:        lm.Index,
			Attributes:   &rtnetlink.AddressAttributes{Address: ip, Local: ip},
		})
	})
	if err != nil {
		return fmt.Errorf("sys: add address %v to %s: %w", p, name, err)
	}
	return nil
}
