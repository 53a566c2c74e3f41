package myproto

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/nettest"

	"github.com/myproto/myproto/internal/sys"
)

// freeUDPPort returns a UDP port free on 127.0.0.1 and 127.0.0.2 a moment
// ago.
func freeUDPPort(t testing.TB) uint16 {
	t.Helper()
	for range 100 {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
		if c2, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: port}); err == nil {
			c2.Close()
			return uint16(port)
		}
	}
	t.Fatal("no free UDP port")
	return 0
}

// udpHosts returns two hosts joined by UDP bearers on the loopback
// interface, 127.0.0.1 and 127.0.0.2, each the other's peer: no privilege,
// no namespace, no Ethernet.
func udpHosts(t testing.TB, cfgs ...func(*Bearer)) *testHosts {
	t.Helper()
	port := freeUDPPort(t)
	mk := func(name, local, peer string) *stack {
		b := Bearer{Media: MediaUDP, Port: port, Local: local, Peers: []string{peer}}
		for _, f := range cfgs {
			f(&b)
		}
		s := newStack(Config{Name: name, Bearers: []Bearer{b}}, packetProvider{})
		if s.err != nil {
			t.Fatal(s.err)
		}
		t.Cleanup(func() { s.close() })
		return s
	}
	aIP, bIP := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	aMAC := sys.UDPMAC(netip.AddrPortFrom(aIP, port), port)
	bMAC := sys.UDPMAC(netip.AddrPortFrom(bIP, port), port)
	return &testHosts{
		kind: "udp",
		a:    mk("host-a", "127.0.0.1", "127.0.0.2"),
		b:    mk("host-b", "127.0.0.2", "127.0.0.1"),
		aIf:  "udp", bIf: "udp",
		aMAC: aMAC[:], bMAC: bMAC[:],
	}
}

func TestUDPBearerNettest(t *testing.T) {
	h := udpHosts(t)
	nettest.TestConn(t, makePipe(h, listenB(t, h, nil)))
}

// TestUDPBearerAddrs: a connection over a UDP bearer, dialed by IP address,
// by virtual MAC and by name, shows IP addresses at both ends.
func TestUDPBearerAddrs(t *testing.T) {
	watchdog(t)
	h := udpHosts(t)
	ln := listenB(t, h, nil)
	port := ln.Addr().(*Addr).Port
	if got, want := ln.Addr().String(), fmt.Sprintf("[127.0.0.2%%udp]:%d", port); got != want {
		t.Errorf("listener address %s, want %s", got, want)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	for _, addr := range []string{
		fmt.Sprintf("[127.0.0.2%%udp]:%d", port),
		fmt.Sprintf("127.0.0.2:%d", port),
		h.addrB(port).String(),
		fmt.Sprintf("host-b:%d", port),
	} {
		c, err := h.a.dial(t.Context(), &Dialer{Timeout: 5 * time.Second}, "myproto", addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		if got, want := c.RemoteAddr().String(), fmt.Sprintf("[127.0.0.2%%udp]:%d", port); got != want {
			t.Errorf("dial %s: remote %s, want %s", addr, got, want)
		}
		if got := c.LocalAddr().String(); !regexpMatch(`^\[127\.0\.0\.1%udp\]:\d+$`, got) {
			t.Errorf("dial %s: local %s", addr, got)
		}
		ra, err := ResolveAddr("myproto", c.RemoteAddr().String())
		if err != nil || ra.String() != c.RemoteAddr().String() {
			t.Errorf("ResolveAddr(%s) = %v, %v", c.RemoteAddr(), ra, err)
		}
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
			t.Fatalf("echo: %q %v", buf, err)
		}
		c.Close()
	}

	// Nobody listens: refused at once (the bearer's address is this
	// process's alone, so it answers for every port).
	start := time.Now()
	_, err := h.a.dial(t.Context(), &Dialer{Timeout: 5 * time.Second}, "myproto", fmt.Sprintf("127.0.0.2:%d", port+1))
	if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
		t.Errorf("dial to a closed port: %v after %v", err, time.Since(start))
	}
	// Nobody at all: the dial times out.
	_, err = h.a.dial(t.Context(), &Dialer{Timeout: 300 * time.Millisecond}, "myproto", "127.0.0.3:80")
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("dial to nobody: %v", err)
	}
}

// TestUDPBearerPacketConn: datagrams over a UDP bearer, addressed by IP.
func TestUDPBearerPacketConn(t *testing.T) {
	watchdog(t)
	h := udpHosts(t)
	pa, err := h.a.listenPacket("myproto", "udp:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	pb, err := h.b.listenPacket("myproto", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	to, err := ResolveAddr("myproto", pb.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pa.WriteTo([]byte("ping"), to); err != nil {
		t.Fatal(err)
	}
	pb.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	n, from, err := pb.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("ReadFrom: %q %v", buf[:n], err)
	}
	if from.String() != pa.LocalAddr().String() {
		t.Errorf("from %v, want %v", from, pa.LocalAddr())
	}
	if _, err := pb.WriteTo([]byte("pong"), from); err != nil {
		t.Fatal(err)
	}
	pa.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err = pa.ReadFrom(buf); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("ReadFrom: %q %v", buf[:n], err)
	}
}

// TestUDPBearerName: names resolve over a UDP bearer, through the
// configured peers; the resolved address shows the IP address.
func TestUDPBearerName(t *testing.T) {
	watchdog(t)
	h := udpHosts(t)
	// b needs an open bearer to answer: any socket opens it.
	pb, err := h.b.listenPacket("myproto", "udp:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	a, err := h.a.lookupName(ctx, &Resolver{}, "host-b", "")
	if err != nil {
		t.Fatal(err)
	}
	if a.String() != "[127.0.0.2%udp]:0" {
		t.Errorf("host-b is %v", a)
	}
	found := false
	for _, n := range h.a.neighbors() {
		if n.Name == "host-b" {
			found = true
			if n.Interface != "udp" || n.Addr.Addr() != netip.MustParseAddr("127.0.0.2") {
				t.Errorf("neighbour %+v", n)
			}
		}
	}
	if !found {
		t.Errorf("host-b is not in the table: %+v", h.a.neighbors())
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

// cmpIP lets cmp compare addresses, whose IP field has unexported fields.
var cmpIP = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

// TestParseAddressIP: the IP forms of UDP bearer stations, and what is not
// one.
func TestParseAddressIP(t *testing.T) {
	good := []struct {
		in   string
		want *Addr
		str  string // String of the result, if not in
	}{
		{"192.0.2.7:80", &Addr{IP: netip.MustParseAddr("192.0.2.7"), Port: 80}, ""},
		{"[192.0.2.7]:80", &Addr{IP: netip.MustParseAddr("192.0.2.7"), Port: 80}, "192.0.2.7:80"},
		{"[192.0.2.7%udp]:443", &Addr{IP: netip.MustParseAddr("192.0.2.7"), Port: 443, Zone: "udp"}, ""},
		{"[2001:db8::7%udp]:443", &Addr{IP: netip.MustParseAddr("2001:db8::7"), Port: 443, Zone: "udp"}, ""},
		{"[2001:db8::7]:443", &Addr{IP: netip.MustParseAddr("2001:db8::7"), Port: 443}, ""},
		{"[192.0.2.7#40000%udp1]:1", &Addr{IP: netip.MustParseAddr("192.0.2.7"), UDPPort: 40000, Port: 1, Zone: "udp1"}, ""},
		{"[2001:db8::7#40000]:1", &Addr{IP: netip.MustParseAddr("2001:db8::7"), UDPPort: 40000, Port: 1}, ""},
		{"[::ffff:192.0.2.7%udp]:9", &Addr{IP: netip.MustParseAddr("192.0.2.7"), Port: 9, Zone: "udp"}, "[192.0.2.7%udp]:9"},
		{"[fe80::1%udp]:9", &Addr{IP: netip.MustParseAddr("fe80::1"), Port: 9, Zone: "udp"}, ""},
	}
	for _, tt := range good {
		pa, err := parseAddress(tt.in)
		if err != nil {
			t.Errorf("parseAddress(%q): %v", tt.in, err)
			continue
		}
		got := &Addr{IP: pa.ip, UDPPort: pa.udpPort, Port: pa.port, Zone: pa.zone}
		if diff := cmp.Diff(tt.want, got, cmpIP); diff != "" || pa.mac != nil || pa.host != "" {
			t.Errorf("parseAddress(%q) mismatch (-want +got):\n%s", tt.in, diff)
		}
		want := tt.str
		if want == "" {
			want = tt.in
		}
		if s := got.String(); s != want {
			t.Errorf("(%q).String() = %q, want %q", tt.in, s, want)
		}
	}
	for _, tt := range []struct{ in, why string }{
		{"[192.0.2.7#%udp]:80", errInvalidUDPPort},
		{"[192.0.2.7#0]:80", errInvalidUDPPort},
		{"[192.0.2.7#70000]:80", errInvalidUDPPort},
		{"[nodeb#7]:80", errInvalidIP},
		{"[192.0.2.7%]:80", errInvalidZone},
		{"[192.0.2.7%a/b]:80", errInvalidZone},
		{"192.0.2.7:http", errInvalidPort},
		{"[02:00:5e:10:00:01:02:03]:80", errInvalidMAC}, // also an IPv6 address: a MAC first
	} {
		_, err := parseAddress(tt.in)
		checkAddrError(t, "parseAddress", tt.in, err, tt.why)
	}
	// MAC forms and names are as before.
	if pa, err := parseAddress("[02:00:5e:10:00:01%eth0]:80"); err != nil || pa.mac == nil || pa.zone != "eth0" {
		t.Errorf("MAC form: %+v %v", pa, err)
	}
	if pa, err := parseAddress("nodeb:80"); err != nil || pa.host != "nodeb" {
		t.Errorf("name: %+v %v", pa, err)
	}
}

// FuzzParseAddress checks that parseAddress never panics, keeps its
// invariants, and parses what it accepts back from its string.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{
		"192.0.2.7:80", "[192.0.2.7%udp]:443", "[2001:db8::7#40000%udp]:1", "[::ffff:1.2.3.4]:0",
		"[02:00:5e:10:00:01%eth0]:80", "eth0:80", "[a#b]:1", "[1.2.3.4#0]:1", "[fe80::1%eth0%x]:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pa, err := parseAddress(s)
		if err != nil {
			if ae, ok := errors.AsType[*net.AddrError](err); !ok || ae.Addr != s {
				t.Fatalf("parseAddress(%q) error = %#v", s, err)
			}
			return
		}
		set := 0
		for _, ok := range []bool{pa.mac != nil, pa.ip.IsValid(), pa.host != ""} {
			if ok {
				set++
			}
		}
		switch {
		case set > 1:
			t.Fatalf("parseAddress(%q) = %+v: more than one of MAC, IP and host", s, pa)
		case pa.udpPort != 0 && !pa.ip.IsValid():
			t.Fatalf("parseAddress(%q) = %+v: a UDP port without an IP address", s, pa)
		case pa.ip.Is4In6() || pa.ip.Zone() != "":
			t.Fatalf("parseAddress(%q) = %+v: IP not canonical", s, pa)
		}
		if pa.host != "" {
			return // a name: parseAddr's fuzz test covers it
		}
		again := (&Addr{HardwareAddr: pa.mac, IP: pa.ip, UDPPort: pa.udpPort, Port: pa.port, Zone: pa.zone}).String()
		pb, err := parseAddress(again)
		if err != nil {
			t.Fatalf("parseAddress(%q) ok, but its string %q: %v", s, again, err)
		}
		if pa.ip != pb.ip || pa.udpPort != pb.udpPort || pa.port != pb.port || pa.zone != pb.zone ||
			pa.mac.String() != pb.mac.String() {
			t.Fatalf("parseAddress(%q) = %+v, but parseAddress(%q) = %+v", s, pa, again, pb)
		}
	})
}

// TestUDPBearerPing: discovery echo (ping) to a UDP bearer station by IP
// address and by name.
func TestUDPBearerPing(t *testing.T) {
	watchdog(t)
	h := udpHosts(t)
	pb, err := h.b.listenPacket("myproto", "udp:0") // opens b's bearer
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	for _, to := range []string{"127.0.0.2", "[127.0.0.2%udp]", "host-b"} {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		p, err := h.a.newPinger(ctx, to, nil)
		if err != nil {
			cancel()
			t.Fatalf("ping %s: %v", to, err)
		}
		rep, err := p.Ping(ctx)
		p.Close()
		cancel()
		if err != nil || p.Addr().String() != "[127.0.0.2%udp]:0" {
			t.Fatalf("ping %s (%v): %+v, %v", to, p.Addr(), rep, err)
		}
	}
}

// TestUDPBearerSecondProcess: a second stack on an address whose bearer
// port another holds takes an ephemeral port; its connections show it
// ("#PORT"), and work both ways.
func TestUDPBearerSecondProcess(t *testing.T) {
	watchdog(t)
	h := udpHosts(t)
	ln := listenB(t, h, nil)
	// h.a holds 127.0.0.1 at the bearer port once its bearer is open.
	pa, err := h.a.listenPacket("myproto", "udp:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	port := h.a.prov.(*bearerProvider).udp[0].bearerPort
	second := newStack(Config{Name: "host-c", Bearers: []Bearer{{Media: MediaUDP, Port: port, Local: "127.0.0.1"}}}, packetProvider{})
	defer second.close()
	c := &testHosts{a: second, b: h.b, bMAC: h.bMAC, aIf: "udp", bIf: "udp"}
	info := shaTransfer(t, c, ln, fmt.Sprintf("127.0.0.2:%d", ln.Addr().(*Addr).Port), 8<<20)
	if ep := second.endpointsSnapshot(); len(ep) != 1 || ep[0].addr(0).UDPPort == 0 {
		t.Errorf("the second stack is not on an ephemeral port: %v", ep[0].addr(0))
	}
	if info.PacketsRetransmitted > 10 {
		t.Errorf("%d retransmissions", info.PacketsRetransmitted)
	}
}

// shaTransfer sends n random bytes from a to b's listener at addr and
// checks their SHA-256 on b. It returns the sender's figures.
func shaTransfer(t *testing.T, h *testHosts, ln *Listener, addr string, n int) ConnInfo {
	t.Helper()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := ln.AcceptMyproto()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		sh := sha256.New()
		m, err := io.Copy(sh, c)
		var r result
		copy(r.sum[:], sh.Sum(nil))
		r.n, r.err = m, err
		res <- r
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := h.a.dial(ctx, &Dialer{}, "myproto", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	rng := mrand.NewChaCha8([32]byte{byte(n)})
	sh := sha256.New()
	start := time.Now()
	if _, err := io.Copy(io.MultiWriter(c, sh), io.LimitReader(rng, int64(n))); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got := <-res
	elapsed := time.Since(start)
	if got.err != nil || got.n != int64(n) || !bytes.Equal(got.sum[:], sh.Sum(nil)) {
		t.Fatalf("received %d bytes, %v; SHA-256 match %v", got.n, got.err, bytes.Equal(got.sum[:], sh.Sum(nil)))
	}
	info := c.Info()
	t.Logf("%d MiB to %s (%v) in %v: %.2f Gbit/s, SHA-256 %x...", n>>20, addr, c.RemoteAddr(),
		elapsed.Round(time.Millisecond), float64(n)*8/elapsed.Seconds()/1e9, got.sum[:4])
	return info
}

// TestUDPBearerReopen: a bearer closed with its last socket opens again at
// once, however soon the next socket comes.
func TestUDPBearerReopen(t *testing.T) {
	watchdog(t)
	h := udpHosts(t)
	for i := range 50 {
		ln, err := h.b.listen(&ListenConfig{}, "myproto", "udp:0")
		if err != nil {
			t.Fatalf("listen %d: %v", i, err)
		}
		if ln.Addr().(*Addr).UDPPort != 0 {
			t.Fatalf("listen %d: on %v, not the bearer port", i, ln.Addr())
		}
		ln.Close()
	}
	ln := listenB(t, h, nil)
	shaTransfer(t, h, ln, fmt.Sprintf("127.0.0.2:%d", ln.Addr().(*Addr).Port), 1<<20)
}
