package myproto

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/memlink"
	"golang.org/x/net/nettest"
)

// streamPair dials from host a to a listener on host b and returns both
// ends. Every stream test on either link goes through here.
func streamPair(t testing.TB, h *testHosts, ln *Listener) (client, server *Conn) {
	t.Helper()
	port := ln.Addr().(*Addr).Port
	type res struct {
		c   *Conn
		err error
	}
	acc := make(chan res, 1)
	go func() {
		c, err := ln.AcceptMyproto()
		acc <- res{c, err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := h.a.dial(ctx, &Dialer{}, "myproto", h.addrB(port).String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	r := <-acc
	if r.err != nil {
		client.Close()
		t.Fatalf("accept: %v", r.err)
	}
	return client, r.c
}

// listenB opens a stream listener on host b.
func listenB(t testing.TB, h *testHosts, lc *ListenConfig) *Listener {
	t.Helper()
	if lc == nil {
		lc = &ListenConfig{}
	}
	ln, err := h.b.listen(lc, "myproto", h.bIf+":0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// makePipe is the nettest.MakePipe for both links.
func makePipe(h *testHosts, ln *Listener) nettest.MakePipe {
	return func() (c1, c2 net.Conn, stop func(), err error) {
		port := ln.Addr().(*Addr).Port
		acc := make(chan *Conn, 1)
		errc := make(chan error, 1)
		go func() {
			c, err := ln.AcceptMyproto()
			if err != nil {
				errc <- err
				return
			}
			acc <- c
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a, err := h.a.dial(ctx, &Dialer{}, "myproto", h.addrB(port).String())
		if err != nil {
			return nil, nil, nil, err
		}
		select {
		case b := <-acc:
			return a, b, func() { a.Close(); b.Close() }, nil
		case err := <-errc:
			a.Close()
			return nil, nil, nil, err
		}
	}
}

func TestConnNettest(t *testing.T) {
	t.Run("mem", func(t *testing.T) {
		h := memHosts(t, memlink.Config{Seed: 1})
		nettest.TestConn(t, makePipe(h, listenB(t, h, nil)))
	})
	t.Run("veth", func(t *testing.T) {
		h := vethHosts(t, 1500)
		nettest.TestConn(t, makePipe(h, listenB(t, h, nil)))
	})
}

func TestConnEcho(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		c, s := streamPair(t, h, listenB(t, h, nil))
		defer c.Close()
		defer s.Close()
		go io.Copy(s, s)
		for i := range 100 {
			msg := []byte("hello " + strconv.Itoa(i))
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != string(msg) {
				t.Fatalf("echo %d: %q %v", i, buf, err)
			}
		}
	})
}

func TestConnRefused(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		// Host b runs a stack (it has a socket open) but nobody listens on 9.
		pc, err := h.b.listenPacket("myproto", h.bIf+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		start := time.Now()
		_, err = h.a.dial(context.Background(), &Dialer{Timeout: 10 * time.Second}, "myproto", h.addrB(9).String())
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial to a closed port: %v, want ECONNREFUSED", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("refusal took %v", d)
		}
	})
}
