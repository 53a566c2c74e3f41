package sys

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/link"
)

// openQuiet opens a QuietLink on ifi in the namespace.
func (n *packetTestNet) openQuiet(t testing.TB, ifi *net.Interface, cfg PacketConfig) *QuietLink {
	t.Helper()
	var (
		l   *QuietLink
		err error
	)
	n.do(func() { l, err = OpenQuiet(ifi, cfg) })
	if err != nil {
		t.Fatalf("OpenQuiet(%s): %v", ifi.Name, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestOpenQuietInvalid(t *testing.T) {
	if _, err := OpenQuiet(nil, PacketConfig{EtherType: testEtherType}); err == nil {
		t.Error("OpenQuiet(nil) succeeded")
	}
	if _, err := OpenQuiet(&net.Interface{Index: 1, Name: "lo"}, PacketConfig{}); err == nil {
		t.Error("OpenQuiet with EtherType 0 succeeded")
	}
}

// TestIntegrationQuietLinkWakeups sends frames one at a time, each after a
// random pause, while the reader takes each with a waiting ReadBatch, a
// ReadBatchOnThread or TryReadBatch calls, at random: every arming of the
// socket's registration, and every change of where the reader waits, meets
// a frame that came just before, during or after it. A waiting read that
// times out while a frame is queued is a lost wake-up. The reader also
// checks that TryReadBatch never waits, and that a read deadline cuts a
// waiting read of either kind short without losing the frame that comes
// next.
func TestIntegrationQuietLinkWakeups(t *testing.T) {
	for _, ring := range []int{0, 1 << 20} {
		t.Run(fmt.Sprintf("ring=%d", ring), func(t *testing.T) { testQuietLinkWakeups(t, ring) })
	}
}

func testQuietLinkWakeups(t *testing.T, ring int) {
	packetWatchdog(t, 2*time.Minute)
	n := startPacketTestNet(t)
	rx := n.openQuiet(t, n.b, PacketConfig{EtherType: testEtherType, RingSize: ring})
	tx := n.open(t, n.a, PacketConfig{EtherType: testEtherType})
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(uint64(seed), 0))
	count := 3000
	if testing.Short() {
		count = 500
	}

	next := make(chan time.Duration)
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 100)
		for i := 0; ; i++ {
			pause, ok := <-next
			if !ok {
				errc <- nil
				return
			}
			if pause > 0 {
				for at := time.Now(); time.Since(at) < pause; {
				}
			}
			b := putFrame(buf, n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 443, uint32(i), len(buf))
			if _, err := tx.WriteBatch([]link.Message{{Buf: b, N: len(b)}}); err != nil {
				errc <- err
				return
			}
		}
	}()

	ms := []link.Message{{Buf: make([]byte, 1514)}}
	seq := func() uint32 { return binary.BigEndian.Uint32(ms[0].Buf[38:]) }
	for i := range count {
		next <- time.Duration(r.IntN(30)) * time.Microsecond
		switch r.IntN(3) {
		case 0:
			// Polling: TryReadBatch returns at once, frame or not.
			deadline := time.Now().Add(5 * time.Second)
			for {
				at := time.Now()
				got, err := rx.TryReadBatch(ms)
				if err != nil {
					t.Fatalf("frame %d: TryReadBatch: %v", i, err)
				}
				if d := time.Since(at); d > 100*time.Millisecond {
					t.Fatalf("frame %d: TryReadBatch took %v", i, d)
				}
				if got == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("frame %d never came (seed %d)", i, seed)
				}
			}
		default:
			if err := rx.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
				t.Fatal(err)
			}
			read, name := rx.ReadBatch, "ReadBatch"
			if r.IntN(2) == 0 {
				read, name = rx.ReadBatchOnThread, "ReadBatchOnThread"
			}
			if _, err := read(ms); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					if got, _ := rx.TryReadBatch(ms); got == 1 {
						t.Fatalf("frame %d: lost wake-up: %s waited 2s while the frame was queued (seed %d)", i, name, seed)
					}
				}
				t.Fatalf("frame %d: %s: %v (seed %d)", i, name, err, seed)
			}
		}
		if got := seq(); got != uint32(i) {
			t.Fatalf("got frame %d, want %d", got, i)
		}
	}
	close(next)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	// A deadline in the past cuts a waiting read short, and the next one
	// gets the next frame.
	for k, read := range []func([]link.Message) (int, error){rx.ReadBatch, rx.ReadBatchOnThread} {
		if err := rx.SetReadDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
		readc := make(chan error, 1)
		go func() { _, err := read(ms); readc <- err }()
		time.Sleep(20 * time.Millisecond)
		if err := rx.SetReadDeadline(time.Unix(1, 0)); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-readc:
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read %d cut short: %v, want os.ErrDeadlineExceeded", k, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("read %d still waiting 5s after a deadline in the past", k)
		}
		if got, err := rx.TryReadBatch(ms); got != 0 || err != nil {
			t.Fatalf("TryReadBatch on an empty socket = %d, %v", got, err)
		}
		if err := rx.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		b := putFrame(buf, n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 443, uint32(count+k), len(buf))
		go tx.WriteBatch([]link.Message{{Buf: b, N: len(b)}})
		if _, err := read(ms); err != nil || seq() != uint32(count+k) {
			t.Fatalf("read %d after a cut-short one = frame %d, %v", k, seq(), err)
		}
	}

	// A deadline that passes while ReadBatchOnThread waits ends it then,
	// not at the next frame.
	if err := rx.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	if _, err := rx.ReadBatchOnThread(ms); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadBatchOnThread past its deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	if d := time.Since(at); d < 40*time.Millisecond || d > 2*time.Second {
		t.Fatalf("ReadBatchOnThread with a 50ms deadline returned after %v", d)
	}

	// Past its deadline, ReadBatchOnThread still takes a frame already
	// queued (it looks once instead of waiting in ppoll first).
	b := putFrame(make([]byte, 100), n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 443, uint32(count+100), 100)
	if _, err := tx.WriteBatch([]link.Message{{Buf: b, N: len(b)}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // veth delivers it meanwhile
	if got, err := rx.ReadBatchOnThread(ms); got != 1 || err != nil || seq() != uint32(count+100) {
		t.Fatalf("ReadBatchOnThread past its deadline with a frame queued = %d (frame %d), %v", got, seq(), err)
	}
}

// TestIntegrationQuietLinkCloseUnblocks checks that Close ends a waiting
// ReadBatch and a waiting ReadBatchOnThread with net.ErrClosed.
func TestIntegrationQuietLinkCloseUnblocks(t *testing.T) {
	packetWatchdog(t, time.Minute)
	n := startPacketTestNet(t)
	for _, onThread := range []bool{false, true} {
		rx := n.openQuiet(t, n.b, PacketConfig{EtherType: testEtherType})
		read := rx.ReadBatch
		if onThread {
			read = rx.ReadBatchOnThread
		}
		readc := make(chan error, 1)
		go func() { _, err := read([]link.Message{{Buf: make([]byte, 1514)}}); readc <- err }()
		time.Sleep(20 * time.Millisecond)
		if err := rx.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-readc:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("on thread %v: read after Close: %v, want net.ErrClosed", onThread, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("on thread %v: read still waiting 5s after Close", onThread)
		}
		if _, err := rx.ReadBatchOnThread([]link.Message{{Buf: make([]byte, 1514)}}); !errors.Is(err, net.ErrClosed) {
			t.Errorf("ReadBatchOnThread after Close: %v, want net.ErrClosed", err)
		}
	}
}

// TestIntegrationQuietLinkAllocs checks that a QuietLink's reads, waiting
// ones included, and writes allocate nothing.
func TestIntegrationQuietLinkAllocs(t *testing.T) {
	for _, ring := range []int{0, 1 << 20} {
		t.Run(fmt.Sprintf("ring=%d", ring), func(t *testing.T) { testQuietLinkAllocs(t, ring) })
	}
}

func testQuietLinkAllocs(t *testing.T, ring int) {
	packetWatchdog(t, time.Minute)
	n := startPacketTestNet(t)
	rx := n.openQuiet(t, n.b, PacketConfig{EtherType: testEtherType, RingSize: ring})
	tx := n.openQuiet(t, n.a, PacketConfig{EtherType: testEtherType})
	const runs = 100
	frame := putFrame(make([]byte, 500), n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 80, 1, 500)
	out := []link.Message{{Buf: frame, N: len(frame)}}
	in := []link.Message{{Buf: make([]byte, 2000)}}
	if raceEnabled() {
		t.Skip("the race detector makes sync.Pool drop items")
	}
	// Each read finds the socket empty, arms it and waits: the frame
	// comes from another goroutine once the read waits.
	sendc := make(chan struct{})
	defer close(sendc)
	go func() {
		for range sendc {
			time.Sleep(100 * time.Microsecond)
			tx.WriteBatch(out)
		}
	}()
	if a := testing.AllocsPerRun(runs, func() {
		sendc <- struct{}{}
		got, err := rx.TryReadBatch(in) // most often early: 0
		if got == 0 && err == nil {
			got, err = rx.ReadBatch(in)
		}
		if got != 1 || err != nil {
			panic(fmt.Sprint(got, err))
		}
	}); a != 0 {
		t.Errorf("TryReadBatch, then a waiting ReadBatch: %v allocations per call, want 0", a)
	}
	if a := testing.AllocsPerRun(runs, func() {
		sendc <- struct{}{}
		if got, err := rx.ReadBatchOnThread(in); got != 1 || err != nil {
			panic(fmt.Sprint(got, err))
		}
	}); a != 0 {
		t.Errorf("ReadBatchOnThread: %v allocations per call, want 0", a)
	}
}
