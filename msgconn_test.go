package myproto

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/memlink"
)

// msgPair dials a message connection from host a to a message listener on
// host b and returns both ends.
func msgPair(t testing.TB, h *testHosts) (client, server *MsgConn) {
	t.Helper()
	ln, err := (&ListenConfig{Stack: &Stack{s: h.b}}).ListenMsg(context.Background(), "myproto", h.bIf+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	port := ln.Addr().(*Addr).Port
	acc := make(chan *MsgConn, 1)
	go func() {
		c, err := ln.AcceptMsg()
		if err != nil {
			close(acc)
			return
		}
		acc <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := (&Dialer{Stack: &Stack{s: h.a}}).DialMsg(ctx, "myproto", h.addrB(port).String())
	if err != nil {
		t.Fatalf("DialMsg: %v", err)
	}
	s, ok := <-acc
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// msgBody is message i of a test: its length, then a pattern naming it.
func msgBody(i, n int) []byte {
	b := make([]byte, n)
	var tag [8]byte
	binary.BigEndian.PutUint32(tag[:], uint32(i))
	binary.BigEndian.PutUint32(tag[4:], uint32(n))
	for j := range b {
		b[j] = tag[j%8] ^ byte(j/8)
	}
	return b
}

// msgSizes are the lengths of the messages the tests send: 1 byte to 1 MiB,
// around every boundary that matters (the varint's, a frame's), and 0.
func msgSizes(rng *rand.Rand) []int {
	sizes := []int{1, 0, 2, 63, 64, 65, 1000, 1433, 1434, 1435, 2900, 16383, 16384, 16385, 65536, 1 << 20, 1<<20 - 1}
	for range 200 {
		switch rng.IntN(4) {
		case 0:
			sizes = append(sizes, 1+rng.IntN(64))
		case 1:
			sizes = append(sizes, 1+rng.IntN(4096))
		case 2:
			sizes = append(sizes, 1+rng.IntN(64<<10))
		default:
			sizes = append(sizes, 1+rng.IntN(1<<20))
		}
	}
	return sizes
}

// TestMsgConnBoundaries: messages of 0 bytes to 1 MiB arrive whole, one
// per Read, in order, on a clean link and under 5 % loss with reordering.
func TestMsgConnBoundaries(t *testing.T) {
	for _, tc := range []struct {
		name string
		imp  memlink.Impairments
	}{
		{"clean", memlink.Impairments{}},
		{"loss5-reorder", memlink.Impairments{Loss: 0.05, Reorder: 0.05}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			watchdog(t)
			h := memHosts(t, memlink.Config{Seed: 7, Impairments: tc.imp})
			c, s := msgPair(t, h)
			sizes := msgSizes(rand.New(rand.NewPCG(1, 2)))
			errc := make(chan error, 1)
			go func() {
				for i, n := range sizes {
					if k, err := c.Write(msgBody(i, n)); err != nil || k != n {
						errc <- err
						return
					}
				}
				errc <- c.CloseWrite()
			}()
			buf := make([]byte, 2<<20)
			total := 0
			for i, n := range sizes {
				k, err := s.Read(buf)
				if err != nil {
					t.Fatalf("message %d (%d bytes): %v", i, n, err)
				}
				if k != n || !bytes.Equal(buf[:k], msgBody(i, n)) {
					t.Fatalf("message %d: %d bytes, want %d (or its bytes differ)", i, k, n)
				}
				total += n
			}
			if k, err := s.Read(buf); k != 0 || err != io.EOF {
				t.Fatalf("after the last message: %d, %v; want EOF", k, err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			in := c.Info()
			t.Logf("%d messages, %d MiB: %d packets lost, %d retransmitted", len(sizes), total>>20, in.PacketsLost, in.PacketsRetransmitted)
			if tc.imp.Loss > 0 && in.PacketsLost == 0 {
				t.Error("no packet lost: the impairments did not apply")
			}
		})
	}
}

// TestMsgConnConcurrentWriters: messages written from several goroutines at
// once never interleave.
func TestMsgConnConcurrentWriters(t *testing.T) {
	watchdog(t)
	h := memHosts(t, memlink.Config{Seed: 3, Impairments: memlink.Impairments{Loss: 0.02}})
	c, s := msgPair(t, h)
	const writers, each = 8, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for i := range each {
				id := w*each + i
				if _, err := c.Write(msgBody(id, 8+rng.IntN(100<<10))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	go func() {
		wg.Wait()
		c.CloseWrite()
	}()
	seen := map[uint32]bool{}
	buf := make([]byte, 200<<10)
	for {
		n, err := s.Read(buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		id, size := binary.BigEndian.Uint32(buf[0:4]), binary.BigEndian.Uint32(buf[4:8])
		if int(size) != n || !bytes.Equal(buf[:n], msgBody(int(id), n)) || seen[id] {
			t.Fatalf("message %d of %d bytes (read %d): mixed with another, or seen twice", id, size, n)
		}
		seen[id] = true
	}
	if len(seen) != writers*each {
		t.Fatalf("%d messages, want %d", len(seen), writers*each)
	}
}

// TestMsgConnShortBuffer: a Read into a buffer shorter than the message
// fills it, discards the rest and fails with ErrTruncated; the next Read
// gets the next message. ReadMsg reports the full length instead.
func TestMsgConnShortBuffer(t *testing.T) {
	watchdog(t)
	h := memHosts(t, memlink.Config{Seed: 1})
	c, s := msgPair(t, h)
	for i, n := range []int{10, 100000, 5, 3000, 7} {
		if _, err := c.Write(msgBody(i, n)); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 8)
	n, err := s.Read(buf)
	if n != 8 || !errors.Is(err, ErrTruncated) || !bytes.Equal(buf, msgBody(0, 10)[:8]) {
		t.Fatalf("Read of 10 bytes into 8: %d, %v", n, err)
	}
	if _, ok := err.(interface{ Timeout() bool }); !ok || err.Error() == ErrTruncated.Error() {
		t.Errorf("truncation error %v is not a *net.OpError", err)
	}
	n, size, err := s.ReadMsg(buf)
	if n != 8 || size != 100000 || err != nil || !bytes.Equal(buf, msgBody(1, 100000)[:8]) {
		t.Fatalf("ReadMsg of 100000 bytes into 8: %d, %d, %v", n, size, err)
	}
	big := make([]byte, 10)
	if n, err := s.Read(big); n != 5 || err != nil || !bytes.Equal(big[:5], msgBody(2, 5)) {
		t.Fatalf("the message after a truncated one: %d, %v", n, err)
	}
	if n, err := s.Read(nil); n != 0 || !errors.Is(err, ErrTruncated) {
		t.Fatalf("Read(nil) of a 3000-byte message: %d, %v", n, err)
	}
	if n, size, err := s.ReadMsg(big); n != 7 || size != 7 || err != nil {
		t.Fatalf("last: %d, %d, %v", n, size, err)
	}
}

// TestMsgConnDeadlineMidMessage: a Read whose deadline passes while a
// message is half arrived fails with a timeout and keeps the half; the next
// Read returns the whole message.
func TestMsgConnDeadlineMidMessage(t *testing.T) {
	watchdog(t)
	// 2 MB/s: a 1 MiB message takes half a second.
	h := memHosts(t, memlink.Config{Seed: 1, Impairments: memlink.Impairments{Rate: 2 << 20, QueueLen: 64}})
	c, s := msgPair(t, h)
	msg := msgBody(42, 1<<20)
	go c.Write(msg)
	buf := make([]byte, 2<<20)
	s.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	n, err := s.Read(buf)
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past its deadline: %d, %v", n, err)
	}
	if len(s.stash) == 0 {
		t.Error("the timed-out Read kept nothing of the message: it arrived in none of 100 ms?")
	}
	s.SetReadDeadline(time.Time{})
	n, err = s.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], msg) {
		t.Fatalf("the message after a timeout: %d bytes, %v", n, err)
	}
}

// TestMsgConnKinds: a message client at a stream listener and a stream
// client at a message listener are refused at once; a message longer than
// the send buffer fails with EMSGSIZE, sending nothing.
func TestMsgConnKinds(t *testing.T) {
	watchdog(t)
	h := memHosts(t, memlink.Config{Seed: 1})
	ln := listenB(t, h, nil)
	port := ln.Addr().(*Addr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := &Dialer{Stack: &Stack{s: h.a}}
	start := time.Now()
	if _, err := d.DialMsg(ctx, "myproto", h.addrB(port).String()); !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
		t.Errorf("DialMsg to a stream listener: %v after %v", err, time.Since(start))
	}
	c, s := msgPair(t, h)
	mport := s.LocalAddr().(*Addr).Port
	if _, err := d.dial(ctx, "myproto", h.addrB(mport).String()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Dial to a message listener: %v", err)
	}
	if err := c.SetWriteBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
	if c.MaxMessage() != 64<<10-4 {
		t.Errorf("MaxMessage %d, want %d", c.MaxMessage(), 64<<10-4)
	}
	if n, err := c.Write(make([]byte, 64<<10)); n != 0 || !errors.Is(err, syscall.EMSGSIZE) {
		t.Errorf("Write of 64 KiB with a 64 KiB send buffer: %d, %v", n, err)
	}
	if _, err := c.Write(make([]byte, c.MaxMessage())); err != nil {
		t.Errorf("Write of MaxMessage: %v", err)
	}
	buf := make([]byte, 70<<10)
	if n, err := s.Read(buf); n != 64<<10-4 || err != nil {
		t.Errorf("Read: %d, %v", n, err)
	}
}
