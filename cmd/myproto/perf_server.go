package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/myproto/myproto"
)

const (
	// perfHandshakeTimeout bounds reading a connection's first bytes and
	// a TLS handshake.
	perfHandshakeTimeout = 10 * time.Second
	// perfFinishTimeout bounds the wait for a test's data to finish once
	// the client says it is done.
	perfFinishTimeout = 30 * time.Second
	// cookieLen is the length of a test's cookie in hex digits.
	cookieLen = 16
)

// A perfServer serves perf tests, one at a time, on a myproto listener and
// optionally a kernel TCP one.
type perfServer struct {
	m       *meter
	tlsCfg  *tls.Config
	certDER []byte
	stdout  io.Writer
	stderr  io.Writer

	busy sync.Mutex // held for the length of a test

	mu    sync.Mutex
	tests map[string]*serverTest // by cookie
}

// runPerfServer serves until SIGINT or SIGTERM.
func runPerfServer(o *perfOptions, stdout, stderr io.Writer) error {
	cert, _, err := selfSigned(perfCertName)
	if err != nil {
		return err
	}
	s := &perfServer{
		m:       newMeter(),
		tlsCfg:  &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13},
		certDER: cert.Certificate[0],
		stdout:  stdout,
		stderr:  stderr,
		tests:   make(map[string]*serverTest),
	}
	if cfg := perfConfig(o); cfg != nil {
		myproto.LinkStats(cfg)
	}
	ln, err := myproto.Listen("myproto", o.listen)
	if err != nil {
		return err
	}
	lns := []net.Listener{ln}
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for _, a := range listenAddrs(ln.Addr().(*myproto.Addr)) {
		fmt.Fprintf(stdout, "myproto perf server: listening on myproto %s\n", a)
	}
	if o.tcpListen != "" {
		tln, err := net.Listen("tcp", o.tcpListen)
		if err != nil {
			return err
		}
		lns = append(lns, tln)
		fmt.Fprintf(stdout, "myproto perf server: listening on tcp %v\n", tln.Addr())
	}
	if s.m.why != "" {
		fmt.Fprintf(stdout, "myproto perf server: system calls not counted: %s\n", s.m.why)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, len(lns))
	for _, l := range lns {
		go func() { errc <- s.serve(l) }()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// listenAddrs lists the addresses a listener on a is reachable at, with
// the interface of each: every up Ethernet interface when a names none.
func listenAddrs(a *myproto.Addr) []string {
	if a.IP.IsValid() {
		return []string{a.String()} // a UDP bearer
	}
	var out []string
	if a.HardwareAddr == nil && (a.Zone == "" || a.Zone == myproto.MediaUDP) {
		for _, st := range myproto.LinkStats(nil) {
			if st.Interface != myproto.MediaUDP {
				continue
			}
			ua, err := myproto.ResolveAddr("myproto", fmt.Sprintf("%s:%d", st.Interface, a.Port))
			if err == nil {
				out = append(out, ua.String()+" (the UDP bearer)")
			}
		}
	}
	ifs, _ := net.Interfaces()
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 || len(ifi.HardwareAddr) != 6 {
			continue
		}
		if len(a.HardwareAddr) > 0 && a.HardwareAddr.String() != ifi.HardwareAddr.String() ||
			a.Zone != "" && a.Zone != ifi.Name {
			continue
		}
		out = append(out, fmt.Sprintf("[%v]:%d (%s)", ifi.HardwareAddr, a.Port, ifi.Name))
	}
	return out
}

// serve accepts connections on ln until it fails.
func (s *perfServer) serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go s.handle(c)
	}
}

// handle serves one connection according to its first byte.
func (s *perfServer) handle(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(perfHandshakeTimeout))
	var kind [1]byte
	if _, err := io.ReadFull(c, kind[:]); err != nil {
		c.Close()
		return
	}
	switch kind[0] {
	case connEcho:
		// --crr: echo the byte, then wait for the client's close.
		defer c.Close()
		if _, err := c.Write(kind[:]); err != nil {
			return
		}
		io.Copy(io.Discard, c)
	case connData:
		var cookie [cookieLen + 1]byte
		if _, err := io.ReadFull(c, cookie[:]); err != nil {
			c.Close()
			return
		}
		s.mu.Lock()
		t := s.tests[string(cookie[:cookieLen])]
		s.mu.Unlock()
		if t == nil {
			c.Close()
			return
		}
		t.add(c, s.tlsCfg)
	case connControl:
		defer c.Close()
		s.control(c)
	default:
		c.Close()
	}
}

// A serverTest is the server's half of one test.
type serverTest struct {
	h      perfHeader
	cookie string
	ctx    context.Context
	cancel context.CancelFunc
	data   chan perfStream // data connections as they arrive

	mu    sync.Mutex
	conns []net.Conn // every connection of the test, closed at its end

	stopping atomic.Bool // raw tests: the client is done sending
	stop     func()      // raw tests: tells the receiver to finish
}

// A perfStream is a data connection: c, TLS or not, over raw.
type perfStream struct {
	c   net.Conn
	raw net.Conn
}

// add hands a data connection to the test, after a TLS handshake if the
// test asks for one.
func (t *serverTest) add(c net.Conn, cfg *tls.Config) {
	if !t.track(c) {
		return
	}
	st := perfStream{c: c, raw: c}
	if t.h.TLS {
		tc := tls.Server(c, cfg)
		if err := tc.HandshakeContext(t.ctx); err != nil {
			return
		}
		st.c = tc
	}
	c.SetReadDeadline(time.Time{})
	select {
	case t.data <- st:
	default: // more than the test asked for
	}
}

// track records c to be closed with the test, or closes it if the test is
// over.
func (t *serverTest) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ctx.Err() != nil {
		c.Close()
		return false
	}
	t.conns = append(t.conns, c)
	return true
}

// closeAll closes every connection of the test.
func (t *serverTest) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.conns {
		c.Close()
	}
	t.conns = nil
}

// next returns the next data connection, or an error if the test ends
// first.
func (t *serverTest) next() (perfStream, error) {
	select {
	case st := <-t.data:
		return st, nil
	case <-t.ctx.Done():
		return perfStream{}, errors.New("test aborted before its connections came")
	}
}

// control runs one test on its control connection c.
func (s *perfServer) control(c net.Conn) {
	br := bufio.NewReader(c)
	var h perfHeader
	if err := readJSONLine(br, &h); err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	if err := checkHeader(&h); err != nil {
		writeJSONLine(c, perfHello{Error: err.Error()})
		return
	}
	if !s.busy.TryLock() {
		writeJSONLine(c, perfHello{Error: "the server is busy with another test"})
		return
	}
	var cookie [cookieLen / 2]byte
	rand.Read(cookie[:])
	ctx, cancel := context.WithCancel(context.Background())
	t := &serverTest{h: h, cookie: hex.EncodeToString(cookie[:]), ctx: ctx, cancel: cancel,
		data: make(chan perfStream, h.Parallel)}
	s.mu.Lock()
	s.tests[t.cookie] = t
	s.mu.Unlock()
	// end ends the test; it runs before the result goes out, so that the
	// client may start its next test as soon as it has it.
	end := sync.OnceFunc(func() {
		cancel()
		t.closeAll()
		s.mu.Lock()
		delete(s.tests, t.cookie)
		s.mu.Unlock()
		s.busy.Unlock()
	})
	defer end()

	transport := "tcp"
	from := framesNetdev
	if _, ok := c.(*myproto.Conn); ok {
		transport, from = "myproto", framesMyproto
	}
	hello := perfHello{Cookie: t.cookie}
	if h.TLS {
		hello.Cert = s.certDER
	}
	var run func() perfSide
	switch h.Mode {
	case modeRaw, modeRawRR:
		la, ok := c.LocalAddr().(*myproto.Addr)
		if !ok {
			writeJSONLine(c, perfHello{Error: "raw tests run over a myproto control connection"})
			return
		}
		var err error
		if h.Mode == modeRaw {
			run, err = t.rawReceiver(la.Zone)
		} else {
			run, err = t.rawEcho(la.Zone)
		}
		if err != nil {
			writeJSONLine(c, perfHello{Error: err.Error()})
			return
		}
		hello.MAC = la.HardwareAddr.String()
		from = framesRaw
	default:
		run = t.run
	}

	start := s.m.take()
	if err := writeJSONLine(c, hello); err != nil {
		t.stopRaw()
		return
	}
	result := make(chan perfSide, 1)
	go func() { result <- run() }()

	var done perfDone
	if err := readJSONLine(br, &done); err != nil {
		// The client went away: end the test.
		cancel()
		t.closeAll()
		t.stopRaw()
		<-result
		fmt.Fprintf(s.stdout, "%s %s test from %v over %s: aborted: the control connection failed: %v\n",
			time.Now().Format(time.TimeOnly), h.Mode, c.RemoteAddr(), transport, err)
		return
	}
	t.stopRaw()
	var side perfSide
	select {
	case side = <-result:
	case <-time.After(perfFinishTimeout):
		cancel()
		t.closeAll()
		side = <-result
		side.Error = "the test's data did not finish"
	}
	stop := s.m.take()
	end()
	side.CPU = s.m.figures(start, stop, from)
	if from == framesRaw {
		side.CPU.FramesIn, side.CPU.FramesOut = side.Frames, 0
		if h.Mode == modeRawRR {
			side.CPU.FramesOut = side.Frames
		}
		side.CPU.perFrame()
	}
	writeJSONLine(c, side)
	fmt.Fprintf(s.stdout, "%s %s test from %v over %s: %s\n", time.Now().Format(time.TimeOnly), h.Mode,
		c.RemoteAddr(), transport, side.summary(h))
}

// stopRaw tells a raw test's receiver that the client is done.
func (t *serverTest) stopRaw() {
	if t.stop != nil && t.stopping.CompareAndSwap(false, true) {
		t.stop()
	}
}

// summary is a one-line account of the server's side, for its log.
func (side perfSide) summary(h perfHeader) string {
	if side.Error != "" {
		return "failed: " + side.Error
	}
	switch h.Mode {
	case modeBulk:
		verb := "received"
		if h.Reverse {
			verb = "sent"
		}
		tls := ""
		if h.TLS {
			tls = ", TLS"
		}
		return fmt.Sprintf("%s %s in %.2f s (%s), %d connection(s)%s", verb, iperfBytes(side.Bytes),
			side.Seconds, formatBits(rate(side.Bytes*8, side.Seconds)), h.Parallel, tls)
	case modeRaw:
		return fmt.Sprintf("received %d frames in %.2f s, %d dropped by the ring", side.Frames, side.Seconds, side.Drops)
	case modeRawRR:
		return fmt.Sprintf("echoed %d frames", side.Frames)
	}
	return fmt.Sprintf("echoed %d bytes", side.Bytes)
}

// checkHeader validates a client's header.
func checkHeader(h *perfHeader) error {
	switch h.Mode {
	case modeBulk, modeRR, modeCRR, modeRaw, modeRawRR:
	default:
		return fmt.Errorf("unknown test mode %q", h.Mode)
	}
	switch {
	case h.Parallel < 1 || h.Parallel > 128:
		return fmt.Errorf("bad parallel count %d", h.Parallel)
	case h.Len < 1 || h.Len > 16<<20:
		return fmt.Errorf("bad length %d", h.Len)
	case h.Duration <= 0 && h.Count <= 0:
		return errors.New("no duration and no count")
	}
	return nil
}

// run runs the server's half of a bulk, rr or crr test.
func (t *serverTest) run() perfSide {
	switch {
	case t.h.Mode == modeCRR:
		// The echo connections need no test; the control connection
		// only brackets the CPU figures.
		return perfSide{}
	case t.h.Mode == modeRR:
		return t.echo()
	case t.h.Reverse:
		return t.send()
	}
	return t.receive()
}

// receive reads every stream to its end.
func (t *serverTest) receive() perfSide {
	var (
		wg          sync.WaitGroup
		mu          sync.Mutex
		total       int64
		first, last time.Time
		errs        []error
	)
	for range t.h.Parallel {
		st, err := t.next()
		if err != nil {
			errs = append(errs, err)
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, f, err := readAll(st.c)
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			total += n
			if first.IsZero() || !f.IsZero() && f.Before(first) {
				first = f
			}
			last = now
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	side := perfSide{Bytes: total}
	if !first.IsZero() {
		side.Seconds = last.Sub(first).Seconds()
	}
	if err := errors.Join(errs...); err != nil {
		side.Error = err.Error()
	}
	return side
}

// readAll reads r to its end and returns how many bytes came and when the
// first did.
func readAll(r io.Reader) (n int64, first time.Time, err error) {
	buf := make([]byte, 1<<20)
	for {
		k, err := r.Read(buf)
		if k > 0 {
			if n == 0 {
				first = time.Now()
			}
			n += int64(k)
		}
		if err == io.EOF {
			return n, first, nil
		}
		if err != nil {
			return n, first, err
		}
	}
}

// send writes to every stream for the test's duration or its share of
// the test's bytes, then half-closes it and waits for the client to close.
func (t *serverTest) send() perfSide {
	var (
		wg          sync.WaitGroup
		mu          sync.Mutex
		side        perfSide
		first, last time.Time
		errs        []error
		end         time.Time
	)
	for i := range t.h.Parallel {
		st, err := t.next()
		if err != nil {
			errs = append(errs, err)
			break
		}
		if i == 0 {
			first = time.Now()
			end = first.Add(t.h.Duration)
		}
		share := int64(0)
		if t.h.Count > 0 {
			share = t.h.Count / int64(t.h.Parallel)
			if i == 0 {
				share += t.h.Count % int64(t.h.Parallel)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			before := streamRetrans(st.raw)
			n, err := writeFor(st.c, t.h.Len, end, share)
			if err == nil {
				err = closeWrite(st.c)
			}
			now := time.Now()
			retrans := streamRetrans(st.raw) - before
			if err == nil {
				// The client closes once it has read everything.
				_, _, err = readAll(st.c)
			}
			mu.Lock()
			defer mu.Unlock()
			side.Bytes += n
			side.Retransmits += retrans
			last = now
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	if !first.IsZero() {
		side.Seconds = last.Sub(first).Seconds()
	}
	if err := errors.Join(errs...); err != nil {
		side.Error = err.Error()
	}
	return side
}

// writeFor writes chunks of size bytes to w until end, or, if count is
// positive, until count bytes are written, and returns the bytes written.
func writeFor(w io.Writer, size int, end time.Time, count int64) (int64, error) {
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	var n int64
	for {
		b := buf
		if count > 0 {
			if n >= count {
				return n, nil
			}
			b = buf[:min(int64(len(buf)), count-n)]
		} else if !time.Now().Before(end) {
			return n, nil
		}
		k, err := w.Write(b)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
}

// closeWrite half-closes c: TLS sends close_notify, which its reader takes
// as the end; myproto and TCP send a FIN.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// echo answers requests of the test's length until the client closes.
func (t *serverTest) echo() perfSide {
	st, err := t.next()
	if err != nil {
		return perfSide{Error: err.Error()}
	}
	buf := make([]byte, t.h.Len)
	var side perfSide
	for {
		if _, err := io.ReadFull(st.c, buf); err != nil {
			if err != io.EOF {
				side.Error = err.Error()
			}
			return side
		}
		if _, err := st.c.Write(buf); err != nil {
			side.Error = err.Error()
			return side
		}
		side.Bytes += int64(len(buf))
	}
}

// streamRetrans returns the retransmissions c has counted: packets for
// myproto, segments for TCP.
func streamRetrans(c net.Conn) uint64 {
	r, _, _, _ := connStats(c)
	return r
}

// connStats returns what the transport says of a connection: its
// retransmissions, congestion window and smoothed RTT.
func connStats(c net.Conn) (retrans uint64, cwnd int, srtt time.Duration, ok bool) {
	switch c := c.(type) {
	case *myproto.Conn:
		in := c.Info()
		return in.PacketsRetransmitted, in.Cwnd, in.SRTT, true
	case *net.TCPConn:
		return tcpStats(c)
	}
	return 0, 0, 0, false
}
