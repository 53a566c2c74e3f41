package myproto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/myproto/myproto/internal/link"
	"github.com/myproto/myproto/internal/memlink"
	"github.com/myproto/myproto/internal/sys"
	"github.com/myproto/myproto/internal/testenv"
)

func TestValidName(t *testing.T) {
	for _, s := range []string{"a", "node-b", "x1", "1a", "a-1", strings.Repeat("a", 63)} {
		if !validName(s) {
			t.Errorf("validName(%q) = false", s)
		}
	}
	for _, s := range []string{"", "-a", "a-", "A", "a.b", "a_b", "123", "1-2", strings.Repeat("a", 64), "é"} {
		if validName(s) {
			t.Errorf("validName(%q) = true", s)
		}
	}
	if n, err := canonicalName("Node-B"); err != nil || n != "node-b" {
		t.Errorf("canonicalName(Node-B) = %q, %v", n, err)
	}
	var ae *net.AddrError
	if _, err := canonicalName("no_good"); !errors.As(err, &ae) {
		t.Errorf("canonicalName(no_good): %v, want *net.AddrError", err)
	}
	if _, err := stackNames(&Config{Name: "bad name"}); !errors.As(err, &ae) {
		t.Errorf("a bad Config.Name: %v, want *net.AddrError", err)
	}
	if _, err := stackNames(&Config{Name: "ok", Services: []string{"also_bad"}}); !errors.As(err, &ae) {
		t.Errorf("a bad service name: %v, want *net.AddrError", err)
	}
	t.Setenv("MYPROTO_NAME", "From-Env")
	if n, err := stackNames(&Config{}); err != nil || n.list[0] != "from-env" {
		t.Errorf("MYPROTO_NAME: %v, %v", n.list, err)
	}
}

func TestDiscWire(t *testing.T) {
	for _, m := range []discMsg{
		{op: discSolicit, flags: discFlagProbe, nonce: 7, nodeID: 1, mtu: 1500, lifetime: 60000, name: "node-b"},
		{op: discSolicit, nonce: 8, target: [6]byte{2, 0, 0, 0, 0, 1}},
		{op: discAdvertise, nonce: 9, nodeID: ^uint64(0), mtu: 9000, lifetime: 1, name: strings.Repeat("z", 63)},
		{op: discAnnounce, name: "a"},
		{op: discGoodbye, name: "a"},
	} {
		b := make([]byte, discFixedLen+maxNameLen)
		n := marshalDisc(b, &m)
		var got discMsg
		if !parseDisc(b[:n], m.nonce, &got) {
			t.Fatalf("%+v does not parse back", m)
		}
		if diff := cmp.Diff(m, got, cmp.AllowUnexported(discMsg{})); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
		// Every truncation and every bad op is refused.
		for i := range n {
			if parseDisc(b[:i], 0, &got) {
				t.Errorf("%d of %d bytes parsed", i, n)
			}
		}
	}
	bad := func(f func(b []byte)) bool {
		b := make([]byte, discFixedLen+maxNameLen)
		n := marshalDisc(b, &discMsg{op: discAnnounce, name: "ok"})
		f(b)
		var m discMsg
		return !parseDisc(b[:n], 0, &m)
	}
	for name, f := range map[string]func([]byte){
		"op 0":            func(b []byte) { b[0] = 0 },
		"op 5":            func(b []byte) { b[0] = 5 },
		"reserved":        func(b []byte) { b[3] = 1 },
		"upper case name": func(b []byte) { b[discFixedLen] = 'O' },
		"empty name":      func(b []byte) { b[26] = 0 },
	} {
		if !bad(f) {
			t.Errorf("%s accepted", name)
		}
	}
}

// FuzzParseDisc feeds garbage to the discovery decoder: no panic, and what
// parses marshals back to the same bytes.
func FuzzParseDisc(f *testing.F) {
	b := make([]byte, discFixedLen+maxNameLen)
	f.Add(b[:marshalDisc(b, &discMsg{op: discAnnounce, name: "node-b", mtu: 1500})])
	f.Fuzz(func(t *testing.T, body []byte) {
		var m discMsg
		if !parseDisc(body, 0, &m) {
			return
		}
		out := make([]byte, discFixedLen+maxNameLen)
		if n := marshalDisc(out, &m); string(out[:n]) != string(body) {
			t.Fatalf("re-marshalled % x, parsed % x", out[:n], body)
		}
	})
}

// namedHosts are the test hosts with a listener open on b, so b has claimed
// its name, and host a's address for b's name.
func waitNeighbor(t *testing.T, s *stack, name string, present bool, within time.Duration) Neighbor {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, n := range s.neighbors() {
			if n.Name == name && present {
				return n
			}
		}
		if !present {
			found := false
			for _, n := range s.neighbors() {
				found = found || n.Name == name
			}
			if !found {
				return Neighbor{}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("neighbour %q present=%v not reached within %v; table %+v", name, present, within, s.neighbors())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDiscoveryDialByName resolves b's name from a and carries an HTTP
// request to a server on b, dialed by name.
func TestDiscoveryDialByName(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		ln := listenB(t, h, nil)
		port := ln.Addr().(*Addr).Port
		a, err := h.a.lookupName(context.Background(), nil, "HOST-B", "")
		if err != nil {
			t.Fatal(err)
		}
		if a.HardwareAddr.String() != h.bMAC.String() || a.Zone != h.aIf {
			t.Fatalf("host-b resolved to %v, want %v on %s", a, h.bMAC, h.aIf)
		}
		names, err := h.a.lookupAddr(context.Background(), nil, h.bMAC)
		if err != nil || len(names) != 1 || names[0] != "host-b" {
			t.Fatalf("reverse lookup of %v: %v, %v", h.bMAC, names, err)
		}

		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello %s from host-b", r.URL.Path)
		})}
		go srv.Serve(ln)
		defer srv.Close()
		tr := &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			// The URL's host is the myproto address, name and port.
			return h.a.dial(ctx, &Dialer{}, "myproto", addr)
		}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(fmt.Sprintf("http://host-b:%d/x", port))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "hello /x from host-b" {
			t.Fatalf("body %q", body)
		}
		// The answer made a REACHABLE entry with b's MTU and node ID.
		n := waitNeighbor(t, h.a, "host-b", true, time.Second)
		if n.State != "REACHABLE" || n.MTU != 1500 || n.NodeID != h.b.names.nodeID || n.Interface != h.aIf {
			t.Fatalf("neighbour entry %+v", n)
		}
	})
}

// TestDiscoveryUnknownName fails fast, and in a way a user recognises.
func TestDiscoveryUnknownName(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		listenB(t, h, nil)
		r := &Resolver{Timeout: 300 * time.Millisecond}
		start := time.Now()
		_, err := h.a.lookupName(context.Background(), r, "nobody-here", "")
		d := time.Since(start)
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound || de.Name != "nobody-here" {
			t.Fatalf("lookup of an unknown name: %#v, want a *net.DNSError with IsNotFound", err)
		}
		if d < 300*time.Millisecond || d > time.Second {
			t.Fatalf("a 300 ms lookup took %v", d)
		}
		_, err = h.a.dial(context.Background(), &Dialer{Resolver: r}, "myproto", "nobody-here:80")
		var oe *net.OpError
		if !errors.As(err, &oe) || !errors.As(err, &de) || !de.IsNotFound {
			t.Fatalf("dial of an unknown name: %v, want a *net.OpError wrapping a not-found *net.DNSError", err)
		}
	})
}

// TestDiscoveryCancel aborts a lookup through its context.
func TestDiscoveryCancel(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) { testDiscoveryCancel(t, h) })
}

func testDiscoveryCancel(t *testing.T, h *testHosts) {
	watchdog(t)
	r := &Resolver{Timeout: time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := h.a.lookupName(ctx, r, "nobody-here", "")
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("cancelled lookup took %v", d)
	}
	var de *net.DNSError
	if !errors.Is(err, context.Canceled) || !errors.As(err, &de) {
		t.Fatalf("cancelled lookup: %v, want a *net.DNSError wrapping context.Canceled", err)
	}
	ctx, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	_, err = h.a.lookupName(ctx, r, "nobody-here", "")
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &de) || !de.IsTimeout {
		t.Fatalf("expired lookup: %v, want a timeout *net.DNSError", err)
	}
}

// TestDiscoveryAnnounceGoodbye: a station that opens the link announces
// itself into its neighbours' tables; one that leaves says goodbye.
func TestDiscoveryAnnounceGoodbye(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		pa, err := h.a.listenPacket("myproto", h.aIf+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer pa.Close()
		pb, err := h.b.listenPacket("myproto", h.bIf+":0")
		if err != nil {
			t.Fatal(err)
		}
		n := waitNeighbor(t, h.a, "host-b", true, 2*time.Second)
		if n.HardwareAddr.String() != h.bMAC.String() {
			t.Fatalf("announce made %+v", n)
		}
		waitNeighbor(t, h.b, "host-a", true, 2*time.Second)
		pb.Close()
		waitNeighbor(t, h.a, "host-b", false, time.Second)
	})
}

// memStack adds a host with its own stack to h's segment.
func memStack(h *testHosts, ifname string, mac net.HardwareAddr, cfg Config) *stack {
	cfg.EtherType = DefaultEtherType
	return newStack(cfg, &memProvider{seg: h.seg, name: ifname, mac: mac, mtu: 1500, host: newMemHost()})
}

// sideStack makes a stack of its own with cfg on host a's or b's interface
// of h (a second process on that host, in effect), for tests that need
// other names or settings than h's stacks have. h's own stack on that side
// must not be used alongside: it would hold the same names.
func sideStack(h *testHosts, side string, cfg Config) *stack {
	s := newSideStack(h, side, cfg)
	if h.cleanup != nil {
		h.cleanup(func() { s.close() })
	}
	return s
}

func newSideStack(h *testHosts, side string, cfg Config) *stack {
	cfg.EtherType = DefaultEtherType
	name, mac := h.aIf, h.aMAC
	if side == "b" {
		name, mac = h.bIf, h.bMAC
	}
	if h.kind == "mem" {
		return newStack(cfg, &memProvider{seg: h.seg, name: name, mac: mac, mtu: 1500, host: newMemHost()})
	}
	if side == "b" {
		return newStack(cfg, packetProvider{ns: h.pair.NetnsB})
	}
	return newStack(cfg, packetProvider{})
}

// TestDiscoveryLifetime: entries expire unless refreshed, and a live
// station refreshes them.
func TestDiscoveryLifetime(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		const life = 300 * time.Millisecond
		c := sideStack(h, "b", Config{Name: "host-c", NameLifetime: life})
		pa, err := h.a.listenPacket("myproto", h.aIf+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer pa.Close()
		pc, err := c.listenPacket("myproto", h.bIf+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		first := waitNeighbor(t, h.a, "host-c", true, time.Second)
		time.Sleep(3 * life)
		later := waitNeighbor(t, h.a, "host-c", true, 0)
		if !later.Expires.After(first.Expires.Add(life)) {
			t.Fatalf("not refreshed: expiry %v, then %v", first.Expires, later.Expires)
		}
		// Silence c, as a crash would: no goodbye, no refresh.
		c.silence()
		start := time.Now()
		waitNeighbor(t, h.a, "host-c", false, 2*life)
		t.Logf("entry gone %v after the station went silent (lifetime %v)", time.Since(start).Round(time.Millisecond), life)
	})
}

// silence stops every endpoint's discovery without a goodbye, as a crashed
// process would.
func (s *stack) silence() {
	for _, ep := range s.endpointsSnapshot() {
		d := ep.disc
		d.mu.Lock()
		d.closed = true
		if d.timer != nil {
			d.timer.Stop()
		}
		d.mu.Unlock()
	}
}

// TestDiscoveryConflict: a second station that wants a name another holds
// is told, and gives it up; the holder keeps answering.
func TestDiscoveryConflict(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		conflicts := make(chan *NameConflictError, 4)
		report := func(e *NameConflictError) { conflicts <- e }
		first := sideStack(h, "a", Config{Name: "dup", OnNameConflict: report})
		second := sideStack(h, "b", Config{Name: "dup", Services: []string{"other"}, OnNameConflict: report})
		p1, err := first.listenPacket("myproto", h.aIf+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer p1.Close()
		time.Sleep(2 * probeWait) // first has claimed it
		p2, err := second.listenPacket("myproto", h.bIf+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer p2.Close()
		select {
		case e := <-conflicts:
			if e.Name != "dup" || e.Kept || e.Holder.String() != h.aMAC.String() || e.Interface != h.bIf {
				t.Fatalf("conflict report %+v: %v", e, e)
			}
			t.Log(e)
		case <-time.After(2 * time.Second):
			t.Fatal("the second claimant was not told")
		}
		time.Sleep(2 * probeWait)
		// The holder still answers for it; the loser keeps its other name.
		a, err := second.lookupName(context.Background(), nil, "dup", "")
		if err != nil || a.HardwareAddr.String() != h.aMAC.String() {
			t.Fatalf("dup resolves to %v, %v; want the first holder", a, err)
		}
		a, err = first.lookupName(context.Background(), nil, "other", "")
		if err != nil || a.HardwareAddr.String() != h.bMAC.String() {
			t.Fatalf("other resolves to %v, %v; want the second station", a, err)
		}
		select {
		case e := <-conflicts:
			t.Fatalf("unexpected second report %v", e)
		default:
		}
	})
}

// TestDiscoveryPeerRestart: when a neighbour comes back with a new node ID,
// connections to it fail at once rather than at the user timeout: dialled
// by name, and dialled by MAC by a client that never heard the neighbour
// announce itself (its table has no entry; the restarted stack's announce
// makes the first).
func TestDiscoveryPeerRestart(t *testing.T) {
	t.Run("by name", func(t *testing.T) { testPeerRestart(t, false) })
	t.Run("by MAC", func(t *testing.T) { testPeerRestart(t, true) })
}

func testPeerRestart(t *testing.T, byMAC bool) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		ln := listenB(t, h, nil)
		port := ln.Addr().(*Addr).Port
		go func() {
			s, err := ln.AcceptMyproto()
			if err == nil {
				defer s.Close()
				io.Copy(io.Discard, s)
			}
		}()
		// a stays on the link after its connection fails, to hear b again.
		keep, err := h.a.listenPacket("myproto", h.aIf+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer keep.Close()
		addr := fmt.Sprintf("host-b:%d", port)
		if byMAC {
			addr = h.addrB(port).String()
		}
		c, err := h.a.dial(context.Background(), &Dialer{}, "myproto", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if byMAC {
			// Quiet: the handshake's last packet acknowledged, nothing in
			// flight that the new stack could answer.
			time.Sleep(300 * time.Millisecond)
		}
		ch := readErr(c)
		// b's process dies: no goodbye, no FIN, no RST; the kernel frees
		// its name and sockets.
		h.b.crash()
		if byMAC {
			// a has no entry for b's name when b comes back: it never
			// heard it (it started later) or forgot it.
			for _, ep := range h.a.endpointsSnapshot() {
				ep.disc.table.remove("host-b", [6]byte(h.bMAC))
			}
		}
		// It comes back: a new stack on the same interface.
		var b2 *stack
		if h.kind == "mem" {
			host := h.b.baseProvider().(*memProvider).host
			if byMAC {
				// A new host: nobody there knew the old stack, as when
				// a host's only process restarts.
				host = newMemHost()
			}
			b2 = newStack(Config{EtherType: DefaultEtherType, Name: "host-b"},
				&memProvider{seg: h.seg, name: "mem1", mac: h.bMAC, mtu: 1500, host: host})
		} else {
			b2 = newStack(Config{Name: "host-b"}, packetProvider{ns: h.pair.NetnsB})
			h.cleanup(func() { b2.close() })
		}
		start := time.Now()
		p, err := b2.listenPacket("myproto", h.bIf+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		err = waitErr(t, "Read", ch)
		d := time.Since(start)
		wantOpError(t, err, "read", syscall.ECONNRESET)
		if d > time.Second {
			t.Fatalf("the connection failed %v after the peer came back", d)
		}
		t.Logf("connection failed %v after the restarted peer opened the link: %v", d.Round(time.Millisecond), err)
		// The restarted stack's announce replaces the entry.
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			n := waitNeighbor(t, h.a, "host-b", true, 0)
			if n.NodeID == b2.names.nodeID {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("table has node ID %x, want the new %x", n.NodeID, b2.names.nodeID)
			}
		}
	})
}

// crash stops s as a killed process stops: its links close without a word
// on the wire, and the kernel frees its host-wide names and ports and closes
// its agent connections, which the host's other stacks see.
func (s *stack) crash() {
	s.silence()
	for _, ep := range s.endpointsSnapshot() {
		ep.l.Close()
		ep.ctl.Close()
	}
	s.mu.Lock()
	for n, c := range s.claims {
		c.Close()
		delete(s.claims, n)
	}
	for _, b := range s.ports {
		if b.res != nil {
			b.res.Close()
			b.res = nil
		}
	}
	if h := s.host; h != nil {
		s.host = nil
		h.mu.Lock()
		h.stopped = true
		if h.conn != nil {
			h.conn.Close()
		}
		if h.ln != nil {
			h.ln.Close()
			for m := range h.members {
				m.c.Close()
			}
		}
		h.mu.Unlock()
	}
	s.mu.Unlock()
}

// TestDiscoveryFlood sends 10,000 solicits a second, and as many announces
// of made-up names, at a station: it answers no more than its rate limit,
// and its table and heap stay bounded.
func TestDiscoveryFlood(t *testing.T) {
	onBothLinks(t, testDiscoveryFlood)
}

func testDiscoveryFlood(t *testing.T, h *testHosts) {
	testenv.Watchdog(t, 2*time.Minute)
	pb, err := h.b.listenPacket("myproto", h.bIf+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	time.Sleep(2 * probeWait) // b has claimed host-b

	// The attacker: a third station on the segment, or on veth a raw
	// packet socket on a's interface.
	var evil link.Link
	evilMAC := net.HardwareAddr{2, 0, 0x5e, 0x10, 0, 0x66}
	if h.kind == "mem" {
		evil = h.seg.Attach("evil", evilMAC)
	} else {
		evilMAC = h.aMAC
		raw, err := sys.OpenPacket(h.pair.A, sys.PacketConfig{EtherType: DefaultEtherType})
		if err != nil {
			t.Fatal(err)
		}
		evil = raw
	}
	defer evil.Close()
	var answers, announces atomic.Int64
	go func() {
		ms := make([]link.Message, 16)
		for i := range ms {
			ms[i].Buf = make([]byte, 1600)
		}
		for {
			n, err := evil.ReadBatch(ms)
			if err != nil {
				return
			}
			for _, m := range ms[:n] {
				hd, body, r := parseFrame(m.Buf[:m.N], DefaultEtherType)
				if r != dropNone || hd.typ != typeDiscovery || len(body) == 0 || hd.src == [6]byte(evilMAC) {
					continue
				}
				switch discOp(body[0]) {
				case discAdvertise:
					answers.Add(1)
				case discAnnounce:
					announces.Add(1)
				}
			}
		}
	}()
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	frame := func(op discOp, name string, nonce uint64) []byte {
		hd := header{etherType: DefaultEtherType, typ: typeDiscovery, connID: nonce}
		copy(hd.dst[:], broadcastMAC[:])
		copy(hd.src[:], evilMAC)
		b := make([]byte, discFixedLen+maxNameLen)
		n := marshalDisc(b, &discMsg{op: op, nonce: nonce, nodeID: 666, mtu: 1500, lifetime: 60000, name: name})
		return buildFrame(&hd, b[:n])
	}
	const perSecond, seconds = 10_000, 2
	start := time.Now()
	sent := 0
	// A real lookup in the middle of the flood still finds host-b: the
	// flood spends the budget for unicast answers, and b announces the
	// name instead, which every pending lookup takes.
	type lookupResult struct {
		a   *Addr
		err error
		d   time.Duration
	}
	looked := make(chan lookupResult, 1)
	for i := 0; i < perSecond*seconds; i += 100 {
		if i == perSecond/2 {
			go func() {
				// Forget host-b, heard in b's own announces, so the
				// lookup must ask the link.
				h.a.mu.Lock()
				for _, tb := range h.a.tables {
					tb.remove("host-b", [6]byte(h.bMAC))
				}
				h.a.mu.Unlock()
				t0 := time.Now()
				a, err := h.a.lookupName(context.Background(), &Resolver{Timeout: 1500 * time.Millisecond}, "host-b", "")
				looked <- lookupResult{a, err, time.Since(t0)}
			}()
		}
		ms := make([]link.Message, 0, 200)
		for j := range 100 {
			f := frame(discSolicit, "host-b", uint64(i+j))
			ms = append(ms, link.Message{Buf: f, N: len(f)})
			f = frame(discAnnounce, fmt.Sprintf("fake-%d", i+j), uint64(i+j))
			ms = append(ms, link.Message{Buf: f, N: len(f)})
		}
		evil.WriteBatch(ms)
		sent += 100
		// Keep to the rate: 100 solicits every 10 ms.
		if d := time.Until(start.Add(time.Duration(sent) * time.Second / perSecond)); d > 0 {
			time.Sleep(d)
		}
	}
	elapsed := time.Since(start)
	if r := <-looked; r.err != nil || r.a.HardwareAddr.String() != h.bMAC.String() {
		t.Errorf("during the flood, host-b resolved to %v, %v after %v; want %v", r.a, r.err, r.d.Round(time.Millisecond), h.bMAC)
	} else {
		t.Logf("during the flood, host-b resolved in %v", r.d.Round(time.Millisecond))
	}
	time.Sleep(50 * time.Millisecond)
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	got := answers.Load()
	// The limiter may answer until the stack has read the last solicit,
	// which under -race is well after the last was sent: the window is
	// from the first solicit to now.
	limit := int64(answerBurst + answerRate*time.Since(start).Seconds() + 1)
	tableLen := 0
	h.b.mu.Lock()
	for _, tb := range h.b.tables {
		tableLen += tb.len()
	}
	h.b.mu.Unlock()
	t.Logf("%d solicits and %d announces in %v: %d answers (limit %d) and %d announces of host-b, table %d entries, heap %+.1f MiB",
		sent, sent, elapsed.Round(time.Millisecond), got, limit, announces.Load(), tableLen,
		float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/(1<<20))
	if got > limit || got < answerRate/2 {
		t.Errorf("%d answers to %d solicits in %v; want the rate limit's %d or a little under", got, sent, elapsed, limit)
	}
	// Announces instead of answers: one per floodAnnounceEvery, and the
	// schedule's few.
	if got, limit := announces.Load(), int64(time.Since(start)/floodAnnounceEvery)+8; got > limit {
		t.Errorf("%d announces during the flood; want at most %d", got, limit)
	}
	if tableLen > maxNeighbors/2 {
		t.Errorf("announces of made-up names grew the table to %d entries", tableLen)
	}
	// A real neighbour can still get in and be found.
	pa, err := h.a.listenPacket("myproto", h.aIf+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	// The flood may still be queued on both stacks' control paths (under
	// -race on a busy machine, for seconds): give the lookup longer than
	// its default half second.
	if a, err := h.b.lookupName(context.Background(), &Resolver{Timeout: 10 * time.Second}, "host-a", ""); err != nil || a.HardwareAddr.String() != h.aMAC.String() {
		t.Fatalf("after the flood, host-a resolves to %v, %v", a, err)
	}
}

// TestResolverStaticAndServices: static entries and hosts files answer
// without a frame on the wire; service names resolve like node names.
func TestResolverStaticAndServices(t *testing.T) {
	watchdog(t)
	h := memHosts(t, memlink.Config{Seed: 1})
	svc := memStack(h, "mem2", net.HardwareAddr{2, 0, 0x5e, 0x10, 0, 3}, Config{Name: "host-c", Services: []string{"Printer", "web"}})
	pc, err := svc.listenPacket("myproto", "mem2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()

	path := t.TempDir() + "/hosts"
	hosts := "# myproto hosts\n02:00:5e:10:00:aa  file-one file-alias  # trailing comment\nnot-a-mac bad\n02:00:5e:10:00:bb\tFile-Two\n"
	if err := os.WriteFile(path, []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &Resolver{
		Timeout:   300 * time.Millisecond,
		Hosts:     map[string]net.HardwareAddr{"Static-X": {2, 0, 0x5e, 0x10, 0, 0xcc}},
		HostsFile: path,
	}
	sent := h.seg.Stats().Sent
	for name, want := range map[string]string{
		"static-x":   "02:00:5e:10:00:cc",
		"file-one":   "02:00:5e:10:00:aa",
		"FILE-ALIAS": "02:00:5e:10:00:aa",
		"file-two":   "02:00:5e:10:00:bb",
	} {
		a, err := h.a.lookupName(context.Background(), r, name, "")
		if err != nil || a.HardwareAddr.String() != want {
			t.Errorf("LookupName(%q) = %v, %v; want %s", name, a, err, want)
		}
	}
	names, err := h.a.lookupAddr(context.Background(), r, net.HardwareAddr{2, 0, 0x5e, 0x10, 0, 0xaa})
	if err != nil || !cmp.Equal(names, []string{"file-alias", "file-one"}) {
		t.Errorf("LookupAddr from the hosts file: %v, %v", names, err)
	}
	if got := h.seg.Stats().Sent - sent; got > 10 {
		// Opening a's endpoint announces a's own name; nothing else goes out.
		t.Errorf("%d frames sent for static lookups", got)
	}

	time.Sleep(2 * probeWait) // host-c has claimed its names
	for _, name := range []string{"printer", "web", "host-c"} {
		a, err := h.a.lookupName(context.Background(), r, name, "")
		if err != nil || a.HardwareAddr.String() != "02:00:5e:10:00:03" {
			t.Errorf("LookupName(%q) = %v, %v; want host-c's MAC", name, a, err)
		}
	}
	names, err = h.b.lookupAddr(context.Background(), r, net.HardwareAddr{2, 0, 0x5e, 0x10, 0, 3})
	if err != nil || !cmp.Equal(names, []string{"host-c", "printer", "web"}) {
		t.Errorf("reverse lookup of host-c: %v, %v", names, err)
	}
	r.HostsFile = t.TempDir() + "/missing"
	if _, err := h.a.lookupName(context.Background(), r, "anything", ""); err == nil {
		t.Error("a missing hosts file went unreported")
	}
}

// TestDiscoverySimultaneousClaim starts two stations that want one name at
// the same instant, and, on the in-memory link, two that both claimed it
// while they could not hear each other (a partition that heals): each time
// exactly one keeps it, the other is told, and they do not trade announces
// forever.
func TestDiscoverySimultaneousClaim(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		partitions := []bool{false}
		if h.kind == "mem" {
			partitions = append(partitions, true)
		}
		for _, partitioned := range partitions {
			reports := make(chan *NameConflictError, 16)
			report := func(e *NameConflictError) { reports <- e }
			// A short lifetime: refreshes every 100 ms find the conflict fast.
			cfg := Config{Name: "twin", NameLifetime: 300 * time.Millisecond, OnNameConflict: report}
			x, y := sideStack(h, "a", cfg), sideStack(h, "b", cfg)
			if partitioned {
				h.seg.SetImpairments(memlink.Impairments{Loss: 1})
			}
			var px, py *PacketConn
			done := make(chan error, 2)
			go func() { var err error; px, err = x.listenPacket("myproto", h.aIf+":0"); done <- err }()
			go func() { var err error; py, err = y.listenPacket("myproto", h.bIf+":0"); done <- err }()
			for range 2 {
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
			if partitioned {
				time.Sleep(2 * probeWait) // both have claimed it
				h.seg.SetImpairments(memlink.Impairments{})
			}
			time.Sleep(time.Second)
			var kept, gaveUp int
			for len(reports) > 0 {
				e := <-reports
				t.Logf("partitioned=%v: %v", partitioned, e)
				if e.Kept {
					kept++
				} else {
					gaveUp++
				}
			}
			xs, ys := x.stats()[0].FramesOut, y.stats()[0].FramesOut
			// Each holder may defend once before one yields.
			if gaveUp != 1 || kept > 2 {
				t.Errorf("partitioned=%v: %d gave up and %d kept; want exactly one to give up", partitioned, gaveUp, kept)
			}
			if hx, hy := x.holds(h.aIf, "twin"), y.holds(h.bIf, "twin"); hx == hy {
				t.Errorf("partitioned=%v: station a holds twin: %v, station b: %v; want exactly one", partitioned, hx, hy)
			}
			// Probes, announces and refreshes for 1.3 s at most, not a storm.
			if xs+ys > 60 {
				t.Errorf("partitioned=%v: %d + %d frames sent: the claimants trade announces", partitioned, xs, ys)
			}
			px.Close()
			py.Close()
		}
	})
}

// holds reports whether s has claimed name on the interface.
func (s *stack) holds(ifname, name string) bool {
	for _, ep := range s.endpointsSnapshot() {
		if ep.name == ifname {
			ep.disc.mu.Lock()
			st, ok := ep.disc.names[name]
			ep.disc.mu.Unlock()
			return ok && st == nameClaimed
		}
	}
	return false
}

// TestDiscoveryCrossingDefences: a holder that defended its name keeps it
// against a second announce within crossingWindow if its MAC is the lower
// one (that announce may be the other holder's defence, sent before ours
// reached it), and yields otherwise, as it does to any second conflict
// later within defendInterval. The other station is a raw one on the
// segment, whose announces arrive exactly when the test says.
func TestDiscoveryCrossingDefences(t *testing.T) {
	watchdog(t)
	h := memHosts(t, memlink.Config{Seed: 1})
	// b is 02:00:5e:10:00:02; the other holder's MAC is above or below.
	above := net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x99}
	below := net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x00}
	for _, tc := range []struct {
		name  string
		other net.HardwareAddr
		pause time.Duration // between the two announces
		keeps bool
	}{
		{"higher MAC, crossing", above, 0, true},
		{"lower MAC, crossing", below, 0, false},
		{"higher MAC, after the window", above, crossingWindow + 200*time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reports := make(chan *NameConflictError, 16)
			cfg := Config{Name: "twin", OnNameConflict: func(e *NameConflictError) { reports <- e }}
			b := sideStack(h, "b", cfg)
			defer b.close()
			pb, err := b.listenPacket("myproto", h.bIf+":0")
			if err != nil {
				t.Fatal(err)
			}
			defer pb.Close()
			time.Sleep(2 * probeWait) // b has claimed twin
			if !b.holds(h.bIf, "twin") {
				t.Fatal("b has not claimed twin")
			}
			other := h.seg.Attach(fmt.Sprintf("other-%x", tc.other[5]), tc.other)
			defer other.Close()
			announce := func() {
				f := discFrame(tc.other, net.HardwareAddr(broadcastMAC[:]),
					&discMsg{op: discAnnounce, nodeID: 77, mtu: 1500, lifetime: 60_000, name: "twin"})
				if _, err := other.WriteBatch([]link.Message{{Buf: f, N: len(f)}}); err != nil {
					t.Fatal(err)
				}
			}
			announce()
			if e := <-reports; !e.Kept {
				t.Fatalf("first conflict: %v; want b to defend", e)
			}
			time.Sleep(tc.pause)
			announce()
			time.Sleep(100 * time.Millisecond)
			if got := b.holds(h.bIf, "twin"); got != tc.keeps {
				t.Errorf("after the second announce b holds twin: %v, want %v", got, tc.keeps)
			}
			select {
			case e := <-reports:
				if tc.keeps || e.Kept {
					t.Errorf("second conflict reported: %v", e)
				}
			default:
				if !tc.keeps {
					t.Error("b gave twin up without reporting it")
				}
			}
		})
	}
}

// discFrame builds a discovery frame from src to dst carrying m, with the
// package's own codec. m.nonce goes in the Connection ID field.
func discFrame(src, dst net.HardwareAddr, m *discMsg) []byte {
	b := make([]byte, offBody+discFixedLen+len(m.name))
	n := marshalDisc(b[offBody:], m)
	h := header{typ: typeDiscovery, etherType: DefaultEtherType, connID: m.nonce}
	copy(h.dst[:], dst)
	copy(h.src[:], src)
	return b[:marshalFrame(b, &h, n)]
}

// TestDiscoveryForgedGoneBounded: forged "gone" notices naming a live peer
// stack, with 200 connections to it. Each hint makes one of them probe,
// not all: a hint costs a frame per peer stack, however many connections
// go to it (it cost 200 here, one per connection), and none fails.
func TestDiscoveryForgedGoneBounded(t *testing.T) {
	watchdog(t)
	h := memHosts(t, memlink.Config{Seed: 1})
	ln := listenB(t, h, nil)
	const conns = 200
	var cs []*Conn
	for range conns {
		c, s := streamPair(t, h, ln)
		defer c.Close()
		defer s.Close()
		cs = append(cs, c)
	}
	framesOut := func() (n uint64) {
		for _, ep := range h.a.endpointsSnapshot() {
			n += ep.stats.framesOut.Load()
		}
		return n
	}
	time.Sleep(300 * time.Millisecond) // quiet: handshakes acknowledged
	evil := h.seg.Attach("evil-as-b", h.bMAC)
	defer evil.Close()
	before := framesOut()
	const hints = 10
	for i := range hints {
		f := discFrame(h.bMAC, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
			&discMsg{op: discGone, nonce: uint64(i + 1), nodeID: h.b.names.nodeID, mtu: 1500})
		if _, err := evil.WriteBatch([]link.Message{{Buf: f, N: len(f)}}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	sent := framesOut() - before
	t.Logf("%d forged gone notices: %d frames from the client's stack", hints, sent)
	if sent == 0 || sent > 2*hints {
		t.Errorf("%d forged gone notices drew %d frames, want one probe each (at most %d)", hints, sent, 2*hints)
	}
	for i, c := range cs {
		c.mu.Lock()
		err := c.e.Err()
		c.mu.Unlock()
		if err != nil {
			t.Fatalf("conn %d failed: %v", i, err)
		}
	}
}

// TestNeighborTableRefusals: the table knows the MACs of its entries, as
// they come, move and go, and gives each its own refusals.
func TestNeighborTableRefusals(t *testing.T) {
	tb := newNeighborTable("test0")
	now := time.Now()
	mac1, mac2 := [6]byte{2, 0, 0, 0, 0, 1}, [6]byte{2, 0, 0, 0, 0, 2}
	announce := func(name string, mac [6]byte) {
		tb.update(&discMsg{op: discAnnounce, name: name, lifetime: 60_000, mtu: 1500}, mac, now, false)
	}
	known := func(mac [6]byte) bool {
		k, _ := tb.allowRefusal(mac, now)
		return k
	}
	announce("a", mac1)
	if !known(mac1) || known(mac2) {
		t.Fatalf("after a on mac1: mac1 known %v, mac2 known %v", known(mac1), known(mac2))
	}
	// Its own bucket: the burst (less the one taken above), then none
	// until time passes.
	for i := 1; i < refuseBurst; i++ {
		if _, ok := tb.allowRefusal(mac1, now); !ok {
			t.Fatalf("refusal %d of the burst not allowed", i+1)
		}
	}
	if _, ok := tb.allowRefusal(mac1, now); ok {
		t.Fatal("a refusal beyond the burst was allowed")
	}
	if _, ok := tb.allowRefusal(mac1, now.Add(10*time.Millisecond)); !ok {
		t.Fatal("no refusal allowed 10 ms after the burst")
	}
	announce("a", mac2) // a moves
	if known(mac1) || !known(mac2) {
		t.Fatalf("after a moved to mac2: mac1 known %v, mac2 known %v", known(mac1), known(mac2))
	}
	announce("b", mac2)
	tb.remove("a", mac2)
	if !known(mac2) {
		t.Fatal("mac2 unknown while it still holds b")
	}
	tb.remove("b", mac2)
	if known(mac2) || len(tb.stations) != 0 {
		t.Fatalf("after the goodbyes: mac2 known %v, %d stations", known(mac2), len(tb.stations))
	}
	announce("c", mac1)
	tb.mu.Lock()
	tb.evictLocked(now.Add(time.Hour), false) // c has expired
	tb.mu.Unlock()
	if known(mac1) {
		t.Fatal("mac1 known after its entry expired")
	}
}
