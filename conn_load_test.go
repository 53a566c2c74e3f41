package myproto

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/memlink"
	"github.com/myproto/myproto/internal/testenv"
)

// Load, loss and memory tests of the stream transport: bulk transfers both
// ways at once under impairments, many connections at once, dial/close
// churn, a peer that never reads, and two flows sharing a slow link.

// loadBulkSize is what each side of a bulk test sends.
const loadBulkSize = 64 << 20

// prng is a deterministic byte stream for one direction of a transfer.
func loadStream(seed int64, stream uint64) io.Reader {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(uint64(seed) >> (8 * i))
		key[8+i] = byte(stream >> (8 * i))
	}
	return rand.NewChaCha8(key)
}

// loadSide is what one end of a bidirectional transfer saw.
type loadSide struct {
	sent, recv [sha256.Size]byte
	nRecv      int64
	err        error
}

// loadRunSide writes size bytes of loadStream(seed, stream) to c, then CloseWrite,
// while reading c to EOF; it hashes both directions.
func loadRunSide(c *Conn, size int64, seed int64, stream uint64) loadSide {
	var r loadSide
	werr := make(chan error, 1)
	go func() {
		h := sha256.New()
		_, err := io.CopyBuffer(io.MultiWriter(c, h), io.LimitReader(loadStream(seed, stream), size), make([]byte, 256<<10))
		copy(r.sent[:], h.Sum(nil))
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	h := sha256.New()
	n, err := io.CopyBuffer(h, c, make([]byte, 256<<10))
	copy(r.recv[:], h.Sum(nil))
	r.nRecv = n
	if e := <-werr; err == nil {
		err = e
	}
	r.err = err
	return r
}

// loadBidi moves size bytes each way between c and s at the same time and
// checks both arrive byte-exact. It returns the elapsed time.
func loadBidi(t *testing.T, c, s *Conn, size int64, seed int64) time.Duration {
	t.Helper()
	start := time.Now()
	rc := make(chan loadSide, 1)
	go func() { rc <- loadRunSide(c, size, seed, 1) }()
	rs := loadRunSide(s, size, seed, 2)
	rcv := <-rc
	d := time.Since(start)
	if rcv.err != nil || rs.err != nil {
		t.Fatalf("transfer: client %v, server %v (client got %d, server got %d of %d bytes)", rcv.err, rs.err, rcv.nRecv, rs.nRecv, size)
	}
	if rcv.nRecv != size || rs.nRecv != size {
		t.Fatalf("client received %d, server %d bytes; want %d each", rcv.nRecv, rs.nRecv, size)
	}
	if rcv.sent != rs.recv {
		t.Errorf("client→server: SHA-256 sent %x, received %x", rcv.sent, rs.recv)
	}
	if rs.sent != rcv.recv {
		t.Errorf("server→client: SHA-256 sent %x, received %x", rs.sent, rcv.recv)
	}
	return d
}

// loadLogTransfer logs throughput and each side's loss recovery.
func loadLogTransfer(t *testing.T, d time.Duration, size int64, c, s *Conn) (ratios [2]float64) {
	t.Helper()
	t.Logf("%d MiB each way in %v: %.1f Mbit/s per direction", size>>20, d.Round(time.Millisecond),
		float64(size)*8/d.Seconds()/1e6)
	for i, x := range []struct {
		name string
		c    *Conn
	}{{"client", c}, {"server", s}} {
		in := x.c.Info()
		ratio := 1.0
		if in.PacketsLost > 0 {
			ratio = float64(in.PacketsRetransmitted) / float64(in.PacketsLost)
		}
		ratios[i] = ratio
		t.Logf("%s: sent %d pkts, lost %d (spurious %d), retransmitted %d pkts (%.2f per loss, %.2f%% of bytes), PTOs %d, cwnd %d, srtt %v, pkt threshold %d",
			x.name, in.PacketsSent, in.PacketsLost, in.SpuriousLosses, in.PacketsRetransmitted, ratio,
			100*float64(in.BytesRetransmitted)/float64(max(in.BytesSent, 1)), in.ProbeTimeouts, in.Cwnd, in.SRTT, in.PacketThreshold)
	}
	return ratios
}

func TestConnLoadBidirectionalMem(t *testing.T) {
	cases := []struct {
		name string
		im   memlink.Impairments
	}{
		{"loss=0", memlink.Impairments{}},
		{"loss=1%", memlink.Impairments{Loss: 0.01}},
		{"loss=5%", memlink.Impairments{Loss: 0.05}},
		{"loss=20%", memlink.Impairments{Loss: 0.20}},
		{"reorder+dup+corrupt", memlink.Impairments{Reorder: 0.02, Duplicate: 0.01, Corrupt: 0.01}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			testenv.Watchdog(t, 4*time.Minute)
			seed := testenv.Seed(t)
			h := memHosts(t, memlink.Config{Seed: seed, Impairments: tc.im})
			c, s := streamPair(t, h, listenB(t, h, nil))
			defer c.Close()
			defer s.Close()
			d := loadBidi(t, c, s, loadBulkSize, seed)
			loadLogTransfer(t, d, loadBulkSize, c, s)
			st := h.seg.Stats()
			t.Logf("segment: sent %d, lost %d, dup %d, reordered %d, corrupted %d, queue drops %d",
				st.Sent, st.Lost, st.Duplicated, st.Reordered, st.Corrupted, st.QueueDrops)
		})
	}
}

// TestIntegrationConnLoadBidirectionalVeth moves 64 MiB each way at once over
// veth with 5 % of our frames dropped by nftables on both receiving ends.
func TestIntegrationConnLoadBidirectionalVeth(t *testing.T) {
	testenv.Watchdog(t, 4*time.Minute)
	seed := testenv.Seed(t)
	h := vethHosts(t, 1500)
	testenv.DropShare(t, nil, h.pair.A.Name, DefaultEtherType, 5)
	testenv.DropShare(t, h.pair.NetnsB, h.pair.B.Name, DefaultEtherType, 5)
	c, s := streamPair(t, h, listenB(t, h, nil))
	defer c.Close()
	defer s.Close()
	beforeA, beforeB := h.a.stats(), h.b.stats()
	d := loadBidi(t, c, s, loadBulkSize, seed)
	loadLogTransfer(t, d, loadBulkSize, c, s)
	afterA, afterB := h.a.stats(), h.b.stats()
	t.Logf("socket drops: a %d, b %d", afterA[0].KernelDrops-beforeA[0].KernelDrops, afterB[0].KernelDrops-beforeB[0].KernelDrops)
}

// loadManyConns runs n connections to one listener on host b at the same
// time; each client sends size bytes and a CloseWrite, the server answers
// with the SHA-256 of what it read, and the client checks it.
func loadManyConns(t *testing.T, h *testHosts, n int, size int64, seed int64) {
	t.Helper()
	ln := listenB(t, h, nil)
	port := ln.Addr().(*Addr).Port
	var serving sync.WaitGroup
	serving.Add(1)
	go func() {
		defer serving.Done()
		for {
			s, err := ln.AcceptMyproto()
			if err != nil {
				return
			}
			serving.Add(1)
			go func() {
				defer serving.Done()
				defer s.Close()
				hs := sha256.New()
				if _, err := io.CopyBuffer(hs, s, make([]byte, 64<<10)); err != nil {
					t.Errorf("server read from %v: %v (cid %x: %s)", s.RemoteAddr(), err, s.cid, infoLine(s.Info()))
					return
				}
				if _, err := s.Write(hs.Sum(nil)); err != nil {
					t.Errorf("server write to %v: %v", s.RemoteAddr(), err)
				}
			}()
		}
	}()

	type result struct {
		retx, lost, sent uint64
		err              error
	}
	results := make(chan result, n)
	start := time.Now()
	for i := range n {
		go func() {
			var r result
			defer func() { results <- r }()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			// Under -race on two cores a handshake can wait behind a full
			// backlog and queue drops for longer than the default 20 s.
			c, err := h.a.dial(ctx, &Dialer{Timeout: time.Minute}, "myproto", h.addrB(port).String())
			if err != nil {
				r.err = fmt.Errorf("conn %d: %w", i, err)
				return
			}
			defer c.Close()
			hs := sha256.New()
			if _, err := io.CopyBuffer(io.MultiWriter(c, hs), io.LimitReader(loadStream(seed, uint64(i)), size), make([]byte, 64<<10)); err != nil {
				r.err = fmt.Errorf("conn %d: write: %w", i, err)
				return
			}
			if err := c.CloseWrite(); err != nil {
				r.err = fmt.Errorf("conn %d: %w", i, err)
				return
			}
			got, err := io.ReadAll(c)
			if err != nil {
				r.err = fmt.Errorf("conn %d: read: %w (cid %x: %s)", i, err, c.cid, infoLine(c.Info()))
				return
			}
			if want := hs.Sum(nil); !bytes.Equal(got, want) {
				r.err = fmt.Errorf("conn %d: server read SHA-256 %x, sent %x", i, got, want)
				return
			}
			in := c.Info()
			r.retx, r.lost, r.sent = in.PacketsRetransmitted, in.PacketsLost, in.PacketsSent
		}()
	}
	var retx, lost, sent uint64
	failed := 0
	for range n {
		r := <-results
		if r.err != nil {
			if failed < 20 {
				t.Error(r.err)
			}
			failed++
			continue
		}
		retx, lost, sent = retx+r.retx, lost+r.lost, sent+r.sent
	}
	d := time.Since(start)
	if failed > 0 {
		t.Errorf("%d of %d connections failed; client host %+v; server host %+v", failed, n, h.a.stats(), h.b.stats())
		if h.seg != nil {
			t.Logf("segment: %+v", h.seg.Stats())
		}
	}
	t.Logf("%d connections × %d KiB in %v: %.1f Mbit/s in all; client packets sent %d, lost %d, retransmitted %d",
		n, size>>10, d.Round(time.Millisecond), float64(int64(n)*size)*8/d.Seconds()/1e6, sent, lost, retx)
	ln.Close()
	serving.Wait()
}

func TestConnLoadManyConnsMem(t *testing.T) {
	testenv.Watchdog(t, 4*time.Minute)
	seed := testenv.Seed(t)
	loadManyConns(t, memHosts(t, memlink.Config{Seed: seed}), 1000, 1<<20, seed)
}

func TestIntegrationConnLoadManyConnsVeth(t *testing.T) {
	testenv.Watchdog(t, 4*time.Minute)
	seed := testenv.Seed(t)
	loadManyConns(t, vethHosts(t, 1500), 1000, 1<<20, seed)
}

// infoLine is the part of a connection's Info that tells why it failed.
func infoLine(in ConnInfo) string {
	return fmt.Sprintf("%s, srtt %v, pto %v, sent %d pkts %d B, received %d pkts %d B, lost %d, PTOs %d, in flight %d, send window %d",
		in.State, in.SRTT, in.PTO, in.PacketsSent, in.BytesSent, in.PacketsReceived, in.BytesReceived, in.PacketsLost, in.ProbeTimeouts, in.BytesInFlight, in.SendWindow)
}
