package sys

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"
)

// AddRoute adds a route to dst through the gateway gw on the interface name
// in ns (nil: the caller's namespace), as ip route add DST via GW dev NAME
// does; dst 0.0.0.0/0 or ::/0 is the default route. Tests build routed
// topologies with it.
func AddRoute(ns *Netns, name string, dst netip.Prefix, gw netip.Addr) error {
	family := uint8(unix.AF_INET6)
	if dst.Addr().Is4() {
		family = unix.AF_INET
	}
	err := withLink(ns, name, func(c *rtnetlink.Conn, lm rtnetlink.LinkMessage) error {
		attr := rtnetlink.RouteAttributes{OutIface: lm.Index, Gateway: net.IP(gw.AsSlice())}
		if dst.Bits() > 0 {
			attr.Dst = net.IP(dst.Addr().AsSlice())
		}
		return c.Route.Add(&rtnetlink.RouteMessage{
			Family:     family,
			Table:      unix.RT_TABLE_MAIN,
			Protocol:   unix.RTPROT_BOOT,
			Scope:      unix.RT_SCOPE_UNIVERSE,
			Type:       unix.RTN_UNICAST,
			DstLength:  uint8(dst.Bits()),
			Attributes: attr,
		})
	})
	if err != nil {
		return fmt.Errorf("sys: add route %v via %v dev %s: %w", dst, gw, name, err)
	}
	return nil
}

// SetSysctl writes value to the sysctl key ("net.ipv4.ip_forward") in ns
// (nil: the caller's namespace). The net.* keys are per network namespace.
func SetSysctl(ns *Netns, key, value string) error {
	write := func() error {
		path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
		return os.WriteFile(path, []byte(value), 0)
	}
	var err error
	if ns == nil {
		err = write()
	} else {
		err = ns.Do(write)
	}
	if err != nil {
		return fmt.Errorf("sys: sysctl %s=%s: %w", key, value, err)
	}
	return nil
}
