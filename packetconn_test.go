package myproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/memlink"
	"github.com/myproto/myproto/internal/testenv"
)

// listenPair opens a datagram socket on each host, on one interface each.
func listenPair(t *testing.T, h *testHosts) (a, b *PacketConn) {
	t.Helper()
	a, err := h.a.listenPacket("myproto", h.aIf+":0")
	if err != nil {
		t.Fatalf("listen a: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	b, err = h.b.listenPacket("myproto", h.bIf+":0")
	if err != nil {
		t.Fatalf("listen b: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b
}

// peerOf returns c's address as seen from the other host.
func peerOf(h *testHosts, c *PacketConn, onA bool) *Addr {
	port := c.LocalAddr().(*Addr).Port
	if onA {
		return h.addrA(port)
	}
	return h.addrB(port)
}

func readOne(t *testing.T, c *PacketConn, timeout time.Duration) ([]byte, *Addr) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 9216)
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("ReadFrom: %v", err)
	}
	return buf[:n], from.(*Addr)
}

// expectOnlyMarker sends a unicast marker from src to dst and requires it to
// be the only datagram dst reads: proof that nothing sent before it arrived.
// veth may reorder frames sent from different CPUs, so after the marker a
// short silence is required too.
func expectOnlyMarker(t *testing.T, src *PacketConn, dst *PacketConn, to *Addr) {
	t.Helper()
	marker := []byte("marker")
	if _, err := src.WriteTo(marker, to); err != nil {
		t.Fatalf("WriteTo marker: %v", err)
	}
	got, _ := readOne(t, dst, 5*time.Second)
	if !bytes.Equal(got, marker) {
		t.Fatalf("read %q before the marker: it should never have arrived", got)
	}
	dst.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	defer dst.SetReadDeadline(time.Time{})
	buf := make([]byte, 9216)
	if n, _, err := dst.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %q after the marker (err %v): it should never have arrived", buf[:n], err)
	}
}

func TestPacketConnRoundTrip(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		a, b := listenPair(t, h)
		if _, err := a.WriteTo([]byte("ping"), peerOf(h, b, false)); err != nil {
			t.Fatal(err)
		}
		got, from := readOne(t, b, 5*time.Second)
		want := peerOf(h, a, true)
		if string(got) != "ping" || from.String() != want.String() {
			t.Fatalf("b read %q from %v; want %q from %v", got, from, "ping", want)
		}
		// Answer to the address ReadFrom returned, as a UDP server would.
		if _, err := b.WriteTo([]byte("pong"), from); err != nil {
			t.Fatal(err)
		}
		got, from = readOne(t, a, 5*time.Second)
		if string(got) != "pong" || from.String() != peerOf(h, b, false).String() {
			t.Fatalf("a read %q from %v", got, from)
		}
	})
}

func TestPacketConnManyDatagrams(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		seed := testenv.Seed(t)
		a, b := listenPair(t, h)
		const count = 10000
		maxLen := a.eps[0].maxPayload()
		to := peerOf(h, b, false)

		type result struct{ got, bad int }
		done := make(chan result)
		go func() {
			var r result
			buf := make([]byte, 9216)
			for {
				b.SetReadDeadline(time.Now().Add(2 * time.Second))
				n, _, err := b.ReadFrom(buf)
				if err != nil {
					done <- r
					return
				}
				if !checkDatagram(buf[:n]) {
					r.bad++
				}
				r.got++
				if r.got == count {
					done <- r
					return
				}
			}
		}()
		rng := rand.New(rand.NewPCG(uint64(seed), 2))
		p := make([]byte, maxLen)
		for i := range count {
			n := 8 + rng.IntN(maxLen-8+1)
			fillDatagram(p[:n], uint32(i), rng)
			if _, err := a.WriteTo(p[:n], to); err != nil {
				t.Fatalf("WriteTo #%d (%d bytes): %v", i, n, err)
			}
		}
		r := <-done
		st := b.eps[0].snapshot()
		dropped := int(st.KernelDrops + st.Drops.QueueFull)
		t.Logf("%s: sent %d, received %d intact, %d corrupted, %d counted as dropped", h.kind, count, r.got, r.bad, dropped)
		if r.bad != 0 {
			t.Fatalf("%d corrupted datagrams delivered", r.bad)
		}
		if r.got+dropped < count {
			t.Fatalf("%d datagrams neither arrived nor were counted as dropped", count-r.got-dropped)
		}
	})
}

// fillDatagram fills p with a sequence number, random bytes and a CRC32 of
// the rest, so the receiver can tell an intact datagram from any other.
func fillDatagram(p []byte, seq uint32, rng *rand.Rand) {
	binary.BigEndian.PutUint32(p, seq)
	for i := 8; i < len(p); i++ {
		p[i] = byte(rng.Uint32())
	}
	binary.BigEndian.PutUint32(p[4:], crc32.ChecksumIEEE(p[8:])^seq)
}

func checkDatagram(p []byte) bool {
	if len(p) < 8 {
		return false
	}
	seq := binary.BigEndian.Uint32(p)
	return binary.BigEndian.Uint32(p[4:]) == crc32.ChecksumIEEE(p[8:])^seq
}

func TestPacketConnCorruptionNeverDelivered(t *testing.T) {
	watchdog(t)
	seed := testenv.Seed(t)
	h := memHosts(t, memlink.Config{Seed: seed, Impairments: memlink.Impairments{Corrupt: 0.3, Duplicate: 0.05, Reorder: 0.05}})
	a, b := listenPair(t, h)
	rng := rand.New(rand.NewPCG(uint64(seed), 3))
	to := peerOf(h, b, false)
	const count = 2000
	p := make([]byte, 1400)
	go func() {
		for i := range count {
			n := 8 + rng.IntN(len(p)-8)
			fillDatagram(p[:n], uint32(i), rng)
			a.WriteTo(p[:n], to)
		}
	}()
	buf := make([]byte, 2000)
	got := 0
	for {
		b.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := b.ReadFrom(buf)
		if err != nil {
			break
		}
		if !checkDatagram(buf[:n]) {
			t.Fatalf("corrupted datagram delivered")
		}
		got++
	}
	st := b.eps[0].snapshot()
	t.Logf("received %d intact of %d sent; %d dropped for bad checksum", got, count, st.Drops.Checksum)
	if st.Drops.Checksum == 0 || got == 0 {
		t.Fatalf("expected both checksum drops and deliveries; got %d drops, %d delivered", st.Drops.Checksum, got)
	}
}

func TestPacketConnBroadcast(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		a, b := listenPair(t, h)
		bcast := &Addr{HardwareAddr: net.HardwareAddr(broadcastMAC[:]), Port: b.LocalAddr().(*Addr).Port, Zone: h.aIf}
		_, err := a.WriteTo([]byte("all"), bcast)
		if !errors.Is(err, syscall.EACCES) {
			t.Fatalf("broadcast without opt-in: %v, want EACCES", err)
		}
		expectOnlyMarker(t, a, b, peerOf(h, b, false))
		if err := a.SetBroadcast(true); err != nil {
			t.Fatal(err)
		}
		if _, err := a.WriteTo([]byte("all"), bcast); err != nil {
			t.Fatal(err)
		}
		if got, _ := readOne(t, b, 5*time.Second); string(got) != "all" {
			t.Fatalf("read %q, want broadcast", got)
		}
	})
}

func TestPacketConnMulticast(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		a, b := listenPair(t, h)
		group := net.HardwareAddr{0x03, 0x00, 0x5e, 0x10, 0x00, 0x42}
		to := &Addr{HardwareAddr: group, Port: b.LocalAddr().(*Addr).Port, Zone: h.aIf}
		send := func(s string) {
			t.Helper()
			if _, err := a.WriteTo([]byte(s), to); err != nil {
				t.Fatal(err)
			}
		}
		send("before join")
		expectOnlyMarker(t, a, b, peerOf(h, b, false))
		if err := b.JoinGroup(nil, group); err != nil {
			t.Fatal(err)
		}
		send("joined")
		if got, _ := readOne(t, b, 5*time.Second); string(got) != "joined" {
			t.Fatalf("read %q, want the group datagram", got)
		}
		if err := b.LeaveGroup(nil, group); err != nil {
			t.Fatal(err)
		}
		send("after leave")
		expectOnlyMarker(t, a, b, peerOf(h, b, false))
		if err := b.LeaveGroup(nil, group); !errors.Is(err, syscall.EADDRNOTAVAIL) {
			t.Fatalf("leaving twice: %v, want EADDRNOTAVAIL", err)
		}
		if err := b.JoinGroup(nil, net.HardwareAddr{0x02, 0, 0, 0, 0, 1}); !isAddrError(err) {
			t.Fatalf("joining a unicast address: %v, want *net.AddrError", err)
		}
	})
}

func isAddrError(err error) bool {
	var ae *net.AddrError
	return errors.As(err, &ae)
}

func TestPacketConnSizes(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		a, b := listenPair(t, h)
		to := peerOf(h, b, false)
		max := a.eps[0].maxPayload()
		if max != 1500-headerLen {
			t.Fatalf("max payload %d, want %d", max, 1500-headerLen)
		}
		_, err := a.WriteTo(make([]byte, max+1), to)
		var oe *net.OpError
		if !errors.Is(err, syscall.EMSGSIZE) || !errors.As(err, &oe) {
			t.Fatalf("oversize WriteTo: %v, want *net.OpError with EMSGSIZE", err)
		}
		full := bytes.Repeat([]byte{0xA5}, max)
		if _, err := a.WriteTo(full, to); err != nil {
			t.Fatal(err)
		}
		if got, _ := readOne(t, b, 5*time.Second); !bytes.Equal(got, full) {
			t.Fatalf("max-size datagram changed in flight")
		}
		// A short buffer truncates, as UDP does; the rest is discarded.
		if _, err := a.WriteTo([]byte("0123456789"), to); err != nil {
			t.Fatal(err)
		}
		if _, err := a.WriteTo([]byte("next"), to); err != nil {
			t.Fatal(err)
		}
		small := make([]byte, 4)
		b.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := b.ReadFrom(small)
		if err != nil || string(small[:n]) != "0123" {
			t.Fatalf("short read: %q, %v", small[:n], err)
		}
		if got, _ := readOne(t, b, 5*time.Second); string(got) != "next" {
			t.Fatalf("after a truncated read got %q, want the next datagram", got)
		}
		// Empty datagrams are datagrams too.
		if _, err := a.WriteTo(nil, to); err != nil {
			t.Fatal(err)
		}
		if got, _ := readOne(t, b, 5*time.Second); len(got) != 0 {
			t.Fatalf("empty datagram read as %q", got)
		}
	})
}

func TestPacketConnDeadlines(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		a, b := listenPair(t, h)
		buf := make([]byte, 100)
		isTimeout := func(err error) bool {
			var ne net.Error
			return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
		}
		// Past: fails at once, even with data queued, and takes nothing.
		a.WriteTo([]byte("queued"), peerOf(h, b, false))
		time.Sleep(50 * time.Millisecond)
		b.SetReadDeadline(time.Now().Add(-time.Second))
		if n, _, err := b.ReadFrom(buf); n != 0 || !isTimeout(err) {
			t.Fatalf("past deadline: n=%d err=%v", n, err)
		}
		// Cleared: the queued datagram is still there.
		b.SetReadDeadline(time.Time{})
		if n, _, err := b.ReadFrom(buf); err != nil || string(buf[:n]) != "queued" {
			t.Fatalf("after clearing: %q %v", buf[:n], err)
		}
		// Future: a blocked read times out around the deadline.
		start := time.Now()
		b.SetReadDeadline(start.Add(100 * time.Millisecond))
		if _, _, err := b.ReadFrom(buf); !isTimeout(err) {
			t.Fatalf("future deadline: %v", err)
		}
		if d := time.Since(start); d < 90*time.Millisecond {
			t.Fatalf("timed out after %v, before the deadline", d)
		}
		// Extended while blocked: the read waits for the new deadline and
		// gets data that arrives in between.
		b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		go func() {
			time.Sleep(10 * time.Millisecond)
			b.SetReadDeadline(time.Now().Add(10 * time.Second))
			time.Sleep(100 * time.Millisecond)
			a.WriteTo([]byte("late"), peerOf(h, b, false))
		}()
		if n, _, err := b.ReadFrom(buf); err != nil || string(buf[:n]) != "late" {
			t.Fatalf("extended deadline: %q %v", buf[:n], err)
		}
		// Write deadline in the past.
		a.SetWriteDeadline(time.Now().Add(-time.Second))
		if _, err := a.WriteTo([]byte("x"), peerOf(h, b, false)); !isTimeout(err) {
			t.Fatalf("past write deadline: %v", err)
		}
	})
}

func TestPacketConnClose(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		a, b := listenPair(t, h)
		errc := make(chan error)
		go func() {
			_, _, err := b.ReadFrom(make([]byte, 10))
			errc <- err
		}()
		time.Sleep(20 * time.Millisecond)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked ReadFrom after Close: %v", err)
		}
		if err := b.Close(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := b.WriteTo([]byte("x"), peerOf(h, a, true)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("WriteTo after Close: %v", err)
		}
		if err := b.SetDeadline(time.Now()); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("SetDeadline after Close: %v", err)
		}
		// The port is free again at once.
		port := b.LocalAddr().(*Addr).Port
		c, err := h.b.listenPacket("myproto", h.bIf+":"+itoa(port))
		if err != nil {
			t.Fatalf("port %d not free after Close: %v", port, err)
		}
		c.Close()
		a.Close()
		if n := len(h.a.endpointsSnapshot()) + len(h.b.endpointsSnapshot()); n != 0 {
			t.Fatalf("%d endpoints still open after every socket closed", n)
		}
	})
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

func TestPacketConnPortInUse(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		a, _ := listenPair(t, h)
		port := a.LocalAddr().(*Addr).Port
		_, err := h.a.listenPacket("myproto", h.aIf+":"+itoa(port))
		var oe *net.OpError
		if !errors.Is(err, syscall.EADDRINUSE) || !errors.As(err, &oe) || oe.Op != "listen" {
			t.Fatalf("second bind of port %d: %v, want listen *net.OpError with EADDRINUSE", port, err)
		}
	})
}

func TestPacketConnBadInput(t *testing.T) {
	h := memHosts(t, memlink.Config{Seed: 1})
	a, b := listenPair(t, h)
	for _, tt := range []struct {
		name, network, address string
	}{
		{"network", "udp", "mem0:0"},
		{"no port", "myproto", "mem0"},
		{"bad port", "myproto", "mem0:70000"},
		{"bad mac", "myproto", "[02:00:zz:00:00:01]:1"},
		{"no interface", "myproto", "nosuch0:1"},
	} {
		if _, err := h.a.listenPacket(tt.network, tt.address); err == nil {
			t.Errorf("%s: listenPacket(%q, %q) succeeded", tt.name, tt.network, tt.address)
		} else if _, ok := err.(*net.OpError); !ok {
			t.Errorf("%s: error %T %v, want *net.OpError", tt.name, err, err)
		}
	}
	for _, to := range []net.Addr{nil, &net.UDPAddr{}, &Addr{Port: 1}, &Addr{HardwareAddr: h.bMAC, Port: 1, Zone: "nosuch"}} {
		if _, err := a.WriteTo([]byte("x"), to); !isAddrError(err) {
			t.Errorf("WriteTo(%v): %v, want *net.AddrError", to, err)
		}
	}
	if err := b.SetReadBuffer(0); err == nil {
		t.Errorf("SetReadBuffer(0) succeeded")
	}
}

// TestPacketConnMemoryBound sends 200,000 small datagrams to a socket that
// never reads. They cost far more to hold than their length (an empty one
// is still a datagram), so the read buffer must bound what they cost, as
// SO_RCVBUF bounds a UDP socket's by truesize: the heap may grow by no more
// than the buffer and the collector's headroom over it, and every datagram
// past it must be dropped and counted. The buffer must still hold a
// sensible number of them.
func TestPacketConnMemoryBound(t *testing.T) {
	for _, size := range []int{0, 64} {
		t.Run(strconv.Itoa(size)+"B", func(t *testing.T) {
			watchdog(t)
			h := memHosts(t, memlink.Config{Seed: 1})
			a, b := listenPair(t, h)
			to := peerOf(h, b, false)
			ep := b.eps[0]
			// Let discovery's first frames pass before the measurement.
			time.Sleep(10 * time.Millisecond)
			in0 := ep.stats.framesIn.Load()
			before := liveHeap()
			const count = 200_000
			p := make([]byte, size)
			for i := range count {
				if _, err := a.WriteTo(p, to); err != nil {
					t.Fatal(err)
				}
				if i%1000 == 999 || i == count-1 {
					// Stay within the link's queue: every frame must
					// reach the socket.
					for ep.stats.framesIn.Load()-in0 < uint64(i+1) {
						time.Sleep(100 * time.Microsecond)
					}
				}
			}
			grew := int64(liveHeap()) - int64(before)
			st := ep.snapshot()
			queued := count - int(st.Drops.QueueFull)
			t.Logf("%d %d-byte datagrams: heap +%.1f MiB, %d queued, %d dropped as QueueFull, %d by the link",
				count, size, float64(grew)/(1<<20), queued, st.Drops.QueueFull, st.KernelDrops)
			if st.KernelDrops != 0 {
				t.Fatalf("the link dropped %d frames", st.KernelDrops)
			}
			if bound := int64(2*defaultPacketReadBuffer + 1<<20); grew > bound {
				t.Errorf("heap grew by %d bytes for a %d-byte read buffer; want at most %d", grew, defaultPacketReadBuffer, bound)
			}
			if st.Drops.QueueFull == 0 {
				t.Errorf("nothing dropped as QueueFull")
			}
			// Charged a whole MTU-sized buffer each, 4 MiB would hold
			// fewer than 3,000.
			if min := defaultPacketReadBuffer / 512; queued < min {
				t.Errorf("%d datagrams queued; a %d-byte buffer should hold at least %d", queued, defaultPacketReadBuffer, min)
			}
		})
	}
}

// liveHeap returns the bytes of live heap objects after a full collection.
// Two collections empty sync.Pools, whose items survive one in a victim
// cache.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestPacketConnTruesize queues datagrams of each buffer size and measures
// the heap they hold: the truesize charged against the read buffer must be
// at least what a datagram costs, or the buffer would not bound memory, and
// not much more, or it would hold fewer datagrams than it should. The queue
// is measured just past a doubling of its ring, where a slot costs most.
func TestPacketConnTruesize(t *testing.T) {
	h := memHosts(t, memlink.Config{Seed: 1})
	_, b := listenPair(t, h)
	if err := b.SetReadBuffer(1 << 40); err != nil {
		t.Fatal(err)
	}
	ep := b.eps[0]
	hd := header{typ: typeDatagram, srcPort: 9, dstPort: b.local.Port}
	body := make([]byte, maxBodyLen)
	for _, tc := range []struct{ size, count int }{
		{0, 1<<14 + 1}, {64, 1<<14 + 1}, {128, 1<<14 + 1}, {129, 1<<14 + 1},
		{1476, 1<<12 + 1}, {8976, 1<<10 + 1}, {maxBodyLen, 1<<8 + 1},
	} {
		// Other goroutines (discovery, timers, the connections of tests
		// before this one, still closing) allocate and free meanwhile, by
		// up to hundreds of kilobytes: a size passes if one of three
		// measurements comes out right, as a wrong truesize would in none.
		var cost, charged float64
		ok := false
		for try := 0; try < 3 && !ok; try++ {
			cost, charged = measureTruesize(t, b, ep, &hd, body[:tc.size], tc.count)
			// Allow 8 KiB in all, and 0.5 % for the large sizes. The
			// overhead is the same for every size, measured within a byte
			// on the small ones; on the large ones a size the allocator
			// rounds up would cost 256 bytes or more.
			slack := 8192/float64(tc.count) + charged/200
			ok = cost <= charged+slack && cost >= charged-32-slack
			t.Logf("%5d-byte datagrams: cost %.0f bytes each, charged %.0f", tc.size, cost, charged)
		}
		if charged != float64(truesize(tc.size)) {
			t.Errorf("%d-byte datagrams charged %.0f bytes each, truesize is %d", tc.size, charged, truesize(tc.size))
		}
		if !ok {
			t.Errorf("%d-byte datagrams cost %.0f bytes each, charged %.0f", tc.size, cost, charged)
		}
	}
}

// measureTruesize queues count datagrams of body on ep and returns the heap
// each one held and the truesize each was charged, then empties the queue.
func measureTruesize(t *testing.T, b *PacketConn, ep *endpoint, hd *header, body []byte, count int) (cost, charged float64) {
	t.Helper()
	before := liveHeap()
	for range count {
		if r := b.deliver(ep, hd, body); r != dropNone {
			t.Fatalf("deliver: drop reason %d", r)
		}
	}
	cost = float64(int64(liveHeap())-int64(before)) / float64(count)
	b.mu.Lock()
	charged = float64(b.qBytes) / float64(count)
	for d := b.pop(); d != nil; d = b.pop() {
		putDatagram(d)
	}
	b.mu.Unlock()
	return cost, charged
}

// TestPacketConnDeliverAllocs: once the pools are warm, queueing a datagram
// and taking it off the queue allocates nothing, and ReadFrom nothing but
// the address it returns.
func TestPacketConnDeliverAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's sync.Pool drops items on purpose")
	}
	h := memHosts(t, memlink.Config{Seed: 1})
	_, b := listenPair(t, h)
	ep := b.eps[0]
	hd := header{typ: typeDatagram, srcPort: 9, dstPort: b.local.Port}
	body := make([]byte, 1476)
	for _, n := range []int{0, 64, 1000, 1476} {
		allocs := testing.AllocsPerRun(1000, func() {
			b.deliver(ep, &hd, body[:n])
			b.mu.Lock()
			d := b.pop()
			b.mu.Unlock()
			putDatagram(d)
		})
		if allocs != 0 {
			t.Errorf("%d-byte datagram: %.1f allocations to queue and take off", n, allocs)
		}
	}
	// ReadFrom allocates only the address it returns: the *Addr and its
	// hardware address, which the caller keeps.
	buf := make([]byte, 2000)
	allocs := testing.AllocsPerRun(1000, func() {
		b.deliver(ep, &hd, body[:64])
		b.ReadFrom(buf)
	})
	if allocs > 2 {
		t.Errorf("deliver and ReadFrom: %.1f allocations, want 2 for the address", allocs)
	}
}
