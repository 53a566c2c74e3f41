package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/myproto/myproto"
)

const (
	// perfDialTimeout bounds each dial.
	perfDialTimeout = 5 * time.Second
	// rrWarmup is how many transactions --rr runs before measuring.
	rrWarmup = 100
)

// A perfReport is the client's account of one test, as -J prints it.
type perfReport struct {
	Transport string         `json:"transport"`
	Mode      string         `json:"mode"`
	Server    string         `json:"server"`
	Parallel  int            `json:"parallel"`
	Len       int            `json:"len"`
	Reverse   bool           `json:"reverse"`
	TLS       bool           `json:"tls"`
	Intervals []perfInterval `json:"intervals"`
	// Bulk tests.
	Sender   *perfEnd `json:"sender,omitempty"`
	Receiver *perfEnd `json:"receiver,omitempty"`
	// --rr, --crr and --raw --rr.
	Latency *perfLatency `json:"latency,omitempty"`
	// --raw.
	Raw *rawFigures `json:"raw,omitempty"`
	CPU struct {
		Client cpuFigures `json:"client"`
		Server cpuFigures `json:"server"`
	} `json:"cpu"`
}

// A perfInterval is one interval line.
type perfInterval struct {
	Start         float64 `json:"start"`
	End           float64 `json:"end"`
	Bytes         int64   `json:"bytes,omitempty"`
	BitsPerSecond float64 `json:"bits_per_second,omitempty"`
	Retransmits   uint64  `json:"retransmits"`
	Cwnd          int     `json:"cwnd,omitempty"`
	SRTTMicros    float64 `json:"srtt_us,omitempty"`
	// Transactions, connections or frames, and their rate.
	Count     int64   `json:"count,omitempty"`
	PerSecond float64 `json:"per_second,omitempty"`
	P50Micros float64 `json:"p50_us,omitempty"`
}

// A perfEnd is one end's total in a bulk test.
type perfEnd struct {
	Bytes         int64   `json:"bytes"`
	Seconds       float64 `json:"seconds"`
	BitsPerSecond float64 `json:"bits_per_second"`
	Retransmits   uint64  `json:"retransmits"`
}

// perfLatency summarises round trips.
type perfLatency struct {
	Count      int64   `json:"count"`
	Seconds    float64 `json:"seconds"`
	PerSecond  float64 `json:"per_second"`
	P50Micros  float64 `json:"p50_us"`
	P90Micros  float64 `json:"p90_us"`
	P99Micros  float64 `json:"p99_us"`
	MaxMicros  float64 `json:"max_us"`
	MeanMicros float64 `json:"mean_us"`
}

// runPerfClient runs the test o asks for, over myproto and then, with
// --tcp, over kernel TCP, and prints the reports.
func runPerfClient(o *perfOptions, stdout io.Writer) error {
	// The client's stack takes a throwaway node name. A neighbour that
	// hears a known name announced with a new node ID takes it for a
	// restart and fails every connection with that MAC, and a stack
	// announces itself some 150 ms after it starts, by when perf's
	// connections are up: two runs in a row under one name would have the
	// server fail the second run's connections.
	var id [4]byte
	rand.Read(id[:])
	cfg := perfConfig(o)
	if cfg == nil {
		cfg = &myproto.Config{}
	}
	cfg.Name = "perf-" + hex.EncodeToString(id[:])
	myproto.LinkStats(cfg)
	m := newMeter()
	out := stdout
	if o.json {
		out = io.Discard
	}
	result := map[string]any{}
	mp, err := runPerfTest(o, m, "myproto", o.client, out)
	if err != nil {
		return err
	}
	result["myproto"] = mp
	if o.tcp != "" {
		fmt.Fprintln(out)
		tcp, err := runPerfTest(o, m, "tcp", o.tcp, out)
		if err != nil {
			return fmt.Errorf("over TCP: %w", err)
		}
		result["tcp"] = tcp
		v, name, higherBetter := mp.metric()
		w, _, _ := tcp.metric()
		if w > 0 {
			result["ratio"] = v / w
			fmt.Fprintf(out, "\nmyproto/TCP: %.2f× the %s", v/w, name)
			if higherBetter {
				fmt.Fprintln(out)
			} else {
				fmt.Fprintln(out, " (lower is better)")
			}
		}
	}
	if m.why != "" {
		fmt.Fprintf(out, "(system calls not counted here: %s)\n", m.why)
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(result)
	}
	return nil
}

// metric returns the test's headline figure, its name and whether more is
// better.
func (r *perfReport) metric() (float64, string, bool) {
	switch {
	case r.Receiver != nil:
		return r.Receiver.BitsPerSecond, "throughput", true
	case r.Mode == modeCRR:
		return r.Latency.PerSecond, "connection rate", true
	case r.Latency != nil:
		return r.Latency.P50Micros, "median round trip", false
	case r.Raw != nil:
		return r.Raw.BitsPerSecond, "throughput", true
	}
	return 0, "", true
}

// A perfClient runs one test against one server over one transport.
type perfClient struct {
	o         *perfOptions
	m         *meter
	transport string
	addr      string
	out       io.Writer
	cookie    string
	tlsCfg    *tls.Config
}

// dial connects to the server.
func (c *perfClient) dial() (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), perfDialTimeout)
	defer cancel()
	if c.transport == "tcp" {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", c.addr)
	}
	d := myproto.Dialer{Timeout: perfDialTimeout}
	return d.DialContext(ctx, "myproto", c.addr)
}

// dialData opens a data connection of the test, with TLS if it asks.
func (c *perfClient) dialData() (perfStream, error) {
	conn, err := c.dial()
	if err != nil {
		return perfStream{}, err
	}
	if _, err := conn.Write([]byte(string(connData) + c.cookie + "\n")); err != nil {
		conn.Close()
		return perfStream{}, err
	}
	st := perfStream{c: conn, raw: conn}
	if c.tlsCfg != nil {
		tc := tls.Client(conn, c.tlsCfg)
		ctx, cancel := context.WithTimeout(context.Background(), perfHandshakeTimeout)
		defer cancel()
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return perfStream{}, fmt.Errorf("TLS handshake: %w", err)
		}
		st.c = tc
	}
	return st, nil
}

// clientRun is what a mode's client half hands back.
type clientRun struct {
	done    perfDone
	cpu     cpuFigures
	closers []io.Closer // closed once the server has reported

	// Bulk: this end's bytes, time and retransmissions.
	bytes   int64
	seconds float64
	retrans uint64
	// Round trips.
	rtts     []time.Duration
	rttTotal time.Duration
	// Raw flood.
	frames     uint64
	frameBytes int
	backoffs   uint64
}

// runPerfTest runs one test over transport to addr.
func runPerfTest(o *perfOptions, m *meter, transport, addr string, out io.Writer) (*perfReport, error) {
	c := &perfClient{o: o, m: m, transport: transport, addr: addr, out: out}
	mode := o.mode()
	ctl, err := c.dial()
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	h := perfHeader{Mode: mode, Reverse: o.reverse, TLS: o.tls, Parallel: o.parallel, Len: o.length,
		Duration: o.duration, Count: o.count}
	if o.count > 0 {
		h.Duration = 0
	}
	if _, err := ctl.Write([]byte{connControl}); err != nil {
		return nil, err
	}
	if err := writeJSONLine(ctl, h); err != nil {
		return nil, err
	}
	br := bufio.NewReader(ctl)
	ctl.SetReadDeadline(time.Now().Add(perfHandshakeTimeout))
	var hello perfHello
	if err := readJSONLine(br, &hello); err != nil {
		return nil, fmt.Errorf("reading the server's answer: %w", err)
	}
	ctl.SetReadDeadline(time.Time{})
	if hello.Error != "" {
		return nil, fmt.Errorf("server: %s", hello.Error)
	}
	c.cookie = hello.Cookie
	if o.tls {
		cert, err := x509.ParseCertificate(hello.Cert)
		if err != nil {
			return nil, fmt.Errorf("the server's certificate: %w", err)
		}
		pool := x509.NewCertPool()
		pool.AddCert(cert)
		c.tlsCfg = &tls.Config{RootCAs: pool, ServerName: perfCertName, MinVersion: tls.VersionTLS13}
	}

	rep := &perfReport{Transport: transport, Mode: mode, Server: addr, Parallel: o.parallel, Len: o.length,
		Reverse: o.reverse, TLS: o.tls, Intervals: []perfInterval{}}
	c.printHeader(rep)
	var run *clientRun
	switch mode {
	case modeBulk:
		run, err = c.bulk(rep)
	case modeRR:
		run, err = c.rr(rep)
	case modeCRR:
		run, err = c.crr(rep)
	case modeRaw:
		run, err = c.rawFlood(ctl, hello, rep)
	case modeRawRR:
		run, err = c.rawRR(ctl, hello, rep)
	}
	if run == nil {
		run = &clientRun{}
	}
	defer func() {
		for _, cl := range run.closers {
			cl.Close()
		}
	}()
	if err != nil {
		run.done.Error = err.Error()
	}
	if werr := writeJSONLine(ctl, run.done); err == nil {
		err = werr
	}
	if err != nil {
		return nil, err
	}
	ctl.SetReadDeadline(time.Now().Add(perfFinishTimeout + perfHandshakeTimeout))
	var srv perfSide
	if err := readJSONLine(br, &srv); err != nil {
		return nil, fmt.Errorf("reading the server's result: %w", err)
	}
	if srv.Error != "" {
		return nil, fmt.Errorf("server: %s", srv.Error)
	}
	rep.CPU.Client, rep.CPU.Server = run.cpu, srv.CPU
	c.summarise(rep, run, &srv)
	return rep, nil
}

// printHeader prints what the test is.
func (c *perfClient) printHeader(rep *perfReport) {
	o := c.o
	var what string
	switch rep.Mode {
	case modeBulk:
		dir := "client → server"
		if o.reverse {
			dir = "server → client"
		}
		what = fmt.Sprintf("bulk %s, %d connection(s), %s writes", dir, o.parallel, iperfBytes(int64(o.length)))
	case modeRR:
		what = fmt.Sprintf("%d-byte request/response", o.length)
	case modeCRR:
		what = "connect, 1 byte echoed, close"
	case modeRaw:
		what = "raw frame flood (sendmmsg → TPACKET_V3 ring)"
	case modeRawRR:
		what = "raw frame ping-pong through Go's poller"
	}
	limit := o.duration.String()
	if o.count > 0 {
		limit = fmt.Sprint(o.count)
		if rep.Mode == modeBulk {
			limit = iperfBytes(o.count)
		}
	}
	tls := ""
	if o.tls {
		tls = ", TLS 1.3"
	}
	fmt.Fprintf(c.out, "myproto perf: %s to %s over %s%s, %s\n", what, c.addr, c.transport, tls, limit)
}

// bulk runs a bulk test: parallel streams, one way, for the duration or
// the count.
func (c *perfClient) bulk(rep *perfReport) (*clientRun, error) {
	o := c.o
	run := &clientRun{}
	var streams []perfStream
	for range o.parallel {
		st, err := c.dialData()
		if err != nil {
			return run, err
		}
		streams = append(streams, st)
		run.closers = append(run.closers, st.c)
	}
	var before []uint64
	for _, st := range streams {
		before = append(before, streamRetrans(st.raw))
	}
	var (
		counter     atomic.Int64
		wg          sync.WaitGroup
		mu          sync.Mutex
		errs        []error
		first, last time.Time
	)
	a := c.m.take()
	start := a.t
	end := start.Add(o.duration)
	stop := make(chan struct{})
	monitorDone := make(chan struct{})
	go func() {
		c.monitorBulk(rep, start, &counter, streams, stop)
		close(monitorDone)
	}()
	for i, st := range streams {
		share := int64(0)
		if o.count > 0 {
			share = o.count / int64(o.parallel)
			if i == 0 {
				share += o.count % int64(o.parallel)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if o.reverse {
				// The server waits for the close once it has sent all.
				err = readCounting(st.c, &counter, &mu, &first)
				st.c.Close()
			} else {
				_, err = writeFor(countingWriter{st.c, &counter}, o.length, end, share)
				if err == nil {
					err = closeWrite(st.c)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			last = time.Now()
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-monitorDone
	b := c.m.take()
	run.cpu = c.m.figures(a, b, c.framesFrom())
	run.bytes = counter.Load()
	if o.reverse {
		if !first.IsZero() {
			run.seconds = last.Sub(first).Seconds()
		}
	} else {
		run.seconds = last.Sub(start).Seconds()
		for i, st := range streams {
			run.retrans += streamRetrans(st.raw) - before[i]
		}
	}
	return run, errors.Join(errs...)
}

// framesFrom says which counters give this transport's frames.
func (c *perfClient) framesFrom() string {
	if c.transport == "tcp" {
		return framesNetdev
	}
	return framesMyproto
}

// readCounting reads r to its end, adding to counter and noting in first,
// under mu, when the first byte came.
func readCounting(r io.Reader, counter *atomic.Int64, mu *sync.Mutex, first *time.Time) error {
	buf := make([]byte, 1<<20)
	for {
		k, err := r.Read(buf)
		if k > 0 {
			if counter.Add(int64(k)) == int64(k) {
				mu.Lock()
				if first.IsZero() {
					*first = time.Now()
				}
				mu.Unlock()
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// A countingWriter counts what it writes.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (cw countingWriter) Write(b []byte) (int, error) {
	n, err := cw.w.Write(b)
	cw.n.Add(int64(n))
	return n, err
}

// monitorBulk prints an interval line every interval until stop closes,
// then one for the partial interval left, if it is long enough to mean
// anything.
func (c *perfClient) monitorBulk(rep *perfReport, start time.Time, counter *atomic.Int64, streams []perfStream, stop <-chan struct{}) {
	fmt.Fprintf(c.out, "[ ID] Interval            Transfer      Bitrate        Retr   Cwnd          SRTT\n")
	iv := c.o.interval
	var tick <-chan time.Time
	if iv > 0 {
		t := time.NewTicker(iv)
		defer t.Stop()
		tick = t.C
	}
	retrans := func() uint64 {
		var r uint64
		for _, st := range streams {
			r += streamRetrans(st.raw)
		}
		return r
	}
	lastT, lastBytes, lastRetrans := start, int64(0), retrans()
	line := func(now time.Time) {
		bytes, rt := counter.Load(), retrans()
		_, cwnd, srtt, _ := connStats(streams[0].raw)
		secs := now.Sub(lastT).Seconds()
		in := perfInterval{Start: lastT.Sub(start).Seconds(), End: now.Sub(start).Seconds(),
			Bytes: bytes - lastBytes, BitsPerSecond: rate((bytes-lastBytes)*8, secs),
			Retransmits: rt - lastRetrans, Cwnd: cwnd, SRTTMicros: micros(srtt)}
		if c.o.reverse {
			// This end receives: its congestion state says nothing.
			in.Retransmits, in.Cwnd, in.SRTTMicros = 0, 0, 0
		}
		rep.Intervals = append(rep.Intervals, in)
		retr, window := fmt.Sprint(in.Retransmits), iperfBytes(int64(in.Cwnd))
		if c.o.reverse {
			retr, window = "-", "-"
		}
		fmt.Fprintf(c.out, "%s %6.2f-%-6.2f sec  %-12s  %-13s  %4s   %-12s  %s\n", streamID(c.o.parallel),
			in.Start, in.End, iperfBytes(in.Bytes), formatBits(in.BitsPerSecond), retr,
			window, formatMicros(in.SRTTMicros))
		lastT, lastBytes, lastRetrans = now, bytes, rt
	}
	for {
		select {
		case now := <-tick:
			line(now)
		case <-stop:
			if now := time.Now(); iv > 0 && now.Sub(lastT) >= iv/10 {
				line(now)
			}
			return
		}
	}
}

// streamID labels interval lines as iperf3 does.
func streamID(parallel int) string {
	if parallel > 1 {
		return "[SUM]"
	}
	return "[  1]"
}

// rr runs request/response transactions on one connection.
func (c *perfClient) rr(rep *perfReport) (*clientRun, error) {
	run := &clientRun{}
	st, err := c.dialData()
	if err != nil {
		return run, err
	}
	defer st.c.Close()
	buf := make([]byte, c.o.length)
	rt := func() error {
		if _, err := st.c.Write(buf); err != nil {
			return err
		}
		_, err := io.ReadFull(st.c, buf)
		return err
	}
	for range rrWarmup {
		if err := rt(); err != nil {
			return run, err
		}
	}
	err = c.roundTrips(rep, run, rt)
	return run, err
}

// crr dials, echoes a byte and closes, one connection after another.
func (c *perfClient) crr(rep *perfReport) (*clientRun, error) {
	run := &clientRun{}
	err := c.roundTrips(rep, run, func() error {
		conn, err := c.dial()
		if err != nil {
			return err
		}
		defer conn.Close()
		b := []byte{connEcho}
		if _, err := conn.Write(b); err != nil {
			return err
		}
		_, err = io.ReadFull(conn, b)
		return err
	})
	return run, err
}

// roundTrips times rt until the test's count or duration is reached,
// printing interval lines, and records the times and the CPU figures in
// run.
func (c *perfClient) roundTrips(rep *perfReport, run *clientRun, rt func() error) error {
	o := c.o
	fmt.Fprintf(c.out, "[ ID] Interval            Count      Rate          p50\n")
	run.rtts = make([]time.Duration, 0, 1<<16)
	a := c.m.take()
	start := a.t
	ivStart, ivFirst := start, 0
	var err error
	for {
		t0 := time.Now()
		if o.count > 0 && int64(len(run.rtts)) >= o.count || o.count <= 0 && t0.Sub(start) >= o.duration {
			break
		}
		if err = rt(); err != nil {
			break
		}
		now := time.Now()
		run.rtts = append(run.rtts, now.Sub(t0))
		if o.interval > 0 && now.Sub(ivStart) >= o.interval {
			c.rttLine(rep, start, ivStart, now, run.rtts[ivFirst:])
			ivStart, ivFirst = now, len(run.rtts)
		}
	}
	b := c.m.take()
	run.rttTotal = b.t.Sub(start)
	if now := b.t; o.interval > 0 && now.Sub(ivStart) >= o.interval/10 && len(run.rtts) > ivFirst {
		c.rttLine(rep, start, ivStart, now, run.rtts[ivFirst:])
	}
	run.cpu = c.m.figures(a, b, c.framesFrom())
	return err
}

// rttLine prints an interval line of round trips.
func (c *perfClient) rttLine(rep *perfReport, start, from, to time.Time, rtts []time.Duration) {
	sorted := slices.Clone(rtts)
	slices.Sort(sorted)
	in := perfInterval{Start: from.Sub(start).Seconds(), End: to.Sub(start).Seconds(), Count: int64(len(rtts)),
		PerSecond: float64(len(rtts)) / to.Sub(from).Seconds(), P50Micros: micros(pct(sorted, 50))}
	rep.Intervals = append(rep.Intervals, in)
	fmt.Fprintf(c.out, "[  1] %6.2f-%-6.2f sec  %-9d  %-12s  %s\n", in.Start, in.End, in.Count,
		formatRate(in.PerSecond), formatMicros(in.P50Micros))
}

// summarise fills in the report's totals from both sides and prints them.
func (c *perfClient) summarise(rep *perfReport, run *clientRun, srv *perfSide) {
	fmt.Fprintln(c.out, "- - - - - - - - - - - - - - - - - - - - - - - - -")
	switch rep.Mode {
	case modeBulk:
		mine := &perfEnd{Bytes: run.bytes, Seconds: run.seconds, BitsPerSecond: rate(run.bytes*8, run.seconds),
			Retransmits: run.retrans}
		theirs := &perfEnd{Bytes: srv.Bytes, Seconds: srv.Seconds, BitsPerSecond: rate(srv.Bytes*8, srv.Seconds),
			Retransmits: srv.Retransmits}
		rep.Sender, rep.Receiver = mine, theirs
		if rep.Reverse {
			rep.Sender, rep.Receiver = theirs, mine
		}
		for _, e := range []struct {
			name string
			end  *perfEnd
		}{{"sender", rep.Sender}, {"receiver", rep.Receiver}} {
			retr := fmt.Sprintf("%4d", e.end.Retransmits)
			if e.name == "receiver" {
				retr = "    "
			}
			fmt.Fprintf(c.out, "%s %6.2f-%-6.2f sec  %-12s  %-13s  %s   %s\n", streamID(rep.Parallel), 0.0,
				e.end.Seconds, iperfBytes(e.end.Bytes), formatBits(e.end.BitsPerSecond), retr, e.name)
		}
	case modeRR, modeCRR, modeRawRR:
		rep.Latency = latencyOf(run.rtts, run.rttTotal)
		l := rep.Latency
		what := "transactions"
		if rep.Mode == modeCRR {
			what = "connections"
		}
		fmt.Fprintf(c.out, "[  1]   0.00-%-6.2f sec  %d %s, %s; round trip p50 %s, p90 %s, p99 %s, max %s\n",
			l.Seconds, l.Count, what, formatRate(l.PerSecond), formatMicros(l.P50Micros),
			formatMicros(l.P90Micros), formatMicros(l.P99Micros), formatMicros(l.MaxMicros))
	case modeRaw:
		rep.Raw = rawSummary(run, srv)
		r := rep.Raw
		fmt.Fprintf(c.out, "sender    %d frames of %d bytes in %.2f s: %s, %s frames (%d waits for the device queue)\n",
			r.FramesSent, r.FrameBytes, r.SendSeconds, formatBits(r.SendBitsPerSecond), formatRate(r.SendFramesPerSecond), r.Backoffs)
		fmt.Fprintf(c.out, "receiver  %d frames in %.2f s: %s, %s frames; %d lost, %d dropped by the ring (%d freezes)\n",
			r.FramesReceived, r.ReceiveSeconds, formatBits(r.BitsPerSecond), formatRate(r.FramesPerSecond), r.Lost, r.RingDrops, r.FreezeQueue)
	}
	printCPU(c.out, "client", &rep.CPU.Client)
	printCPU(c.out, "server", &rep.CPU.Server)
}

// printCPU prints one side's CPU figures.
func printCPU(w io.Writer, side string, f *cpuFigures) {
	sys := "syscalls not counted"
	if f.Syscalls >= 0 {
		sys = fmt.Sprintf("%.2f syscalls", f.SyscallsPerFrame)
	}
	fmt.Fprintf(w, "CPU %s: %.2f s user, %.2f s sys; %d frames in, %d out (%s); per frame: %.2f µs CPU, %.3f context switches, %s\n",
		side, f.UserSeconds, f.SysSeconds, f.FramesIn, f.FramesOut, f.FramesFrom, f.CPUNsPerFrame/1e3,
		f.CtxSwitchesPerFrame, sys)
}

// latencyOf summarises round trips that took total.
func latencyOf(rtts []time.Duration, total time.Duration) *perfLatency {
	l := &perfLatency{Count: int64(len(rtts)), Seconds: total.Seconds()}
	if len(rtts) == 0 {
		return l
	}
	sorted := slices.Clone(rtts)
	slices.Sort(sorted)
	var sum time.Duration
	for _, d := range sorted {
		sum += d
	}
	l.PerSecond = float64(len(rtts)) / total.Seconds()
	l.P50Micros, l.P90Micros, l.P99Micros = micros(pct(sorted, 50)), micros(pct(sorted, 90)), micros(pct(sorted, 99))
	l.MaxMicros = micros(sorted[len(sorted)-1])
	l.MeanMicros = micros(sum / time.Duration(len(sorted)))
	return l
}

// pct returns the p-th percentile of sorted.
func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[(len(sorted)-1)*p/100]
}

func micros(d time.Duration) float64 { return float64(d) / 1e3 }

// rate returns n per second, 0 for no time.
func rate(n int64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(n) / secs
}

// iperfBytes writes n as iperf3 does, in powers of 1024.
func iperfBytes(n int64) string {
	switch v := float64(n); {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GBytes", v/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MBytes", v/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KBytes", v/(1<<10))
	}
	return fmt.Sprintf("%d Bytes", n)
}

// formatBits writes bits per second in powers of 1000.
func formatBits(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.2f Gbit/s", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.1f Mbit/s", v/1e6)
	}
	return fmt.Sprintf("%.1f kbit/s", v/1e3)
}

// formatRate writes a count per second.
func formatRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2f M/s", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1f k/s", v/1e3)
	}
	return fmt.Sprintf("%.0f /s", v)
}

// formatMicros writes a time in microseconds, or milliseconds past ten of
// them.
func formatMicros(us float64) string {
	switch {
	case us == 0:
		return "-"
	case us >= 10000:
		return fmt.Sprintf("%.1f ms", us/1e3)
	}
	return strings.TrimSuffix(fmt.Sprintf("%.1f", us), ".0") + " µs"
}
