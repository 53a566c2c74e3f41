package myproto

import (
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/memlink"
	"github.com/myproto/myproto/internal/sys"
	"github.com/myproto/myproto/internal/testenv"
)

func TestMain(m *testing.M) {
	if os.Getenv(envPeer) == "1" { // a peer process (proc_linux_test.go)
		runPeer()
	}
	// A child process of TestIntegrationPortAcrossProcesses.
	if spec := os.Getenv("MYPROTO_HOLD_PORT"); spec != "" {
		holdPort(spec)
		return
	}
	if spec := os.Getenv("MYPROTO_STREAM_PEER"); spec != "" {
		servePeer(spec)
		return
	}
	if ifname := os.Getenv(envNoRawChild); ifname != "" {
		noRawChild(ifname)
	}
	if name := os.Getenv(envDiagChild); name != "" {
		diagChild(name)
	}
	if arg := os.Getenv("MYPROTO_DGRAM_CHILD"); arg != "" {
		dgramChild(arg)
		return
	}
	// In the private namespace, give the examples (package myproto_test,
	// same binary) their veth pair before anything runs.
	// Fuzz workers are started by the coordinator inside the same
	// namespace, where the pair already exists.
	if _, err := net.InterfaceByName("myproto0"); err != nil && sys.InPrivateNetns() {
		if err := sys.CreateVeth("myproto0", "myproto1", 1500, nil); err != nil {
			fmt.Fprintln(os.Stderr, "examples' veth pair:", err)
			os.Exit(1)
		}
	}
	testenv.Main(m)
}

// testHosts are two hosts on one segment, each with its own stack: over
// in-memory links, or over a veth pair whose far end is in a second network
// namespace.
type testHosts struct {
	kind       string
	a, b       *stack
	aIf, bIf   string
	aMAC, bMAC net.HardwareAddr
	seg        *memlink.Segment // in-memory only
	pair       *testenv.Pair    // veth only
	// cleanup registers a function to run when the test ends, before the
	// link goes: stacks made later on the link (sideStack) close there.
	cleanup func(func())
}

// addrB is host b's address for port as seen from a.
func (h *testHosts) addrB(port uint16) *Addr {
	return &Addr{HardwareAddr: h.bMAC, Port: port, Zone: h.aIf}
}

// addrA is host a's address for port as seen from b.
func (h *testHosts) addrA(port uint16) *Addr {
	return &Addr{HardwareAddr: h.aMAC, Port: port, Zone: h.bIf}
}

// memHosts returns two hosts joined by an in-memory segment.
func memHosts(t testing.TB, cfg memlink.Config) *testHosts {
	t.Helper()
	seg := memlink.NewSegment(cfg)
	aMAC := net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01}
	bMAC := net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x02}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = 1500
	}
	h := &testHosts{
		kind: "mem",
		a:    newStack(Config{EtherType: DefaultEtherType, Name: "host-a"}, &memProvider{seg: seg, name: "mem0", mac: aMAC, mtu: mtu, host: newMemHost()}),
		b:    newStack(Config{EtherType: DefaultEtherType, Name: "host-b"}, &memProvider{seg: seg, name: "mem1", mac: bMAC, mtu: mtu, host: newMemHost()}),
		aIf:  "mem0", bIf: "mem1",
		aMAC: aMAC, bMAC: bMAC,
		seg: seg,
	}
	return h
}

// vethHosts returns two hosts joined by a veth pair in private network
// namespaces, or skips saying why that is impossible here.
func vethHosts(t testing.TB, mtu int) *testHosts {
	t.Helper()
	p := testenv.NewPair(t, mtu)
	h := &testHosts{
		kind: "veth",
		a:    newStack(Config{Name: "host-a"}, packetProvider{}),
		b:    newStack(Config{Name: "host-b"}, packetProvider{ns: p.NetnsB}),
		aIf:  p.A.Name, bIf: p.B.Name,
		aMAC: p.A.HardwareAddr, bMAC: p.B.HardwareAddr,
		pair:    p,
		cleanup: t.Cleanup,
	}
	// Before the pair's namespace goes (cleanups run last first): host
	// b's goroutines (its host agent's, redialing) use it until closed.
	t.Cleanup(func() {
		h.a.close()
		h.b.close()
	})
	return h
}

// onBothLinks runs f on the in-memory link and on veth.
func onBothLinks(t *testing.T, f func(t *testing.T, h *testHosts)) {
	t.Run("mem", func(t *testing.T) { f(t, memHosts(t, memlink.Config{Seed: 1})) })
	t.Run("veth", func(t *testing.T) { f(t, vethHosts(t, 1500)) })
}

// watchdog turns a hang into a failure with every goroutine's stack.
func watchdog(t testing.TB) { testenv.Watchdog(t, 2*time.Minute) }
