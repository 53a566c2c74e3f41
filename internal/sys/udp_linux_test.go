//go:build linux

package sys

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/link"
)

// udpPair opens two UDP links on the loopback: a on bearerPort, b on an
// ephemeral port, so that both MAC forms are used.
func udpPair(t *testing.T, cfg UDPConfig) (a, b *UDPLink) {
	t.Helper()
	lo := netip.MustParseAddr("127.0.0.1")
	var err error
	for range 20 {
		probe, perr := net.ListenUDP("udp4", &net.UDPAddr{IP: lo.AsSlice()})
		if perr != nil {
			t.Fatal(perr)
		}
		port := uint16(probe.LocalAddr().(*net.UDPAddr).Port)
		probe.Close()
		ca := cfg
		ca.Name, ca.Index, ca.Local, ca.BearerPort = "udp", 1, netip.AddrPortFrom(lo, port), port
		if a, err = OpenUDP(ca); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	cb := cfg
	cb.Name, cb.Index, cb.Local, cb.BearerPort = "udp", 1, netip.AddrPortFrom(lo, 0), a.BearerPort()
	cb.Peers = []netip.AddrPort{a.LocalAddr()}
	if b, err = OpenUDP(cb); err != nil {
		a.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func udpFrame(dst, src [6]byte, n int, fill byte) []byte {
	f := make([]byte, n)
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	f[12], f[13] = 0x88, 0xb5
	for i := 14; i < n; i++ {
		f[i] = fill + byte(i)
	}
	return f
}

func readUDPFrames(t *testing.T, l link.Link, want int) [][]byte {
	t.Helper()
	var got [][]byte
	ms := make([]link.Message, 64)
	for i := range ms {
		ms[i].Buf = make([]byte, 1<<16)
	}
	done := make(chan struct{})
	timer := time.AfterFunc(5*time.Second, func() { l.Close(); close(done) })
	defer timer.Stop()
	for len(got) < want {
		n, err := l.ReadBatch(ms)
		if err != nil {
			select {
			case <-done:
				t.Fatalf("read %d frames of %d within 5s", len(got), want)
			default:
			}
			t.Fatal(err)
		}
		for i := range n {
			got = append(got, bytes.Clone(ms[i].Buf[:ms[i].N]))
		}
	}
	return got
}

// TestUDPLinkBatch sends runs of equal frames (one GSO send each, the last
// frame shorter) both ways and checks every frame arrives whole, in order.
func TestUDPLinkBatch(t *testing.T) {
	for _, tc := range []struct {
		name         string
		noGSO, noGRO bool
	}{{"offload", false, false}, {"no-gso", true, false}, {"no-gro", false, true}, {"none", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := udpPair(t, UDPConfig{MTU: 1500, NoGSO: tc.noGSO, NoGRO: tc.noGRO})
			if a.GSO() == tc.noGSO || a.GRO() == tc.noGRO {
				t.Logf("offload: GSO %v GRO %v (kernel support)", a.GSO(), a.GRO())
			}
			bMAC := a.AddPeer(b.LocalAddr())
			if bMAC != [6]byte(b.HardwareAddr()) || bMAC[0] != 0x06 {
				t.Fatalf("b's MAC %x, a computes %x", b.HardwareAddr(), bMAC)
			}
			if a.HardwareAddr()[0] != 0x02 {
				t.Fatalf("a's MAC %v: want the IPv4 form", a.HardwareAddr())
			}
			size := a.MTU() + link.EthernetHeaderLen
			if size != 1472 {
				t.Fatalf("frame size %d, want 1472", size)
			}
			var want [][]byte
			var ms []link.Message
			for i := range 40 {
				n := size
				if i == 31 || i == 39 {
					n = 100 // ends a run
				}
				f := udpFrame(bMAC, [6]byte(a.HardwareAddr()), n, byte(i))
				want = append(want, f)
				ms = append(ms, link.Message{Buf: f, N: len(f)})
			}
			if n, err := a.WriteBatch(ms); err != nil || n != len(ms) {
				t.Fatalf("WriteBatch: %d, %v", n, err)
			}
			got := readUDPFrames(t, b, len(want))
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("frame %d: %d bytes, want %d", i, len(got[i]), len(want[i]))
				}
			}
			gsoRuns, _ := a.Offload()
			_, groRuns := b.Offload()
			t.Logf("GSO runs sent %d, GRO runs received %d", gsoRuns, groRuns)
			if a.GSO() && gsoRuns != 2 {
				t.Errorf("%d GSO runs sent, want 2", gsoRuns)
			}
			if a.GSO() && b.GRO() && groRuns == 0 {
				t.Error("GSO runs arrived apart, though the receiver asked for GRO")
			}
			// And back, b to a, a's MAC being the IPv4 form.
			f := udpFrame([6]byte(a.HardwareAddr()), [6]byte(b.HardwareAddr()), 300, 7)
			if _, err := b.WriteBatch([]link.Message{{Buf: f, N: len(f)}}); err != nil {
				t.Fatal(err)
			}
			if got := readUDPFrames(t, a, 1); !bytes.Equal(got[0], f) {
				t.Fatal("b to a: frame changed")
			}
		})
	}
}

// TestUDPLinkSourceCheck: a datagram whose frame names another source MAC
// than its sender's address is dropped and counted; broadcast frames go to
// the peers and to stations heard broadcasting; the control view gets the
// frames Control picks.
func TestUDPLinkSourceCheck(t *testing.T) {
	isCtl := func(f []byte) bool { return len(f) > 14 && f[14] == 'C' }
	a, b := udpPair(t, UDPConfig{Control: isCtl})
	raw, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	forged := udpFrame([6]byte(a.HardwareAddr()), [6]byte(b.HardwareAddr()), 64, 1)
	if _, err := raw.WriteToUDPAddrPort(forged, a.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	rawAP := raw.LocalAddr().(*net.UDPAddr).AddrPort()
	rawMAC := UDPMAC(rawAP, a.BearerPort())
	honest := udpFrame([6]byte(a.HardwareAddr()), rawMAC, 64, 2)
	raw.WriteToUDPAddrPort(honest, a.LocalAddr())
	if got := readUDPFrames(t, a, 1); !bytes.Equal(got[0], honest) {
		t.Fatalf("got %x", got[0])
	}
	if a.Rejected() != 1 {
		t.Fatalf("rejected %d, want 1", a.Rejected())
	}
	if ap, ok := a.AddrOf(rawMAC); !ok || ap != rawAP {
		t.Fatalf("a did not learn the sender: %v %v", ap, ok)
	}

	// b broadcasts: a (b's configured peer) gets it, on its control view
	// when Control says so. Then a knows b, and a's broadcast reaches b.
	bcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	ctl := udpFrame(bcast, [6]byte(b.HardwareAddr()), 64, 3)
	ctl[14] = 'C'
	if _, err := b.WriteBatch([]link.Message{{Buf: ctl, N: len(ctl)}}); err != nil {
		t.Fatal(err)
	}
	// The data view's reader hands control frames over: someone must read.
	go a.ReadBatch(make([]link.Message, 4))
	if got := readUDPFrames(t, a.Control(), 1); !bytes.Equal(got[0], ctl) {
		t.Fatalf("control view got %x", got[0])
	}
	data := udpFrame(bcast, [6]byte(a.HardwareAddr()), 64, 4)
	if _, err := a.WriteBatch([]link.Message{{Buf: data, N: len(data)}}); err != nil {
		t.Fatal(err)
	}
	if got := readUDPFrames(t, b, 1); !bytes.Equal(got[0], data) {
		t.Fatalf("b got %x", got[0])
	}
	// Nowhere to go: counted, not an error.
	lost := udpFrame([6]byte{0x06, 1, 2, 3, 4, 5}, [6]byte(a.HardwareAddr()), 64, 5)
	if _, err := a.WriteBatch([]link.Message{{Buf: lost, N: len(lost)}}); err != nil || a.NoRoute() != 1 {
		t.Fatalf("unroutable frame: %v, NoRoute %d", err, a.NoRoute())
	}
	a.Close()
	if _, err := a.ReadBatch(make([]link.Message, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadBatch after Close: %v", err)
	}
	if _, err := a.Control().ReadBatch(make([]link.Message, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("control ReadBatch after Close: %v", err)
	}
}

func TestUDPMAC(t *testing.T) {
	v4 := netip.MustParseAddrPort("192.0.2.7:34997")
	if m := UDPMAC(v4, 34997); m != [6]byte{0x02, 0, 192, 0, 2, 7} {
		t.Fatalf("UDPMAC(%v) = %x", v4, m)
	}
	if ap, ok := udpMACAddr(UDPMAC(v4, 34997), 34997); !ok || ap != v4 {
		t.Fatalf("inverse: %v %v", ap, ok)
	}
	mapped := netip.MustParseAddrPort("[::ffff:192.0.2.7]:34997")
	if UDPMAC(mapped, 34997) != UDPMAC(v4, 34997) {
		t.Fatal("an IPv4-mapped address has another MAC")
	}
	seen := map[[6]byte]netip.AddrPort{}
	for _, s := range []string{"192.0.2.7:34998", "[2001:db8::7]:34997", "[2001:db8::7]:34998", "[2001:db8::8]:34997", "192.0.2.8:1"} {
		ap := netip.MustParseAddrPort(s)
		m := UDPMAC(ap, 34997)
		if m[0] != 0x06 {
			t.Errorf("UDPMAC(%v) = %x: want the hashed form", ap, m)
		}
		if o, dup := seen[m]; dup {
			t.Errorf("%v and %v share %x", o, ap, m)
		}
		seen[m] = ap
	}
	// Pinned, so that other implementations can check theirs.
	if m := UDPMAC(netip.MustParseAddrPort("[2001:db8::7]:34997"), 34997); m != udpMACVector {
		t.Errorf("UDPMAC([2001:db8::7]:34997) = %#v", m)
	}
}

var udpMACVector = [6]byte{0x06, 0x17, 0x33, 0xac, 0xe2, 0x83}
