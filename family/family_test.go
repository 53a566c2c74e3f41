package family

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fake is a Family that records what it is asked and answers with errFake
// (or, for Dial, one end of a pipe), so dispatch can be checked without
// sockets.
type fake struct {
	name string

	mu    sync.Mutex
	calls []string // "op network address"
}

var errFake = errors.New("fake family")

// ctxKey marks contexts, to check that Dial and Listen pass them through.
type ctxKey struct{}

func (f *fake) Name() string { return f.name }

func (f *fake) record(ctx context.Context, op, network, address string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("%s %s %s %v", op, network, address, ctx.Value(ctxKey{})))
}

func (f *fake) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	f.record(ctx, "dial", network, address)
	c1, c2 := net.Pipe()
	c2.Close()
	return c1, nil
}

func (f *fake) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	f.record(ctx, "listen", network, address)
	return nil, errFake
}

func (f *fake) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	f.record(ctx, "listenpacket", network, address)
	return nil, errFake
}

// names makes family names unique across tests and -count runs: the
// registry is global and has no Unregister.
var names atomic.Int64

// register registers a new fake family with a unique name and removes it
// when the test ends, so that tests do not see each other's families.
func register(t testing.TB, prefix string) *fake {
	t.Helper()
	f := &fake{name: fmt.Sprintf("%s-%d", prefix, names.Add(1))}
	Register(f)
	t.Cleanup(func() { unregister(f.name) })
	return f
}

// unregister is for tests only: a family, once registered, stays.
func unregister(name string) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	delete(registry.families, name)
}

// mustPanic fails unless fn panics.
func mustPanic(t *testing.T, what string, fn func()) {
	t.Helper()
	defer func() {
		t.Helper()
		if recover() == nil {
			t.Errorf("%s did not panic", what)
		}
	}()
	fn()
}

func TestDispatch(t *testing.T) {
	f := register(t, "fake")
	if got, ok := Lookup(f.name); !ok || got != f {
		t.Fatalf("Lookup(%q) = %v, %v; want the registered family", f.name, got, ok)
	}
	ctx := context.WithValue(t.Context(), ctxKey{}, "marked")

	c, err := Dial(ctx, f.name, "[02:00:5e:10:00:01]:80")
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	c.Close()
	if _, err := Listen(ctx, f.name, ":80"); err != errFake {
		t.Errorf("Listen error = %v, want the family's own %v", err, errFake)
	}
	if _, err := ListenPacket(ctx, f.name, "eth0:7"); err != errFake {
		t.Errorf("ListenPacket error = %v, want the family's own %v", err, errFake)
	}

	want := []string{
		"dial " + f.name + " [02:00:5e:10:00:01]:80 marked",
		"listen " + f.name + " :80 marked",
		"listenpacket " + f.name + " eth0:7 marked",
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Equal(f.calls, want) {
		t.Errorf("calls:\n got %q\nwant %q", f.calls, want)
	}
}

func TestRegisterPanics(t *testing.T) {
	mustPanic(t, "Register(nil)", func() { Register(nil) })
	mustPanic(t, `Register("")`, func() { Register(&fake{}) })
	for _, name := range []string{
		"tcp", "tcp4", "tcp6", "udp", "udp4", "udp6",
		"unix", "unixgram", "unixpacket",
		"ip", "ip4", "ip6", "ip:1", "ip4:icmp", "ip6:ipv6-icmp", "ip:",
	} {
		mustPanic(t, fmt.Sprintf("Register(%q)", name), func() { Register(&fake{name: name}) })
		if _, ok := Lookup(name); ok {
			t.Errorf("Lookup(%q) found a family after a refused Register", name)
		}
	}

	// A duplicate panics and leaves the first registration in place.
	f := register(t, "dup")
	mustPanic(t, "a duplicate Register", func() { Register(&fake{name: f.name}) })
	if got, _ := Lookup(f.name); got != f {
		t.Errorf("after a duplicate Register, Lookup(%q) = %v, want the first family", f.name, got)
	}
}

func TestIsNetNetwork(t *testing.T) {
	for _, name := range []string{"myproto", "tcp7", "udp:1", "TCP", "iP4:1", "ipx", "unix:", " tcp", ""} {
		if isNetNetwork(name) {
			t.Errorf("isNetNetwork(%q) = true, want false", name)
		}
	}
}

// TestFallbackTCP checks that package net's networks work through the
// registry with nothing registered for them, on loopback.
func TestFallbackTCP(t *testing.T) {
	ctx := t.Context()
	ln, err := Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer ln.Close()
	if _, ok := ln.(*net.TCPListener); !ok {
		t.Errorf("Listen returned a %T, want *net.TCPListener", ln)
	}

	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(c, c) // echo until the client's half-close
		done <- err
	}()

	c, err := Dial(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatalf("Write: %v", err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "ping" {
		t.Errorf("echo = %q, %v; want %q", got, err, "ping")
	}
	if err := <-done; err != nil {
		t.Errorf("server: %v", err)
	}
}

func TestFallbackUDP(t *testing.T) {
	ctx := t.Context()
	pc, err := ListenPacket(ctx, "udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("ListenPacket: %v", err)
	}
	defer pc.Close()
	c, err := Dial(ctx, "udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 16)
	n, from, err := pc.ReadFrom(b)
	if err != nil || string(b[:n]) != "ping" || from.String() != c.LocalAddr().String() {
		t.Errorf("ReadFrom = %q from %v, %v; want %q from %v", b[:n], from, err, "ping", c.LocalAddr())
	}
}

// TestFallbackErrors checks that package net's own errors come back unchanged
// for what it does not support, and that the context reaches it.
func TestFallbackErrors(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Dial(ctx, "tcp", "127.0.0.1:1"); !errors.Is(err, context.Canceled) {
		t.Errorf("Dial with a canceled context: %v, want context.Canceled", err)
	}
	// Package net refuses a datagram network for Listen itself.
	ln, err := Listen(t.Context(), "udp", "127.0.0.1:0")
	if ln != nil {
		ln.Close()
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "listen" || oe.Net != "udp" {
		t.Errorf(`Listen("udp") = %#v, want package net's *net.OpError`, err)
	}
}

func TestUnknownNetwork(t *testing.T) {
	const network = "nosuchnetwork"
	ctx := t.Context()
	check := func(op string, err error) {
		t.Helper()
		var oe *net.OpError
		if !errors.As(err, &oe) {
			t.Fatalf("%s error %v is %T, want *net.OpError", op, err, err)
		}
		if oe.Op != op || oe.Net != network || oe.Source != nil || oe.Addr != nil {
			t.Errorf("%s error = %#v", op, oe)
		}
		if !errors.Is(oe.Err, net.UnknownNetworkError(network)) || !strings.Contains(err.Error(), `import _ "github.com/myproto/myproto"`) {
			t.Errorf("%s error wraps %#v, want net.UnknownNetworkError(%q)", op, oe.Err, network)
		}
		if !strings.Contains(err.Error(), "unknown network "+network) {
			t.Errorf("%s error text %q does not say so", op, err)
		}
	}
	c, err := Dial(ctx, network, "x:1")
	if c != nil {
		t.Errorf("Dial returned a conn")
	}
	check("dial", err)
	ln, err := Listen(ctx, network, "x:1")
	if ln != nil {
		t.Errorf("Listen returned a listener")
	}
	check("listen", err)
	pc, err := ListenPacket(ctx, network, "x:1")
	if pc != nil {
		t.Errorf("ListenPacket returned a conn")
	}
	check("listen", err)

	if f, ok := Lookup(network); ok || f != nil {
		t.Errorf("Lookup(%q) = %v, %v", network, f, ok)
	}
	if f, ok := Lookup("tcp"); ok || f != nil {
		t.Errorf(`Lookup("tcp") = %v, %v; package net's networks are not registered`, f, ok)
	}
}

func TestNetworksSorted(t *testing.T) {
	var want []string
	for _, prefix := range []string{"zeta", "alpha", "mu", "Beta"} {
		want = append(want, register(t, prefix).name)
	}
	got := Networks()
	if !slices.IsSorted(got) {
		t.Errorf("Networks() = %q, not sorted", got)
	}
	for _, name := range want {
		if !slices.Contains(got, name) {
			t.Errorf("Networks() = %q, missing %q", got, name)
		}
	}
	// The result is the caller's to keep.
	got[0] = "changed"
	if slices.Contains(Networks(), "changed") {
		t.Error("Networks() shares its slice with the registry")
	}
}

// TestConcurrent runs Register, Lookup, Networks and Dial at once, for -race.
func TestConcurrent(t *testing.T) {
	const goroutines, each = 8, 50
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				f := register(t, "concurrent")
				if got, ok := Lookup(f.name); !ok || got != f {
					t.Errorf("Lookup(%q) = %v, %v", f.name, got, ok)
					return
				}
				if !slices.Contains(Networks(), f.name) {
					t.Errorf("Networks() lacks %q", f.name)
					return
				}
				c, err := Dial(t.Context(), f.name, ":1")
				if err != nil {
					t.Errorf("Dial: %v", err)
					return
				}
				c.Close()
			}
		})
	}
	wg.Wait()
}
