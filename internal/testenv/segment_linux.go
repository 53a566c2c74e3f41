package testenv

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/myproto/myproto/internal/sys"
)

// segSeq numbers the host ends of segments, which share the test's
// namespace with other tests' links; a taken name is skipped.
var segSeq atomic.Uint32

// NewSegment returns n hosts on one Ethernet segment, each interface with
// the given MTU (0 leaves the kernel's 1500), up and ready: a bridge in a
// namespace of its own, and for host i a veth pair whose bridge end is a
// port of the bridge and whose other end is host i's interface. Host 0 is
// the test's own namespace; hosts 1 to n-1 get new private namespaces.
// Everything is removed in t's cleanup, which runs after that of anything
// the test registers later, such as processes started in the hosts'
// namespaces. NewSegment skips t when Available reports false.
func NewSegment(t testing.TB, n, mtu int) *Segment {
	t.Helper()
	skipUnavailable(t)
	if n < 1 {
		t.Fatalf("testenv: NewSegment with %d hosts", n)
	}
	nsBr := newNetns(t)
	seg := &Segment{Bridge: "mpbr", NetnsBridge: nsBr}
	if err := sys.CreateBridge(seg.Bridge, nsBr); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	self, err := sys.CurrentNetns()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer self.Close()
	for i := range n {
		h := Host{Port: fmt.Sprintf("port%d", i)}
		to := self
		if i > 0 {
			h.Netns = newNetns(t)
			to = h.Netns
		}
		name := newSegmentVeth(t, nsBr, h.Port, to, mtu)
		if i == 0 {
			t.Cleanup(func() {
				// The pair would go with the bridge's namespace; deleting it
				// now keeps the test's namespace tidy for the next test.
				if err := sys.DeleteLink(nil, name); err != nil && !errors.Is(err, unix.ENODEV) {
					t.Errorf("testenv: %v", err)
				}
			})
		}
		if err := sys.SetLinkMaster(nsBr, h.Port, seg.Bridge); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		h.Interface = ready(t, h.Netns, name)
		seg.Hosts = append(seg.Hosts, h)
	}
	return seg
}

// newNetns returns a new namespace closed in t's cleanup.
func newNetns(t testing.TB) *sys.Netns {
	t.Helper()
	ns, err := sys.NewNetns()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// newSegmentVeth creates a veth pair whose end port is in nsBr and whose
// other end, given a fresh name that it returns, is in host.
func newSegmentVeth(t testing.TB, nsBr *sys.Netns, port string, host *sys.Netns, mtu int) string {
	t.Helper()
	for range 1000 {
		name := fmt.Sprintf("mps%d", segSeq.Add(1))
		err := nsBr.Do(func() error { return sys.CreateVeth(port, name, mtu, host) })
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			t.Fatalf("testenv: %v (mtu %d)", err, mtu)
		}
		return name
	}
	t.Fatal("testenv: no free veth name")
	return ""
}

// Hub turns the segment's bridge into a hub: it stops learning MACs and
// floods every frame to every host. A learning bridge sends traffic for a
// MAC to whichever port last sent from it, so a frame with a forged source
// MAC diverts a station's traffic, as on a real switch; tests of what a
// protocol makes of forged frames use a hub to keep that out.
func (s *Segment) Hub(t testing.TB) {
	t.Helper()
	if err := sys.SetBridgeLearning(s.NetnsBridge, s.Bridge, false); err != nil {
		t.Fatal(err)
	}
}

// Untrusted makes the bridge port of host i learn no source MACs, as a
// switch port with port security: frames a station there sends from forged
// MACs, even millions of them, neither fill the bridge's table nor divert
// other stations' traffic, while the bridge goes on learning the other
// hosts' MACs and forwarding to them alone.
func (s *Segment) Untrusted(t testing.TB, i int) {
	t.Helper()
	if err := sys.SetBridgePortLearning(s.NetnsBridge, s.Hosts[i].Port, false); err != nil {
		t.Fatal(err)
	}
}
