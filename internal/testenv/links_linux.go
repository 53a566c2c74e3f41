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
	return &Pair{A: ready(t, nil, a), B: ready(t, nsB, b), NetnsB: nsB}
}

// NewLocalPair returns a veth pair with the given MTU (0 leaves the kernel's
// 1500) with both ends in the test's own namespace, both up, removed in t's
// cleanup. It skips t when Available reports false.
func NewLocalPair(t testing.TB, mtu int) (a, b *net.Interface) {
	t.Helper()
	skipUnavailable(t)
	na, nb := newVeth(t, mtu, nil)
	return ready(t, nil, na), ready(t, nil, nb)
}

// SetLinkUp brings the interface name in ns (nil: the test's own namespace)
// up or down, as ip link set dev NAME up|down does.
func SetLinkUp(t testing.TB, ns *sys.Netns, name string, up bool) {
	t.Helper()
	if err := sys.SetLinkUp(ns, name, up); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// SetMTU sets the MTU of the interface name in ns (nil: the test's own
// namespace).
func SetMTU(t testing.TB, ns *sys.Netns, name string, mtu int) {
	t.Helper()
	if err := sys.SetLinkMTU(ns, name, mtu); err != nil {
		t.Fatalf("testenv: %v", err)
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
	if _, err := sys.Tool("nft"); err != nil {
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
		nftPath, err := sys.Tool("nft")
		if err != nil {
			return err
		}
		cmd := exec.Command(nftPath, "-f", "-")
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
	nftPath, err := sys.Tool("nft")
	if err != nil {
		t.Skip("testenv: needs the nft binary: apt-get install nftables")
	}
	var out []byte
	run := func() (err error) {
		out, err = exec.Command(nftPath, args...).CombinedOutput()
		return err
	}
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
		err := sys.CreateVeth(a, b, mtu, peerNS)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			t.Fatalf("testenv: %v (mtu %d)", err, mtu)
		}
		t.Cleanup(func() {
			// Deleting one end deletes both.
			if err := sys.DeleteLink(nil, a); err != nil && !errors.Is(err, unix.ENODEV) {
				t.Errorf("testenv: %v", err)
			}
		})
		return a, b
	}
	t.Fatal("testenv: no free veth name")
	return "", ""
}

// ready returns the interface name in ns. CreateVeth has waited for it
// already, so this is a lookup that also checks it is still ready.
func ready(t testing.TB, ns *sys.Netns, name string) *net.Interface {
	t.Helper()
	ifi, err := sys.WaitLinkReady(ns, name, 5*time.Second)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return ifi
}
