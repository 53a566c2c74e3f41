package sys_test

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/myproto/myproto/internal/link"
	"github.com/myproto/myproto/internal/sys"
)

// interfaceIn returns the interface name in ns, or nil if there is none.
func interfaceIn(t *testing.T, ns *sys.Netns, name string) *net.Interface {
	t.Helper()
	var ifi *net.Interface
	err := ns.Do(func() (err error) {
		ifi, err = net.InterfaceByName(name)
		return err
	})
	if err != nil {
		return nil
	}
	return ifi
}

// TestIntegrationCreateVeth makes a pair across two namespaces and checks
// that a frame sent as soon as sockets are open crosses it: before the
// kernel's linkwatch work has run, the noop qdisc would drop it silently.
func TestIntegrationCreateVeth(t *testing.T) {
	nsA, nsB := newNetnsOrSkip(t), newNetnsOrSkip(t)
	if err := nsA.Do(func() error { return sys.CreateVeth("vta", "vtb", 9000, nsB) }); err != nil {
		t.Fatal(err)
	}
	a, b := interfaceIn(t, nsA, "vta"), interfaceIn(t, nsB, "vtb")
	if a == nil || b == nil {
		t.Fatalf("vta in A: %v, vtb in B: %v", a, b)
	}
	for _, ifi := range []*net.Interface{a, b} {
		if ifi.MTU != 9000 || ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagRunning == 0 {
			t.Errorf("%s: mtu %d, flags %v; want 9000, up|running", ifi.Name, ifi.MTU, ifi.Flags)
		}
	}
	if interfaceIn(t, nsA, "vtb") != nil || interfaceIn(t, nsB, "vta") != nil {
		t.Error("an end is in both namespaces")
	}
	// Equal indexes, which two fresh namespaces would give, delay the
	// kernel's activation of the ends by up to a second.
	if a.Index == b.Index {
		t.Errorf("both ends have interface index %d", a.Index)
	}

	const etherType = 0x88b6 // not myproto's, so no other test's sockets see it
	var tx, rx *sys.PacketLink
	err := nsA.Do(func() (err error) { tx, err = sys.OpenPacket(a, sys.PacketConfig{EtherType: etherType}); return err })
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	err = nsB.Do(func() (err error) { rx, err = sys.OpenPacket(b, sys.PacketConfig{EtherType: etherType}); return err })
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	frame := make([]byte, 64)
	copy(frame, b.HardwareAddr)
	copy(frame[6:], a.HardwareAddr)
	frame[12], frame[13] = etherType>>8, etherType&0xff
	copy(frame[link.EthernetHeaderLen:], "first frame")
	if _, err := tx.WriteBatch([]link.Message{{Buf: frame, N: len(frame)}}); err != nil {
		t.Fatal(err)
	}
	// ReadBatch has no deadline; closing the link ends it.
	timer := time.AfterFunc(5*time.Second, func() { rx.Close() })
	defer timer.Stop()
	got := []link.Message{{Buf: make([]byte, 128)}}
	if _, err := rx.ReadBatch(got); err != nil {
		t.Fatalf("the first frame did not arrive within 5s: %v", err)
	}
	if string(got[0].Buf[:got[0].N]) != string(frame) {
		t.Errorf("received % x, want % x", got[0].Buf[:got[0].N], frame)
	}
}

// TestIntegrationVethLinkFunctions exercises the link functions on a pair
// whose ends are both in one namespace.
func TestIntegrationVethLinkFunctions(t *testing.T) {
	ns := newNetnsOrSkip(t)
	if err := ns.Do(func() error { return sys.CreateVeth("vta", "vtb", 0, nil) }); err != nil {
		t.Fatal(err)
	}
	if a := interfaceIn(t, ns, "vta"); a == nil || a.MTU != 1500 {
		t.Errorf("vta = %v, want MTU 1500 by default", a)
	}

	if err := sys.SetLinkMTU(ns, "vta", 1280); err != nil {
		t.Fatal(err)
	}
	if a := interfaceIn(t, ns, "vta"); a.MTU != 1280 {
		t.Errorf("MTU %d after SetLinkMTU 1280", a.MTU)
	}
	if err := sys.SetLinkMTU(ns, "vta", 0); !errors.Is(err, unix.EINVAL) {
		t.Errorf("SetLinkMTU 0: %v, want EINVAL", err)
	}

	// The peer going down takes vta's carrier away.
	if err := sys.SetLinkUp(ns, "vtb", false); err != nil {
		t.Fatal(err)
	}
	if b := interfaceIn(t, ns, "vtb"); b.Flags&net.FlagUp != 0 {
		t.Errorf("vtb flags %v after SetLinkUp false", b.Flags)
	}
	if _, err := sys.WaitLinkReady(ns, "vta", 20*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("WaitLinkReady with the peer down: %v, want os.ErrDeadlineExceeded", err)
	}
	if err := sys.SetLinkUp(ns, "vtb", true); err != nil {
		t.Fatal(err)
	}
	if ifi, err := sys.WaitLinkReady(ns, "vta", 5*time.Second); err != nil || ifi.Name != "vta" {
		t.Errorf("WaitLinkReady with the peer up again: %v, %v", ifi, err)
	}

	// A taken name fails and leaves the other end's name free.
	err := ns.Do(func() error { return sys.CreateVeth("vta", "vtc", 0, nil) })
	if !errors.Is(err, unix.EEXIST) {
		t.Errorf("CreateVeth with a taken name: %v, want EEXIST", err)
	}
	if interfaceIn(t, ns, "vtc") != nil {
		t.Error("a failed CreateVeth left vtc behind")
	}
	if err := ns.Do(func() error { return sys.CreateVeth("vtd", "vte", -1, nil) }); !errors.Is(err, unix.EINVAL) {
		t.Errorf("CreateVeth with MTU -1: %v, want EINVAL", err)
	}

	// Deleting one end deletes both.
	if err := sys.DeleteLink(ns, "vtb"); err != nil {
		t.Fatal(err)
	}
	if interfaceIn(t, ns, "vta") != nil || interfaceIn(t, ns, "vtb") != nil {
		t.Error("DeleteLink vtb left an end behind")
	}
	for name, err := range map[string]error{
		"DeleteLink":    sys.DeleteLink(ns, "vta"),
		"SetLinkUp":     sys.SetLinkUp(ns, "vta", true),
		"SetLinkMTU":    sys.SetLinkMTU(ns, "vta", 1500),
		"WaitLinkReady": func() error { _, err := sys.WaitLinkReady(ns, "vta", time.Second); return err }(),
	} {
		if !errors.Is(err, unix.ENODEV) {
			t.Errorf("%s of a missing interface: %v, want ENODEV", name, err)
		}
	}
}
