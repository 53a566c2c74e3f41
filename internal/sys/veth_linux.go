package sys

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"golang.org/x/sys/unix"
)

// vethReadyTimeout bounds CreateVeth's wait for the kernel to activate the
// new ends; it takes milliseconds, but a loaded machine is slower.
const vethReadyTimeout = 5 * time.Second

// CreateVeth creates a veth pair (veth(4)) with the given MTU (0 leaves the
// kernel's default, 1500): end a in the calling thread's network namespace,
// end b in peer (nil: next to a). It brings both ends up and returns once
// both are ready to carry frames, as WaitLinkReady defines it. Both names
// must be free in the calling thread's namespace, and b in peer too; a
// taken name gives an error wrapping syscall.EEXIST. On failure nothing is
// left behind.
//
// The calling thread's namespace is the process's, or that of the Netns.Do
// the caller runs in; nil means the same for the other link functions.
//
// # Privileges
//
// CreateVeth, like WaitLinkReady, SetLinkUp, SetLinkMTU and DeleteLink,
// talks rtnetlink (rtnetlink(7)) and needs CAP_NET_ADMIN in the user
// namespace that owns the network namespace: run as root, or in a
// namespace of your own (see ReexecInPrivateNetns). Without it they fail
// with an error wrapping syscall.EPERM.
func CreateVeth(a, b string, mtu int, peer *Netns) error {
	if err := createVeth(a, b, mtu, peer); err != nil {
		return fmt.Errorf("sys: create veth %s/%s: %w", a, b, err)
	}
	return nil
}

func createVeth(a, b string, mtu int, peer *Netns) error {
	if mtu < 0 {
		return fmt.Errorf("mtu %d: %w", mtu, unix.EINVAL)
	}
	err := withConn(nil, func(c *rtnetlink.Conn) error {
		return c.Link.New(&rtnetlink.LinkMessage{
			Family: unix.AF_UNSPEC,
			Attributes: &rtnetlink.LinkAttributes{
				Name: a,
				MTU:  uint32(mtu),
				Info: &rtnetlink.LinkInfo{Kind: "veth", Data: &driver.Veth{PeerInfo: &rtnetlink.LinkMessage{
					Family:     unix.AF_UNSPEC,
					Attributes: &rtnetlink.LinkAttributes{Name: b, MTU: uint32(mtu)},
				}}},
			},
		})
	})
	if err != nil {
		return err
	}
	if peer != nil {
		// b is made next to a and then moved, rather than made in peer, so
		// that the ends get different interface indexes (b keeps its own
		// unless peer has it taken). Two fresh namespaces would give both
		// the same one, and the kernel then treats the ends' activation as
		// not urgent and delays it by up to a second (linkwatch_urgent_event).
		err = withLink(nil, b, func(c *rtnetlink.Conn, lm rtnetlink.LinkMessage) error {
			return c.Link.Set(&rtnetlink.LinkMessage{
				Family:     unix.AF_UNSPEC,
				Type:       lm.Type,
				Index:      lm.Index,
				Attributes: &rtnetlink.LinkAttributes{NetNS: rtnetlink.NetNSForFD(uint32(peer.Fd()))},
			})
		})
	}
	// Up comes after creation: veth_open fails with ENOTCONN while the ends
	// are not yet joined, as they are not during RTM_NEWLINK.
	if err == nil {
		err = setLinkUp(nil, a, true)
	}
	if err == nil {
		err = setLinkUp(peer, b, true)
	}
	if err == nil {
		_, err = waitLinkReady(nil, a, vethReadyTimeout)
	}
	if err == nil {
		_, err = waitLinkReady(peer, b, vethReadyTimeout)
	}
	if err != nil {
		// Deleting one end deletes both.
		deleteLink(nil, a)
	}
	return err
}

// WaitLinkReady waits up to timeout for the interface name in ns (nil: the
// calling thread's namespace) to be fully activated, and returns it: carrier
// on (LOWER_UP and RUNNING), operational state UP and a real qdisc attached.
// The kernel's linkwatch work sets all but LOWER_UP some time after the
// carrier comes on, and until then the device keeps the noop qdisc, which
// drops every frame while sendmmsg(2) reports success. Past the timeout the error wraps
// os.ErrDeadlineExceeded.
func WaitLinkReady(ns *Netns, name string, timeout time.Duration) (*net.Interface, error) {
	ifi, err := waitLinkReady(ns, name, timeout)
	if err != nil {
		return nil, fmt.Errorf("sys: wait for %s: %w", name, err)
	}
	return ifi, nil
}

func waitLinkReady(ns *Netns, name string, timeout time.Duration) (*net.Interface, error) {
	deadline := time.Now().Add(timeout)
	err := withConn(ns, func(c *rtnetlink.Conn) error {
		for {
			lm, err := linkByName(c, name)
			if err != nil {
				return err
			}
			// IFF_LOWER_UP is the carrier itself; IFF_RUNNING and the
			// operational state follow it through linkwatch.
			carrier := lm.Flags&(unix.IFF_LOWER_UP|unix.IFF_RUNNING) == unix.IFF_LOWER_UP|unix.IFF_RUNNING
			oper, qdisc := lm.Attributes.OperationalState, lm.Attributes.QueueDisc
			if carrier && oper == rtnetlink.OperStateUp && qdisc != "" && qdisc != "noop" {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("not ready after %v (flags %#x, operstate %v, qdisc %q): %w",
					timeout, lm.Flags, oper, qdisc, os.ErrDeadlineExceeded)
			}
			time.Sleep(time.Millisecond)
		}
	})
	if err != nil {
		return nil, err
	}
	var ifi *net.Interface
	err = inNetns(ns, func() (err error) {
		ifi, err = net.InterfaceByName(name)
		return err
	})
	return ifi, err
}

// SetLinkUp brings the interface name in ns (nil: the calling thread's
// namespace) up or down, as ip link set dev NAME up|down does. Up returns
// before the interface is ready; see WaitLinkReady. An unknown name gives an
// error wrapping syscall.ENODEV.
func SetLinkUp(ns *Netns, name string, up bool) error {
	if err := setLinkUp(ns, name, up); err != nil {
		return fmt.Errorf("sys: set %s up=%t: %w", name, up, err)
	}
	return nil
}

func setLinkUp(ns *Netns, name string, up bool) error {
	return withLink(ns, name, func(c *rtnetlink.Conn, lm rtnetlink.LinkMessage) error {
		var flags uint32
		if up {
			flags = unix.IFF_UP
		}
		return c.Link.Set(&rtnetlink.LinkMessage{
			Family: unix.AF_UNSPEC,
			Type:   lm.Type,
			Index:  lm.Index,
			Flags:  flags,
			Change: unix.IFF_UP,
		})
	})
}

// SetLinkMTU sets the MTU of the interface name in ns (nil: the calling
// thread's namespace), as ip link set dev NAME mtu MTU does. An MTU below 1
// gives an error wrapping syscall.EINVAL, an unknown name one wrapping
// syscall.ENODEV.
func SetLinkMTU(ns *Netns, name string, mtu int) error {
	if err := setLinkMTU(ns, name, mtu); err != nil {
		return fmt.Errorf("sys: set %s mtu %d: %w", name, mtu, err)
	}
	return nil
}

func setLinkMTU(ns *Netns, name string, mtu int) error {
	if mtu <= 0 {
		// rtnetlink leaves a zero MTU out of the message, which would make
		// the call a silent no-op.
		return unix.EINVAL
	}
	return withLink(ns, name, func(c *rtnetlink.Conn, lm rtnetlink.LinkMessage) error {
		return c.Link.Set(&rtnetlink.LinkMessage{
			Family:     unix.AF_UNSPEC,
			Type:       lm.Type,
			Index:      lm.Index,
			Attributes: &rtnetlink.LinkAttributes{MTU: uint32(mtu)},
		})
	})
}

// SetLinkAddr sets the hardware address of the interface name in ns (nil:
// the calling thread's namespace), as ip link set dev NAME address MAC does.
// Not every driver allows it while the interface is up; veth does.
func SetLinkAddr(ns *Netns, name string, mac net.HardwareAddr) error {
	err := withLink(ns, name, func(c *rtnetlink.Conn, lm rtnetlink.LinkMessage) error {
		if len(mac) == 0 {
			return unix.EINVAL
		}
		return c.Link.Set(&rtnetlink.LinkMessage{
			Family:     unix.AF_UNSPEC,
			Type:       lm.Type,
			Index:      lm.Index,
			Attributes: &rtnetlink.LinkAttributes{Address: mac},
		})
	})
	if err != nil {
		return fmt.Errorf("sys: set %s address %v: %w", name, mac, err)
	}
	return nil
}

// DeleteLink deletes the interface name in ns (nil: the calling thread's
// namespace), as ip link del dev NAME does. Deleting either end of a veth
// pair deletes both. An unknown name gives an error wrapping syscall.ENODEV.
func DeleteLink(ns *Netns, name string) error {
	if err := deleteLink(ns, name); err != nil {
		return fmt.Errorf("sys: delete %s: %w", name, err)
	}
	return nil
}

func deleteLink(ns *Netns, name string) error {
	return withLink(ns, name, func(c *rtnetlink.Conn, lm rtnetlink.LinkMessage) error {
		return c.Link.Delete(lm.Index)
	})
}

// inNetns runs fn in ns, or on the calling thread when ns is nil.
func inNetns(ns *Netns, fn func() error) error {
	if ns == nil {
		return fn()
	}
	return ns.Do(fn)
}

// withConn calls fn with an rtnetlink connection in ns (nil: the calling
// thread's namespace). The socket is opened inside ns and stays there, so fn
// may use it from any thread.
func withConn(ns *Netns, fn func(*rtnetlink.Conn) error) error {
	var c *rtnetlink.Conn
	err := inNetns(ns, func() (err error) {
		c, err = rtnetlink.Dial(nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("rtnetlink: %w", err)
	}
	defer c.Close()
	return fn(c)
}

// withLink calls fn with an rtnetlink connection in ns and the link named
// name there.
func withLink(ns *Netns, name string, fn func(*rtnetlink.Conn, rtnetlink.LinkMessage) error) error {
	return withConn(ns, func(c *rtnetlink.Conn) error {
		lm, err := linkByName(c, name)
		if err != nil {
			return err
		}
		return fn(c, lm)
	})
}

// linkByName returns the link named name in c's namespace.
func linkByName(c *rtnetlink.Conn, name string) (rtnetlink.LinkMessage, error) {
	links, err := c.Link.List()
	if err != nil {
		return rtnetlink.LinkMessage{}, err
	}
	for _, lm := range links {
		if lm.Attributes != nil && lm.Attributes.Name == name {
			return lm, nil
		}
	}
	return rtnetlink.LinkMessage{}, fmt.Errorf("no interface %q: %w", name, unix.ENODEV)
}
