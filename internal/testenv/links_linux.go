package testenv

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"golang.org/x/sys/unix"

	"github.com/myproto/myproto/internal/sys"
)

// pairSeq numbers veth pairs. Processes sharing the namespace (fuzz workers)
// count independently, so a taken name is skipped rather than trusted.
var pairSeq atomic.Uint32

// NewPair returns a veth pair with the given MTU (0 leaves the kernel's
// 1500) whose end A is in the test's namespace and end B in a new private
// namespace, NetnsB. Both ends are up. The pair and the namespace are removed
// in t's cleanup. NewPair skips t when Available reports false.
func NewPair(t testing.TB, mtu int) *Pair {
	t.Helper()
	skipUnavailable(t)
	nsB, err := sys.NewNetns()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { nsB.Close() })
	a, b := newVeth(t, mtu, nsB)
	p := &Pair{NetnsB: nsB}
	p.A = waitRunning(t, nil, a)
	p.B = waitRunning(t, nsB, b)
	return p
}

// NewLocalPair returns a veth pair with the given MTU (0 leaves the kernel's
// 1500) with both ends in the test's own namespace, both up, removed in t's
// cleanup. It skips t when Available reports false.
func NewLocalPair(t testing.TB, mtu int) (a, b *net.Interface) {
	t.Helper()
	skipUnavailable(t)
	na, nb := newVeth(t, mtu, nil)
	return waitRunning(t, nil, na), waitRunning(t, nil, nb)
}

// SetLinkUp brings the interface name in ns (nil: the test's own namespace)
// up or down, as ip link set dev NAME up|down does.
func SetLinkUp(t testing.TB, ns *sys.Netns, name string, up bool) {
	t.Helper()
	if err := setUp(ns, name, up); err != nil {
		t.Fatalf("testenv: set %s up=%v: %v", name, up, err)
	}
}

// SetMTU sets the MTU of the interface name in ns (nil: the test's own
// namespace).
func SetMTU(t testing.TB, ns *sys.Netns, name string, mtu int) {
	t.Helper()
	err := withLink(ns, name, func(c *rtnetlink.Conn, lm rtnetlink.LinkMessage) error {
		return c.Link.Set(&rtnetlink.LinkMessage{
			Family:     unix.AF_UNSPEC,
			Type:       lm.Type,
			Index:      lm.Index,
			Attributes: &rtnetlink.LinkAttributes{MTU: uint32(mtu)},
		})
	})
	if err != nil {
		t.Fatalf("testenv: set %s mtu %d: %v", name, mtu, err)
	}
}

// DropShare makes the interface ifname in ns (nil: the test's own
// namespace) drop percent % of the arriving frames of the given EtherType,
// at random, before any socket sees them: an nftables netdev table whose
// ingress chain holds
//
//	meta protocol 0x88b5 numgen random mod 100 < percent drop
//
// (at 100 the rule drops every such frame). This is the loss the real path
// can have; netem is not in every kernel. Sockets bound to the EtherType, as
// myproto's are, miss the dropped frames; an ETH_P_ALL socket is a tap that
// sees frames before the ingress hook, so it sees them all. Calling DropShare again for the same interface and EtherType replaces the
// share, 0 removing the rule. The table is removed in t's cleanup. DropShare
// skips t when the nft binary is missing.
func DropShare(t testing.TB, ns *sys.Netns, ifname string, etherType uint16, percent int) {
	t.Helper()
	if percent < 0 || percent > 100 {
		t.Fatalf("testenv: DropShare percent %d not in [0, 100]", percent)
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("testenv: DropShare needs the nft binary: apt-get install nftables")
	}
	table := dropTable(ifname, etherType)
	// Declaring the table before deleting it makes the delete succeed when
	// there is none; nft applies the whole script as one transaction.
	script := fmt.Sprintf("table netdev %s\ndelete table netdev %s\n", table, table)
	if percent > 0 {
		rule := fmt.Sprintf("meta protocol 0x%04x numgen random mod 100 < %d drop", etherType, percent)
		if percent == 100 {
			// nft refuses a bound past the modulus.
			rule = fmt.Sprintf("meta protocol 0x%04x drop", etherType)
		}
		script += fmt.Sprintf("table netdev %s {\n"+
			"\tchain ingress {\n"+
			"\t\ttype filter hook ingress device %q priority 0; policy accept;\n"+
			"\t\t%s\n"+
			"\t}\n}\n", table, ifname, rule)
	}
	if err := nft(ns, script); err != nil {
		t.Fatalf("testenv: DropShare %d%% on %s: %v", percent, ifname, err)
	}
	t.Cleanup(func() {
		if err := nft(ns, fmt.Sprintf("table netdev %s\ndelete table netdev %s\n", table, table)); err != nil {
			t.Errorf("testenv: removing DropShare on %s: %v", ifname, err)
		}
	})
}

// dropTable names DropShare's table for an interface and EtherType. nft
// identifiers may hold letters, digits and underscores.
func dropTable(ifname string, etherType uint16) string {
	clean := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, ifname)
	return fmt.Sprintf("myproto_drop_%s_%04x", clean, etherType)
}

// nft runs nft -f - with script as input inside ns.
func nft(ns *sys.Netns, script string) error {
	run := func() error {
		// The child is forked from this thread and so starts in its
		// namespace.
		cmd := exec.Command("nft", "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("nft -f -: %v: %s\nscript:\n%s", err, out, script)
		}
		return nil
	}
	if ns == nil {
		return run()
	}
	return ns.Do(run)
}

// Nft runs the nft binary with args inside ns (nil: the test's own
// namespace) and returns its combined output, for tests that inspect the
// ruleset ("list", "ruleset").
func Nft(t testing.TB, ns *sys.Netns, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("testenv: needs the nft binary: apt-get install nftables")
	}
	var out []byte
	run := func() (err error) {
		out, err = exec.Command("nft", args...).CombinedOutput()
		return err
	}
	var err error
	if ns == nil {
		err = run()
	} else {
		err = ns.Do(run)
	}
	if err != nil {
		t.Fatalf("testenv: nft %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func skipUnavailable(t testing.TB) {
	t.Helper()
	if ok, reason := Available(); !ok {
		t.Skip("testenv: " + reason)
	}
}

// newVeth creates a veth pair with fresh names, its peer in peerNS (nil:
// the test's own namespace), and deletes it in t's cleanup.
func newVeth(t testing.TB, mtu int, peerNS *sys.Netns) (a, b string) {
	t.Helper()
	for range 1000 {
		n := pairSeq.Add(1)
		a, b = fmt.Sprintf("mpa%d", n), fmt.Sprintf("mpb%d", n)
		err := addVeth(a, b, mtu, peerNS)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			t.Fatalf("testenv: creating veth %s/%s (mtu %d): %v", a, b, mtu, err)
		}
		t.Cleanup(func() {
			// Deleting one end deletes both.
			if err := delLink(nil, a); err != nil && !errors.Is(err, unix.ENODEV) {
				t.Errorf("testenv: deleting veth %s: %v", a, err)
			}
		})
		return a, b
	}
	t.Fatal("testenv: no free veth name")
	return "", ""
}

// waitRunning returns the interface name in ns once the kernel has fully
// activated it: carrier up (RUNNING), operational state UP and a real qdisc
// attached. The last two are done by the kernel's linkwatch work some time
// after the carrier: until then the device keeps the noop qdisc, which
// drops every frame while sendmmsg(2) reports success, so a test's first
// frames would vanish.
func waitRunning(t testing.TB, ns *sys.Netns, name string) *net.Interface {
	t.Helper()
	var ifi *net.Interface
	get := func() (err error) {
		ifi, err = net.InterfaceByName(name)
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		if ns == nil {
			err = get()
		} else {
			err = ns.Do(get)
		}
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		var oper rtnetlink.OperationalState
		var qdisc string
		if ifi.Flags&net.FlagRunning != 0 {
			err = withLink(ns, name, func(_ *rtnetlink.Conn, lm rtnetlink.LinkMessage) error {
				oper, qdisc = lm.Attributes.OperationalState, lm.Attributes.QueueDisc
				return nil
			})
			if err != nil {
				t.Fatalf("testenv: %v", err)
			}
			if oper == rtnetlink.OperStateUp && qdisc != "" && qdisc != "noop" {
				return ifi
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: %s is not ready after 5s (flags %v, operstate %v, qdisc %q)", name, ifi.Flags, oper, qdisc)
		}
		time.Sleep(time.Millisecond)
	}
}

// addVeth creates the veth pair a/b, both ends up, b in peerNS (nil: the
// caller's namespace). On failure nothing is left behind.
func addVeth(a, b string, mtu int, peerNS *sys.Netns) error {
	peer := &rtnetlink.LinkMessage{
		Family:     unix.AF_UNSPEC,
		Attributes: &rtnetlink.LinkAttributes{Name: b, MTU: uint32(mtu)},
	}
	if peerNS != nil {
		peer.Attributes.NetNS = rtnetlink.NetNSForFD(uint32(peerNS.Fd()))
	}
	// Up comes after creation: veth_open fails with ENOTCONN while the
	// ends are not yet joined, as they are not during RTM_NEWLINK.
	err := withConn(nil, func(c *rtnetlink.Conn) error {
		return c.Link.New(&rtnetlink.LinkMessage{
			Family: unix.AF_UNSPEC,
			Attributes: &rtnetlink.LinkAttributes{
				Name: a,
				MTU:  uint32(mtu),
				Info: &rtnetlink.LinkInfo{Kind: "veth", Data: &driver.Veth{PeerInfo: peer}},
			},
		})
	})
	if err != nil {
		return err
	}
	if err := setUp(nil, a, true); err != nil {
		delLink(nil, a)
		return err
	}
	if err := setUp(peerNS, b, true); err != nil {
		delLink(nil, a)
		return err
	}
	return nil
}

// delLink deletes the interface name in ns.
func delLink(ns *sys.Netns, name string) error {
	return withLink(ns, name, func(c *rtnetlink.Conn, lm rtnetlink.LinkMessage) error {
		return c.Link.Delete(lm.Index)
	})
}

// setUp brings the interface name in ns up or down.
func setUp(ns *sys.Netns, name string, up bool) error {
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

// withConn calls fn with an rtnetlink connection in ns (nil: the caller's
// namespace). The socket is opened inside ns and stays there, so fn may use
// it from any thread.
func withConn(ns *sys.Netns, fn func(*rtnetlink.Conn) error) error {
	var c *rtnetlink.Conn
	dial := func() (err error) {
		c, err = rtnetlink.Dial(nil)
		return err
	}
	var err error
	if ns == nil {
		err = dial()
	} else {
		err = ns.Do(dial)
	}
	if err != nil {
		return fmt.Errorf("rtnetlink: %w", err)
	}
	defer c.Close()
	return fn(c)
}

// withLink calls fn with an rtnetlink connection in ns and the link named
// name there.
func withLink(ns *sys.Netns, name string, fn func(*rtnetlink.Conn, rtnetlink.LinkMessage) error) error {
	return withConn(ns, func(c *rtnetlink.Conn) error {
		links, err := c.Link.List()
		if err != nil {
			return err
		}
		for _, lm := range links {
			if lm.Attributes != nil && lm.Attributes.Name == name {
				return fn(c, lm)
			}
		}
		return fmt.Errorf("no interface %q: %w", name, unix.ENODEV)
	})
}
