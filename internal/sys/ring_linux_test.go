package sys_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/link"
	"github.com/myproto/myproto/internal/sys"
	"github.com/myproto/myproto/internal/testenv"
)

// ringEtherType is not myproto's, so no other test's sockets see the frames.
const ringEtherType = 0x88b7

// ringFrame returns a frame of n bytes from src to dst whose payload starts
// with seq and is otherwise a pattern derived from it.
func ringFrame(dst, src net.HardwareAddr, seq uint32, n int) []byte {
	f := make([]byte, n)
	copy(f, dst)
	copy(f[6:], src)
	binary.BigEndian.PutUint16(f[12:], ringEtherType)
	binary.BigEndian.PutUint32(f[link.EthernetHeaderLen:], seq)
	for i := link.EthernetHeaderLen + 4; i < n; i++ {
		f[i] = byte(seq) ^ byte(i)
	}
	return f
}

// openRingPair opens a Sender on end A of a new veth pair and a Ring with
// cfg on end B, in B's namespace.
func openRingPair(t *testing.T, mtu int, cfg sys.RingConfig) (*testenv.Pair, *sys.Sender, *sys.Ring) {
	t.Helper()
	p := testenv.NewPair(t, mtu)
	s, err := sys.OpenSender(p.A)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var r *sys.Ring
	if err := p.NetnsB.Do(func() (err error) { r, err = sys.OpenRing(p.B, cfg); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return p, s, r
}

// TestIntegrationRing sends frames of every size up to a jumbo one through
// a Sender and reads them from a Ring, alternately with ReadBatch (into
// buffers both large enough and too small) and ReadFunc, and checks that
// each arrives once, in order and intact, and that the counters agree.
func TestIntegrationRing(t *testing.T) {
	testenv.Watchdog(t, time.Minute)
	const mtu = 9000
	p, s, r := openRingPair(t, mtu, sys.RingConfig{EtherType: ringEtherType, BlockSize: 64 << 10, Blocks: 256})

	sizes := []int{60, 61, 1514, 4000, mtu + link.EthernetHeaderLen}
	const n = 2000
	var want [][]byte
	for i := range n {
		want = append(want, ringFrame(p.B.HardwareAddr, p.A.HardwareAddr, uint32(i), sizes[i%len(sizes)]))
	}
	sent := make(chan error, 1)
	go func() {
		for i := 0; i < n; i += 100 {
			ms := make([]link.Message, 100)
			for j := range ms {
				ms[j] = link.Message{Buf: want[i+j], N: len(want[i+j])}
			}
			if k, err := s.WriteBatch(ms); err != nil || k != len(ms) {
				sent <- err
				return
			}
		}
		sent <- nil
	}()

	got := 0
	check := func(frame []byte, full int) {
		t.Helper()
		if got >= n {
			t.Fatalf("frame %d: more frames than sent", got)
		}
		w := want[got][:min(len(want[got]), full)]
		if !bytes.Equal(frame, w) {
			t.Fatalf("frame %d: got %d bytes (seq %d), want %d bytes", got, len(frame),
				binary.BigEndian.Uint32(frame[link.EthernetHeaderLen:]), len(w))
		}
		got++
	}
	big := make([]link.Message, 7)
	for i := range big {
		big[i].Buf = make([]byte, mtu+link.EthernetHeaderLen)
	}
	small := []link.Message{{Buf: make([]byte, 100)}, {Buf: make([]byte, 100)}}
	for round := 0; got < n; round++ {
		switch round % 3 {
		case 0:
			k, err := r.ReadBatch(big)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range big[:k] {
				check(m.Buf[:m.N], 1<<20)
			}
		case 1:
			// Frames longer than the buffer are truncated to it.
			k, err := r.ReadBatch(small)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range small[:k] {
				if m.N > len(m.Buf) {
					t.Fatalf("N %d > len(Buf) %d", m.N, len(m.Buf))
				}
				check(m.Buf[:m.N], len(m.Buf))
			}
		case 2:
			if _, err := r.ReadFunc(func(f []byte) { check(f, 1<<20) }); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := <-sent; err != nil {
		t.Fatalf("sending: %v", err)
	}
	st, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Packets != n || st.Drops != 0 {
		t.Errorf("Stats = %+v, want %d packets, no drops", st, n)
	}
}

// TestIntegrationRingDeadlineAndClose checks that a partly filled block
// reaches the reader, that a deadline ends a wait with
// os.ErrDeadlineExceeded and leaves the ring usable, and that Close
// unblocks a waiting reader.
func TestIntegrationRingDeadlineAndClose(t *testing.T) {
	testenv.Watchdog(t, time.Minute)
	p, s, r := openRingPair(t, 0, sys.RingConfig{EtherType: ringEtherType})

	// One frame: its block is handed over only when the retire timer
	// fires.
	f := ringFrame(p.B.HardwareAddr, p.A.HardwareAddr, 7, 60)
	if _, err := s.WriteBatch([]link.Message{{Buf: f, N: len(f)}}); err != nil {
		t.Fatal(err)
	}
	ms := []link.Message{{Buf: make([]byte, 1514)}}
	if k, err := r.ReadBatch(ms); err != nil || k != 1 || !bytes.Equal(ms[0].Buf[:ms[0].N], f) {
		t.Fatalf("ReadBatch = %d, %v; frame %x", k, err, ms[0].Buf[:ms[0].N])
	}

	if err := r.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadBatch(ms); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadBatch past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	r.SetReadDeadline(time.Time{})
	if _, err := s.WriteBatch([]link.Message{{Buf: f, N: len(f)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadFunc(func([]byte) {}); err != nil {
		t.Fatalf("ReadFunc after a deadline: %v", err)
	}

	done := make(chan error, 1)
	go func() { _, err := r.ReadBatch(ms); done <- err }()
	time.Sleep(20 * time.Millisecond)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Errorf("blocked ReadBatch after Close: %v, want net.ErrClosed", err)
	}
	if _, err := r.ReadFunc(func([]byte) {}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadFunc after Close: %v, want net.ErrClosed", err)
	}
	if err := r.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteBatch([]link.Message{{Buf: f, N: len(f)}}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteBatch after Close: %v, want net.ErrClosed", err)
	}
}

func TestOpenRingInvalid(t *testing.T) {
	lo := &net.Interface{Index: 1, Name: "lo"}
	for _, tt := range []struct {
		ifi *net.Interface
		cfg sys.RingConfig
	}{
		{nil, sys.RingConfig{EtherType: ringEtherType}},
		{lo, sys.RingConfig{}},
		{lo, sys.RingConfig{EtherType: ringEtherType, BlockSize: 1000}},
		{lo, sys.RingConfig{EtherType: ringEtherType, Blocks: -1}},
	} {
		if r, err := sys.OpenRing(tt.ifi, tt.cfg); err == nil {
			r.Close()
			t.Errorf("OpenRing(%v, %+v) succeeded", tt.ifi, tt.cfg)
		}
	}
	if _, err := sys.OpenSender(nil); err == nil {
		t.Error("OpenSender(nil) succeeded")
	}
}
