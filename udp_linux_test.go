package myproto

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/myproto/myproto/internal/sys"
	"github.com/myproto/myproto/internal/testenv"
)

// The UDP bearer across a router: hosts A and B on two IP subnets, and a
// router between them that forwards IP and nothing else (testenv.NewRouted).

// peerUnprivileged, among a peer's environment, makes startPeer run it as
// a user without capabilities (see unprivilegedAttr).
const peerUnprivileged = "MYPROTO_TEST_UNPRIVILEGED=1"

// unprivilegedAttr runs a child as uid and gid 1000 in a user namespace of
// its own: no capability at all, and none over the network namespace, which
// an ancestor user namespace owns. It is what an ordinary user on any
// machine has.
func unprivilegedAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 1000, HostID: os.Geteuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 1000, HostID: os.Getegid(), Size: 1}},
		Credential:  &syscall.Credential{Uid: 1000, Gid: 1000},
	}
}

// routedHosts returns stacks on hosts A and B of a Routed topology, with
// UDP bearers only (of the given family, 4 or 6), each the other's peer.
func routedHosts(t testing.TB, r *testenv.Routed, family int) *testHosts {
	t.Helper()
	aIP, bIP := r.A4, r.B4
	if family == 6 {
		if !r.A6.IsValid() {
			t.Skip("no IPv6 in this kernel")
		}
		aIP, bIP = r.A6, r.B6
	}
	mk := func(name string, ns *sys.Netns, local, peer netip.Addr) *stack {
		cfg := Config{Name: name, Bearers: []Bearer{{Media: MediaUDP, Local: local.String(), Peers: []string{peer.String()}}}}
		s := newStack(cfg, packetProvider{ns: ns})
		if s.err != nil {
			t.Fatal(s.err)
		}
		t.Cleanup(func() { s.close() })
		return s
	}
	aMAC := sys.UDPMAC(netip.AddrPortFrom(aIP, DefaultEtherType), DefaultEtherType)
	bMAC := sys.UDPMAC(netip.AddrPortFrom(bIP, DefaultEtherType), DefaultEtherType)
	return &testHosts{
		kind: "routed",
		a:    mk("host-a", r.A, aIP, bIP),
		b:    mk("host-b", r.B, bIP, aIP),
		aIf:  "udp", bIf: "udp",
		aMAC: aMAC[:], bMAC: bMAC[:],
	}
}

// TestIntegrationUDPRouted: over the UDP bearer from A to B across the
// router: nettest.TestConn, HTTPS with HTTP/2, 64 MiB checked by SHA-256,
// a dial by name, and the same transfer with 5 % of the datagrams dropped
// by the router; over IPv4 and IPv6.
func TestIntegrationUDPRouted(t *testing.T) {
	watchdog(t)
	r := testenv.NewRouted(t, 0)
	for _, family := range []int{4, 6} {
		t.Run("ipv"+strconv.Itoa(family), func(t *testing.T) {
			h := routedHosts(t, r, family)
			ln := listenB(t, h, nil)
			port := ln.Addr().(*Addr).Port
			bIP := r.B4
			if family == 6 {
				bIP = r.B6
			}
			byIP := (&Addr{IP: bIP, Port: port, Zone: "udp"}).String()
			if got := ln.Addr().String(); got != byIP {
				t.Errorf("listener address %s, want %s", got, byIP)
			}
			t.Run("nettest", func(t *testing.T) {
				nettest.TestConn(t, makePipe(h, ln))
			})
			t.Run("https-h2", func(t *testing.T) {
				httpsOver(t, h, "udp:0", func(port uint16) string {
					return (&Addr{IP: bIP, Port: port, Zone: "udp"}).String()
				})
			})
			t.Run("64MiB", func(t *testing.T) { shaTransfer(t, h, ln, byIP, 64<<20) })
			t.Run("name", func(t *testing.T) { shaTransfer(t, h, ln, "host-b:"+strconv.Itoa(int(port)), 1<<20) })
			t.Run("loss5", func(t *testing.T) {
				r.Loss(t, 5)
				start := time.Now()
				c := shaTransfer(t, h, ln, byIP, 64<<20)
				t.Logf("5%% loss: 64 MiB in %v, %d packets lost, %d retransmitted",
					time.Since(start).Round(time.Millisecond), c.PacketsLost, c.PacketsRetransmitted)
				if c.PacketsLost == 0 {
					t.Error("no packet was lost: is the router dropping?")
				}
			})
			t.Run("messages-loss5", func(t *testing.T) {
				r.Loss(t, 5)
				c, s := msgPair(t, h)
				sizes := msgSizes(mrand.New(mrand.NewPCG(4, 5)))[:60]
				go func() {
					for i, n := range sizes {
						if _, err := c.Write(msgBody(i, n)); err != nil {
							return
						}
					}
				}()
				buf := make([]byte, 1<<20)
				for i, n := range sizes {
					k, err := s.Read(buf)
					if err != nil || k != n || !bytes.Equal(buf[:k], msgBody(i, n)) {
						t.Fatalf("message %d: %d bytes, want %d: %v", i, k, n, err)
					}
				}
				t.Logf("%d messages of 0 B to 1 MiB, %d packets lost", len(sizes), c.Info().PacketsLost)
			})
		})
	}
}

// httpsOver serves HTTPS on b (listening on local) and fetches it twice from
// a, at remote(port), over HTTP/2 (the second request reusing the
// connection).
func httpsOver(t *testing.T, h *testHosts, local string, remote func(port uint16) string) {
	t.Helper()
	cert, pool := testCert(t, "h2.example")
	ln, err := h.b.listen(&ListenConfig{}, "myproto", local)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello over %s from %s", r.Proto, r.RemoteAddr)
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()
	to := remote(ln.Addr().(*Addr).Port)
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return h.a.dial(ctx, &Dialer{}, "myproto", to)
		},
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
	}}
	defer client.CloseIdleConnections()
	for range 2 {
		resp, err := client.Get("https://h2.example/")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Proto != "HTTP/2.0" || resp.TLS.NegotiatedProtocol != "h2" || !strings.HasPrefix(string(body), "hello over HTTP/2.0 from [") {
			t.Fatalf("%s %s: %q", resp.Proto, resp.TLS.NegotiatedProtocol, body)
		}
		t.Logf("%s: %s", to, body)
	}
}

// testCert makes a certificate for name and a pool that trusts it.
func testCert(t testing.TB, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// TestIntegrationUDPUnprivileged: processes of a user without any
// capability, on hosts A and B across the router, configured by the
// environment alone ($MYPROTO_UDP_PEERS), serve and dial over the UDP
// bearer, by IP address and by name; packet sockets stay refused to them.
func TestIntegrationUDPUnprivileged(t *testing.T) {
	watchdog(t)
	r := testenv.NewRouted(t, 0)
	srv := startPeer(t, r.B, "MYPROTO_NAME=nodeb", "MYPROTO_UDP_PEERS="+r.A4.String(), peerUnprivileged)
	cli := startPeer(t, r.A, "MYPROTO_NAME=nodea", "MYPROTO_UDP_PEERS="+r.B4.String(), peerUnprivileged)
	for _, p := range []*peerProc{srv, cli} {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(status), "\n") {
			// (Its uid, 1000 in its user namespace, shows here as ours.)
			if f := strings.Fields(l); len(f) > 1 && (f[0] == "CapEff:" || f[0] == "CapPrm:") && f[1] != "0000000000000000" {
				t.Fatalf("%s is privileged: %s", p.label, l)
			}
		}
	}
	port := srv.listen(t, "udp:0", "echo")
	if s, err := srv.do(t, "listen eth0:0 echo"); err == nil || !strings.Contains(err.Error(), "CAP_NET_RAW") {
		t.Errorf("listen on eth0 without CAP_NET_RAW: %q %v", s, err)
	}
	byIP := fmt.Sprintf("[%v%%udp]:%d", r.B4, port)
	for _, addr := range []string{byIP, fmt.Sprintf("nodeb:%d", port)} {
		reply := cli.must(t, "dial "+addr+" 5s")
		f := strings.Fields(reply)
		if len(f) != 3 || f[2] != byIP || !strings.HasPrefix(f[1], "["+r.A4.String()+"%udp]:") {
			t.Errorf("dial %s: %q", addr, reply)
		}
		cli.must(t, "copy "+f[0]+" 8000000")
	}
}

// BenchmarkIntegrationUDPBearer measures the UDP bearer beside the Ethernet
// bearer and kernel TCP over the same veth pair in one run, at MTU 1500 and
// 9000: bulk throughput of one connection and 1-byte ping-pong, with and
// without segmentation offload (UDP_SEGMENT and UDP_GRO).
//
//	go test -run '^$' -bench IntegrationUDPBearer -benchtime 3s .
//
// Both ends run in this one process: a regression check, as
// BenchmarkIntegrationStream. myproto perf and bench/run.sh measure
// separate processes.
func BenchmarkIntegrationUDPBearer(b *testing.B) {
	for i, mtu := range []int{1500, 9000} {
		h := vethHosts(b, mtu)
		tcpLn := tcpListenB(b, h, i)
		ipA := netip.MustParseAddr([...]string{"192.0.2", "198.51.100", "203.0.113"}[i] + ".1")
		ipB := ipA.Next()
		mpLn := listenB(b, h, nil)
		udp := func(port uint16, noOffload bool) (*testHosts, *Listener) {
			mk := func(name string, ns *sys.Netns, local, peer netip.Addr) *stack {
				s := newStack(Config{Name: name, Bearers: []Bearer{{Media: MediaUDP, NoOffload: noOffload,
					Port: port, Local: local.String(), Peers: []string{peer.String()}}}},
					packetProvider{ns: ns})
				b.Cleanup(func() { s.close() })
				return s
			}
			mac := sys.UDPMAC(netip.AddrPortFrom(ipB, port), port)
			u := &testHosts{kind: "udp", a: mk("udp-a", nil, ipA, ipB), b: mk("udp-b", h.pair.NetnsB, ipB, ipA),
				aIf: "udp", bIf: "udp", bMAC: mac[:]}
			return u, listenB(b, u, nil)
		}
		u, uLn := udp(DefaultEtherType, false)
		n, nLn := udp(DefaultEtherType+1, true)
		dialers := []struct {
			name string
			h    *testHosts
			dial func() (client, server net.Conn)
		}{
			{"tcp", nil, func() (net.Conn, net.Conn) { return tcpPair(b, tcpLn) }},
			{"ethernet", h, func() (net.Conn, net.Conn) { return streamPair(b, h, mpLn) }},
			{"udp", u, func() (net.Conn, net.Conn) { return streamPair(b, u, uLn) }},
			{"udp-nooffload", n, func() (net.Conn, net.Conn) { return streamPair(b, n, nLn) }},
		}
		for _, d := range dialers {
			b.Run(fmt.Sprintf("bulk/mtu=%d/%s", mtu, d.name), func(b *testing.B) {
				c, s := d.dial()
				defer c.Close()
				defer s.Close()
				var before []Stats
				if d.h != nil {
					before = d.h.b.stats()
				}
				benchBulk(b, c, s)
				if d.h == nil {
					return
				}
				after := d.h.b.stats()
				b.ReportMetric(float64(after[0].KernelDrops-before[0].KernelDrops), "drops")
				b.ReportMetric(float64(c.(*Conn).Info().PacketsRetransmitted), "retx")
				if ep := c.(*Conn).ep; ep.udp != nil {
					gso, _ := ep.udp.Offload()
					_, gro := s.(*Conn).ep.udp.Offload()
					b.ReportMetric(float64(gso), "gso-runs")
					b.ReportMetric(float64(gro), "gro-runs")
				}
			})
			b.Run(fmt.Sprintf("pingpong/mtu=%d/%s", mtu, d.name), func(b *testing.B) {
				c, s := d.dial()
				defer c.Close()
				defer s.Close()
				benchPingPong(b, c, s)
			})
		}
	}
}

// TestIntegrationUDPMulticast: with no peers configured, an IP multicast
// group carries discovery: host A finds the router's stack (on A's subnet)
// by name, and streams to it.
func TestIntegrationUDPMulticast(t *testing.T) {
	watchdog(t)
	r := testenv.NewRouted(t, 0)
	const group = "239.192.88.181"
	mk := func(name string, ns *sys.Netns, local string) *stack {
		s := newStack(Config{Name: name, Bearers: []Bearer{{Media: MediaUDP, Local: local, Group: group}}}, packetProvider{ns: ns})
		if s.err != nil {
			t.Fatal(s.err)
		}
		t.Cleanup(func() { s.close() })
		return s
	}
	h := &testHosts{kind: "multicast", a: mk("mc-a", r.A, r.A4.String()), b: mk("mc-r", r.R, "10.1.1.1"), aIf: "udp", bIf: "udp"}
	ln := listenB(t, h, nil)
	port := ln.Addr().(*Addr).Port
	if got := ln.Addr().String(); got != fmt.Sprintf("[10.1.1.1%%udp]:%d", port) {
		t.Errorf("listener on %s", got)
	}
	c := shaTransfer(t, h, ln, fmt.Sprintf("mc-r:%d", port), 4<<20)
	t.Logf("found mc-r by multicast: %d packets sent", c.PacketsSent)
}
