package myproto

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/myproto/myproto/internal/memlink"
)

func TestEchoWire(t *testing.T) {
	for _, tt := range []struct {
		m    discMsg
		data string
	}{
		{discMsg{op: discEchoRequest, nonce: 7, nodeID: 1, mtu: 1500, name: "node-b"}, "abc"},
		{discMsg{op: discEchoRequest, nonce: 8, nodeID: 2, mtu: 9000}, ""},
		{discMsg{op: discEchoReply, nonce: 9, nodeID: ^uint64(0), mtu: 1, name: strings.Repeat("z", 63)}, strings.Repeat("x", 1400)},
		{discMsg{op: discEchoReply, nonce: 10}, "\x00"},
	} {
		b := marshalEcho(&tt.m, []byte(tt.data))
		var got discMsg
		data, ok := parseEcho(b, tt.m.nonce, &got)
		if !ok {
			t.Fatalf("%+v does not parse back", tt.m)
		}
		if diff := cmp.Diff(tt.m, got, cmp.AllowUnexported(discMsg{})); diff != "" || string(data) != tt.data {
			t.Errorf("round trip (-want +got):\n%s\ndata %q, want %q", diff, data, tt.data)
		}
		// A body cut inside the fixed part or the name is refused; the
		// data may be any length.
		for i := range discFixedLen + len(tt.m.name) {
			if _, ok := parseEcho(b[:i], 0, &got); ok {
				t.Errorf("%d of %d bytes parsed", i, len(b))
			}
		}
	}
	bad := func(f func(b []byte)) bool {
		b := marshalEcho(&discMsg{op: discEchoRequest, name: "ok"}, []byte("data"))
		f(b)
		var m discMsg
		_, ok := parseEcho(b, 0, &m)
		return !ok
	}
	for name, f := range map[string]func([]byte){
		"op 4":            func(b []byte) { b[0] = 4 },
		"op 7":            func(b []byte) { b[0] = 7 },
		"reserved":        func(b []byte) { b[2] = 1 },
		"upper case name": func(b []byte) { b[discFixedLen] = 'O' },
	} {
		if !bad(f) {
			t.Errorf("%s accepted", name)
		}
	}
	// Echo ops are not discovery messages: parseDisc refuses them.
	var m discMsg
	b := make([]byte, discFixedLen+maxNameLen)
	n := marshalDisc(b, &discMsg{op: discEchoRequest, name: "ok"})
	if parseDisc(b[:n], 0, &m) {
		t.Error("parseDisc accepted an echo request")
	}
}

// FuzzParseEcho: no panic, and what parses marshals back to the same bytes.
func FuzzParseEcho(f *testing.F) {
	f.Add(marshalEcho(&discMsg{op: discEchoReply, name: "node-b", mtu: 1500}, []byte("0123")))
	f.Fuzz(func(t *testing.T, body []byte) {
		var m discMsg
		data, ok := parseEcho(body, 0, &m)
		if !ok {
			return
		}
		// Flags, Lifetime and Target are ignored on receipt.
		want := append([]byte(nil), body...)
		want[1] = 0
		clear(want[16:26])
		if out := marshalEcho(&m, data); string(out) != string(want) {
			t.Fatalf("re-marshalled % x, parsed % x", out, body)
		}
	})
}

// TestPing pings host b by name and by MAC, an unknown name and a silent
// MAC, and checks the errors.
func TestPing(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		listenB(t, h, nil)
		ctx := context.Background()
		p, err := h.a.newPinger(ctx, "HOST-B", &PingConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if p.Name() != "host-b" || p.Addr().String() != (&Addr{HardwareAddr: h.bMAC, Zone: h.aIf}).String() {
			t.Fatalf("pinger for %s at %v", p.Name(), p.Addr())
		}
		for range 3 {
			r, err := p.Ping(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("reply %+v", r)
			if r.Name != "host-b" || r.NodeID != h.b.names.nodeID || r.MTU != 1500 ||
				r.Len != headerLen+discFixedLen+len("host-b")+defaultEchoSize || r.RTT <= 0 || r.RTT > time.Second ||
				r.Addr.HardwareAddr.String() != h.bMAC.String() {
				t.Fatalf("reply %+v", r)
			}
		}

		// By MAC, with and without the zone and port; the reply names b.
		addrs := []string{"[" + h.bMAC.String() + "%" + h.aIf + "]", h.bMAC.String() + "%" + h.aIf, "[" + h.bMAC.String() + "%" + h.aIf + "]:80"}
		if h.kind == "mem" {
			// The only interface: no zone needed.
			addrs = append(addrs, h.bMAC.String(), "["+h.bMAC.String()+"]:80")
		}
		for _, addr := range addrs {
			p, err := h.a.newPinger(ctx, addr, &PingConfig{Size: -1})
			if err != nil {
				t.Fatalf("%s: %v", addr, err)
			}
			r, err := p.Ping(ctx)
			p.Close()
			if err != nil || r.Name != "host-b" || r.Len != headerLen+discFixedLen+len("host-b") {
				t.Fatalf("ping %s: %+v, %v", addr, r, err)
			}
		}

		// Nobody by that name: the lookup's error.
		_, err = h.a.newPinger(ctx, "nobody-here", &PingConfig{Resolver: &Resolver{Timeout: 100 * time.Millisecond}})
		var de *net.DNSError
		var oe *net.OpError
		if !errors.As(err, &de) || !de.IsNotFound || !errors.As(err, &oe) || oe.Op != "ping" {
			t.Fatalf("ping of an unknown name: %v", err)
		}
		// Nobody at that MAC: a timeout.
		silent := &Addr{HardwareAddr: net.HardwareAddr{2, 0, 0x5e, 0x10, 0, 0x99}, Zone: h.aIf}
		p2, err := h.a.newPinger(ctx, strings.TrimSuffix(silent.String(), ":0"), &PingConfig{Timeout: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		_, err = p2.Ping(ctx)
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("ping of a silent MAC: %v, want a timeout", err)
		}
		// Cancelled, then closed.
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := p2.Ping(cctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled ping: %v", err)
		}
		p2.Close()
		if _, err := p2.Ping(ctx); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ping after Close: %v", err)
		}
		if err := p2.Close(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("second Close: %v", err)
		}

		for _, bad := range []string{"", "[]", "ff:ff:ff:ff:ff:ff", "[02:00:5e:10:00:01%]", "a/b"} {
			var ae *net.AddrError
			if _, err := h.a.newPinger(ctx, bad, nil); !errors.As(err, &ae) || ae.Addr != bad {
				t.Errorf("ping %q: %v, want a *net.AddrError for it", bad, err)
			}
		}
		if _, err := h.a.newPinger(ctx, "host-b", &PingConfig{Size: 1500}); !errors.Is(err, errTooBig) {
			t.Errorf("1500 data bytes on a 1500 MTU: %v, want EMSGSIZE", err)
		}
	})
}

// TestPingByName: a second process on b's MAC answers for its own name
// only; a request by MAC gets the first of the two answers.
func TestPingByName(t *testing.T) {
	watchdog(t)
	h := memHosts(t, memlink.Config{Seed: 1})
	listenB(t, h, nil)
	c := sideStack(h, "b", Config{Name: "host-c"})
	pc, err := c.listenPacket("myproto", h.bIf+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		id   uint64
	}{{"host-b", h.b.names.nodeID}, {"host-c", c.names.nodeID}} {
		p, err := h.a.newPinger(ctx, tt.name, nil)
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			r, err := p.Ping(ctx)
			if err != nil || r.Name != tt.name || r.NodeID != tt.id {
				t.Fatalf("ping %s: %+v, %v", tt.name, r, err)
			}
		}
		p.Close()
	}
	p, err := h.a.newPinger(ctx, h.bMAC.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if r, err := p.Ping(ctx); err != nil || (r.Name != "host-b" && r.Name != "host-c") {
		t.Fatalf("ping by MAC: %+v, %v", r, err)
	}
}

// TestPingRateLimit: a flood of echo requests gets at most the discovery
// answer rate of replies; the rest are lost, as ping -f reports.
func TestPingRateLimit(t *testing.T) {
	watchdog(t)
	h := memHosts(t, memlink.Config{Seed: 1})
	listenB(t, h, nil)
	p, err := h.a.newPinger(context.Background(), "host-b", &PingConfig{Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const n = 200
	var replies, timeouts atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range n {
		wg.Go(func() {
			_, err := p.Ping(context.Background())
			switch {
			case err == nil:
				replies.Add(1)
			case errors.Is(err, os.ErrDeadlineExceeded):
				timeouts.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	limit := int64(answerBurst + answerRate*time.Since(start).Seconds() + 1)
	t.Logf("%d requests at once: %d replies, %d lost (limit %d)", n, replies.Load(), timeouts.Load(), limit)
	// The name lookup took one of the burst: replies and advertises share it.
	if got := replies.Load(); got > limit || got < answerBurst/2 || got+timeouts.Load() != n {
		t.Errorf("%d replies, %d timeouts to %d requests; want at most %d replies and the rest lost", got, timeouts.Load(), n, limit)
	}
}

// TestQueryNeighbors: a stack that has just opened the link learns who is
// there at once, without waiting for announces.
func TestQueryNeighbors(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		listenB(t, h, nil)
		// Past b's start-up announces (the last within 150+125+250 ms),
		// so only the query can tell a about b.
		time.Sleep(700 * time.Millisecond)
		r := &Resolver{Timeout: 300 * time.Millisecond}
		start := time.Now()
		ns, err := h.a.queryNeighbors(context.Background(), r, "")
		if d := time.Since(start); d < r.Timeout || d > 2*time.Second {
			t.Errorf("a %v query took %v", r.Timeout, d)
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(ns) != 1 || ns[0].Name != "host-b" || ns[0].HardwareAddr.String() != h.bMAC.String() ||
			ns[0].Interface != h.aIf || ns[0].State != "REACHABLE" {
			t.Fatalf("query found %+v", ns)
		}
		if _, err := h.a.queryNeighbors(context.Background(), r, "no-such-if0"); err == nil {
			t.Error("a query on a missing interface succeeded")
		}
	})
}
