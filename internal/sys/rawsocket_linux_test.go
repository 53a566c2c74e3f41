package sys

import (
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/net/bpf"

	"github.com/myproto/myproto/internal/link"
)

// rawLink is a link on descriptors outside the poller: a QuietLink, with
// or without a receive ring.
type rawLink interface {
	link.Link
	// closedFDs reports whether Close has closed every descriptor.
	closedFDs() bool
}

func (l *QuietLink) closedFDs() bool {
	return l.fd == -1 && l.rc.Control(func(uintptr) {}) != nil
}

// rawLinks opens each kind of rawLink, for the tests they share.
var rawLinks = []struct {
	name string
	open func(n *packetTestNet, t testing.TB, ifi *net.Interface, cfg PacketConfig) rawLink
}{
	{"quiet", func(n *packetTestNet, t testing.TB, ifi *net.Interface, cfg PacketConfig) rawLink {
		return n.openQuiet(t, ifi, cfg)
	}},
	{"quiet-ring", func(n *packetTestNet, t testing.TB, ifi *net.Interface, cfg PacketConfig) rawLink {
		cfg.RingSize = 4 << 20
		return n.openQuiet(t, ifi, cfg)
	}},
}

// TestIntegrationRawLink moves frames of every size both ways between
// a PacketLink and each rawLink, and checks what the filter, the binding
// and the multicast list let through.
func TestIntegrationRawLink(t *testing.T) {
	for _, k := range rawLinks {
		t.Run(k.name, func(t *testing.T) {
			packetWatchdog(t, time.Minute)
			testRawLink(t, startPacketTestNet(t), k.open)
		})
	}
}

func testRawLink(t *testing.T, n *packetTestNet, open func(n *packetTestNet, t testing.TB, ifi *net.Interface, cfg PacketConfig) rawLink) {
	narrow := testFilter(t, n.b.HardwareAddr, Rule{Ports: []uint16{443}, InPorts: true})
	everyPort := testFilter(t, n.b.HardwareAddr, Rule{Ports: allPorts(), InPorts: true})
	rx := open(n, t, n.b, PacketConfig{EtherType: testEtherType, Filter: narrow, ReadBuffer: 4 << 20})
	tx := n.open(t, n.a, PacketConfig{EtherType: testEtherType})
	other := n.open(t, n.a, PacketConfig{EtherType: testEtherType + 1})
	if rx.Name() != "mpa1" || rx.Index() != n.b.Index || rx.HardwareAddr().String() != n.b.HardwareAddr.String() || rx.MTU() != 1500 {
		t.Errorf("link describes itself as %s %d %v %d", rx.Name(), rx.Index(), rx.HardwareAddr(), rx.MTU())
	}

	buf := make([]byte, 2000)
	send := func(l link.Link, b []byte) { t.Helper(); sendFrame(t, l, b) }
	expect := func(seq uint32) { t.Helper(); expectSeq(t, rx, seq) }
	// The filter attached at open: port 80 stays out, and so do other
	// EtherTypes and other stations' frames.
	send(tx, putFrame(buf, n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 80, 1, 100))
	send(other, putFrame(buf, n.b.HardwareAddr, n.a.HardwareAddr, testEtherType+1, 443, 2, 100))
	send(tx, putFrame(buf, net.HardwareAddr{0x02, 0x99, 0, 0, 0, 1}, n.a.HardwareAddr, testEtherType, 443, 3, 100))
	send(tx, putFrame(buf, n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 443, 4, 100))
	expect(4)
	// A group frame arrives once the interface accepts the group.
	group := net.HardwareAddr{0x01, 0x00, 0x5e, 0x7f, 0x00, 0x02}
	if err := rx.JoinGroup(group); err != nil {
		t.Fatalf("JoinGroup: %v", err)
	}
	send(tx, putFrame(buf, group, n.a.HardwareAddr, testEtherType, 443, 5, 100))
	expect(5)
	if err := rx.LeaveGroup(group); err != nil {
		t.Fatalf("LeaveGroup: %v", err)
	}

	// A filter swapped in: every port, frames of every size, in batches.
	if err := rx.SetFilter(everyPort); err != nil {
		t.Fatalf("SetFilter: %v", err)
	}
	const count = 1000
	sent := make([]link.Message, count)
	for i := range sent {
		b := make([]byte, frameSize(i, 1500))
		sent[i] = link.Message{Buf: putFrame(b, n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, uint16(i), uint32(i), len(b)), N: len(b)}
	}
	if n, err := tx.WriteBatch(sent); n != count || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	got, err := readFrames(rx, count, 64, 1514)
	if err != nil {
		t.Fatal(err)
	}
	checkFrames(t, got, sent)
	st, err := rx.Stats()
	if err != nil || st.Packets != count+2 || st.Drops != 0 {
		t.Errorf("Stats = %+v, %v; want %d packets, no drops", st, err, count+2)
	}

	// The other way: the rawLink sends, a PacketLink receives.
	back := n.open(t, n.a, PacketConfig{EtherType: testEtherType})
	for i := range sent {
		b := sent[i].Buf
		copy(b[0:6], n.a.HardwareAddr)
		copy(b[6:12], n.b.HardwareAddr)
	}
	if n, err := rx.WriteBatch(sent); n != count || err != nil {
		t.Fatalf("WriteBatch from the raw link = %d, %v", n, err)
	}
	got, err = readFrames(back, count, 64, 1514)
	if err != nil {
		t.Fatal(err)
	}
	checkFrames(t, got, sent)
}

// TestIntegrationRawLinkClose checks that Close unblocks a ReadBatch
// waiting for frames, and that every call after it fails with
// net.ErrClosed.
func TestIntegrationRawLinkClose(t *testing.T) {
	for _, k := range rawLinks {
		t.Run(k.name, func(t *testing.T) {
			packetWatchdog(t, time.Minute)
			n := startPacketTestNet(t)
			testRawLinkClose(t, k.open(n, t, n.b, PacketConfig{EtherType: testEtherType}))
		})
	}
}

func testRawLinkClose(t *testing.T, rx rawLink) {
	errc := make(chan error, 1)
	go func() {
		_, err := rx.ReadBatch([]link.Message{{Buf: make([]byte, 1514)}})
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-errc:
		t.Fatalf("ReadBatch returned before any frame came: %v", err)
	default:
	}
	at := time.Now()
	if err := rx.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("ReadBatch unblocked by Close: %v, want net.ErrClosed", err)
		}
		t.Logf("ReadBatch returned %v after Close", time.Since(at))
	case <-time.After(5 * time.Second):
		t.Fatal("ReadBatch still blocked 5s after Close")
	}
	ms := []link.Message{{Buf: make([]byte, 64), N: 64}}
	for name, err := range map[string]error{
		"Close":      rx.Close(),
		"ReadBatch":  func() error { _, err := rx.ReadBatch(ms); return err }(),
		"WriteBatch": func() error { _, err := rx.WriteBatch(ms); return err }(),
		"SetFilter":  rx.SetFilter([]bpf.RawInstruction{{Op: 6}}),
		"JoinGroup":  rx.JoinGroup(net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}),
		"Stats":      func() error { _, err := rx.Stats(); return err }(),
	} {
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s after Close: %v, want net.ErrClosed", name, err)
		}
	}
	if !rx.closedFDs() {
		t.Errorf("descriptors still open after Close")
	}
}
