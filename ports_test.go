package myproto

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/memlink"
)

// TestSeparatePortSpaces: a datagram socket and a listener share a port
// number, as UDP and TCP do; each space still refuses a second owner.
func TestSeparatePortSpaces(t *testing.T) {
	watchdog(t)
	h := memHosts(t, memlink.Config{Seed: 1})
	addr := h.aIf + ":7"
	pc, err := h.a.listenPacket("myproto", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ln, err := h.a.listen(&ListenConfig{}, "myproto", addr)
	if err != nil {
		t.Fatalf("Listen on a port a PacketConn holds: %v", err)
	}
	defer ln.Close()
	if _, err := h.a.listenPacket("myproto", addr); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second PacketConn: %v, want EADDRINUSE", err)
	}
	if _, err := h.a.listen(&ListenConfig{}, "myproto", addr); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second Listener: %v, want EADDRINUSE", err)
	}
	// Both work: a datagram and a connection to port 7.
	pb, err := h.b.listenPacket("myproto", h.bIf+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	if _, err := pb.WriteTo([]byte("dgram"), h.addrA(7)); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	if n, _, err := pc.ReadFrom(buf); err != nil || string(buf[:n]) != "dgram" {
		t.Fatalf("ReadFrom: %q, %v", buf[:n], err)
	}
	acc := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		acc <- err
	}()
	c, err := h.b.dial(context.Background(), &Dialer{Timeout: 5 * time.Second}, "myproto", h.addrA(7).String())
	if err != nil {
		t.Fatalf("dial the listener: %v", err)
	}
	c.Close()
	if err := <-acc; err != nil {
		t.Fatal(err)
	}
}

// TestIntegrationSYNToDatagramPort: a SYN to a port only a datagram socket
// holds is refused at once.
func TestIntegrationSYNToDatagramPort(t *testing.T) {
	watchdog(t)
	h := vethHosts(t, 1500)
	pb, err := h.b.listenPacket("myproto", h.bIf+":7")
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	start := time.Now()
	_, err = h.a.dial(context.Background(), &Dialer{Timeout: 5 * time.Second}, "myproto", h.addrB(7).String())
	if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
		t.Fatalf("dial a datagram port: %v after %v, want ECONNREFUSED at once", err, time.Since(start))
	}
}

// TestIntegrationAddrInUseText: EADDRINUSE reads the same whether this
// process or another holds the port, and as package net's does.
func TestIntegrationAddrInUseText(t *testing.T) {
	watchdog(t)
	h := vethHosts(t, 1500)
	spec := h.aIf + ":4243"
	pc, err := h.a.listenPacket("myproto", spec)
	if err != nil {
		t.Fatal(err)
	}
	_, inProc := h.a.listenPacket("myproto", spec)
	pc.Close()
	startChild(t, "MYPROTO_HOLD_PORT="+spec)
	_, across := h.a.listenPacket("myproto", spec)
	for _, err := range []error{inProc, across} {
		if !errors.Is(err, syscall.EADDRINUSE) || !strings.HasSuffix(err.Error(), ": bind: address already in use") ||
			strings.Contains(err.Error(), "sys:") {
			t.Errorf("EADDRINUSE reads %q", err)
		}
	}
	if inProc == nil || across == nil || inProc.Error() != across.Error() {
		t.Errorf("in this process %q, across processes %q", inProc, across)
	}
}

// TestListenConfigListenPacket: datagram sockets take a ListenConfig, whose
// Config sets the stack up (here another EtherType, which a stream on the
// default one does not hear), and take SetWriteBuffer.
func TestListenConfigListenPacket(t *testing.T) {
	lc := &ListenConfig{Config: &Config{EtherType: 0x88b6, Name: "lc-test"}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := lc.ListenPacket(ctx, "myproto", ":0"); !errors.Is(err, context.Canceled) {
		t.Errorf("ListenPacket with a cancelled context: %v", err)
	}
	var pc net.PacketConn = &PacketConn{}
	if _, ok := pc.(interface{ SetWriteBuffer(int) error }); !ok {
		t.Error("*PacketConn has no SetWriteBuffer")
	}
	h := memHosts(t, memlink.Config{Seed: 1})
	c, err := h.a.listenPacket("myproto", h.aIf+":0")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetWriteBuffer(1 << 20); err != nil {
		t.Error(err)
	}
	if err := c.SetWriteBuffer(0); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("SetWriteBuffer(0): %v, want EINVAL", err)
	}
	c.Close()
	if err := c.SetWriteBuffer(1); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SetWriteBuffer after Close: %v", err)
	}
}
