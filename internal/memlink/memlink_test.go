package memlink_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/bpf"

	"github.com/myproto/myproto/internal/link"
	"github.com/myproto/myproto/internal/memlink"
	"github.com/myproto/myproto/internal/testenv"
)

const etherType = 0x88B5

var broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// frame builds an Ethernet frame of size bytes from src to dst carrying seq
// in its first payload bytes and a pattern after it.
func frame(dst, src net.HardwareAddr, et uint16, seq uint32, size int) []byte {
	b := make([]byte, size)
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], et)
	binary.BigEndian.PutUint32(b[14:18], seq)
	for i := 18; i < size; i++ {
		b[i] = byte(i)
	}
	return b
}

func seqOf(b []byte) uint32 { return binary.BigEndian.Uint32(b[14:18]) }

// frames builds n messages from a to b with sequence numbers 0..n-1.
func frames(a, b *memlink.Link, n, size int) []link.Message {
	ms := make([]link.Message, n)
	for i := range ms {
		f := frame(b.HardwareAddr(), a.HardwareAddr(), etherType, uint32(i), size)
		ms[i] = link.Message{Buf: f, N: len(f)}
	}
	return ms
}

func write(t testing.TB, l *memlink.Link, ms []link.Message) {
	t.Helper()
	n, err := l.WriteBatch(ms)
	if err != nil || n != len(ms) {
		t.Fatalf("WriteBatch = %d, %v; want %d, nil", n, err, len(ms))
	}
}

// A collector reads a link in the background until it is closed.
type collector struct {
	mu     sync.Mutex
	frames [][]byte
	times  []time.Time
	done   chan struct{}
}

func collect(l *memlink.Link) *collector {
	c := &collector{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		ms := make([]link.Message, 64)
		for i := range ms {
			ms[i].Buf = make([]byte, 9100)
		}
		for {
			n, err := l.ReadBatch(ms)
			if err != nil {
				return
			}
			now := time.Now()
			c.mu.Lock()
			for _, m := range ms[:n] {
				c.frames = append(c.frames, slices.Clone(m.Buf[:m.N]))
				c.times = append(c.times, now)
			}
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.frames)
}

// wait returns what arrived once n frames have, or once nothing more has
// arrived for quiet, whichever is first; or at timeout.
func (c *collector) wait(n int, quiet, timeout time.Duration) [][]byte {
	deadline := time.Now().Add(timeout)
	last, lastChange := -1, time.Now()
	for time.Now().Before(deadline) {
		k := c.len()
		if k >= n {
			break
		}
		if k != last {
			last, lastChange = k, time.Now()
		} else if time.Since(lastChange) > quiet {
			break
		}
		time.Sleep(time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.frames)
}

// checkGoroutines fails t if goroutines started after base are still
// running shortly after the test's links were closed.
func checkGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines left, want %d:\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}

func TestPair(t *testing.T) {
	a, b := memlink.Pair(memlink.Config{})
	defer a.Close()
	defer b.Close()
	if a.Name() != "mem0" || b.Name() != "mem1" {
		t.Errorf("names %q %q, want mem0 mem1", a.Name(), b.Name())
	}
	if a.HardwareAddr().String() != "02:00:5e:10:00:01" || b.HardwareAddr().String() != "02:00:5e:10:00:02" {
		t.Errorf("MACs %v %v", a.HardwareAddr(), b.HardwareAddr())
	}
	if a.MTU() != 1500 || b.MTU() != 1500 {
		t.Errorf("MTUs %d %d, want 1500", a.MTU(), b.MTU())
	}
	if a.Index() == b.Index() {
		t.Errorf("both links have index %d", a.Index())
	}

	// The caller may reuse its buffer as soon as WriteBatch returns.
	f := frame(b.HardwareAddr(), a.HardwareAddr(), etherType, 7, 100)
	want := slices.Clone(f)
	write(t, a, []link.Message{{Buf: f, N: len(f)}})
	clear(f)

	ms := []link.Message{{Buf: make([]byte, 1514)}, {Buf: make([]byte, 1514)}}
	n, err := b.ReadBatch(ms)
	if err != nil || n != 1 {
		t.Fatalf("ReadBatch = %d, %v; want 1, nil", n, err)
	}
	if got := ms[0].Buf[:ms[0].N]; !slices.Equal(got, want) {
		t.Errorf("got frame % x, want % x", got, want)
	}

	// Truncation to the reader's buffer.
	f = frame(a.HardwareAddr(), b.HardwareAddr(), etherType, 8, 200)
	write(t, b, []link.Message{{Buf: f, N: len(f)}})
	ms = []link.Message{{Buf: make([]byte, 50)}}
	if n, err := a.ReadBatch(ms); err != nil || n != 1 || ms[0].N != 50 || !slices.Equal(ms[0].Buf, f[:50]) {
		t.Errorf("truncated read = %d, %v, N %d", n, err, ms[0].N)
	}
	if n, err := a.ReadBatch(nil); n != 0 || err != nil {
		t.Errorf("ReadBatch(nil) = %d, %v", n, err)
	}
	st, err := b.Stats()
	if err != nil || st.Packets != 1 || st.Drops != 0 {
		t.Errorf("Stats = %+v, %v; want 1 packet", st, err)
	}
}

// impairmentRun sends n frames in one batch through a pair impaired by im
// and returns what arrived and the segment's counters.
func impairmentRun(t *testing.T, seed int64, im memlink.Impairments, n int) ([][]byte, memlink.SegmentStats) {
	t.Helper()
	// A queue that holds the whole run: the frames arrive faster than the
	// collector reads, and overruns would blur the shares.
	im.QueueLen = 4 * n
	a, b := memlink.Pair(memlink.Config{Seed: seed, Impairments: im})
	c := collect(b)
	defer func() { a.Close(); b.Close(); <-c.done }()
	write(t, a, frames(a, b, n, 64))
	want := n
	if im.Loss > 0 || im.Duplicate > 0 {
		want = math.MaxInt // unknown: wait for quiet
	}
	got := c.wait(want, 100*time.Millisecond, 10*time.Second)
	return got, a.Segment().Stats()
}

func TestImpairmentShares(t *testing.T) {
	const n = 20000
	for _, p := range []float64{0, 0.05, 0.3} {
		for _, kind := range []string{"loss", "duplicate", "reorder", "corrupt"} {
			t.Run(fmt.Sprintf("%s/%g", kind, p), func(t *testing.T) {
				seed := testenv.Seed(t)
				var im memlink.Impairments
				switch kind {
				case "loss":
					im.Loss = p
				case "duplicate":
					im.Duplicate = p
				case "reorder":
					im.Reorder = p
				case "corrupt":
					im.Corrupt = p
				}
				got, st := impairmentRun(t, seed, im, n)
				var counted uint64
				var observed int
				switch kind {
				case "loss":
					counted, observed = st.Lost, n-len(got)
				case "duplicate":
					counted, observed = st.Duplicated, len(got)-n
					seen := make(map[uint32]int)
					for _, f := range got {
						seen[seqOf(f)]++
					}
					twice := 0
					for _, k := range seen {
						if k == 2 {
							twice++
						}
					}
					if twice != observed || len(seen) != n {
						t.Errorf("seed %d: %d frames seen twice, %d distinct; want %d, %d", seed, twice, len(seen), observed, n)
					}
				case "reorder":
					// A held frame arrives right behind the next one, so it
					// is exactly a frame lower than the one before it.
					counted = st.Reordered
					for i := 1; i < len(got); i++ {
						if seqOf(got[i]) < seqOf(got[i-1]) {
							observed++
						}
					}
					if len(got) != n {
						t.Errorf("seed %d: %d frames arrived, want %d", seed, len(got), n)
					}
				case "corrupt":
					// Nothing is lost or reordered, so the i-th frame to
					// arrive is frame i, whatever bit was flipped.
					counted = st.Corrupted
					for i, f := range got {
						if !slices.Equal(f, frame(f[0:6], f[6:12], etherType, uint32(i), 64)) {
							observed++
						}
					}
				}
				// A run of held-back frames is released in order, so the
				// inversions can be fewer than the frames held; the rest
				// must agree exactly.
				if kind == "reorder" {
					if observed > int(counted) || float64(observed) < 0.6*float64(counted) {
						t.Errorf("seed %d: %d inversions for %d frames held back", seed, observed, counted)
					}
				} else if int(counted) != observed {
					t.Errorf("seed %d: segment counted %d %s, the receiver saw %d", seed, counted, kind, observed)
				}
				share := float64(counted) / n
				// 0.02 is over six standard deviations at p = 0.3.
				if math.Abs(share-p) > 0.02 || (p == 0 && counted != 0) {
					t.Errorf("seed %d: %s share %.4f, want %.2f", seed, kind, share, p)
				}
				if st.Sent != n {
					t.Errorf("seed %d: Sent = %d, want %d", seed, st.Sent, n)
				}
			})
		}
	}
}

func TestDeterminism(t *testing.T) {
	seed := testenv.Seed(t)
	im := memlink.Impairments{Loss: 0.1, Duplicate: 0.1, Reorder: 0.1, Corrupt: 0.1}
	run := func(seed int64) [][]byte {
		got, _ := impairmentRun(t, seed, im, 3000)
		return got
	}
	first := run(seed)
	if second := run(seed); !slices.EqualFunc(first, second, slices.Equal) {
		t.Errorf("seed %d: two runs delivered different sequences (%d and %d frames)", seed, len(first), len(second))
	}
	if other := run(seed + 1); slices.EqualFunc(first, other, slices.Equal) {
		t.Errorf("seeds %d and %d delivered the same sequence", seed, seed+1)
	}
}

// TestDecisionsIndependent checks that a seed's loss decisions do not shift
// when another impairment is turned on: tests change one knob at a time.
func TestDecisionsIndependent(t *testing.T) {
	seed := testenv.Seed(t)
	lossOnly, _ := impairmentRun(t, seed, memlink.Impairments{Loss: 0.2}, 2000)
	withCorrupt, _ := impairmentRun(t, seed, memlink.Impairments{Loss: 0.2, Corrupt: 0.5}, 2000)
	// Frames arrive in order; corruption flips one bit of some of them, so
	// frame for frame the runs differ by at most a bit.
	if len(lossOnly) != len(withCorrupt) {
		t.Fatalf("seed %d: %d frames arrived with loss only, %d with corruption too", seed, len(lossOnly), len(withCorrupt))
	}
	for i := range lossOnly {
		if d := bitsDiffer(lossOnly[i], withCorrupt[i]); d > 1 {
			t.Fatalf("seed %d: turning on corruption changed which frames were lost (frame %d differs in %d bits)", seed, i, d)
		}
	}
}

func bitsDiffer(a, b []byte) int {
	n := 8 * max(len(a), len(b))
	for i := range min(len(a), len(b)) {
		n -= 8 - bits.OnesCount8(a[i]^b[i])
	}
	return n
}

func TestSetImpairments(t *testing.T) {
	seed := testenv.Seed(t)
	a, b := memlink.Pair(memlink.Config{Seed: seed})
	defer a.Close()
	defer b.Close()
	c := collect(b)
	a.Segment().SetImpairments(memlink.Impairments{Loss: 1})
	if a.Segment().Impairments().Loss != 1 {
		t.Fatal("Impairments() does not return what SetImpairments set")
	}
	write(t, a, frames(a, b, 100, 64))
	a.Segment().SetImpairments(memlink.Impairments{})
	write(t, a, frames(a, b, 100, 64))
	if got := c.wait(100, time.Second, 10*time.Second); len(got) != 100 {
		t.Errorf("seed %d: %d frames arrived, want 100", seed, len(got))
	}
	if st := a.Segment().Stats(); st.Lost != 100 || st.Delivered != 100 {
		t.Errorf("seed %d: stats %+v", seed, st)
	}
}

func TestSetDrop(t *testing.T) {
	a, b := memlink.Pair(memlink.Config{Seed: 1})
	defer a.Close()
	defer b.Close()
	c := collect(b)
	// Drop the odd sequence numbers only.
	a.Segment().SetDrop(func(f []byte) bool { return seqOf(f)%2 == 1 })
	write(t, a, frames(a, b, 100, 64))
	a.Segment().SetDrop(nil)
	write(t, a, frames(a, b, 10, 64))
	got := c.wait(60, time.Second, 10*time.Second)
	if len(got) != 60 {
		t.Fatalf("%d frames arrived, want 60", len(got))
	}
	for _, f := range got[:50] {
		if seqOf(f)%2 == 1 {
			t.Fatalf("frame %d arrived though the predicate dropped it", seqOf(f))
		}
	}
	if st := a.Segment().Stats(); st.Dropped != 50 || st.Delivered != 60 || st.Lost != 0 {
		t.Errorf("stats %+v, want 50 dropped, 60 delivered", st)
	}
}

func TestDelayAndJitter(t *testing.T) {
	seed := testenv.Seed(t)
	const delay = 30 * time.Millisecond
	a, b := memlink.Pair(memlink.Config{Seed: seed, Impairments: memlink.Impairments{Delay: delay}})
	c := collect(b)
	start := time.Now()
	write(t, a, frames(a, b, 10, 64))
	got := c.wait(10, 5*time.Second, 10*time.Second)
	a.Close()
	b.Close()
	<-c.done
	if len(got) != 10 {
		t.Fatalf("seed %d: %d frames arrived, want 10", seed, len(got))
	}
	if d := c.times[0].Sub(start); d < delay {
		t.Errorf("seed %d: first frame after %v, want at least %v", seed, d, delay)
	}
	for i, f := range got {
		if seqOf(f) != uint32(i) {
			t.Fatalf("seed %d: a constant delay reordered frames", seed)
		}
	}

	// Jitter larger than the spacing of the frames reorders some of them.
	a, b = memlink.Pair(memlink.Config{Seed: seed, Impairments: memlink.Impairments{Jitter: 20 * time.Millisecond}})
	c = collect(b)
	write(t, a, frames(a, b, 200, 64))
	got = c.wait(200, 5*time.Second, 10*time.Second)
	a.Close()
	b.Close()
	<-c.done
	inversions := 0
	for i := 1; i < len(got); i++ {
		if seqOf(got[i]) < seqOf(got[i-1]) {
			inversions++
		}
	}
	if len(got) != 200 || inversions == 0 {
		t.Errorf("seed %d: jitter delivered %d of 200 frames with %d inversions", seed, len(got), inversions)
	}
}

func TestReorderTimeout(t *testing.T) {
	// A held-back frame with nothing behind it still arrives.
	a, b := memlink.Pair(memlink.Config{Impairments: memlink.Impairments{Reorder: 1}})
	defer a.Close()
	defer b.Close()
	write(t, a, frames(a, b, 1, 64))
	ms := []link.Message{{Buf: make([]byte, 100)}}
	if n, err := b.ReadBatch(ms); n != 1 || err != nil {
		t.Fatalf("ReadBatch = %d, %v", n, err)
	}
}

func TestRate(t *testing.T) {
	const (
		rate = 2_000_000 // bytes per second
		size = 1000
		n    = 400 // 200 ms at rate
	)
	a, b := memlink.Pair(memlink.Config{Impairments: memlink.Impairments{Rate: rate}})
	c := collect(b)
	start := time.Now()
	for i := 0; i < n; i += 20 {
		write(t, a, frames(a, b, 20, size))
	}
	got := c.wait(n, 5*time.Second, 20*time.Second)
	a.Close()
	b.Close()
	<-c.done
	if len(got) != n {
		t.Fatalf("%d frames arrived, want %d", len(got), n)
	}
	// Frames never arrive early, so the lower bound is firm; the upper one
	// only catches a limiter that is far off on a loaded machine.
	want := time.Duration(n * size * int64(time.Second) / rate)
	if d := c.times[n-1].Sub(start); d < want*95/100 || d > 10*want {
		t.Errorf("%d bytes at %d B/s took %v, want about %v", n*size, rate, d, want)
	}
}

func TestRateQueueTailDrop(t *testing.T) {
	// 10 ms per frame: one batch is written long before the first frame
	// leaves, so exactly QueueLen frames are queued.
	a, b := memlink.Pair(memlink.Config{Impairments: memlink.Impairments{Rate: 100_000, QueueLen: 10}})
	defer a.Close()
	defer b.Close()
	write(t, a, frames(a, b, 100, 1000))
	st := a.Segment().Stats()
	if st.RateDrops != 90 {
		t.Errorf("RateDrops = %d, want 90", st.RateDrops)
	}
}

func TestFilter(t *testing.T) {
	a, b := memlink.Pair(memlink.Config{})
	defer a.Close()
	defer b.Close()
	// Accept our EtherType (read through the protocol extension) to this
	// host or broadcast; truncate broadcasts to 20 bytes.
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtProto},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: etherType, SkipTrue: 3},
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipTrue: 3}, // PACKET_HOST
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 1, SkipTrue: 1}, // PACKET_BROADCAST
		bpf.RetConstant{Val: 0},
		bpf.RetConstant{Val: 20},
		bpf.RetConstant{Val: 0xffff},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SetFilter(prog); err != nil {
		t.Fatal(err)
	}
	dst, src := b.HardwareAddr(), a.HardwareAddr()
	multicast := net.HardwareAddr{0x03, 0x00, 0x5e, 0x10, 0x00, 0x01}
	in := [][]byte{
		frame(dst, src, etherType, 1, 80),       // passes whole
		frame(dst, src, 0x0800, 2, 80),          // wrong EtherType
		frame(multicast, src, etherType, 3, 80), // multicast
		frame(broadcast, src, etherType, 4, 80), // broadcast, truncated
	}
	var ms []link.Message
	for _, f := range in {
		ms = append(ms, link.Message{Buf: f, N: len(f)})
	}
	write(t, a, ms)
	out := make([]link.Message, 4)
	for i := range out {
		out[i].Buf = make([]byte, 1514)
	}
	n, err := b.ReadBatch(out)
	if err != nil || n != 2 {
		t.Fatalf("ReadBatch = %d, %v; want 2 frames", n, err)
	}
	if !slices.Equal(out[0].Buf[:out[0].N], in[0]) {
		t.Errorf("first frame altered")
	}
	if !slices.Equal(out[1].Buf[:out[1].N], in[3][:20]) {
		t.Errorf("broadcast not truncated to 20 bytes: %d", out[1].N)
	}
	if st := a.Segment().Stats(); st.Filtered != 2 || st.Delivered != 2 {
		t.Errorf("stats %+v, want 2 filtered and 2 delivered", st)
	}
	if st, _ := b.Stats(); st.Packets != 2 {
		t.Errorf("link counted %d packets, want the 2 that passed", st.Packets)
	}

	// No filter accepts everything again.
	if err := b.SetFilter(nil); err != nil {
		t.Fatal(err)
	}
	write(t, a, ms[1:2])
	if n, err := b.ReadBatch(out); err != nil || n != 1 {
		t.Errorf("after removing the filter, ReadBatch = %d, %v", n, err)
	}

	// Extensions the kernel has and memlink does not emulate are refused.
	prog, _ = bpf.Assemble([]bpf.Instruction{bpf.LoadExtension{Num: bpf.ExtRand}, bpf.RetA{}})
	if err := b.SetFilter(prog); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("SetFilter(rand) = %v, want EINVAL", err)
	}
	if err := b.SetFilter([]bpf.RawInstruction{{Op: 0xffff}}); err == nil {
		t.Error("SetFilter accepted a bad program")
	}
}

func TestQueueOverflow(t *testing.T) {
	a, b := memlink.Pair(memlink.Config{Impairments: memlink.Impairments{QueueLen: 8}})
	defer a.Close()
	defer b.Close()
	write(t, a, frames(a, b, 20, 64))
	st, _ := b.Stats()
	if st.Packets != 20 || st.Drops != 12 {
		t.Errorf("Stats = %+v, want 20 packets and 12 drops", st)
	}
	out := make([]link.Message, 32)
	for i := range out {
		out[i].Buf = make([]byte, 100)
	}
	if n, _ := b.ReadBatch(out); n != 8 {
		t.Errorf("read %d frames, want the 8 queued", n)
	}
	for i := range 8 {
		if seqOf(out[i].Buf) != uint32(i) {
			t.Errorf("frame %d has seq %d: tail drop should keep the oldest", i, seqOf(out[i].Buf))
		}
	}
	if s := a.Segment().Stats(); s.QueueDrops != 12 {
		t.Errorf("segment QueueDrops = %d, want 12", s.QueueDrops)
	}
}

func TestCloseUnblocks(t *testing.T) {
	base := runtime.NumGoroutine()
	a, b := memlink.Pair(memlink.Config{Impairments: memlink.Impairments{Delay: time.Hour}})
	errc := make(chan error)
	go func() {
		_, err := b.ReadBatch([]link.Message{{Buf: make([]byte, 100)}})
		errc <- err
	}()
	// A frame in flight must not keep anything alive after Close.
	write(t, a, frames(a, b, 1, 64))
	time.Sleep(10 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("ReadBatch after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock ReadBatch")
	}
	if err := b.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
	if _, err := b.WriteBatch(frames(b, a, 1, 64)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteBatch after Close = %v", err)
	}
	if _, err := b.Stats(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Stats after Close = %v", err)
	}
	if err := b.SetFilter(nil); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SetFilter after Close = %v", err)
	}
	a.Close()
	checkGoroutines(t, base)
}

func TestSegmentRouting(t *testing.T) {
	s := memlink.NewSegment(memlink.Config{})
	macA := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	macB := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	a := s.Attach("a", macA)
	b := s.Attach("b", macB)
	b2 := s.Attach("b2", macB) // a second socket on b's interface
	c := s.Attach("c", net.HardwareAddr{2, 0, 0, 0, 0, 3})
	defer func() {
		for _, l := range []*memlink.Link{a, b, b2, c} {
			l.Close()
		}
	}()
	send := func(dst net.HardwareAddr) {
		f := frame(dst, macA, etherType, 0, 64)
		write(t, a, []link.Message{{Buf: f, N: len(f)}})
	}
	count := func(l *memlink.Link) uint64 {
		st, _ := l.Stats()
		return st.Packets
	}
	send(broadcast)
	send(net.HardwareAddr{0x01, 0x80, 0xc2, 0, 0, 0x0e})
	send(macB)
	send(net.HardwareAddr{2, 0, 0, 0, 0, 9}) // nobody
	send(macA)                               // only the sender has it
	if got := []uint64{count(a), count(b), count(b2), count(c)}; !slices.Equal(got, []uint64{0, 3, 3, 2}) {
		t.Errorf("packets per link %v, want [0 3 3 2]", got)
	}
	if st := s.Stats(); st.Unroutable != 2 || st.Delivered != 8 {
		t.Errorf("stats %+v, want 2 unroutable and 8 delivered", st)
	}
	if err := c.JoinGroup(net.HardwareAddr{0x01, 0x80, 0xc2, 0, 0, 0x0e}); err != nil {
		t.Error(err)
	}
	if g := c.Groups(); len(g) != 1 {
		t.Errorf("Groups = %v", g)
	}
	if err := c.JoinGroup(macA); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("JoinGroup(unicast) = %v", err)
	}
	if err := c.LeaveGroup(broadcast); !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Errorf("LeaveGroup(not joined) = %v", err)
	}
	if err := c.LeaveGroup(net.HardwareAddr{0x01, 0x80, 0xc2, 0, 0, 0x0e}); err != nil || len(c.Groups()) != 0 {
		t.Errorf("LeaveGroup = %v, groups %v", err, c.Groups())
	}
}

func TestUpDownAndMTU(t *testing.T) {
	a, b := memlink.Pair(memlink.Config{MTU: 9000})
	defer a.Close()
	defer b.Close()
	if a.MTU() != 9000 {
		t.Errorf("MTU = %d, want 9000", a.MTU())
	}
	b.SetUp(false)
	if b.Up() {
		t.Error("Up after SetUp(false)")
	}
	write(t, a, frames(a, b, 3, 64))
	if _, err := b.WriteBatch(frames(b, a, 1, 64)); !errors.Is(err, syscall.ENETDOWN) {
		t.Errorf("WriteBatch on a down link = %v, want ENETDOWN", err)
	}
	if st := a.Segment().Stats(); st.Down != 3 || st.Delivered != 0 {
		t.Errorf("stats %+v, want 3 down", st)
	}
	b.SetUp(true)

	if _, err := a.WriteBatch(frames(a, b, 1, 9015)); !errors.Is(err, syscall.EMSGSIZE) {
		t.Errorf("WriteBatch beyond the MTU = %v, want EMSGSIZE", err)
	}
	if _, err := a.WriteBatch([]link.Message{{Buf: make([]byte, 10), N: 10}}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("WriteBatch of a runt = %v, want EINVAL", err)
	}
	if err := b.SetMTU(1500); err != nil {
		t.Fatal(err)
	}
	if err := b.SetMTU(10); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("SetMTU(10) = %v", err)
	}
	write(t, a, frames(a, b, 1, 9014))
	if st := a.Segment().Stats(); st.Oversize != 1 {
		t.Errorf("Oversize = %d, want 1", st.Oversize)
	}
}

func TestConcurrent(t *testing.T) {
	seed := testenv.Seed(t)
	base := runtime.NumGoroutine()
	a, b := memlink.Pair(memlink.Config{Seed: seed, Impairments: memlink.Impairments{
		Loss: 0.1, Duplicate: 0.1, Reorder: 0.1, Corrupt: 0.1, Jitter: time.Millisecond, QueueLen: 64}})
	ca, cb := collect(a), collect(b)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 50 {
				a.WriteBatch(frames(a, b, 8, 100))
			}
		}()
		go func() {
			defer wg.Done()
			for range 50 {
				b.WriteBatch(frames(b, a, 8, 100))
				b.Stats()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 50 {
			a.Segment().SetImpairments(memlink.Impairments{Loss: float64(i%2) / 10, Jitter: time.Millisecond})
			a.Segment().Stats()
		}
	}()
	wg.Wait()
	sa, _ := a.Stats()
	sb, _ := b.Stats()
	a.Close()
	b.Close()
	<-ca.done
	<-cb.done
	if sa.Packets == 0 || sb.Packets == 0 {
		t.Errorf("seed %d: nothing arrived (%d, %d)", seed, sa.Packets, sb.Packets)
	}
	checkGoroutines(t, base)
}

func TestReadAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	a, b := memlink.Pair(memlink.Config{})
	defer a.Close()
	defer b.Close()
	in := frames(a, b, 16, 1500)
	out := make([]link.Message, 16)
	for i := range out {
		out[i].Buf = make([]byte, 1514)
	}
	allocs := testing.AllocsPerRun(200, func() {
		a.WriteBatch(in)
		for n := 0; n < len(in); {
			k, _ := b.ReadBatch(out)
			n += k
		}
	})
	// The pool is emptied by each GC, so allow a little.
	if allocs > 1 {
		t.Errorf("%.1f allocations per batch of 16 frames, want about 0", allocs)
	}
}

func BenchmarkPair(b *testing.B) {
	for _, size := range []int{64, 1514} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			x, y := memlink.Pair(memlink.Config{})
			defer x.Close()
			defer y.Close()
			in := frames(x, y, 32, size)
			out := make([]link.Message, 32)
			for i := range out {
				out[i].Buf = make([]byte, 1514)
			}
			b.SetBytes(int64(size * len(in)))
			b.ReportAllocs()
			for b.Loop() {
				x.WriteBatch(in)
				for n := 0; n < len(in); {
					k, _ := y.ReadBatch(out)
					n += k
				}
			}
		})
	}
}
