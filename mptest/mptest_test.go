package mptest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/myproto/myproto"
	"github.com/myproto/myproto/mptest"
)

// TestStackClose: closing a stack resets its connections, frees its ports
// at once and leaves no goroutine behind.
func TestStackClose(t *testing.T) {
	defer goleak.VerifyNone(t)
	n := mptest.NewNetwork(&mptest.Config{Seed: 2})
	srv, err := n.NewStack(&myproto.Config{Name: "server"})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := n.NewStack(&myproto.Config{Name: "client"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen("myproto", ":7")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := cli.DialContext(ctx, "myproto", "server:7")
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		readErr <- err
	}()

	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	// The server's sockets are closed; the client's connection was reset.
	if _, err := s.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write on a closed stack's connection: %v, want net.ErrClosed", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on a closed stack's listener: %v, want net.ErrClosed", err)
	}
	select {
	case err := <-readErr:
		if err == nil {
			t.Error("client Read succeeded after the server's stack closed")
		}
		t.Logf("client Read after the server's stack closed: %v", err)
	case <-time.After(5 * time.Second):
		t.Error("client Read still blocked 5s after the server's stack closed")
	}
	if _, err := srv.Listen("myproto", ":8"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Listen on a closed stack: %v, want net.ErrClosed", err)
	}
	if err := srv.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestStacksSideBySide: stacks on two EtherTypes share one network and one
// set of names, and each talks only to its own kind.
func TestStacksSideBySide(t *testing.T) {
	defer goleak.VerifyNone(t)
	n := mptest.NewNetwork(nil)
	defer n.Close()
	for _, et := range []uint16{0x88b5, 0x88b6} {
		srv, err := n.NewStack(&myproto.Config{Name: "server", EtherType: et})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := srv.Listen("myproto", ":9")
		if err != nil {
			t.Fatal(err)
		}
		banner := fmt.Sprintf("EtherType %#04x\n", et)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				io.WriteString(c, banner)
				c.Close()
			}
		}()
	}
	for _, et := range []uint16{0x88b6, 0x88b5} {
		cli, err := n.NewStack(&myproto.Config{Name: fmt.Sprintf("client-%x", et), EtherType: et})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := cli.DialContext(ctx, "myproto", "server:9")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		c.Close()
		if want := fmt.Sprintf("EtherType %#04x\n", et); err != nil || string(got) != want {
			t.Errorf("client on %#04x read %q, %v; want %q", et, got, err, want)
		}
	}
}
