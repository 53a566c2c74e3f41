package myproto

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/sys"
	"github.com/myproto/myproto/internal/testenv"
)

// TestIntegrationLinkDown sets the veth down under a live connection: both
// ends fail within a second with ENETDOWN and datagram writes fail; once the
// link is up again new connections go through.
func TestIntegrationLinkDown(t *testing.T) {
	watchdog(t)
	h := vethHosts(t, 1500)
	ln := listenB(t, h, nil)
	c, s := streamPair(t, h, ln)
	defer c.Close()
	defer s.Close()
	pc, err := h.a.listenPacket("myproto", h.aIf+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()

	cr, sr := readErr(c), readErr(s)
	start := time.Now()
	testenv.SetLinkUp(t, nil, h.aIf, false)
	for name, ch := range map[string]<-chan error{"client": cr, "server": sr} {
		err := waitErr(t, name+" Read", ch)
		d := time.Since(start)
		wantOpError(t, err, "read", syscall.ENETDOWN)
		if d > time.Second {
			t.Fatalf("%s failed %v after the link went down", name, d)
		}
		t.Logf("%s: %v after the link went down: %v", name, d.Round(time.Microsecond), err)
	}
	_, err = pc.WriteTo([]byte("x"), h.addrB(9))
	wantOpError(t, err, "write", syscall.ENETDOWN)
	if _, err := h.a.dial(context.Background(), &Dialer{}, "myproto", h.addrB(ln.Addr().(*Addr).Port).String()); !errors.Is(err, syscall.ENETDOWN) {
		t.Fatalf("dial on a down link: %v, want ENETDOWN", err)
	}

	testenv.SetLinkUp(t, nil, h.aIf, true)
	deadline := time.Now().Add(5 * time.Second)
	for h.a.endpointsSnapshot()[0].down.Load() || h.b.endpointsSnapshot()[0].down.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the endpoints never saw the link come back")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c2, s2 := streamPair(t, h, ln)
	echo(t, c2, s2)
	c2.Close()
	s2.Close()
	if _, err := pc.WriteTo([]byte("x"), h.addrB(9)); err != nil {
		t.Fatalf("datagram after the link came back: %v", err)
	}
}

// TestIntegrationLinkMTU shrinks the MTU under a live connection: its
// packets shrink with it and the transfer carries on intact.
func TestIntegrationLinkMTU(t *testing.T) {
	watchdog(t)
	h := vethHosts(t, 1500)
	c, s := streamPair(t, h, listenB(t, h, nil))
	defer c.Close()
	defer s.Close()
	echo(t, c, s)
	testenv.SetMTU(t, h.pair.NetnsB, h.bIf, 1000)
	testenv.SetMTU(t, nil, h.aIf, 1000)
	deadline := time.Now().Add(2 * time.Second)
	for h.a.endpointsSnapshot()[0].mtu.Load() != 1000 {
		if time.Now().After(deadline) {
			t.Fatal("the endpoint never saw the new MTU")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.mu.Lock()
	sendMax := c.e.PacketLimit()
	c.mu.Unlock()
	if sendMax > 1000-headerLen {
		t.Fatalf("packets of %d bytes after the MTU fell to 1000", sendMax)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	go func() {
		c.Write(data)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after the MTU change: %d of %d bytes, %v", len(got), len(data), err)
	}
}

// echo checks that c and s carry a message each way.
func echo(t *testing.T, c, s *Conn) {
	t.Helper()
	for _, p := range [][2]*Conn{{c, s}, {s, c}} {
		if _, err := p[0].Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4)
		if _, err := io.ReadFull(p[1], b); err != nil || string(b) != "ping" {
			t.Fatalf("echo: %q, %v", b, err)
		}
	}
}

// TestIntegrationLinkMAC changes b's MAC under a live connection: b drops
// its connections at once (ENETRESET) and resets a's side from the old
// address (ECONNRESET), a takes b's re-announce for a move, and a new dial
// by name reaches the new address.
func TestIntegrationLinkMAC(t *testing.T) {
	watchdog(t)
	h := vethHosts(t, 1500)
	ln := listenB(t, h, nil)
	port := ln.Addr().(*Addr).Port
	// a knows b by name: what tells it b moved is the neighbour entry.
	if _, err := h.a.lookupName(context.Background(), nil, "host-b", ""); err != nil {
		t.Fatal(err)
	}
	c, s := streamPair(t, h, ln)
	defer c.Close()
	defer s.Close()
	cr, sr := readErr(c), readErr(s)
	newMAC := net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x0b, 0x0b}
	start := time.Now()
	if err := sys.SetLinkAddr(h.pair.NetnsB, h.bIf, newMAC); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		name string
		ch   <-chan error
		want error
	}{{"b", sr, syscall.ENETRESET}, {"a", cr, syscall.ECONNRESET}} {
		err := waitErr(t, x.name+" Read", x.ch)
		wantOpError(t, err, "read", x.want)
		if d := time.Since(start); d > time.Second {
			t.Fatalf("%s failed %v after the MAC changed", x.name, d)
		}
		t.Logf("%s: %v after the MAC changed: %v", x.name, time.Since(start).Round(time.Microsecond), err)
	}
	// The RESET from the old address came first; b's re-announce from the
	// new one follows.
	for deadline := time.Now().Add(time.Second); ; time.Sleep(5 * time.Millisecond) {
		n := waitNeighbor(t, h.a, "host-b", true, 0)
		if n.HardwareAddr.String() == newMAC.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a's table has %v for host-b, want %v", n.HardwareAddr, newMAC)
		}
	}
	go func() {
		if s, err := ln.AcceptMyproto(); err == nil {
			io.Copy(s, s)
			s.Close()
		}
	}()
	c2, err := h.a.dial(context.Background(), &Dialer{Timeout: 5 * time.Second}, "myproto", fmt.Sprintf("host-b:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if c2.RemoteAddr().(*Addr).HardwareAddr.String() != newMAC.String() {
		t.Fatalf("dialled %v", c2.RemoteAddr())
	}
	c2.Write([]byte("ping"))
	b := make([]byte, 4)
	if _, err := io.ReadFull(c2, b); err != nil || string(b) != "ping" {
		t.Fatalf("echo at the new address: %q %v", b, err)
	}
}

// TestIntegrationLinkResync checks the path taken when link events were
// lost (ENOBUFS): reading the interfaces' state fails the connections of a
// link that went down unseen, and brings the endpoint back when it is up.
func TestIntegrationLinkResync(t *testing.T) {
	watchdog(t)
	h := vethHosts(t, 1500)
	c, s := streamPair(t, h, listenB(t, h, nil))
	defer c.Close()
	defer s.Close()
	// A socket that keeps a's endpoint open after the connection fails.
	pc, err := h.a.listenPacket("myproto", h.aIf+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ep := h.a.endpointsSnapshot()[0]
	// Stop a's watcher, so only the resync can tell a about the change.
	h.a.mu.Lock()
	h.a.stopWatchingLocked()
	h.a.mu.Unlock()
	ch := readErr(c)
	testenv.SetLinkUp(t, nil, h.aIf, false)
	wantBlocked(t, "Read", ch)
	h.a.resyncLinks()
	wantOpError(t, waitErr(t, "Read", ch), "read", syscall.ENETDOWN)
	if !ep.down.Load() {
		t.Fatal("the endpoint is not marked down")
	}
	testenv.SetLinkUp(t, nil, h.aIf, true)
	deadline := time.Now().Add(5 * time.Second)
	for h.a.resyncLinks(); ep.down.Load(); h.a.resyncLinks() {
		if time.Now().After(deadline) {
			t.Fatal("the resync never saw the link come back")
		}
		time.Sleep(10 * time.Millisecond) // carrier comes back a little later
	}
}
