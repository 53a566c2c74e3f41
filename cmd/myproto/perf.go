package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/myproto/myproto"
)

// myproto perf is iperf3 for myproto: a server that stays up for many
// tests, and a client that runs one and reports it. See perfUsage.

const perfUsage = `usage: myproto perf -s [ADDR] [--tcp-listen [HOST]:PORT]
       myproto perf -c ADDR [options]

Measures myproto between two hosts, as iperf3 does for TCP: bulk transfer,
request/response latency, connection setup rate, and the link's own frame
ceiling. The server stays up for many tests; the client runs one.

Server:
  -s                 serve tests on myproto ADDR (default: every interface,
                     port 5201)
  --udp              also serve them on the UDP bearer ("udp:PORT"), for
                     clients' -c IP
  --tcp-listen ADDR  also serve tests over kernel TCP on ADDR (HOST:PORT or
                     :PORT), for clients' --tcp

Client:
  -c ADDR            the server's myproto address: [MAC]:PORT,
                     [MAC%IFACE]:PORT, NAME:PORT, or over the UDP bearer
                     IP:PORT, [IP%udp]:PORT; the port defaults to 5201
  -t DURATION        test length (default 10s; a plain number is seconds)
  -n N               bytes to send instead (bulk; K, M, G suffixes), or
                     transactions (--rr) or connections (--crr)
  -l SIZE            write size (bulk, default 128K), or request and
                     response size (--rr, default 1)
  -P N               parallel connections (bulk, default 1)
  -R                 reverse: the server sends
  --tls              TLS 1.3 over each connection (bulk and --rr)
  --rr               1-byte request/response latency: p50, p90, p99, max
  --crr              connection setup rate: dial, one echoed byte, close
  --raw              the link's frame ceiling: a sendmmsg flood of
                     MTU-sized frames into a TPACKET_V3 ring on the server;
                     with --rr, 1-byte raw frames ping-ponged through Go's
                     poller
  --tcp HOST[:PORT]  run the same test over kernel TCP to the same server
                     (started with --tcp-listen) and print both and the ratio
  -i DURATION        interval between reports (default 1s; 0: none)
  -J                 print one JSON object instead of text
  -p PORT            the myproto port (default 5201)
  --no-offload       the UDP bearer without segmentation offload
                     (UDP_SEGMENT, UDP_GRO), to measure what they bring
  --ring SIZE        receive through a TPACKET_V2 ring of SIZE bytes
                     (Config.ReceiveRing; K, M suffixes), to measure it
                     against the socket buffer

CPU figures are each process's getrusage(2) over the test: CPU time, and
context switches, per frame in the busier direction (myproto's frame
counters; for TCP the interfaces' packets, which are GSO chunks); system
calls per frame where a perf event can count them (root, tracefs).
`

// perfPort is the default port, iperf3's.
const perfPort = 5201

// Test modes, as the client sends them to the server.
const (
	modeBulk  = "bulk"
	modeRR    = "rr"
	modeCRR   = "crr"
	modeRaw   = "raw"   // a flood of raw frames into a ring
	modeRawRR = "rawrr" // raw frames ping-ponged through the poller
)

// The first byte of every connection says what it is for.
const (
	connControl = 'C' // a test's control connection: header, done, result
	connData    = 'D' // a data connection of the test its cookie names
	connEcho    = 'E' // --crr: this byte is echoed, then the client closes
)

// perfOptions are the command line's.
type perfOptions struct {
	server    bool
	listen    string // -s ADDR
	tcpListen string
	udp       bool   // -s: also on the UDP bearer
	noOffload bool   // the UDP bearer without GSO and GRO
	ring      int    // Config.ReceiveRing
	client    string // -c ADDR
	port      int

	duration time.Duration
	count    int64
	length   int
	parallel int
	reverse  bool
	tls      bool
	rr, crr  bool
	raw      bool
	tcp      string
	interval time.Duration
	json     bool
}

// mode returns the test mode the options ask for.
func (o *perfOptions) mode() string {
	switch {
	case o.raw && o.rr:
		return modeRawRR
	case o.raw:
		return modeRaw
	case o.rr:
		return modeRR
	case o.crr:
		return modeCRR
	}
	return modeBulk
}

// perf runs myproto perf with args and returns the exit status.
func perf(args []string, stdout, stderr io.Writer) int {
	o, err := parsePerf(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, perfUsage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "myproto perf: %v\n\n%s", err, perfUsage)
		return 2
	}
	if o.server {
		err = runPerfServer(o, stdout, stderr)
	} else {
		err = runPerfClient(o, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "myproto perf: %v\n", err)
		return 1
	}
	return 0
}

// parsePerf parses the command line. Flags and the server's address may
// come in any order.
func parsePerf(args []string, stderr io.Writer) (*perfOptions, error) {
	o := &perfOptions{}
	fs := flag.NewFlagSet("perf", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&o.server, "s", false, "")
	fs.StringVar(&o.tcpListen, "tcp-listen", "", "")
	fs.BoolVar(&o.udp, "udp", false, "")
	fs.BoolVar(&o.noOffload, "no-offload", false, "")
	fs.StringVar(&o.client, "c", "", "")
	fs.IntVar(&o.port, "p", perfPort, "")
	dur := durationFlag(10 * time.Second)
	fs.Var(&dur, "t", "")
	var count sizeFlag
	fs.Var(&count, "n", "")
	var length sizeFlag
	fs.Var(&length, "l", "")
	fs.IntVar(&o.parallel, "P", 1, "")
	fs.BoolVar(&o.reverse, "R", false, "")
	fs.BoolVar(&o.tls, "tls", false, "")
	fs.BoolVar(&o.rr, "rr", false, "")
	fs.BoolVar(&o.crr, "crr", false, "")
	fs.BoolVar(&o.raw, "raw", false, "")
	fs.StringVar(&o.tcp, "tcp", "", "")
	interval := durationFlag(time.Second)
	fs.Var(&interval, "i", "")
	fs.BoolVar(&o.json, "J", false, "")
	var ring sizeFlag
	fs.Var(&ring, "ring", "")

	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	o.duration, o.count, o.length, o.interval = time.Duration(dur), int64(count), int(length), time.Duration(interval)
	o.ring = int(ring)

	switch {
	case o.server == (o.client != ""):
		return nil, errors.New("give one of -s and -c")
	case o.server && len(positional) > 1, !o.server && len(positional) > 0:
		return nil, fmt.Errorf("unexpected arguments %q", positional)
	case o.port <= 0 || o.port > 0xffff:
		return nil, fmt.Errorf("bad port %d", o.port)
	}
	if o.server {
		o.listen = ":" + strconv.Itoa(o.port)
		if len(positional) == 1 {
			o.listen = withPort(positional[0], o.port)
		}
		return o, nil
	}
	o.client = withPort(o.client, o.port)
	mode := o.mode()
	switch {
	case o.rr && o.crr:
		return nil, errors.New("--rr and --crr exclude each other")
	case o.raw && o.crr:
		return nil, errors.New("--raw and --crr exclude each other")
	case o.raw && (o.tls || o.tcp != ""):
		return nil, errors.New("--raw measures raw frames: no --tls, no --tcp")
	case o.crr && o.tls:
		return nil, errors.New("--crr measures plain connections: no --tls")
	case o.parallel < 1 || o.parallel > 128:
		return nil, fmt.Errorf("-P %d: want 1 to 128", o.parallel)
	case o.parallel > 1 && mode != modeBulk:
		return nil, errors.New("-P is for bulk tests")
	case o.reverse && mode != modeBulk:
		return nil, errors.New("-R is for bulk tests")
	case o.duration <= 0 && o.count <= 0:
		return nil, errors.New("-t must be positive")
	case o.count < 0, o.length < 0, o.interval < 0:
		return nil, errors.New("-n, -l and -i must not be negative")
	case o.length > 16<<20:
		return nil, errors.New("-l at most 16M")
	}
	if o.length == 0 {
		o.length = 128 << 10
		if mode != modeBulk {
			o.length = 1
		}
	}
	if mode == modeRawRR || mode == modeCRR {
		o.length = 1
	}
	if o.tcp != "" {
		if _, _, err := net.SplitHostPort(o.tcp); err != nil {
			o.tcp = net.JoinHostPort(o.tcp, strconv.Itoa(o.port))
		}
	}
	return o, nil
}

// withPort adds port to a myproto address that has none: "nodeb",
// "[02:00:5e:10:00:01]", "[mac%eth0]" or a bare MAC.
func withPort(addr string, port int) string {
	p := ":" + strconv.Itoa(port)
	switch {
	case strings.HasPrefix(addr, "[") && strings.HasSuffix(addr, "]"):
		return addr + p
	case !strings.Contains(addr, ":"):
		return addr + p
	}
	if _, err := net.ParseMAC(addr); err == nil {
		return "[" + addr + "]" + p
	}
	return addr
}

// durationFlag is a duration given as Go writes one or in plain seconds,
// as iperf3 takes them.
type durationFlag time.Duration

func (d *durationFlag) String() string { return time.Duration(*d).String() }

func (d *durationFlag) Set(s string) error {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		*d = durationFlag(f * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	*d = durationFlag(v)
	return err
}

// sizeFlag is a count with an optional K, M or G suffix (powers of 1024).
type sizeFlag int64

func (n *sizeFlag) String() string { return strconv.FormatInt(int64(*n), 10) }

func (n *sizeFlag) Set(s string) error {
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v > math.MaxInt64/mult {
		return fmt.Errorf("bad size %q", s)
	}
	*n = sizeFlag(v * mult)
	return nil
}

// perfHeader is what the client asks for on a control connection.
type perfHeader struct {
	Mode     string        `json:"mode"`
	Reverse  bool          `json:"reverse,omitempty"`
	TLS      bool          `json:"tls,omitempty"`
	Parallel int           `json:"parallel"`
	Len      int           `json:"len"`
	Duration time.Duration `json:"duration_ns"`
	Count    int64         `json:"count,omitempty"`
}

// perfHello is the server's answer to a header.
type perfHello struct {
	Error  string `json:"error,omitempty"`
	Cookie string `json:"cookie,omitempty"` // data connections name their test with it
	Cert   []byte `json:"cert,omitempty"`   // --tls: the server's certificate, DER
	MAC    string `json:"mac,omitempty"`    // raw tests: where to send frames
}

// perfDone is what the client sends when its part of a test is over.
type perfDone struct {
	Error  string `json:"error,omitempty"`
	Frames uint64 `json:"frames,omitempty"` // raw flood: frames sent
}

// perfSide is one side's account of a test.
type perfSide struct {
	Error string `json:"error,omitempty"`
	// Bytes are the data bytes this side received (or sent, as the
	// test's sender), Seconds the time from the first to the last.
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	// Retransmits are this side's, as the sender.
	Retransmits uint64 `json:"retransmits"`
	// Raw tests: frames received, and the ring's drops.
	Frames      uint64     `json:"frames,omitempty"`
	Drops       uint64     `json:"drops,omitempty"`
	FreezeQueue uint64     `json:"freeze_queue,omitempty"`
	CPU         cpuFigures `json:"cpu"`
}

// cpuFigures are one process's costs over a test.
type cpuFigures struct {
	UserSeconds float64 `json:"user_s"`
	SysSeconds  float64 `json:"sys_s"`
	FramesIn    uint64  `json:"frames_in"`
	FramesOut   uint64  `json:"frames_out"`
	// FramesFrom says what counted the frames.
	FramesFrom  string `json:"frames_from"`
	CtxSwitches uint64 `json:"ctx_switches"`
	// Syscalls is -1 when they could not be counted; SyscallsNote says
	// why.
	Syscalls     int64  `json:"syscalls"`
	SyscallsNote string `json:"syscalls_note,omitempty"`
	// Per frame in the busier direction.
	CPUNsPerFrame       float64 `json:"cpu_ns_per_frame"`
	CtxSwitchesPerFrame float64 `json:"ctx_switches_per_frame"`
	SyscallsPerFrame    float64 `json:"syscalls_per_frame"`
}

// Frame counters cpuFigures can divide by.
const (
	framesMyproto = "myproto"
	framesNetdev  = "netdev"
	framesRaw     = "raw"
)

// figures returns the costs between snapshots a and b. For framesRaw the
// caller fills in the frames and calls perFrame.
func (m *meter) figures(a, b usageSnap, from string) cpuFigures {
	f := cpuFigures{
		UserSeconds:  (b.user - a.user).Seconds(),
		SysSeconds:   (b.sys - a.sys).Seconds(),
		FramesFrom:   from,
		CtxSwitches:  b.ctxSwitches - a.ctxSwitches,
		Syscalls:     -1,
		SyscallsNote: m.why,
	}
	if a.syscalls >= 0 && b.syscalls >= 0 {
		f.Syscalls = b.syscalls - a.syscalls
	}
	switch from {
	case framesMyproto:
		f.FramesIn, f.FramesOut = b.mpIn-a.mpIn, b.mpOut-a.mpOut
	case framesNetdev:
		f.FramesIn, f.FramesOut = b.devIn-a.devIn, b.devOut-a.devOut
	}
	f.perFrame()
	return f
}

// perFrame computes the per-frame figures.
func (f *cpuFigures) perFrame() {
	frames := float64(max(f.FramesIn, f.FramesOut))
	if frames == 0 {
		return
	}
	f.CPUNsPerFrame = (f.UserSeconds + f.SysSeconds) * 1e9 / frames
	f.CtxSwitchesPerFrame = float64(f.CtxSwitches) / frames
	if f.Syscalls >= 0 {
		f.SyscallsPerFrame = float64(f.Syscalls) / frames
	}
}

// writeJSONLine writes v as one line of JSON.
func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// readJSONLine reads one line of JSON into v.
func readJSONLine(br *bufio.Reader, v any) error {
	line, err := br.ReadBytes('\n')
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return json.Unmarshal(line, v)
}

// perfCertName is the name in the certificate the server makes for --tls.
const perfCertName = "myproto-perf"

// perfBearers is the stack's configuration for --udp and --no-offload:
// Ethernet and a UDP bearer, which an address naming no interface (the
// server's ":5201") then includes; nil, the defaults, otherwise.
func perfBearers(o *perfOptions) []myproto.Bearer {
	if !o.udp && !o.noOffload {
		return nil
	}
	return []myproto.Bearer{{Media: myproto.MediaEthernet},
		{Media: myproto.MediaUDP, Local: os.Getenv("MYPROTO_UDP_LOCAL"), NoOffload: o.noOffload}}
}

// perfConfig is the default stack's configuration for --udp, --no-offload
// and --ring, or nil for the defaults.
func perfConfig(o *perfOptions) *myproto.Config {
	bs := perfBearers(o)
	if bs == nil && o.ring == 0 {
		return nil
	}
	return &myproto.Config{Bearers: bs, ReceiveRing: o.ring}
}
