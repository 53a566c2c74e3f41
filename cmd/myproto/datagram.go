package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"time"

	"github.com/myproto/myproto"
)

// The datagram part of the demo: an echo service (RFC 862's, on myproto)
// and a client that measures it.
const (
	echoPort = 7

	pings       = 2000 // 1-byte round trips measured
	pingWarmup  = 100  // round trips before measuring
	pingTimeout = time.Second
	maxLost     = 10 // lost pings before giving up on the server

	bulkCount  = 10000
	bulkSize   = 1400 // fits the default 1500-byte MTU with myproto's 24-byte header
	bulkWindow = 128  // datagrams in flight
	// bulkSilence is how long without an echo makes the datagrams still
	// in flight count as lost.
	bulkSilence = 250 * time.Millisecond
)

// listenEcho opens the server's datagram socket.
func listenEcho() (*myproto.PacketConn, error) {
	return myproto.ListenPacket("myproto", fmt.Sprintf("%s:%d", serverLink, echoPort))
}

// echo sends every datagram back to where it came from, until pc is
// closed.
func echo(pc net.PacketConn, stderr io.Writer) {
	buf := make([]byte, 1<<16)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				fmt.Fprintf(stderr, "myproto %s: %v\n", serverCmd, err)
			}
			return
		}
		// A lost echo is the client's to notice, as with UDP.
		pc.WriteTo(buf[:n], from)
	}
}

// datagramDemo measures the echo service at to through pc: latency with
// 1-byte datagrams one at a time, then throughput with full-size ones, a
// window of them in flight.
func datagramDemo(w io.Writer, pc *myproto.PacketConn, to *myproto.Addr) error {
	rtts, lost, err := pingPong(pc, to)
	if err != nil {
		return err
	}
	slices.Sort(rtts)
	fmt.Fprintf(w, "  latency     %d round trips of 1-byte datagrams: p50 %v, p99 %v%s\n",
		len(rtts), percentile(rtts, 50), percentile(rtts, 99), lostNote(lost))

	echoed, elapsed, err := bulk(pc, to)
	if err != nil {
		return err
	}
	mbps := float64(echoed*bulkSize*8) / elapsed.Seconds() / 1e6
	fmt.Fprintf(w, "  throughput  %d × %d-byte datagrams echoed in %v: %.0f Mbit/s each way%s\n",
		bulkCount, bulkSize, elapsed.Round(time.Millisecond), mbps, lostNote(bulkCount-echoed))
	return nil
}

// pingPong sends 1-byte datagrams to the echo service one at a time and
// returns the round-trip times, and how many got no echo.
func pingPong(pc *myproto.PacketConn, to *myproto.Addr) (rtts []time.Duration, lost int, err error) {
	buf := make([]byte, 64)
	rtts = make([]time.Duration, 0, pings)
	for i := range pingWarmup + pings {
		start := time.Now()
		pc.SetReadDeadline(start.Add(pingTimeout))
		if _, err := pc.WriteTo(buf[:1], to); err != nil {
			return nil, 0, err
		}
		_, _, err := pc.ReadFrom(buf)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if lost++; lost > maxLost {
				return nil, 0, fmt.Errorf("no echo from %v for %d datagrams", to, lost)
			}
			continue
		case err != nil:
			return nil, 0, err
		}
		if i >= pingWarmup {
			rtts = append(rtts, time.Since(start))
		}
	}
	return rtts, lost, nil
}

// bulk sends bulkCount numbered datagrams to the echo service, keeping
// bulkWindow in flight, and returns how many came back and how long that
// took. A datagram whose echo has not come after bulkSilence without any
// echo counts as lost; one that comes later is ignored.
func bulk(pc *myproto.PacketConn, to *myproto.Addr) (echoed int, elapsed time.Duration, err error) {
	out, in := make([]byte, bulkSize), make([]byte, bulkSize)
	done := make([]bool, bulkCount) // echoed or given up
	var sent, settled, oldest int   // oldest: no datagram before it is unsettled
	start := time.Now()
	last := start
	for settled < bulkCount {
		for ; sent < bulkCount && sent-settled < bulkWindow; sent++ {
			binary.BigEndian.PutUint32(out, uint32(sent))
			if _, err := pc.WriteTo(out, to); err != nil {
				return 0, 0, err
			}
		}
		pc.SetReadDeadline(time.Now().Add(bulkSilence))
		n, _, err := pc.ReadFrom(in)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			for ; oldest < sent; oldest++ {
				if !done[oldest] {
					done[oldest] = true
					settled++
				}
			}
			continue
		case err != nil:
			return 0, 0, err
		}
		seq := int(binary.BigEndian.Uint32(in))
		if n != bulkSize || seq >= sent || done[seq] {
			continue
		}
		done[seq] = true
		settled++
		echoed++
		last = time.Now()
	}
	pc.SetReadDeadline(time.Time{})
	return echoed, last.Sub(start), nil
}

// percentile returns the p-th percentile of sorted durations, rounded for
// printing.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	d := sorted[(len(sorted)-1)*p/100]
	return d.Round(time.Microsecond)
}

// lostNote says how many datagrams got no echo.
func lostNote(lost int) string {
	if lost == 0 {
		return ", none lost"
	}
	return fmt.Sprintf(", %d lost", lost)
}
