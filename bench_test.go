package myproto

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/sys"
)

// BenchmarkIntegrationStream measures myproto streams and kernel TCP over the
// same veth pair in the same run, at MTU 1500 and 9000: bulk throughput of
// one connection, and 1-byte ping-pong round trips.
//
//	go test -run '^$' -bench IntegrationStream -benchtime 3s .
//
// It is a regression check only: both ends run in this one process, which
// flatters latency and hides the cost of hand-offs between processes. The
// project's figures come from bench/run.sh, which runs myproto perf's server
// and clients as separate processes.
func BenchmarkIntegrationStream(b *testing.B) {
	for i, mtu := range []int{1500, 9000} {
		h := vethHosts(b, mtu)
		tcpLn := tcpListenB(b, h, i)
		mpLn := listenB(b, h, nil)
		dialers := []struct {
			name string
			dial func() (client, server net.Conn)
		}{
			{"tcp", func() (net.Conn, net.Conn) { return tcpPair(b, tcpLn) }},
			{"myproto", func() (net.Conn, net.Conn) { return streamPair(b, h, mpLn) }},
		}
		for _, d := range dialers {
			b.Run(fmt.Sprintf("bulk/mtu=%d/%s", mtu, d.name), func(b *testing.B) {
				c, s := d.dial()
				defer c.Close()
				defer s.Close()
				before := h.b.stats()
				benchBulk(b, c, s)
				if d.name == "myproto" {
					after := h.b.stats()
					b.ReportMetric(float64(after[0].KernelDrops-before[0].KernelDrops), "drops")
					if mc, ok := c.(*Conn); ok {
						in := mc.Info()
						b.ReportMetric(float64(in.PacketsRetransmitted), "retx")
					}
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

// benchBulk sends b.N chunks from c to s and times until s has them all.
func benchBulk(b *testing.B, c, s net.Conn) {
	const chunk = 256 << 10
	b.SetBytes(chunk)
	total := int64(b.N) * chunk
	done := make(chan error, 1)
	go func() {
		_, err := io.CopyBuffer(io.Discard, io.LimitReader(s, total), make([]byte, 1<<20))
		done <- err
	}()
	buf := make([]byte, chunk)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(total)*8/time.Since(start).Seconds()/1e9, "Gbit/s")
}

// benchPingPong times b.N one-byte round trips and reports percentiles.
func benchPingPong(b *testing.B, c, s net.Conn) {
	go func() {
		buf := make([]byte, 1)
		for {
			if _, err := io.ReadFull(s, buf); err != nil {
				return
			}
			if _, err := s.Write(buf); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 1)
	rtts := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t := time.Now()
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		rtts = append(rtts, time.Since(t))
	}
	b.StopTimer()
	slices.Sort(rtts)
	b.ReportMetric(float64(rtts[len(rtts)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(rtts[len(rtts)*99/100].Microseconds()), "p99-µs")
}

// tcpListenB gives the i'th veth pair IP addresses (documentation ranges,
// one subnet per pair, existing only inside the test's private namespaces)
// and listens with kernel TCP on host b.
func tcpListenB(b *testing.B, h *testHosts, i int) net.Listener {
	subnet := [...]string{"192.0.2", "198.51.100", "203.0.113"}[i]
	ipA := netip.MustParsePrefix(subnet + ".1/24")
	ipB := netip.MustParsePrefix(subnet + ".2/24")
	if err := sys.AddAddress(nil, h.aIf, ipA); err != nil {
		b.Fatal(err)
	}
	if err := sys.AddAddress(h.pair.NetnsB, h.bIf, ipB); err != nil {
		b.Fatal(err)
	}
	var ln net.Listener
	err := h.pair.NetnsB.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(ipB.Addr(), 0).String())
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	return ln
}

func tcpPair(b *testing.B, ln net.Listener) (client, server net.Conn) {
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(acc)
			return
		}
		acc <- c
	}()
	var d net.Dialer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The address may still be tentative for a moment after it is added.
	var c net.Conn
	var err error
	for range 50 {
		if c, err = d.DialContext(ctx, "tcp", ln.Addr().String()); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		b.Fatal(err)
	}
	s, ok := <-acc
	if !ok {
		b.Fatal("accept failed")
	}
	return c, s
}
