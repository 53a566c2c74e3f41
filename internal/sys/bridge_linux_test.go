package sys_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/myproto/myproto/internal/link"
	"github.com/myproto/myproto/internal/sys"
)

// masters returns the master index of every link in ns by name (0: none).
func masters(t *testing.T, ns *sys.Netns) map[string]uint32 {
	t.Helper()
	var c *rtnetlink.Conn
	if err := ns.Do(func() (err error) { c, err = rtnetlink.Dial(nil); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	links, err := c.Link.List()
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]uint32)
	for _, l := range links {
		var master uint32
		if l.Attributes.Master != nil {
			master = *l.Attributes.Master
		}
		m[l.Attributes.Name] = master
	}
	return m
}

// TestIntegrationBridge joins two namespaces through a bridge in a third,
// as testenv.NewSegment does, and checks that frames cross it while both
// ports are enslaved and stop when one is freed.
func TestIntegrationBridge(t *testing.T) {
	nsBr, nsA, nsB := newNetnsOrSkip(t), newNetnsOrSkip(t), newNetnsOrSkip(t)
	if err := sys.CreateBridge("vbr", nsBr); err != nil {
		t.Fatal(err)
	}
	if err := sys.CreateBridge("vbr", nsBr); !errors.Is(err, unix.EEXIST) {
		t.Errorf("CreateBridge with a taken name: %v, want EEXIST", err)
	}
	err := nsBr.Do(func() error {
		if err := sys.CreateVeth("vpa", "vha", 0, nsA); err != nil {
			return err
		}
		return sys.CreateVeth("vpb", "vhb", 0, nsB)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{"vpa", "vpb"} {
		if err := sys.SetLinkMaster(nsBr, port, "vbr"); err != nil {
			t.Fatal(err)
		}
	}
	br := interfaceIn(t, nsBr, "vbr")
	if br == nil || br.Flags&net.FlagUp == 0 {
		t.Fatalf("bridge: %v, want up", br)
	}
	m := masters(t, nsBr)
	if m["vpa"] != uint32(br.Index) || m["vpb"] != uint32(br.Index) || m["vbr"] != 0 {
		t.Errorf("masters %v, want vpa and vpb enslaved to vbr (index %d)", m, br.Index)
	}

	a, b := interfaceIn(t, nsA, "vha"), interfaceIn(t, nsB, "vhb")
	const etherType = 0x88b6 // not myproto's
	var tx, rx *sys.PacketLink
	if err := nsA.Do(func() (err error) { tx, err = sys.OpenPacket(a, sys.PacketConfig{EtherType: etherType}); return err }); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	// recv returns the next frame on rx, or nil if none comes within d.
	// ReadBatch has no deadline, so a timer closes the link and the next
	// call opens it again.
	open := func() {
		t.Helper()
		if err := nsB.Do(func() (err error) { rx, err = sys.OpenPacket(b, sys.PacketConfig{EtherType: etherType}); return err }); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(d time.Duration) []byte {
		timer := time.AfterFunc(d, func() { rx.Close() })
		got := []link.Message{{Buf: make([]byte, 128)}}
		_, err := rx.ReadBatch(got)
		if !timer.Stop() {
			open() // closed by the timer, maybe just after a frame came
		}
		if err != nil {
			return nil
		}
		return got[0].Buf[:got[0].N]
	}
	open()
	defer func() { rx.Close() }()
	send := func(dst net.HardwareAddr, payload string) []byte {
		t.Helper()
		f := make([]byte, 64)
		copy(f, dst)
		copy(f[6:], a.HardwareAddr)
		f[12], f[13] = etherType>>8, etherType&0xff
		copy(f[link.EthernetHeaderLen:], payload)
		if _, err := tx.WriteBatch([]link.Message{{Buf: f, N: len(f)}}); err != nil {
			t.Fatal(err)
		}
		return f
	}
	// The bridge has not seen b yet: unicast to it is flooded, and so is
	// broadcast.
	for _, dst := range []net.HardwareAddr{b.HardwareAddr, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} {
		f := send(dst, "through the bridge")
		if got := recv(5 * time.Second); string(got) != string(f) {
			t.Errorf("to %v: received % x, want % x", dst, got, f)
		}
	}

	// Freed, vpb is a lone link again: nothing crosses.
	if err := sys.SetLinkMaster(nsBr, "vpb", ""); err != nil {
		t.Fatal(err)
	}
	if m := masters(t, nsBr); m["vpb"] != 0 || m["vpa"] != uint32(br.Index) {
		t.Errorf("masters after freeing vpb: %v", m)
	}
	send(b.HardwareAddr, "nowhere")
	if got := recv(200 * time.Millisecond); got != nil {
		t.Errorf("received % x through a freed port", got)
	}

	for name, err := range map[string]error{
		"unknown link":   sys.SetLinkMaster(nsBr, "nolink", "vbr"),
		"unknown master": sys.SetLinkMaster(nsBr, "vpa", "nobridge"),
	} {
		if !errors.Is(err, unix.ENODEV) {
			t.Errorf("SetLinkMaster with an %s: %v, want ENODEV", name, err)
		}
	}
}

// portLearning reads IFLA_BRPORT_LEARNING of the bridge port port in ns
// from its link's slave data.
func portLearning(t *testing.T, ns *sys.Netns, port string) (on, found bool) {
	t.Helper()
	var c *rtnetlink.Conn
	if err := ns.Do(func() (err error) { c, err = rtnetlink.Dial(nil); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	links, err := c.Link.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Attributes.Name != port || l.Attributes.Info == nil {
			continue
		}
		d, ok := l.Attributes.Info.SlaveData.(*rtnetlink.LinkData)
		if !ok || l.Attributes.Info.SlaveKind != "bridge" {
			t.Fatalf("%s: slave %q %T, want a bridge port", port, l.Attributes.Info.SlaveKind, l.Attributes.Info.SlaveData)
		}
		ad, err := netlink.NewAttributeDecoder(d.Data)
		if err != nil {
			t.Fatal(err)
		}
		for ad.Next() {
			if ad.Type() == unix.IFLA_BRPORT_LEARNING {
				on, found = ad.Uint8() != 0, true
			}
		}
		return on, found
	}
	t.Fatalf("no link %s", port)
	return false, false
}

// TestIntegrationBridgePortLearning turns learning on a bridge port off and
// on again and reads the flag back.
func TestIntegrationBridgePortLearning(t *testing.T) {
	nsBr, nsA := newNetnsOrSkip(t), newNetnsOrSkip(t)
	if err := sys.CreateBridge("vbr", nsBr); err != nil {
		t.Fatal(err)
	}
	if err := nsBr.Do(func() error { return sys.CreateVeth("vpa", "vha", 0, nsA) }); err != nil {
		t.Fatal(err)
	}
	if err := sys.SetLinkMaster(nsBr, "vpa", "vbr"); err != nil {
		t.Fatal(err)
	}
	if on, found := portLearning(t, nsBr, "vpa"); !on || !found {
		t.Errorf("a new port learns: %v (found %v), want true", on, found)
	}
	for _, want := range []bool{false, true} {
		if err := sys.SetBridgePortLearning(nsBr, "vpa", want); err != nil {
			t.Fatal(err)
		}
		if on, _ := portLearning(t, nsBr, "vpa"); on != want {
			t.Errorf("after SetBridgePortLearning(%v) the port learns: %v", want, on)
		}
	}
	if err := sys.SetBridgePortLearning(nsBr, "nolink", false); !errors.Is(err, unix.ENODEV) {
		t.Errorf("SetBridgePortLearning on an unknown link: %v, want ENODEV", err)
	}
}
