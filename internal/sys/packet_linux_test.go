//go:build linux

package sys

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/myproto/myproto/internal/link"
)

func TestMmsghdrLayout(t *testing.T) {
	// struct mmsghdr is a msghdr and an unsigned int, padded to the
	// msghdr's alignment.
	want := (unsafe.Sizeof(unix.Msghdr{}) + 4 + unsafe.Alignof(unix.Msghdr{}) - 1) &^ (unsafe.Alignof(unix.Msghdr{}) - 1)
	if got := unsafe.Sizeof(mmsghdr{}); got != want {
		t.Errorf("sizeof(mmsghdr) = %d, want %d", got, want)
	}
	if unsafe.Sizeof(uintptr(0)) == 8 && unsafe.Sizeof(mmsghdr{}) != 64 {
		t.Errorf("sizeof(mmsghdr) = %d on a 64-bit system, want 64", unsafe.Sizeof(mmsghdr{}))
	}
	if got := unsafe.Offsetof(mmsghdr{}.Len); got != unix.SizeofMsghdr {
		t.Errorf("offsetof(mmsghdr.msg_len) = %d, want %d", got, unix.SizeofMsghdr)
	}
}

func TestOpenPacketInvalid(t *testing.T) {
	if _, err := OpenPacket(nil, PacketConfig{EtherType: testEtherType}); err == nil {
		t.Error("OpenPacket(nil) succeeded")
	}
	lo := &net.Interface{Index: 1, Name: "lo"}
	if _, err := OpenPacket(lo, PacketConfig{}); err == nil {
		t.Error("OpenPacket with EtherType 0 succeeded")
	}
}

// packetWatchdog fails the test binary with every goroutine's stack if the
// test is still running after d: a hang becomes a failure that says where.
func packetWatchdog(t testing.TB, d time.Duration) {
	timer := time.AfterFunc(d, func() {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		fmt.Fprintf(os.Stderr, "%s: still running after %v\n%s\n", t.Name(), d, buf)
		panic(t.Name() + " hung")
	})
	t.Cleanup(func() { timer.Stop() })
}

// A packetTestNet is a private network namespace holding a veth pair,
// mpa0 and mpa1. Sockets must be created in it with do; once created they
// stay in it and work from any goroutine.
type packetTestNet struct {
	a, b *net.Interface // mpa0 and mpa1
	fns  chan func()
	done chan struct{}
}

// startPacketTestNet makes a packetTestNet for t, or skips t when not root.
func startPacketTestNet(t testing.TB) *packetTestNet {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root; the root package tests exercise this path in a user namespace")
	}
	n := &packetTestNet{fns: make(chan func()), done: make(chan struct{})}
	errc := make(chan error)
	go func() {
		// The thread is never unlocked nor set back: when this goroutine
		// returns, the runtime ends the thread and its namespace with it
		// (the namespace lives on while sockets in it are open).
		runtime.LockOSThread()
		defer close(n.done)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- os.NewSyscallError("unshare", err)
			return
		}
		errc <- nil
		for f := range n.fns {
			f()
		}
	}()
	if err := <-errc; err != nil {
		t.Skipf("cannot make a network namespace (%v); run as root with CAP_SYS_ADMIN", err)
	}
	t.Cleanup(func() {
		close(n.fns)
		<-n.done
	})

	n.do(func() {
		// exec forks from the calling, locked thread, so ip runs in the
		// new namespace.
		for _, args := range [][]string{
			{"link", "add", "mpa0", "type", "veth", "peer", "name", "mpa1"},
			{"link", "set", "mpa1", "up"},
			{"link", "set", "mpa0", "up"},
		} {
			n.ip(t, args...)
		}
		n.waitReady(t, "mpa0", "mpa1")
		var err error
		if n.a, err = net.InterfaceByName("mpa0"); err != nil {
			t.Error(err)
		}
		if n.b, err = net.InterfaceByName("mpa1"); err != nil {
			t.Error(err)
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	return n
}

// waitReady waits until the named interfaces can transmit; call it only
// within do. An interface that came up before its carrier keeps the noop
// qdisc, which drops every frame yet reports success to sendmmsg(2), until
// the kernel's linkwatch worker gets round to it, asynchronously.
func (n *packetTestNet) waitReady(t testing.TB, names ...string) {
	deadline := time.Now().Add(10 * time.Second)
	for _, name := range names {
		for {
			out, err := exec.Command(toolPath("ip"), "-o", "link", "show", "dev", name).CombinedOutput()
			if err != nil {
				t.Errorf("ip link show %s: %v\n%s", name, err, out)
				return
			}
			s := string(out)
			if strings.Contains(s, "LOWER_UP") && strings.Contains(s, "state UP") && !strings.Contains(s, "qdisc noop") {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s not ready after 10s: %s", name, out)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// do runs f on the namespace's thread and waits for it. f must not call
// t.FailNow and friends.
func (n *packetTestNet) do(f func()) {
	done := make(chan struct{})
	n.fns <- func() {
		defer close(done)
		f()
	}
	<-done
}

// toolPath is Tool's answer, or name itself for exec to report missing.
func toolPath(name string) string {
	if p, err := Tool(name); err == nil {
		return p
	}
	return name
}

// ip runs the ip(8) command; call it only within do.
func (n *packetTestNet) ip(t testing.TB, args ...string) {
	out, err := exec.Command(toolPath("ip"), args...).CombinedOutput()
	if err != nil {
		t.Errorf("ip %v: %v\n%s", args, err, out)
	}
}

// open opens a PacketLink on ifi in the namespace.
func (n *packetTestNet) open(t testing.TB, ifi *net.Interface, cfg PacketConfig) *PacketLink {
	t.Helper()
	var (
		l   *PacketLink
		err error
	)
	n.do(func() { l, err = OpenPacket(ifi, cfg) })
	if err != nil {
		t.Fatalf("OpenPacket(%s): %v", ifi.Name, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// testFilter builds the filter of the test EtherType and version that
// passes frames to mac by rules.
func testFilter(t testing.TB, mac net.HardwareAddr, rules ...Rule) []bpf.RawInstruction {
	t.Helper()
	prog, err := Filter(FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: mac, Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	return prog
}

// openPair opens the receiving end on mpa1, filtering on every port of our
// EtherType to its MAC, and the sending end on mpa0 without a filter (so
// that, but for PACKET_IGNORE_OUTGOING, it would see its own frames).
func (n *packetTestNet) openPair(t testing.TB) (tx, rx *PacketLink) {
	t.Helper()
	prog := testFilter(t, n.b.HardwareAddr, Rule{Types: []uint8{typeDiscovery}, OtherPorts: true}, Rule{Ports: []uint16{0, 65535}, InPorts: true})
	everyPort := testFilter(t, n.b.HardwareAddr, Rule{Ports: allPorts(), InPorts: true})
	rx = n.open(t, n.b, PacketConfig{EtherType: testEtherType, Filter: prog})
	// Replace the filter once, so every test goes through SetFilter.
	if err := rx.SetFilter(everyPort); err != nil {
		t.Fatalf("SetFilter: %v", err)
	}
	tx = n.open(t, n.a, PacketConfig{EtherType: testEtherType})
	return tx, rx
}

func allPorts() []uint16 {
	ps := make([]uint16, 65536)
	for i := range ps {
		ps[i] = uint16(i)
	}
	return ps
}

// putFrame writes into b a myproto frame of size bytes from src to dst,
// whose body is a pattern derived from seq, and returns b[:size].
func putFrame(b []byte, dst, src net.HardwareAddr, etherType uint16, dstPort uint16, seq uint32, size int) []byte {
	b = b[:size]
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:], etherType)
	b[14] = testVersion
	b[15] = typeDatagram
	binary.BigEndian.PutUint16(b[16:], 0)
	binary.BigEndian.PutUint16(b[18:], uint16(size-14))
	binary.BigEndian.PutUint16(b[20:], 7)
	binary.BigEndian.PutUint16(b[22:], dstPort)
	clear(b[24:38])
	if size >= 42 {
		binary.BigEndian.PutUint32(b[38:], seq)
		for i := 42; i < size; i++ {
			b[i] = byte(seq) + byte(i)
		}
	}
	return b
}

// frameSize returns the size of the i-th test frame: from the smallest
// myproto frame with a sequence number up to the MTU, in an irregular order.
func frameSize(i, mtu int) int {
	const minSize = 42
	return minSize + (i*7919)%(mtu+link.EthernetHeaderLen-minSize+1)
}

// readFrames reads count frames from l into fresh buffers of bufSize bytes,
// batch messages at a time.
// sendFrame sends b, one whole frame, on l.
func sendFrame(t testing.TB, l link.Link, b []byte) {
	t.Helper()
	if n, err := l.WriteBatch([]link.Message{{Buf: b, N: len(b)}}); n != 1 || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
}

// expectSeq reads the next frame from rx and checks it is the one putFrame
// made with seq.
func expectSeq(t testing.TB, rx link.Link, seq uint32) {
	t.Helper()
	frames, err := readFrames(rx, 1, 1, 2000)
	if err != nil {
		t.Fatalf("ReadBatch: %v", err)
	}
	if got := binary.BigEndian.Uint32(frames[0][38:]); got != seq {
		t.Fatalf("received frame %d (% x), want %d", got, frames[0], seq)
	}
}

func readFrames(l link.Link, count, batch, bufSize int) ([][]byte, error) {
	var got [][]byte
	ms := make([]link.Message, batch)
	for len(got) < count {
		for i := range ms {
			ms[i] = link.Message{Buf: make([]byte, bufSize)}
		}
		n, err := l.ReadBatch(ms[:min(batch, count-len(got))])
		if err != nil {
			return got, err
		}
		for _, m := range ms[:n] {
			got = append(got, m.Buf[:m.N])
		}
	}
	return got, nil
}

// checkFrames checks that got holds each of the frames in sent exactly once,
// by the sequence numbers putFrame wrote. A veth pair may reorder frames: the
// receiving side runs on the backlog of whichever CPU sent or dequeued each.
func checkFrames(t *testing.T, got [][]byte, sent []link.Message) {
	t.Helper()
	if len(got) != len(sent) {
		t.Fatalf("received %d frames, want %d", len(got), len(sent))
	}
	seen := make([]bool, len(sent))
	reordered := 0
	for i, f := range got {
		seq := binary.BigEndian.Uint32(f[38:])
		if seq >= uint32(len(sent)) || seen[seq] {
			t.Fatalf("frame %d: sequence number %d unexpected or repeated", i, seq)
		}
		seen[seq] = true
		if seq != uint32(i) {
			reordered++
		}
		if want := sent[seq].Buf[:sent[seq].N]; !bytes.Equal(f, want) {
			t.Fatalf("frame %d: got %d bytes % x..., want %d bytes % x...",
				seq, len(f), f[:min(len(f), 48)], len(want), want[:48])
		}
	}
	if reordered > 0 {
		t.Logf("%d of %d frames arrived out of order", reordered, len(got))
	}
}

func TestIntegrationPacketLink(t *testing.T) {
	packetWatchdog(t, time.Minute)
	n := startPacketTestNet(t)
	tx, rx := n.openPair(t)

	if got, want := rx.Name(), "mpa1"; got != want {
		t.Errorf("Name = %q, want %q", got, want)
	}
	if got, want := rx.Index(), n.b.Index; got != want {
		t.Errorf("Index = %d, want %d", got, want)
	}
	if got, want := rx.HardwareAddr(), n.b.HardwareAddr; !bytes.Equal(got, want) {
		t.Errorf("HardwareAddr = %v, want %v", got, want)
	}
	if got, want := rx.MTU(), 1500; got != want {
		t.Errorf("MTU = %d, want %d", got, want)
	}
	rcv, snd, err := rx.SocketBuffers()
	if err != nil {
		t.Fatalf("SocketBuffers: %v", err)
	}
	// Linux reports twice what was set. Without CAP_NET_ADMIN in the
	// initial user namespace the sizes are capped by rmem_max and wmem_max.
	for _, b := range []struct {
		name   string
		got    int
		sysctl string
	}{
		{"receive", rcv, "/proc/sys/net/core/rmem_max"},
		{"send", snd, "/proc/sys/net/core/wmem_max"},
	} {
		want := 2 * defaultSocketBuffer
		if b.got < want {
			data, err := os.ReadFile(b.sysctl)
			if err != nil {
				t.Fatal(err)
			}
			limit, err := strconv.Atoi(strings.TrimSpace(string(data)))
			if err != nil {
				t.Fatal(err)
			}
			want = min(want, 2*limit)
			t.Logf("%s buffer capped at %d by %s", b.name, b.got, b.sysctl)
		}
		if b.got != want {
			t.Errorf("%s buffer is %d bytes, want %d", b.name, b.got, want)
		}
	}

	// 1000 frames in one call: more than one sendmmsg batch.
	const count = 1000
	mtu := tx.MTU()
	sent := make([]link.Message, count)
	for i := range sent {
		size := frameSize(i, mtu)
		b := make([]byte, size+100) // Buf may be longer than N
		putFrame(b, n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, uint16(i), uint32(i), size)
		sent[i] = link.Message{Buf: b, N: size}
	}

	type result struct {
		frames [][]byte
		err    error
	}
	resc := make(chan result, 1)
	go func() {
		frames, err := readFrames(rx, count, 50, mtu+link.EthernetHeaderLen)
		resc <- result{frames, err}
	}()

	nw, err := tx.WriteBatch(sent)
	if err != nil || nw != count {
		t.Fatalf("WriteBatch = %d, %v; want %d, nil", nw, err, count)
	}
	res := <-resc
	if res.err != nil {
		t.Fatalf("ReadBatch after %d frames: %v", len(res.frames), res.err)
	}
	checkFrames(t, res.frames, sent)

	st, err := rx.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.Packets < count || st.Drops != 0 {
		t.Errorf("receiver Stats = %+v, want at least %d packets and no drops", st, count)
	}
	// Stats accumulate across reads of the resetting kernel counters.
	if st2, err := rx.Stats(); err != nil || st2.Packets < st.Packets {
		t.Errorf("second Stats = %+v, %v; want at least %+v", st2, err, st)
	}

	// With PACKET_IGNORE_OUTGOING the unfiltered sender saw none of its
	// frames: they are handed to its socket, if at all, during sendmmsg.
	st, err = tx.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.Packets != 0 {
		t.Errorf("sender Stats = %+v, want no packets: it received its own frames", st)
	}

	// A ReadBatch that waits for frames that never come is unblocked by
	// Close.
	readc := make(chan error, 1)
	go func() {
		ms := []link.Message{{Buf: make([]byte, 2000)}}
		n, err := tx.ReadBatch(ms)
		if n != 0 {
			err = fmt.Errorf("ReadBatch = %d frames (% x), want none: %v", n, ms[0].Buf[:ms[0].N], err)
		}
		readc <- err
	}()
	select {
	case err := <-readc:
		t.Fatalf("ReadBatch on the sender returned early: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := tx.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-readc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadBatch unblocked by Close: %v, want net.ErrClosed", err)
	}
}

func TestIntegrationPacketLinkClosed(t *testing.T) {
	packetWatchdog(t, time.Minute)
	n := startPacketTestNet(t)
	tx, rx := n.openPair(t)
	if err := rx.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := tx.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	ms := []link.Message{{Buf: make([]byte, 64), N: 64}}
	for name, err := range map[string]error{
		"Close": rx.Close(),
		"ReadBatch": func() error {
			_, err := rx.ReadBatch(ms)
			return err
		}(),
		"WriteBatch": func() error {
			_, err := tx.WriteBatch(ms)
			return err
		}(),
		"SetFilter":  rx.SetFilter([]bpf.RawInstruction{{Op: 6}}),
		"JoinGroup":  rx.JoinGroup(net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}),
		"LeaveGroup": rx.LeaveGroup(net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}),
		"Stats": func() error {
			_, err := rx.Stats()
			return err
		}(),
		"SocketBuffers": func() error {
			_, _, err := rx.SocketBuffers()
			return err
		}(),
	} {
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s after Close: %v, want net.ErrClosed", name, err)
		}
	}
}

func TestIntegrationPacketLinkFilter(t *testing.T) {
	packetWatchdog(t, time.Minute)
	n := startPacketTestNet(t)
	tx, rx := n.openPair(t)
	other := n.open(t, n.a, PacketConfig{EtherType: testEtherType + 1})

	const size = 100
	buf := make([]byte, size)
	send := func(l *PacketLink, b []byte) { t.Helper(); sendFrame(t, l, b) }
	expect := func(seq uint32) { t.Helper(); expectSeq(t, rx, seq) }
	foreign := net.HardwareAddr{0x02, 0x99, 0, 0, 0, 1}
	broadcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

	// Frames the filter or the binding must stop. veth would deliver each
	// of them to a packet socket, so each must be stopped in the kernel; a
	// leak shows as a frame ahead of the marker that follows.
	send(other, putFrame(buf, n.b.HardwareAddr, n.a.HardwareAddr, testEtherType+1, 80, 1, size))
	send(tx, putFrame(buf, foreign, n.a.HardwareAddr, testEtherType, 80, 2, size))
	b := putFrame(buf, n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 80, 3, size)
	b[14] = testVersion + 1
	send(tx, b)
	send(tx, putFrame(buf, n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 80, 4, size))
	expect(4)

	send(tx, putFrame(buf, broadcast, n.a.HardwareAddr, testEtherType, 80, 5, size))
	expect(5)

	// A narrower filter, swapped in while frames flow.
	prog, err := Filter(FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: n.b.HardwareAddr,
		Rules: []Rule{{Ports: []uint16{443}, InPorts: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := rx.SetFilter(prog); err != nil {
		t.Fatalf("SetFilter: %v", err)
	}
	send(tx, putFrame(buf, n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 80, 6, size))
	send(tx, putFrame(buf, n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 443, 7, size))
	expect(7)

	// Multicast reaches the socket once the interface accepts the group.
	group := net.HardwareAddr{0x01, 0x00, 0x5e, 0x7f, 0x00, 0x01}
	if err := rx.JoinGroup(group); err != nil {
		t.Fatalf("JoinGroup: %v", err)
	}
	send(tx, putFrame(buf, group, n.a.HardwareAddr, testEtherType, 443, 8, size))
	expect(8)
	if err := rx.LeaveGroup(group); err != nil {
		t.Fatalf("LeaveGroup: %v", err)
	}
}

func TestIntegrationPacketLinkTruncates(t *testing.T) {
	packetWatchdog(t, time.Minute)
	n := startPacketTestNet(t)
	tx, rx := n.openPair(t)

	b := putFrame(make([]byte, 1000), n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 80, 1, 1000)
	if _, err := tx.WriteBatch([]link.Message{{Buf: b, N: len(b)}}); err != nil {
		t.Fatal(err)
	}
	ms := []link.Message{{Buf: make([]byte, 100)}}
	nr, err := rx.ReadBatch(ms)
	if err != nil || nr != 1 {
		t.Fatalf("ReadBatch = %d, %v", nr, err)
	}
	if ms[0].N != 100 || !bytes.Equal(ms[0].Buf, b[:100]) {
		t.Errorf("truncated frame: N = %d, % x; want 100, % x", ms[0].N, ms[0].Buf[:ms[0].N], b[:100])
	}
}

func TestIntegrationPacketLinkConcurrentWriters(t *testing.T) {
	packetWatchdog(t, time.Minute)
	n := startPacketTestNet(t)
	tx, rx := n.openPair(t)

	const writers, perWriter = 4, 500
	resc := make(chan [][]byte, 1)
	go func() {
		frames, err := readFrames(rx, writers*perWriter, 64, 2000)
		if err != nil {
			t.Error(err)
		}
		resc <- frames
	}()
	// Small batches, so that writers interleave.
	writeConcurrently(t, tx, n, writers, perWriter, 10, func(int) int { return 200 })
	wantDistinct(t, <-resc, writers*perWriter)
}

// writeConcurrently sends perWriter numbered frames from each of writers
// goroutines over tx, in batches of batch, a frame of seq size(seq) bytes.
func writeConcurrently(t *testing.T, tx *PacketLink, n *packetTestNet, writers, perWriter, batch int, size func(seq int) int) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := 0; i < perWriter; i += batch {
				ms := make([]link.Message, batch)
				for j := range ms {
					seq := w*perWriter + i + j
					b := putFrame(make([]byte, 1514), n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 80, uint32(seq), size(seq))
					ms[j] = link.Message{Buf: b, N: len(b)}
				}
				if n, err := tx.WriteBatch(ms); n != len(ms) || err != nil {
					t.Errorf("WriteBatch = %d, %v", n, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// wantDistinct checks that frames carry want distinct sequence numbers.
func wantDistinct(t *testing.T, frames [][]byte, want int) {
	t.Helper()
	seen := make(map[uint32]bool)
	for _, f := range frames {
		seen[binary.BigEndian.Uint32(f[38:])] = true
	}
	if len(seen) != want {
		t.Errorf("received %d distinct frames, want %d", len(seen), want)
	}
}

func TestIntegrationPacketLinkBackPressure(t *testing.T) {
	packetWatchdog(t, time.Minute)
	n := startPacketTestNet(t)
	// A slow token bucket with a short queue makes the qdisc drop, which
	// sendmmsg reports as ENOBUFS: WriteBatch must wait, not lose frames.
	// 300 frames of 1000 bytes at 20 Mbit/s take about 120 ms.
	var (
		out []byte
		err error
	)
	tc, err := Tool("tc")
	if err != nil {
		t.Skipf("needs the tc binary (apt-get install iproute2): %v", err)
	}
	n.do(func() {
		out, err = exec.Command(tc, "qdisc", "add", "dev", "mpa0", "root",
			"tbf", "rate", "20mbit", "burst", "2000", "limit", "4000").CombinedOutput()
	})
	if err != nil {
		t.Skipf("cannot add a tbf qdisc (tc, sch_tbf): %v\n%s", err, out)
	}
	tx, rx := n.openPair(t)

	const count, size = 300, 1000
	ms := make([]link.Message, count)
	for i := range ms {
		b := putFrame(make([]byte, size), n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 80, uint32(i), size)
		ms[i] = link.Message{Buf: b, N: size}
	}
	resc := make(chan [][]byte, 1)
	go func() {
		frames, err := readFrames(rx, count, 64, 2000)
		if err != nil {
			t.Error(err)
		}
		resc <- frames
	}()
	start := time.Now()
	if nw, err := tx.WriteBatch(ms); nw != count || err != nil {
		t.Fatalf("WriteBatch = %d, %v; want %d, nil", nw, err, count)
	}
	t.Logf("WriteBatch took %v", time.Since(start))
	checkFrames(t, <-resc, ms)
	if tx.backoffs.Load() == 0 {
		t.Error("WriteBatch never met ENOBUFS: the test did not exercise back-pressure")
	}
	t.Logf("%d back-offs", tx.backoffs.Load())
}

// raceEnabled reports whether the test binary was built with -race, under
// which sync.Pool drops items on purpose and allocation counts mean little.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

func TestIntegrationPacketLinkAllocs(t *testing.T) {
	packetWatchdog(t, time.Minute)
	n := startPacketTestNet(t)
	tx, rx := n.openPair(t)

	const runs = 100
	frame := putFrame(make([]byte, 500), n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 80, 1, 500)
	out := []link.Message{{Buf: frame, N: len(frame)}}
	in := make([]link.Message, 4)
	for i := range in {
		in[i].Buf = make([]byte, 2000)
	}

	// AllocsPerRun calls the function once more than runs.
	for range runs + 1 {
		if _, err := tx.WriteBatch(out); err != nil {
			t.Fatal(err)
		}
	}
	if a := testing.AllocsPerRun(runs, func() {
		if n, err := rx.ReadBatch(in[:1]); n != 1 || err != nil {
			panic(fmt.Sprint(n, err))
		}
	}); a != 0 {
		t.Errorf("ReadBatch: %v allocations per call, want 0", a)
	}

	if raceEnabled() {
		t.Log("not counting WriteBatch allocations: the race detector makes sync.Pool drop items")
		return
	}
	if a := testing.AllocsPerRun(runs, func() {
		if n, err := tx.WriteBatch(out); n != 1 || err != nil {
			panic(fmt.Sprint(n, err))
		}
		if n, err := rx.ReadBatch(in); n != 1 || err != nil {
			panic(fmt.Sprint(n, err))
		}
	}); a != 0 {
		t.Errorf("WriteBatch and ReadBatch: %v allocations per call, want 0", a)
	}
}

func BenchmarkIntegrationPacketLink(b *testing.B) {
	n := startPacketTestNet(b)
	tx, rx := n.openPair(b)

	const batch, size = 64, 1514
	out := make([]link.Message, batch)
	for i := range out {
		f := putFrame(make([]byte, size), n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 80, uint32(i), size)
		out[i] = link.Message{Buf: f, N: size}
	}
	done := make(chan error, 1)
	go func() {
		in := make([]link.Message, batch)
		for i := range in {
			in[i].Buf = make([]byte, size)
		}
		for {
			if _, err := rx.ReadBatch(in); err != nil {
				done <- err
				return
			}
		}
	}()

	b.SetBytes(batch * size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tx.WriteBatch(out); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	rx.Close()
	<-done
	st, _ := rx.Stats()
	b.ReportMetric(float64(st.Drops)/float64(max(st.Packets, 1)), "drops/frame")
}

// TestIntegrationPacketLinkSendSocket sends from several goroutines on a
// link with a send socket of its own, then closes it: every frame arrives,
// and writes after Close fail with net.ErrClosed.
func TestIntegrationPacketLinkSendSocket(t *testing.T) {
	packetWatchdog(t, time.Minute)
	n := startPacketTestNet(t)
	_, rx := n.openPair(t)
	tx := n.open(t, n.a, PacketConfig{EtherType: testEtherType, SendSocket: true})

	const writers, perWriter = 4, 500
	resc := make(chan [][]byte, 1)
	go func() {
		frames, err := readFrames(rx, writers*perWriter, 64, 2000)
		if err != nil {
			t.Error(err)
		}
		resc <- frames
	}()
	writeConcurrently(t, tx, n, writers, perWriter, 50, func(seq int) int { return frameSize(seq, 1500) })
	wantDistinct(t, <-resc, writers*perWriter)
	if err := tx.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ms := []link.Message{{Buf: make([]byte, 64), N: 64}}
	if _, err := tx.WriteBatch(ms); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteBatch after Close: %v, want net.ErrClosed", err)
	}
}
