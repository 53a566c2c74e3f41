package myproto

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/link"
	"github.com/myproto/myproto/internal/memlink"
	"github.com/myproto/myproto/internal/stream"
	"github.com/myproto/myproto/internal/testenv"
)

// What a user of *net.TCPConn relies on: Close unblocking, half-close,
// resets, the errors' kinds, dial failures, and no leaks.

// readErr runs c.Read in the background and returns its result channel.
func readErr(c *Conn) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		ch <- err
	}()
	return ch
}

// acceptErr calls ln.Accept in the background and delivers its error.
func acceptErr(ln *Listener) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		ch <- err
	}()
	return ch
}

// wantBlocked fails unless nothing arrives on ch for a little while.
func wantBlocked(t *testing.T, what string, ch <-chan error) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s returned early: %v", what, err)
	case <-time.After(50 * time.Millisecond):
	}
}

// waitErr returns what arrives on ch, or fails after a few seconds.
func waitErr(t *testing.T, what string, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("%s still blocked", what)
		return nil
	}
}

// wantOpError checks err is a *net.OpError for op on "myproto" wrapping target.
func wantOpError(t *testing.T, err error, op string, target error) {
	t.Helper()
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != op || oe.Net != "myproto" {
		t.Fatalf("error %#v: want a *net.OpError for %q on myproto", err, op)
	}
	if !errors.Is(err, target) {
		t.Fatalf("error %v: want one wrapping %v", err, target)
	}
}

func TestConnCloseUnblocks(t *testing.T) {
	// The UDP bearer too: its calls read the link themselves as well.
	t.Run("udp", func(t *testing.T) { testConnCloseUnblocks(t, udpHosts(t)) })
	onBothLinks(t, testConnCloseUnblocks)
}

func testConnCloseUnblocks(t *testing.T, h *testHosts) {
	watchdog(t)
	ln := listenB(t, h, nil)

	t.Run("Read", func(t *testing.T) {
		c, s := streamPair(t, h, ln)
		defer s.Close()
		ch := readErr(c)
		wantBlocked(t, "Read", ch)
		c.Close()
		wantOpError(t, waitErr(t, "Read", ch), "read", net.ErrClosed)
		// And every call after Close.
		_, err := c.Read(make([]byte, 1))
		wantOpError(t, err, "read", net.ErrClosed)
		_, err = c.Write([]byte("x"))
		wantOpError(t, err, "write", net.ErrClosed)
		wantOpError(t, c.Close(), "close", net.ErrClosed)
		wantOpError(t, c.SetNoDelay(false), "set", net.ErrClosed)
	})

	t.Run("Write", func(t *testing.T) {
		c, s := streamPair(t, h, ln)
		defer s.Close()
		// The peer never reads: Write blocks once both buffers are full.
		c.SetWriteBuffer(64 << 10)
		s.SetReadBuffer(64 << 10)
		ch := make(chan error, 1)
		var n atomic.Int64
		go func() {
			m, err := c.Write(make([]byte, 16<<20))
			n.Store(int64(m))
			ch <- err
		}()
		time.Sleep(300 * time.Millisecond)
		wantBlocked(t, "Write", ch)
		c.Close()
		wantOpError(t, waitErr(t, "Write", ch), "write", net.ErrClosed)
		if n.Load() >= 16<<20 {
			t.Fatalf("Write wrote everything to a peer that does not read")
		}
	})

	t.Run("Accept", func(t *testing.T) {
		ln := listenB(t, h, nil)
		ch := acceptErr(ln)
		wantBlocked(t, "Accept", ch)
		ln.Close()
		err := waitErr(t, "Accept", ch)
		wantOpError(t, err, "accept", net.ErrClosed)
		// net/http's Serve retries a temporary error forever.
		if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
			t.Fatalf("Accept after Close: %v is temporary", err)
		}
		if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("second Accept: %v", err)
		}
	})

	// A deadline set while Accept waits (on one interface it waits
	// reading the link itself) ends the wait; cleared, Accept takes
	// the next connection.
	t.Run("AcceptDeadline", func(t *testing.T) {
		ln := listenB(t, h, nil)
		ch := acceptErr(ln)
		wantBlocked(t, "Accept", ch)
		ln.SetDeadline(time.Now().Add(100 * time.Millisecond))
		wantOpError(t, waitErr(t, "Accept", ch), "accept", os.ErrDeadlineExceeded)
		ln.SetDeadline(time.Now().Add(time.Hour))
		c, s := streamPair(t, h, ln)
		c.Close()
		s.Close()
	})
}

// TestConnHalfClose shuts each direction down in turn while the other goes
// on, as HTTP/1.0 clients and rsh-style protocols do.
func TestConnHalfClose(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		ln := listenB(t, h, nil)
		request := bytes.Repeat([]byte("request "), 40_000)
		response := bytes.Repeat([]byte("response "), 70_000)

		// One side sends all it has and half-closes; the other reads to EOF
		// and only then answers on the still-open direction.
		halfClose := func(t *testing.T, closer, answerer *Conn) {
			done := make(chan error, 1)
			go func() {
				got, err := io.ReadAll(answerer)
				if err == nil && !bytes.Equal(got, request) {
					err = errors.New("request corrupted")
				}
				if err == nil {
					_, err = answerer.Write(response)
				}
				if err == nil {
					err = answerer.CloseWrite()
				}
				done <- err
			}()
			if _, err := closer.Write(request); err != nil {
				t.Fatal(err)
			}
			if err := closer.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			_, err := closer.Write([]byte("late"))
			wantOpError(t, err, "write", syscall.EPIPE)
			got, err := io.ReadAll(closer)
			if err != nil || !bytes.Equal(got, response) {
				t.Fatalf("response: %d bytes, %v; want %d bytes", len(got), err, len(response))
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			// Both directions are shut: the connection ends cleanly.
			for _, c := range []*Conn{closer, answerer} {
				if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
					t.Fatalf("Read after both FINs: %d, %v", n, err)
				}
			}
		}
		t.Run("client first", func(t *testing.T) {
			c, s := streamPair(t, h, ln)
			defer c.Close()
			defer s.Close()
			halfClose(t, c, s)
		})
		t.Run("server first", func(t *testing.T) {
			c, s := streamPair(t, h, ln)
			defer c.Close()
			defer s.Close()
			halfClose(t, s, c)
		})
		t.Run("CloseRead", func(t *testing.T) {
			c, s := streamPair(t, h, ln)
			defer c.Close()
			defer s.Close()
			ch := readErr(c)
			wantBlocked(t, "Read", ch)
			if err := c.CloseRead(); err != nil {
				t.Fatal(err)
			}
			if err := waitErr(t, "Read", ch); err != io.EOF {
				t.Fatalf("Read blocked across CloseRead: %v, want io.EOF", err)
			}
			// Writing still works.
			if _, err := c.Write([]byte("still here")); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 10)
			if _, err := io.ReadFull(s, b); err != nil || string(b) != "still here" {
				t.Fatalf("after CloseRead: %q, %v", b, err)
			}
			// What the peer sends now is thrown away, so its window stays
			// open: more than the receive buffer gets through, and Read
			// still ends.
			s.SetWriteDeadline(time.Now().Add(20 * time.Second))
			if n, err := s.Write(make([]byte, 3*stream.DefaultBuffer)); err != nil {
				t.Fatalf("peer's Write after CloseRead: %d bytes, %v", n, err)
			}
			if n, err := c.Read(b); n != 0 || err != io.EOF {
				t.Fatalf("Read after CloseRead and more data: %d, %v", n, err)
			}
		})
	})
}

// TestConnCloseUnreadResets closes a connection that has unread data: the
// peer gets everything sent before the Close, then ECONNRESET.
func TestConnCloseUnreadResets(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		ln := listenB(t, h, nil)
		c, s := streamPair(t, h, ln)
		defer c.Close()
		payload := bytes.Repeat([]byte("payload!"), 16<<10)
		if _, err := s.Write(payload); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(make([]byte, 100<<10)); err != nil {
			t.Fatal(err)
		}
		// Close once the client's bytes sit unread in the server's buffer,
		// and its own have been acknowledged (a reset discards what is
		// still unsent).
		deadline := time.Now().Add(5 * time.Second)
		for in := s.Info(); in.RecvBuffered == 0 || in.SendBuffered > 0; in = s.Info() {
			if time.Now().After(deadline) {
				t.Fatalf("server never got the client's data: %+v", in)
			}
			time.Sleep(time.Millisecond)
		}
		s.Close()
		got := make([]byte, 0, len(payload))
		buf := make([]byte, 4096)
		var err error
		for {
			var n int
			n, err = c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("read %d bytes before the reset, want the %d sent", len(got), len(payload))
		}
		wantOpError(t, err, "read", syscall.ECONNRESET)
		_, err = c.Write([]byte("x"))
		wantOpError(t, err, "write", syscall.ECONNRESET)
		if in := c.Info(); in.State != "CLOSED" {
			t.Errorf("state after a reset: %s", in.State)
		}
	})
}

// TestConnDialNobody dials a MAC that never answers: the dial fails at the
// Dialer's timeout, or when its context is cancelled, and not before.
func TestConnDialNobody(t *testing.T) {
	watchdog(t)
	h := memHosts(t, memlink.Config{Seed: 1})
	nobody := "[02:00:5e:10:00:99%mem0]:80"

	start := time.Now()
	_, err := h.a.dial(context.Background(), &Dialer{Timeout: 300 * time.Millisecond}, "myproto", nobody)
	d := time.Since(start)
	// As net.Dialer's: an "i/o timeout" that is context.DeadlineExceeded
	// (and os.ErrDeadlineExceeded, as a connection's deadline).
	wantOpError(t, err, "dial", context.DeadlineExceeded)
	wantOpError(t, err, "dial", os.ErrDeadlineExceeded)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() || !strings.HasSuffix(err.Error(), "i/o timeout") {
		t.Fatalf("%v: Timeout() is not true, or not an i/o timeout", err)
	}
	if d < 300*time.Millisecond || d > 2*time.Second {
		t.Fatalf("a 300 ms dial timeout took %v", d)
	}
	// A negative Timeout has passed already, as for net.Dialer; so has a
	// context's deadline in the past.
	start = time.Now()
	_, err = h.a.dial(context.Background(), &Dialer{Timeout: -time.Second}, "myproto", nobody)
	wantOpError(t, err, "dial", context.DeadlineExceeded)
	past, cancelPast := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancelPast()
	_, err = h.a.dial(past, &Dialer{}, "myproto", nobody)
	wantOpError(t, err, "dial", context.DeadlineExceeded)
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("dials whose deadline had passed took %v", d)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start = time.Now()
	_, err = h.a.dial(ctx, &Dialer{}, "myproto", nobody)
	d = time.Since(start)
	wantOpError(t, err, "dial", context.Canceled)
	if d < 200*time.Millisecond || d > 2*time.Second {
		t.Fatalf("a dial cancelled at 200 ms took %v", d)
	}

	// Bad addresses are *net.AddrError, before anything is sent.
	for _, addr := range []string{"[02:00:5e:10:00:99%mem0]", "[02:00:5e:10:00:99%mem0]:0", "[z_z]:1", ""} {
		_, err := h.a.dial(context.Background(), &Dialer{}, "myproto", addr)
		var ae *net.AddrError
		if !errors.As(err, &ae) {
			t.Errorf("dial %q: %v, want a *net.AddrError", addr, err)
		}
	}
	if _, err := h.a.dial(context.Background(), &Dialer{}, "tcp", "[02:00:5e:10:00:99%mem0]:80"); !errors.Is(err, net.UnknownNetworkError("tcp")) {
		t.Errorf("dial on network tcp: %v", err)
	}
}

// TestConnDialRetriesUntilDeadline: a dial retransmits its SYN until its own
// deadline, not for a fixed budget of the engine's. On a CPU-starved host
// (issue 8 item 5) SYNs and SYN-ACKs waited seconds in receive queues and
// dials that had asked for a minute gave up after the 20 s handshake timeout
// with ETIMEDOUT. Here every SYN is lost for 21 s: a dial with a 30 s
// timeout must connect on the next retransmission, while one with the default
// timeout fails at 20 s with ETIMEDOUT, as TCP's does when its SYN retries
// run out (a deadline the caller set fails with net.Dialer's i/o timeout,
// context.DeadlineExceeded and os.ErrDeadlineExceeded both, as
// TestConnDialNobody checks).
func TestConnDialRetriesUntilDeadline(t *testing.T) {
	if testing.Short() {
		t.Skip("SYNs are lost for longer than the 20 s handshake timeout")
	}
	testenv.Watchdog(t, time.Minute)
	h := memHosts(t, memlink.Config{Seed: 1})
	port := listenB(t, h, nil).Addr().(*Addr).Port
	lossEnd := stream.DefaultHandshakeTimeout + time.Second
	start := time.Now()
	var lost atomic.Int64
	h.seg.SetDrop(func(frame []byte) bool {
		hd, _, reason := parseFrame(frame, DefaultEtherType)
		if reason != dropNone || hd.typ != typeStream || hd.flags&stream.FlagSYN == 0 || time.Since(start) >= lossEnd {
			return false
		}
		lost.Add(1)
		return true
	})

	dflt := make(chan error, 1)
	go func() {
		_, err := h.a.dial(context.Background(), &Dialer{}, "myproto", "[02:00:5e:10:00:99%mem0]:80")
		dflt <- err
	}()
	c, err := h.a.dial(context.Background(), &Dialer{Timeout: 30 * time.Second}, "myproto", h.addrB(port).String())
	d := time.Since(start)
	if err != nil {
		t.Fatalf("dial with a 30 s timeout, every SYN lost for %v: %v after %v (%d SYNs lost)", lossEnd, err, d.Round(time.Millisecond), lost.Load())
	}
	c.Close()
	t.Logf("connected after %v; %d SYNs lost", d.Round(time.Millisecond), lost.Load())
	if d < lossEnd {
		t.Errorf("connected after %v, while SYNs were lost for %v", d, lossEnd)
	}

	err = <-dflt
	wantOpError(t, err, "dial", syscall.ETIMEDOUT)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Errorf("%v: Timeout() is not true", err)
	}
}

// TestConnErrorKinds pins the error kinds of the remaining paths.
func TestConnErrorKinds(t *testing.T) {
	watchdog(t)
	h := memHosts(t, memlink.Config{Seed: 1})
	c, s := streamPair(t, h, listenB(t, h, nil))
	defer c.Close()
	defer s.Close()

	c.SetReadDeadline(time.Now().Add(-time.Second))
	_, err := c.Read(make([]byte, 1))
	wantOpError(t, err, "read", os.ErrDeadlineExceeded)
	if ne := err.(net.Error); !ne.Timeout() {
		t.Fatalf("%v: Timeout() is not true", err)
	}
	// A zero-length Read waits for nothing: 0, nil, deadline or not, as on
	// Go's sockets.
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("zero-length Read past the deadline: %d, %v, want 0, nil", n, err)
	}
	c.SetReadDeadline(time.Time{})
	for name, err := range map[string]error{
		"SetReadBuffer(0)":   c.SetReadBuffer(0),
		"SetWriteBuffer(-1)": c.SetWriteBuffer(-1),
	} {
		if !errors.Is(err, syscall.EINVAL) {
			t.Errorf("%s: %v, want EINVAL", name, err)
		}
	}
	// As *net.TCPConn's since Go 1.23: 0 is the default 15 s, negative
	// leaves the period alone.
	c.SetKeepAlivePeriod(time.Minute)
	if err := c.SetKeepAlivePeriod(-time.Second); err != nil {
		t.Fatalf("SetKeepAlivePeriod(-1s): %v", err)
	}
	keepAlive := func() time.Duration {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.e.Config().KeepAlive
	}
	if ka := keepAlive(); ka != time.Minute {
		t.Fatalf("SetKeepAlivePeriod(-1s) changed the period to %v", ka)
	}
	if err := c.SetKeepAlivePeriod(0); err != nil {
		t.Fatalf("SetKeepAlivePeriod(0): %v", err)
	}
	if ka := keepAlive(); ka != defaultKeepAlive {
		t.Fatalf("SetKeepAlivePeriod(0) set %v, want the default %v", ka, defaultKeepAlive)
	}
	// Options that are valid take.
	if err := c.SetUserTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	ut := c.e.Config().UserTimeout
	c.mu.Unlock()
	if ut != 5*time.Second {
		t.Fatalf("SetUserTimeout(5s) left %v", ut)
	}
}

// TestConnLostWindowUpdates drops every packet that carries a window update
// (MAX_DATA) from reader to writer for a while: the writer's blocked probes
// get the flow going again once the drops stop.
func TestConnLostWindowUpdates(t *testing.T) {
	watchdog(t)
	seed := testenv.Seed(t)
	h := memHosts(t, memlink.Config{Seed: seed})
	c, s := streamPair(t, h, listenB(t, h, nil))
	defer c.Close()
	defer s.Close()
	s.SetReadBuffer(256 << 10)

	var dropping atomic.Bool
	var dropped atomic.Int64
	h.seg.SetDrop(func(f []byte) bool {
		if !dropping.Load() || !bytes.Equal(f[6:12], h.bMAC) {
			return false
		}
		hd, body, reason := parseFrame(f, DefaultEtherType)
		if reason != dropNone || hd.typ != typeStream || !hasFrame(body, sfMaxData) {
			return false
		}
		dropped.Add(1)
		return true
	})

	const size = 16 << 20
	src := loadStream(seed, 1)
	sent := sha256.New()
	werr := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.MultiWriter(c, sent), io.LimitReader(src, size))
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	time.Sleep(20 * time.Millisecond)
	dropping.Store(true)
	// A timer ends the drops: Read may block meanwhile, waiting for data
	// the writer cannot send without the updates.
	time.AfterFunc(500*time.Millisecond, func() { dropping.Store(false) })
	// The reader reads slowly while the updates are lost, so the window
	// must be reopened by updates that never arrive.
	recv := sha256.New()
	var n int64
	buf := make([]byte, 32<<10)
	for stop := time.Now().Add(500 * time.Millisecond); time.Now().Before(stop); {
		m, err := s.Read(buf)
		recv.Write(buf[:m])
		n += int64(m)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	readDuring := n
	at := time.Now()
	readRest(t, s, recv, n, size, sent, werr)
	if dropped.Load() == 0 {
		t.Fatal("no window update was dropped: the test tested nothing")
	}
	t.Logf("%d packets with MAX_DATA dropped in 500 ms, %d bytes read meanwhile; the rest took %v",
		dropped.Load(), readDuring, time.Since(at).Round(time.Millisecond))
}

// TestConnStalledReaderBounded writes to a peer that never reads: Write
// blocks once the buffers are full and the heap stays within them; then the
// reader wakes and gets every byte.
func TestConnStalledReaderBounded(t *testing.T) {
	watchdog(t)
	seed := testenv.Seed(t)
	h := memHosts(t, memlink.Config{Seed: seed})
	c, s := streamPair(t, h, listenB(t, h, nil))
	defer c.Close()
	defer s.Close()

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	const size = 256 << 20 // far more than the buffers hold
	sent := sha256.New()
	var written atomic.Int64
	werr := make(chan error, 1)
	go func() {
		buf := make([]byte, 256<<10)
		src := io.LimitReader(loadStream(seed, 1), size)
		for {
			m, err := io.ReadFull(src, buf)
			if m == 0 {
				werr <- c.CloseWrite()
				return
			}
			sent.Write(buf[:m])
			k, err := c.Write(buf[:m])
			written.Add(int64(k))
			if err != nil {
				werr <- err
				return
			}
		}
	}()
	// Wait until the writer has stopped making progress.
	last := int64(-1)
	for written.Load() != last {
		last = written.Load()
		time.Sleep(200 * time.Millisecond)
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	ci, si := c.Info(), s.Info()
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("writer blocked after %d MiB; heap grew %.1f MiB; client holds %d B (send buffer), server %d B (receive buffer), chunks %d + %d B",
		last>>20, float64(grown)/(1<<20), ci.SendBuffered, si.RecvBuffered, ci.MemoryHeld, si.MemoryHeld)
	if last >= size {
		t.Fatal("the writer never blocked")
	}
	if ci.SendBuffered > stream.DefaultBuffer || si.RecvBuffered > stream.DefaultBuffer {
		t.Fatalf("buffers over their limits: send %d, receive %d, limit %d", ci.SendBuffered, si.RecvBuffered, stream.DefaultBuffer)
	}
	// Both buffers, the write buffer above and slack for pools.
	if limit := int64(2*stream.DefaultBuffer + 8<<20); grown > limit {
		t.Fatalf("heap grew %d bytes with a stalled reader, more than %d", grown, limit)
	}

	readRest(t, s, sha256.New(), 0, size, sent, werr)
}

// readRest reads s to EOF into recv, which has had n bytes already, and
// checks that size bytes came in all, that they hash as sent did, and that
// the writer (werr) ended cleanly.
func readRest(t *testing.T, s *Conn, recv hash.Hash, n, size int64, sent hash.Hash, werr <-chan error) {
	t.Helper()
	m, err := io.Copy(recv, s)
	if n += m; err != nil || n != size {
		t.Fatalf("read %d of %d bytes: %v", n, size, err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sent.Sum(nil), recv.Sum(nil)) {
		t.Fatal("data corrupted")
	}
}

// TestConnInjectedFrames sends forged frames at both ends of a live
// transfer from a third station that spoofs the peers' MACs and ports. It
// plays three attackers: one blind to the connection IDs; one that knows
// the IDs but not the packet numbers, which guesses them (random data, ACKs,
// resets and window updates); and one that also knows the packet numbers and
// sends resets with a wrong proof and ACKs of packets never sent. None of
// them breaks the transfer. (Whoever knows the IDs and packet numbers can
// inject data, as into TCP: myproto has no cryptography; run TLS over it.)
func TestConnInjectedFrames(t *testing.T) {
	watchdog(t)
	seed := testenv.Seed(t)
	h := memHosts(t, memlink.Config{Seed: seed})
	ln := listenB(t, h, nil)
	// The injector aims at whichever pair is transferring now.
	type pair struct{ c, s *Conn }
	var cur atomic.Pointer[pair]
	c, s := streamPair(t, h, ln)
	cur.Store(&pair{c, s})
	evilA := h.seg.Attach("evil-as-b", h.bMAC) // sends to a, as b
	evilB := h.seg.Attach("evil-as-a", h.aMAC) // sends to b, as a
	defer evilA.Close()
	defer evilB.Close()

	stop := make(chan struct{})
	var injected atomic.Int64
	injectDone := make(chan struct{})
	go func() {
		defer close(injectDone)
		rng := rand.New(rand.NewPCG(uint64(seed), 2))
		for {
			select {
			case <-stop:
				return
			default:
			}
			p := cur.Load()
			for _, to := range []struct {
				l        *memlink.Link
				dst, src net.HardwareAddr
				victim   *Conn
			}{{evilA, h.aMAC, h.bMAC, p.c}, {evilB, h.bMAC, h.aMAC, p.s}} {
				ms := make([]link.Message, 8)
				for i := range ms {
					f := forgeStream(rng, to.dst, to.src, to.victim)
					ms[i] = link.Message{Buf: f, N: len(f)}
				}
				if n, err := to.l.WriteBatch(ms); err == nil {
					injected.Add(int64(n))
				}
			}
			time.Sleep(20 * time.Microsecond)
		}
	}()
	// The transfer half-closes at its end. On a busy machine the injector
	// gets few turns: keep transferring on new pairs (4 MiB more each way
	// at a time) until it has had its thousand frames.
	var cst stream.Stats
	d := time.Duration(0)
	for i := int64(0); ; i++ {
		size := int64(4 << 20)
		if i == 0 {
			size = 16 << 20
		}
		d += loadBidi(t, c, s, size, seed+i)
		c.mu.Lock()
		st := c.e.Stats()
		c.mu.Unlock()
		cst.Malformed += st.Malformed
		cst.Challenges += st.Challenges
		if injected.Load() >= 1000 || i == 20 {
			break
		}
		c, s = streamPair(t, h, ln)
		old := cur.Swap(&pair{c, s})
		old.c.Close()
		old.s.Close()
	}
	close(stop)
	<-injectDone
	c.Close()
	s.Close()
	t.Logf("%d forged frames injected during transfers (16 MiB or more each way) of %v; client: %d rejected, %d challenged resets",
		injected.Load(), d.Round(time.Millisecond), cst.Malformed, cst.Challenges)
	if injected.Load() < 1000 {
		t.Fatalf("only %d frames injected", injected.Load())
	}
	if st := h.a.stats(); st[0].Drops.NoSocket == 0 {
		t.Errorf("host a dropped no frame of an unknown connection: %+v", st[0])
	}
	if cst.Malformed == 0 || cst.Challenges == 0 {
		t.Errorf("the client rejected %d packets and challenged %d resets; the test missed a class", cst.Malformed, cst.Challenges)
	}
}

// forgeStream builds one forged stream frame aimed at victim's connection.
func forgeStream(rng *rand.Rand, dst, src net.HardwareAddr, victim *Conn) []byte {
	h := header{etherType: DefaultEtherType, typ: typeStream, srcPort: victim.remote.Port, dstPort: victim.local.Port}
	copy(h.dst[:], dst)
	copy(h.src[:], src)
	h.connID = victim.cid
	pn := rng.Uint64() // a blind guess
	class := rng.IntN(4)
	switch class {
	case 0:
		h.connID = rng.Uint64() // someone else's connection, or nobody's
	case 3:
		// Knows the packet numbers too: uses the peer's next ones.
		victim.mu.Lock()
		pn = victim.e.LargestReceived() + 1 + uint64(rng.IntN(4))
		victim.mu.Unlock()
	}
	body := appendPN(make([]byte, 0, 200), pn)
	kind := rng.IntN(4)
	if class == 3 {
		kind = 1 + rng.IntN(2) // a reset or an ACK: data would be believed
	}
	switch kind {
	case 0: // data at a random offset
		data := make([]byte, rng.IntN(64))
		body = appendStreamFrame(body, rng.Uint64()>>rng.IntN(64), data, rng.IntN(8) == 0)
	case 1: // a reset with a guessed proof
		body = appendU64Frame(body, sfReset, rng.Uint64()>>2)
	case 2: // an acknowledgement of packets never sent
		lo := rng.Uint64()>>34 + 1<<40
		body = appendAckFrame(body, lo, lo+uint64(rng.IntN(1000)))
	default: // a window update
		body = appendU64Frame(body, sfMaxData, rng.Uint64()>>2)
	}
	return buildFrame(&h, body)
}

// TestConnDialCloseCycles opens and closes 10,000 connections: afterwards
// the goroutines and the heap are back where they started.
func TestConnDialCloseCycles(t *testing.T) {
	testenv.Watchdog(t, 4*time.Minute)
	h := memHosts(t, memlink.Config{Seed: 1})
	ln := listenB(t, h, nil)
	port := ln.Addr().(*Addr).Port
	cycles := 10_000
	if testing.Short() {
		cycles = 1000
	}
	cycle := func() {
		acc := make(chan *Conn, 1)
		go func() {
			s, err := ln.AcceptMyproto()
			if err != nil {
				t.Error(err)
			}
			acc <- s
		}()
		c, err := h.a.dial(context.Background(), &Dialer{}, "myproto", h.addrB(port).String())
		if err != nil {
			t.Fatal(err)
		}
		s := <-acc
		if s == nil {
			t.FailNow()
		}
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 5)
		if _, err := io.ReadFull(s, b); err != nil {
			t.Fatal(err)
		}
		c.Close()
		s.Close()
	}
	// Warm up the pools and the stack's own goroutines first.
	for range 100 {
		cycle()
	}
	settle := func() (int, uint64) {
		var ms runtime.MemStats
		var g int
		// Connections retire after TIME-WAIT; give them time.
		for range 50 {
			time.Sleep(100 * time.Millisecond)
			n := 0
			h.a.conns.Range(func(_, _ any) bool { n++; return true })
			h.b.conns.Range(func(_, _ any) bool { n++; return true })
			runtime.GC()
			if g = runtime.NumGoroutine(); n == 0 {
				break
			}
		}
		runtime.ReadMemStats(&ms)
		return g, ms.HeapAlloc
	}
	g0, heap0 := settle()
	start := time.Now()
	for range cycles {
		cycle()
	}
	d := time.Since(start)
	g1, heap1 := settle()
	// Timers of the last connections may still be finishing: give the
	// goroutine count a few seconds to come back before calling it a leak.
	for deadline := time.Now().Add(5 * time.Second); g1 > g0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		g1 = runtime.NumGoroutine()
	}
	t.Logf("%d dial/close cycles in %v (%v each); goroutines %d → %d; heap %.1f → %.1f MiB",
		cycles, d.Round(time.Millisecond), (d / time.Duration(cycles)).Round(time.Microsecond), g0, g1,
		float64(heap0)/(1<<20), float64(heap1)/(1<<20))
	if g1 > g0 {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines leaked; all goroutines:\n%s", g1-g0, buf[:runtime.Stack(buf, true)])
	}
	if heap1 > heap0+2<<20 {
		t.Errorf("heap grew from %d to %d bytes", heap0, heap1)
	}
	n := 0
	h.a.conns.Range(func(_, _ any) bool { n++; return true })
	h.b.conns.Range(func(_, _ any) bool { n++; return true })
	if n != 0 {
		t.Errorf("%d connections still registered", n)
	}
}

// TestConnLinger: by default Close sends what is queued in the background
// and the peer reads it all, then EOF; with SetLinger(0) Close discards it
// and resets the peer.
func TestConnLinger(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		ln := listenB(t, h, nil)
		data := bytes.Repeat([]byte("linger "), 300_000) // ~2 MiB, more than one window

		c, s := streamPair(t, h, ln)
		if _, err := c.Write(data); err != nil {
			t.Fatal(err)
		}
		c.Close() // returns at once; the data is still going
		got, err := io.ReadAll(s)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("after a background close the peer read %d of %d bytes: %v", len(got), len(data), err)
		}
		s.Close()

		c, s = streamPair(t, h, ln)
		defer s.Close()
		if _, err := c.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := c.SetLinger(0); err != nil {
			t.Fatal(err)
		}
		c.Close()
		got, err = io.ReadAll(s)
		wantOpError(t, err, "read", syscall.ECONNRESET)
		if len(got) >= len(data) {
			t.Fatalf("SetLinger(0): the peer read all %d bytes", len(got))
		}
	})
}

// TestCloseStopsDeadlineTimers: Close stops the timers of the deadlines set
// on a connection, its listener and a datagram socket, as Go's sockets do,
// even a deadline set while Close runs: a closed server connection with a
// 10 s read deadline must not keep a runtime timer for 10 s (thousands of
// them made every timer reset walk the scheduler's heap).
func TestCloseStopsDeadlineTimers(t *testing.T) {
	h := memHosts(t, memlink.Config{Seed: 1})
	ln := listenB(t, h, nil)
	c, s := streamPair(t, h, ln)
	far := time.Now().Add(time.Hour)
	for _, x := range []interface{ SetDeadline(time.Time) error }{c, s, ln} {
		if err := x.SetDeadline(far); err != nil {
			t.Fatal(err)
		}
	}
	pc, err := h.a.listenPacket("myproto", h.aIf+":0")
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.SetDeadline(far); err != nil {
		t.Fatal(err)
	}
	armed := func(d *deadline) bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.armed || d.timer != nil
	}
	ds := map[string]*deadline{"client read": &c.rd, "client write": &c.wd, "server read": &s.rd,
		"server write": &s.wd, "listener": &ln.dl, "datagram read": &pc.rd, "datagram write": &pc.wd}
	for name, d := range ds {
		if !armed(d) {
			t.Fatalf("%s deadline: no timer before Close", name)
		}
	}
	c.Close()
	s.Close()
	ln.Close()
	pc.Close()
	for name, d := range ds {
		if armed(d) {
			t.Errorf("%s deadline: timer still armed after Close", name)
		}
	}
	// A set that passed its closed check before Close arms nothing after.
	c.rd.set(far)
	if armed(&c.rd) {
		t.Error("a deadline set after Close armed a timer")
	}
}

// TestDeadlineMoves: a deadline moved before it passed re-arms its timer
// without allocating (net/http moves a connection's read deadline for every
// request), and passes all the same: moved, cleared and set again, after it
// passed, and set in the past.
func TestDeadlineMoves(t *testing.T) {
	var d deadline
	d.set(time.Now().Add(time.Hour))
	if a := testing.AllocsPerRun(100, func() { d.set(time.Now().Add(time.Hour)) }); a != 0 {
		t.Errorf("moving a deadline allocates %v times", a)
	}
	passes := func(what string) {
		t.Helper()
		select {
		case <-d.wait():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the deadline did not pass", what)
		}
	}
	d.set(time.Now().Add(time.Millisecond))
	passes("moved")
	d.set(time.Time{})
	if d.expired() {
		t.Fatal("cleared, yet expired")
	}
	d.set(time.Now().Add(time.Hour))
	d.set(time.Time{})
	d.set(time.Now().Add(time.Millisecond))
	passes("cleared and set again")
	d.set(time.Now().Add(time.Hour))
	if d.expired() {
		t.Fatal("moved into the future after it passed, yet expired")
	}
	d.set(time.Now().Add(-time.Second))
	if !d.expired() {
		t.Fatal("a deadline in the past has not passed")
	}
	d.set(time.Now().Add(time.Millisecond))
	passes("after one in the past")
}

// A rawStation is a third station on an in-memory segment that sends
// stream frames made by hand to a listener's port and hears the answers.
type rawStation struct {
	t      *testing.T
	l      *memlink.Link
	mac    net.HardwareAddr
	port   uint16           // the listener's
	frames chan streamFrame // the stream frames it receives
}

type streamFrame struct {
	h    header
	body []byte
}

func newRawStation(t *testing.T, h *testHosts, ln *Listener) *rawStation {
	mac := net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x66}
	r := &rawStation{t: t, l: h.seg.Attach("raw", mac), mac: mac, port: ln.Addr().(*Addr).Port, frames: make(chan streamFrame, 64)}
	t.Cleanup(func() { r.l.Close() })
	go func() {
		ms := []link.Message{{Buf: make([]byte, 2048)}}
		for {
			if _, err := r.l.ReadBatch(ms); err != nil {
				return
			}
			hd, body, reason := parseFrame(ms[0].Buf[:ms[0].N], DefaultEtherType)
			if reason == dropNone && hd.typ == typeStream {
				r.frames <- streamFrame{hd, slices.Clone(body)}
			}
		}
	}()
	return r
}

// send sends body with flags to connection ID dst at the listener's port
// on dst MAC to, and returns the frame.
func (r *rawStation) send(to net.HardwareAddr, flags uint16, dst uint64, body []byte) []byte {
	r.t.Helper()
	hd := header{etherType: DefaultEtherType, typ: typeStream, flags: flags, srcPort: 4000, dstPort: r.port, connID: dst}
	copy(hd.dst[:], to)
	copy(hd.src[:], r.mac)
	f := make([]byte, offBody+len(body))
	copy(f[offBody:], body)
	f = f[:marshalFrame(f, &hd, len(body))]
	r.resend(f)
	return f
}

// resend sends frame f again.
func (r *rawStation) resend(f []byte) {
	r.t.Helper()
	if _, err := r.l.WriteBatch([]link.Message{{Buf: f, N: len(f)}}); err != nil {
		r.t.Fatal(err)
	}
}

// TestConnGroupSYNIgnored sends a listener the same SYN twice from a third
// station, first to the broadcast address and then to the listener's own:
// only the second is answered. Streams are unicast; a stack answering SYNs
// to a group would let one forged frame draw a SYN-ACK from every listener
// on the segment at its claimed sender.
func TestConnGroupSYNIgnored(t *testing.T) {
	watchdog(t)
	h := memHosts(t, memlink.Config{Seed: 1})
	r := newRawStation(t, h, listenB(t, h, nil))
	syn := func(dst net.HardwareAddr, cid uint64) {
		body := make([]byte, 512)
		n, flags, _ := stream.NewClient(stream.Config{}, cid, time.Now()).NextPacket(time.Now(), body)
		r.send(dst, flags, 0, body[:n])
	}
	const toGroup, toUs = 0xb10adca57, 0x1111
	syn(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, toGroup)
	syn(h.bMAC, toUs)
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f := <-r.frames:
			switch f.h.connID {
			case toGroup:
				t.Fatal("a SYN to the broadcast address was answered")
			case toUs:
				return // answered in order: the broadcast one was not
			}
		case <-timeout:
			t.Fatal("the unicast SYN was not answered either: the test sees nothing")
		}
	}
}

// TestConnReplayedFirstPacket: a client's first packet after the SYN-ACK
// (CONFIRM, a request and its FIN) makes one connection. Replayed once that
// connection has ended, within the cookie's lifetime, it must not make
// another: the server answers with a stateless reset, as TCP resets a
// replayed segment of a closed connection.
func TestConnReplayedFirstPacket(t *testing.T) {
	watchdog(t)
	h := memHosts(t, memlink.Config{Seed: 1})
	ln := listenB(t, h, nil)
	r := newRawStation(t, h, ln)
	const cid = 0xc11e47
	// next waits for the next stream frame to the client's ID, or a
	// stateless reset, which names the server's.
	var scid uint64
	next := func() streamFrame {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case f := <-r.frames:
				if f.h.connID == cid || f.h.flags&stream.FlagReset != 0 && f.h.connID == scid {
					return f
				}
			case <-timeout:
				t.Fatal("no answer from the server")
			}
		}
	}
	c := stream.NewClient(stream.Config{}, cid, time.Now())
	buf := make([]byte, 2048)
	n, flags, _ := c.NextPacket(time.Now(), buf)
	r.send(h.bMAC, flags, 0, buf[:n])
	f := next()
	c.Receive(time.Now(), f.h.flags, f.body)
	if !c.Established() {
		t.Fatal("no SYN-ACK")
	}
	c.Write([]byte("REQUEST-1: transfer $100"))
	c.CloseWrite()
	n, flags, scid = c.NextPacket(time.Now(), buf)
	first := r.send(h.bMAC, flags, scid, buf[:n])

	accept := func(wait time.Duration) *Conn {
		ln.SetDeadline(time.Now().Add(wait))
		defer ln.SetDeadline(time.Time{})
		s, err := ln.AcceptMyproto()
		if err != nil {
			return nil
		}
		return s
	}
	s := accept(10 * time.Second)
	if s == nil {
		t.Fatal("the handshake made no connection")
	}
	if b, err := io.ReadAll(s); err != nil || string(b) != "REQUEST-1: transfer $100" {
		t.Fatalf("server read %q, %v", b, err)
	}
	s.SetLinger(0) // a reset: the connection is gone without waiting for the client
	s.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, ok := h.b.conns.Load(scid); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server's connection never went away")
		}
	}
	for len(r.frames) > 0 {
		<-r.frames
	}
	r.resend(first) // the replay
	if s := accept(500 * time.Millisecond); s != nil {
		s.Close()
		t.Fatal("a replayed first packet made a second connection")
	}
	if f := next(); f.h.flags&stream.FlagReset == 0 {
		t.Errorf("the replay was answered with flags %#x, want a stateless reset", f.h.flags)
	}
}

// TestConnConcurrentWrites: eight goroutines Write whole records (up to
// 256 KiB, larger than the window's chunks) on one connection at once. As
// on a *net.TCPConn, each Write's bytes arrive together: the reader finds
// every record whole.
func TestConnConcurrentWrites(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		seed := testenv.Seed(t)
		ln := listenB(t, h, nil)
		c, s := streamPair(t, h, ln)
		defer c.Close()
		defer s.Close()
		const writers, records = 8, 12
		done := make(chan error, writers)
		for g := range writers {
			go func() {
				rng := rand.New(rand.NewPCG(uint64(seed), uint64(g)))
				for seq := range records {
					rec := make([]byte, 8+rng.IntN(256<<10))
					binary.BigEndian.PutUint16(rec, uint16(g))
					binary.BigEndian.PutUint16(rec[2:], uint16(seq))
					binary.BigEndian.PutUint32(rec[4:], uint32(len(rec)))
					for i := 8; i < len(rec); i++ {
						rec[i] = byte(g*31 + seq*7 + i)
					}
					if _, err := c.Write(rec); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
		}
		var werr atomic.Value // the first writer's error
		go func() {
			for range writers {
				if err := <-done; err != nil {
					werr.CompareAndSwap(nil, err)
				}
			}
			c.CloseWrite()
		}()
		r := bufio.NewReaderSize(s, 64<<10)
		var hdr [8]byte
		got := 0
		for {
			if _, err := io.ReadFull(r, hdr[:]); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("after %d records: %v", got, err)
			}
			g, seq, n := int(binary.BigEndian.Uint16(hdr[:])), int(binary.BigEndian.Uint16(hdr[2:])), int(binary.BigEndian.Uint32(hdr[4:]))
			if g >= writers || seq >= records || n < 8 || n > 8+256<<10 {
				t.Fatalf("after %d records, a header of garbage %x: Writes interleaved", got, hdr)
			}
			body := make([]byte, n-8)
			if _, err := io.ReadFull(r, body); err != nil {
				t.Fatalf("record %d of writer %d: %v", seq, g, err)
			}
			for i, b := range body {
				if b != byte(g*31+seq*7+i+8) {
					t.Fatalf("record %d of writer %d corrupted at byte %d of %d: Writes interleaved", seq, g, i+8, n)
				}
			}
			got++
		}
		if err := werr.Load(); err != nil {
			t.Fatalf("a writer failed: %v", err)
		}
		if got != writers*records {
			t.Fatalf("%d records, want %d", got, writers*records)
		}
	})
}

// TestConnFailWakesEveryCall: four goroutines block in Write (the peer
// does not read) and four in Read; the peer resets the connection. Every
// call returns with ECONNRESET, as on a *net.TCPConn, not only the one of
// each direction that the connection's wake-up reaches.
func TestConnFailWakesEveryCall(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		ln := listenB(t, h, nil)
		c, s := streamPair(t, h, ln)
		defer c.Close()
		const each = 4
		errs := make(chan error, 2*each)
		for range each {
			go func() {
				_, err := c.Write(make([]byte, 64<<20))
				errs <- err
			}()
			go func() {
				_, err := c.Read(make([]byte, 100))
				errs <- err
			}()
		}
		time.Sleep(200 * time.Millisecond) // all blocked: the window is full, nothing comes
		s.SetLinger(0)
		s.Close()
		timeout := time.After(10 * time.Second)
		for i := range 2 * each {
			select {
			case err := <-errs:
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("call %d returned %v, want ECONNRESET", i+1, err)
				}
			case <-timeout:
				t.Fatalf("%d of %d blocked calls still blocked 10 s after the reset", 2*each-i, 2*each)
			}
		}
	})
}

// TestZeroValues: the methods of a zero or nil Conn and Listener fail with
// EINVAL, as those of *net.TCPConn and *net.TCPListener do, and panic not.
func TestZeroValues(t *testing.T) {
	for _, c := range []*Conn{{}, nil} {
		buf := make([]byte, 8)
		for name, err := range map[string]error{
			"Read":               func() error { _, err := c.Read(buf); return err }(),
			"Write":              func() error { _, err := c.Write(buf); return err }(),
			"Close":              c.Close(),
			"CloseWrite":         c.CloseWrite(),
			"CloseRead":          c.CloseRead(),
			"SetDeadline":        c.SetDeadline(time.Now()),
			"SetReadDeadline":    c.SetReadDeadline(time.Now()),
			"SetWriteDeadline":   c.SetWriteDeadline(time.Now()),
			"SetNoDelay":         c.SetNoDelay(true),
			"SetKeepAlive":       c.SetKeepAlive(true),
			"SetKeepAlivePeriod": c.SetKeepAlivePeriod(-1),
			"SetLinger":          c.SetLinger(0),
			"SetReadBuffer":      c.SetReadBuffer(1 << 20),
		} {
			if !errors.Is(err, syscall.EINVAL) {
				t.Errorf("%T %v: %s: %v, want EINVAL", c, c == nil, name, err)
			}
		}
		if c.LocalAddr() != nil || c.RemoteAddr() != nil || c.Info() != (ConnInfo{}) {
			t.Errorf("zero Conn's addresses or info are not empty")
		}
	}
	for _, ln := range []*Listener{{}, nil} {
		_, aerr := ln.Accept()
		for name, err := range map[string]error{"Accept": aerr, "Close": ln.Close(), "SetDeadline": ln.SetDeadline(time.Now())} {
			if !errors.Is(err, syscall.EINVAL) {
				t.Errorf("%T %v: %s: %v, want EINVAL", ln, ln == nil, name, err)
			}
		}
		if ln.Addr() != nil {
			t.Errorf("zero Listener's Addr is not nil")
		}
	}
}

// TestConnLingerWaits: with SetLinger(sec > 0), Close returns once the peer
// has acknowledged everything written and the FIN, as Linux's close(2)
// with SO_LINGER does: a program that exits right after it loses nothing.
// With the default, Close returns at once.
func TestConnLingerWaits(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		ln := listenB(t, h, nil)
		c, s := streamPair(t, h, ln)
		defer s.Close()
		read := make(chan int64, 1)
		go func() {
			time.Sleep(100 * time.Millisecond) // Close finds data unacknowledged
			n, _ := io.Copy(io.Discard, s)
			read <- n
		}()
		const size = 8 << 20
		if _, err := c.Write(make([]byte, size)); err != nil {
			t.Fatal(err)
		}
		c.SetLinger(10)
		start := time.Now()
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		c.mu.Lock()
		delivered := c.done || c.e.Delivered()
		c.mu.Unlock()
		t.Logf("Close took %v", took)
		if !delivered {
			t.Fatalf("Close returned after %v with data or the FIN unacknowledged", took)
		}
		if n := <-read; n != size {
			t.Fatalf("the peer read %d bytes, want %d", n, size)
		}
	})
}
