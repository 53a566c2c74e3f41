package myproto

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/myproto/myproto/internal/stream"
	"github.com/myproto/myproto/internal/sys"
	"github.com/myproto/myproto/internal/testenv"
)

// Peer processes: a test starts this test binary again, in the network
// namespace of the "host" it plays, with MYPROTO_PEER=1; TestMain hands it to
// runPeer, which runs myproto through its public API on commands read from
// standard input. Server and client are then separate processes, as in the
// field: each has its own stack, node ID and sockets, several share a host's
// MAC, and a kill -9 is a real process death.
//
// The protocol is a line per request, "TAG VERB ARGS...", and a line per
// reply, "TAG ok ..." or "TAG err MESSAGE". Requests run concurrently, a
// goroutine each, so one that blocks (readerr) does not hold up the others.
// Connections are named by ids: c1, c2... for dialed ones, a1, a2... for
// accepted ones. Durations are Go's ("500ms"); times are Unix nanoseconds
// (the processes share the machine's clock). Verbs:
//
//	listen ADDR MODE [keepalive=D] [usertimeout=D]   ok ADDR
//	    MODE echo echoes each accepted conn, sink reads and discards, hold
//	    keeps it idle.
//	accepted                                         ok ID...
//	dial ADDR [TIMEOUT] [keepalive=D] [usertimeout=D] ok ID LOCAL REMOTE
//	write ID N                                       ok
//	read ID N                                        ok
//	copy ID N                                        ok
//	    A deterministic pattern (peerPattern), continued across calls per
//	    conn and direction; read and copy verify it. copy writes N bytes and
//	    reads them back through an echo server.
//	readerr ID                                       ok ERRNO TIME ERRTEXT
//	    Reads (discarding) until Read fails. ERRNO is the syscall.Errno name
//	    errors.As finds (ECONNRESET, ETIMEDOUT...), else EOF, CLOSED
//	    (net.ErrClosed), DEADLINE or OTHER; TIME when Read failed.
//	stream ID [CHUNK] [PAUSE]                        ok
//	    Starts writing CHUNK bytes (4096) and reading them back through an
//	    echo server, verified, then pausing PAUSE (1ms), until an error.
//	check ID                                         ok BYTES ERRNO TIME ERRTEXT
//	    Bytes streamed back so far; the stream's first error (ERRNO none,
//	    TIME 0 while there is none).
//	lookup NAME [TIMEOUT]                            ok MAC ZONE
//	info ID                                          ok STATE SRTT SENT RECEIVED
//	close ID                                         ok
//	gap ID                                           ok MAXGAP TIME
//	    The longest time between two chunks of a stream echoed back, since
//	    the last gap request, and when it ended.
//	dialmany ADDR N [conc=C] [TIMEOUT] [keepalive=D] [usertimeout=D]
//	                                                 ok HELD ELAPSED MARKS
//	    Dials N conns, C at a time (32), and holds them (no ids: see
//	    closemany). MARKS is "1000=D,10000=D,...,N=D,slowest=D@K,first=D,
//	    last=D": how long the thousand dials up to each power of ten (and
//	    N) took, a measure of the dial rate with that many held, the
//	    slowest thousand, and the medians of the first and the last ten.
//	bindmany ADDR N                                  ok N
//	    Opens N datagram sockets on ADDR ("iface:0"): N ports.
//	closemany                                        ok N ELAPSED
//	    Closes every conn dialmany holds and every socket bindmany opened,
//	    in one go.
//	mem [gc] [reset]                                 ok rss=B hwm=B heap=B gor=N maxgor=N fds=N live=N
//	    From /proc/self (VmRSS, VmHWM, open fds) and the runtime: heap in
//	    use, goroutines now and at most (sampled every millisecond since
//	    the last reset), and connections the stack knows. gc collects and
//	    returns freed memory to the system first; reset then starts VmHWM
//	    and maxgor afresh.
//	profile cpu|heap|goroutine PATH [D]              ok
//	    Writes a pprof profile to PATH: of the CPU for D (1s), else now.
//	stats                                            ok kdrops=N kpkts=N ctldrops=N ctlpkts=N in=N out=N attaches=N
//	    The stack's interfaces summed: kernel drops and packets of the data
//	    and control sockets, frames read and written, filter updates.
//	pid                                              ok PID
//	exit                                             (exits)
//
// Other files add verbs to peerVerbs (flood_linux_test.go: synflood, bulk,
// dials, ctlstats). The peer exits when its standard input closes.

// envPeer makes TestMain run runPeer.
const envPeer = "MYPROTO_PEER"

// peerTimeout bounds a request's wait for its reply in peerProc.do.
var peerTimeout = func() time.Duration {
	if raceEnabled {
		return 30 * time.Second // race-instrumented peers on a busy CPU
	}
	return 10 * time.Second
}()

// peerPattern is the byte at offset off of every stream the peers write.
func peerPattern(off int64) byte {
	return byte(off) ^ byte(off>>8)*7 ^ byte(off>>16)*13 ^ byte(off>>24)*29
}

// peerConn is a connection of a peer process.
type peerConn struct {
	c *Conn

	wmu  sync.Mutex
	wOff int64
	rmu  sync.Mutex
	rOff int64

	streaming atomic.Bool
	streamed  atomic.Int64
	gapMu     sync.Mutex
	lastChunk time.Time     // when the stream's last chunk came back
	maxGap    time.Duration // the longest wait for a chunk since the last gap request
	maxGapAt  time.Time     // when it ended
	errMu     sync.Mutex
	err       error
	errAt     time.Time
}

func (pc *peerConn) write(n int64) error {
	pc.wmu.Lock()
	defer pc.wmu.Unlock()
	buf := make([]byte, min(n, 64<<10))
	for n > 0 {
		k := min(n, int64(len(buf)))
		for i := range k {
			buf[i] = peerPattern(pc.wOff + i)
		}
		m, err := pc.c.Write(buf[:k])
		pc.wOff += int64(m)
		n -= int64(m)
		if err != nil {
			return err
		}
	}
	return nil
}

func (pc *peerConn) read(n int64) error {
	pc.rmu.Lock()
	defer pc.rmu.Unlock()
	buf := make([]byte, min(n, 64<<10))
	for n > 0 {
		k := min(n, int64(len(buf)))
		m, err := io.ReadFull(pc.c, buf[:k])
		for i := range m {
			if buf[i] != peerPattern(pc.rOff+int64(i)) {
				return fmt.Errorf("byte %d of the stream is %#x, want %#x", pc.rOff+int64(i), buf[i], peerPattern(pc.rOff+int64(i)))
			}
		}
		pc.rOff += int64(m)
		n -= int64(m)
		if err != nil {
			return err
		}
	}
	return nil
}

// copy writes n bytes and reads them back at once, so that n may exceed
// what the buffers hold.
func (pc *peerConn) copy(n int64) error {
	werr := make(chan error, 1)
	go func() { werr <- pc.write(n) }()
	rerr := pc.read(n)
	if err := <-werr; err != nil {
		return err
	}
	return rerr
}

func (pc *peerConn) fail(err error) {
	pc.errMu.Lock()
	defer pc.errMu.Unlock()
	if pc.err == nil {
		pc.err, pc.errAt = err, time.Now()
	}
}

func (pc *peerConn) stream(chunk int64, pause time.Duration) {
	for {
		if err := pc.copy(chunk); err != nil {
			pc.fail(err)
			return
		}
		pc.streamed.Add(chunk)
		pc.gapMu.Lock()
		now := time.Now()
		if !pc.lastChunk.IsZero() && now.Sub(pc.lastChunk) > pc.maxGap {
			pc.maxGap, pc.maxGapAt = now.Sub(pc.lastChunk), now
		}
		pc.lastChunk = now
		pc.gapMu.Unlock()
		time.Sleep(pause)
	}
}

// peerState is a peer process's state.
type peerState struct {
	outMu sync.Mutex

	mu    sync.Mutex
	conns map[string]*peerConn
	many  []*Conn       // dialmany's, under mu
	binds []*PacketConn // bindmany's, under mu
	dials atomic.Int64
	accs  atomic.Int64

	maxGor  atomic.Int64 // the most goroutines seen since the last mem reset
	sampler sync.Once    // starts sampleGoroutines, on the first mem
}

// runPeer is a peer process's main function.
func runPeer() {
	p := &peerState{conns: make(map[string]*peerConn)}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		line := sc.Text()
		go p.serve(line)
	}
	os.Exit(0) // the parent is gone
}

func (p *peerState) reply(tag, s string) {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	os.Stdout.WriteString(tag + " " + s + "\n")
}

func (p *peerState) serve(line string) {
	f := strings.Fields(line)
	if len(f) < 2 {
		fmt.Fprintf(os.Stderr, "peer: bad request %q\n", line)
		return
	}
	tag, verb, args := f[0], f[1], f[2:]
	s, err := p.run(verb, args)
	if err != nil {
		// One line, whatever the error says.
		p.reply(tag, "err "+strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	p.reply(tag, strings.TrimRight("ok "+s, " "))
	if verb == "exit" {
		os.Exit(0)
	}
}

// conn returns the connection id names.
func (p *peerState) conn(id string) (*peerConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc, ok := p.conns[id]
	if !ok {
		return nil, fmt.Errorf("no connection %q", id)
	}
	return pc, nil
}

func (p *peerState) add(prefix string, n *atomic.Int64, c *Conn) (string, *peerConn) {
	id := prefix + strconv.FormatInt(n.Add(1), 10)
	pc := &peerConn{c: c}
	p.mu.Lock()
	p.conns[id] = pc
	p.mu.Unlock()
	return id, pc
}

// peerOptions parses the optional arguments "keepalive=D", "usertimeout=D"
// and a bare duration, the timeout.
func peerOptions(args []string) (timeout, keepAlive, userTimeout time.Duration, err error) {
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			k, v = "timeout", a
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, 0, 0, err
		}
		switch k {
		case "timeout":
			timeout = d
		case "keepalive":
			keepAlive = d
		case "usertimeout":
			userTimeout = d
		default:
			return 0, 0, 0, fmt.Errorf("unknown option %q", a)
		}
	}
	return timeout, keepAlive, userTimeout, nil
}

// errnoName names err for replies: see the verbs.
func errnoName(err error) string {
	var errno syscall.Errno
	switch {
	case errors.As(err, &errno):
		if n := unix.ErrnoName(errno); n != "" {
			return n
		}
		return "errno" + strconv.Itoa(int(errno))
	case errors.Is(err, io.EOF):
		return "EOF"
	case errors.Is(err, net.ErrClosed):
		return "CLOSED"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "DEADLINE"
	}
	return "OTHER"
}

func (p *peerState) run(verb string, args []string) (string, error) {
	need := func(n int) error {
		if len(args) < n {
			return fmt.Errorf("%s needs %d arguments, has %v", verb, n, args)
		}
		return nil
	}
	// withConn runs fn with the connection args[0] names and the integer
	// args[1] when there is one.
	withConn := func(fn func(pc *peerConn, n int64) error) (string, error) {
		if err := need(1); err != nil {
			return "", err
		}
		pc, err := p.conn(args[0])
		if err != nil {
			return "", err
		}
		var n int64
		if len(args) > 1 {
			if n, err = strconv.ParseInt(args[1], 10, 64); err != nil {
				return "", err
			}
		}
		return "", fn(pc, n)
	}
	switch verb {
	case "pid":
		return strconv.Itoa(os.Getpid()), nil
	case "exit":
		return "", nil
	case "listen":
		if err := need(2); err != nil {
			return "", err
		}
		_, ka, ut, err := peerOptions(args[2:])
		if err != nil {
			return "", err
		}
		mode := args[1]
		if mode != "echo" && mode != "sink" && mode != "hold" {
			return "", fmt.Errorf("unknown mode %q", mode)
		}
		lc := &ListenConfig{KeepAlive: ka, UserTimeout: ut}
		l, err := lc.Listen(context.Background(), "myproto", args[0])
		if err != nil {
			return "", err
		}
		ln := l.(*Listener)
		go p.accept(ln, mode)
		return ln.Addr().String(), nil
	case "accepted":
		p.mu.Lock()
		defer p.mu.Unlock()
		var ids []string
		for i := int64(1); i <= p.accs.Load(); i++ {
			if id := "a" + strconv.FormatInt(i, 10); p.conns[id] != nil {
				ids = append(ids, id)
			}
		}
		return strings.Join(ids, " "), nil
	case "dial":
		if err := need(1); err != nil {
			return "", err
		}
		timeout, ka, ut, err := peerOptions(args[1:])
		if err != nil {
			return "", err
		}
		d := &Dialer{Timeout: timeout, KeepAlive: ka, UserTimeout: ut}
		c, err := d.DialContext(context.Background(), "myproto", args[0])
		if err != nil {
			return "", err
		}
		id, _ := p.add("c", &p.dials, c.(*Conn))
		return fmt.Sprintf("%s %v %v", id, c.LocalAddr(), c.RemoteAddr()), nil
	case "write":
		return withConn(func(pc *peerConn, n int64) error { return pc.write(n) })
	case "read":
		return withConn(func(pc *peerConn, n int64) error { return pc.read(n) })
	case "copy":
		return withConn(func(pc *peerConn, n int64) error { return pc.copy(n) })
	case "readerr":
		pc, err := p.conn(firstArg(args))
		if err != nil {
			return "", err
		}
		buf := make([]byte, 64<<10)
		for {
			if _, err := pc.c.Read(buf); err != nil {
				return fmt.Sprintf("%s %d %v", errnoName(err), time.Now().UnixNano(), err), nil
			}
		}
	case "stream":
		pc, err := p.conn(firstArg(args))
		if err != nil {
			return "", err
		}
		chunk, pause := int64(4096), time.Millisecond
		if len(args) > 1 {
			if chunk, err = strconv.ParseInt(args[1], 10, 64); err != nil {
				return "", err
			}
		}
		if len(args) > 2 {
			if pause, err = time.ParseDuration(args[2]); err != nil {
				return "", err
			}
		}
		if !pc.streaming.CompareAndSwap(false, true) {
			return "", errors.New("already streaming")
		}
		go pc.stream(chunk, pause)
		return "", nil
	case "check":
		pc, err := p.conn(firstArg(args))
		if err != nil {
			return "", err
		}
		pc.errMu.Lock()
		defer pc.errMu.Unlock()
		if pc.err == nil {
			return fmt.Sprintf("%d none 0", pc.streamed.Load()), nil
		}
		return fmt.Sprintf("%d %s %d %v", pc.streamed.Load(), errnoName(pc.err), pc.errAt.UnixNano(), pc.err), nil
	case "lookup":
		if err := need(1); err != nil {
			return "", err
		}
		timeout, _, _, err := peerOptions(args[1:])
		if err != nil {
			return "", err
		}
		r := &Resolver{Timeout: timeout}
		a, err := r.LookupName(context.Background(), args[0])
		if err != nil {
			return "", err
		}
		zone := a.Zone
		if zone == "" {
			zone = "-"
		}
		return fmt.Sprintf("%v %s", a.HardwareAddr, zone), nil
	case "info":
		pc, err := p.conn(firstArg(args))
		if err != nil {
			return "", err
		}
		in := pc.c.Info()
		return fmt.Sprintf("%s %v %d %d", in.State, in.SRTT, in.BytesSent, in.BytesReceived), nil
	case "close":
		pc, err := p.conn(firstArg(args))
		if err != nil {
			return "", err
		}
		return "", pc.c.Close()
	case "gap":
		pc, err := p.conn(firstArg(args))
		if err != nil {
			return "", err
		}
		pc.gapMu.Lock()
		defer pc.gapMu.Unlock()
		// A stream stalled right now counts too.
		g, at := pc.maxGap, pc.maxGapAt
		if !pc.lastChunk.IsZero() && time.Since(pc.lastChunk) > g {
			g, at = time.Since(pc.lastChunk), time.Now()
		}
		pc.maxGap = 0
		return fmt.Sprintf("%v %d", g, at.UnixNano()), nil
	case "dialmany":
		return p.dialMany(args)
	case "bindmany":
		if err := need(2); err != nil {
			return "", err
		}
		n, err := strconv.Atoi(args[1])
		if err != nil {
			return "", err
		}
		for range n {
			c, err := ListenPacket("myproto", args[0])
			if err != nil {
				return "", err
			}
			p.mu.Lock()
			p.binds = append(p.binds, c)
			p.mu.Unlock()
		}
		return strconv.Itoa(n), nil
	case "closemany":
		p.mu.Lock()
		many, binds := p.many, p.binds
		p.many, p.binds = nil, nil
		p.mu.Unlock()
		start := time.Now()
		for _, c := range many {
			c.Close()
		}
		for _, c := range binds {
			c.Close()
		}
		return fmt.Sprintf("%d %v", len(many)+len(binds), time.Since(start)), nil
	case "mem":
		return p.mem(args)
	case "connstats":
		s, err := defaultStack(nil)
		if err != nil {
			return "", err
		}
		var sum stream.Stats
		s.conns.Range(func(_, v any) bool {
			c := v.(*Conn)
			c.mu.Lock()
			st := c.e.Stats()
			c.mu.Unlock()
			sum.PacketsSent += st.PacketsSent
			sum.PacketsRecv += st.PacketsRecv
			sum.PacketsLost += st.PacketsLost
			sum.PTOs += st.PTOs
			sum.Dups += st.Dups
			sum.Malformed += st.Malformed
			sum.ChallengeAcks += st.ChallengeAcks
			sum.Challenges += st.Challenges
			return true
		})
		return fmt.Sprintf("sent=%d recv=%d lost=%d ptos=%d dups=%d malformed=%d challenges=%d challengeacks=%d",
			sum.PacketsSent, sum.PacketsRecv, sum.PacketsLost, sum.PTOs, sum.Dups, sum.Malformed, sum.Challenges, sum.ChallengeAcks), nil
	case "profile":
		if err := need(2); err != nil {
			return "", err
		}
		f, err := os.Create(args[1])
		if err != nil {
			return "", err
		}
		defer f.Close()
		if args[0] != "cpu" {
			return "", pprof.Lookup(args[0]).WriteTo(f, 0)
		}
		d := time.Second
		if len(args) > 2 {
			if d, err = time.ParseDuration(args[2]); err != nil {
				return "", err
			}
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return "", err
		}
		time.Sleep(d)
		pprof.StopCPUProfile()
		return "", nil
	case "stats":
		s, err := defaultStack(nil)
		if err != nil {
			return "", err
		}
		var kd, kp, cd, cp, in, out, att uint64
		for _, ep := range s.endpointsSnapshot() {
			att += ep.stats.filterUpdates.Load()
			st := ep.snapshot()
			kd += st.KernelDrops
			kp += st.KernelPackets
			in += st.FramesIn
			out += st.FramesOut
			if cs, err := ep.ctl.Stats(); err == nil {
				cd += cs.Drops
				cp += cs.Packets
			}
		}
		return fmt.Sprintf("kdrops=%d kpkts=%d ctldrops=%d ctlpkts=%d in=%d out=%d attaches=%d", kd, kp, cd, cp, in, out, att), nil
	}
	if fn := peerVerbs[verb]; fn != nil {
		return fn(p, args)
	}
	return "", fmt.Errorf("unknown verb %q", verb)
}

// dialMany runs the dialmany verb.
func (p *peerState) dialMany(args []string) (string, error) {
	if len(args) < 2 {
		return "", fmt.Errorf("dialmany needs ADDR N, has %v", args)
	}
	addr := args[0]
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return "", err
	}
	conc := 32
	var opts []string
	for _, a := range args[2:] {
		if v, ok := strings.CutPrefix(a, "conc="); ok {
			if conc, err = strconv.Atoi(v); err != nil {
				return "", err
			}
			continue
		}
		opts = append(opts, a)
	}
	timeout, ka, ut, err := peerOptions(opts)
	if err != nil {
		return "", err
	}
	d := &Dialer{Timeout: timeout, KeepAlive: ka, UserTimeout: ut}
	// stamps[k] is when the (1000·k)th dial succeeded; stamps[0] the start.
	stamps := make([]time.Time, n/1000+1)
	start := time.Now()
	stamps[0] = start
	var next, done atomic.Int64
	var errOnce sync.Once
	var firstErr error
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				c, err := d.dial(context.Background(), "myproto", addr)
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("after %d dials: %w", done.Load(), err) })
					next.Store(int64(n)) // the others stop
					return
				}
				p.mu.Lock()
				p.many = append(p.many, c)
				p.mu.Unlock()
				if k := done.Add(1); k%1000 == 0 {
					stamps[k/1000] = time.Now()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return "", firstErr
	}
	var marks []string
	mark := func(m int) {
		k := m / 1000
		marks = append(marks, fmt.Sprintf("%d=%v", m, stamps[k].Sub(stamps[k-1]).Round(time.Millisecond)))
	}
	m := 1000
	for ; m <= n; m *= 10 {
		mark(m)
	}
	if last := n - n%1000; last > m/10 {
		mark(last)
	}
	var per []time.Duration // each thousand's
	slowest, at := time.Duration(0), 0
	for k := 1; k < len(stamps); k++ {
		d := stamps[k].Sub(stamps[k-1])
		per = append(per, d)
		if d > slowest {
			slowest, at = d, 1000*k
		}
	}
	if at != 0 {
		median := func(ds []time.Duration) time.Duration {
			ds = slices.Clone(ds)
			slices.Sort(ds)
			return ds[len(ds)/2].Round(time.Millisecond)
		}
		k := min(10, len(per))
		marks = append(marks, fmt.Sprintf("slowest=%v@%d", slowest.Round(time.Millisecond), at),
			fmt.Sprintf("first=%v", median(per[:k])), fmt.Sprintf("last=%v", median(per[len(per)-k:])))
	}
	p.mu.Lock()
	held := len(p.many)
	p.mu.Unlock()
	return fmt.Sprintf("%d %v %s", held, elapsed.Round(time.Millisecond), strings.Join(marks, ",")), nil
}

// mem runs the mem verb.
func (p *peerState) mem(args []string) (string, error) {
	// Not before: a peer that is never asked must not spend CPU on it.
	p.sampler.Do(func() { go p.sampleGoroutines() })
	if slices.Contains(args, "gc") {
		debug.FreeOSMemory() // collects first
	}
	if slices.Contains(args, "reset") {
		// proc(5): writing 5 to clear_refs resets the peak RSS (VmHWM).
		if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
			return "", err
		}
		p.maxGor.Store(int64(runtime.NumGoroutine()))
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return "", err
	}
	live := 0
	if s, err := defaultStack(nil); err == nil {
		s.conns.Range(func(any, any) bool { live++; return true })
	}
	return fmt.Sprintf("rss=%d hwm=%d heap=%d gor=%d maxgor=%d fds=%d live=%d",
		procStatus("VmRSS"), procStatus("VmHWM"), ms.HeapInuse, runtime.NumGoroutine(), p.maxGor.Load(), len(fds), live), nil
}

// sampleGoroutines keeps maxGor up to date.
func (p *peerState) sampleGoroutines() {
	for range time.Tick(time.Millisecond) {
		n := int64(runtime.NumGoroutine())
		if n > p.maxGor.Load() {
			p.maxGor.Store(n)
		}
	}
}

// peerVerbs are verbs defined in other files, registered from their init
// functions.
var peerVerbs = map[string]func(p *peerState, args []string) (string, error){}

func firstArg(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

// accept serves ln's connections in mode until ln fails.
func (p *peerState) accept(ln *Listener, mode string) {
	for {
		c, err := ln.AcceptMyproto()
		if err != nil {
			fmt.Fprintf(os.Stderr, "peer: accept on %v: %v\n", ln.Addr(), err)
			return
		}
		p.add("a", &p.accs, c)
		switch mode {
		case "echo":
			go func() {
				io.Copy(c, c)
				c.CloseWrite()
			}()
		case "sink":
			go io.Copy(io.Discard, c)
		}
	}
}

// peerProc is the parent's handle on a peer process.
type peerProc struct {
	t     testing.TB
	label string // for the log: "peer NAME[PID]"; written under mu once started
	cmd   *exec.Cmd
	pid   int

	inMu  sync.Mutex
	stdin io.WriteCloser

	mu      sync.Mutex
	seq     int
	pending map[string]chan peerReply
	exited  bool
	gone    chan struct{} // closed when exited is set

	killOnce sync.Once
	killedAt time.Time
}

// peerReply is a peer's reply to one request.
type peerReply struct {
	text string    // what follows "ok"
	err  error     // an "err" reply, or the peer's death
	at   time.Time // when the parent read it
}

// startPeer starts a peer process in ns (nil: the test's own namespace)
// with env ("NAME=value") added to the test's environment, and returns once
// it answers. Its standard error goes to the test log. It is killed in t's
// cleanup.
func startPeer(t testing.TB, ns *sys.Netns, env ...string) *peerProc {
	t.Helper()
	label := "peer"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "MYPROTO_NAME="); ok {
			label += " " + v
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), envPeer+"=1"), env...)
	p := &peerProc{t: t, label: label, cmd: cmd, pending: make(map[string]chan peerReply), gone: make(chan struct{})}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = &peerLog{p: p}
	cmd.WaitDelay = time.Second
	if slices.Contains(env, peerUnprivileged) {
		cmd.SysProcAttr = unprivilegedAttr()
	}
	p.stdin = stdin
	if ns == nil {
		err = cmd.Start()
	} else {
		// os/exec forks from the calling thread, which Do has switched
		// into ns: the peer starts there.
		err = ns.Do(cmd.Start)
	}
	if err != nil {
		t.Fatalf("starting %s: %v", label, err)
	}
	p.pid = cmd.Process.Pid
	p.mu.Lock() // peerLog may be reading it already
	p.label = fmt.Sprintf("%s[%d]", label, p.pid)
	p.mu.Unlock()
	t.Cleanup(p.kill)
	go p.readReplies(stdout)
	if pid, err := p.do(t, "pid"); err != nil || pid != strconv.Itoa(p.pid) {
		t.Fatalf("%s: pid request: %q, %v", p.label, pid, err)
	}
	return p
}

// peerLog copies a peer's standard error to the test log, a line at a
// time. The peer is waited for before the test ends, and Wait waits for the
// copying.
type peerLog struct {
	p   *peerProc
	buf []byte
}

func (l *peerLog) Write(b []byte) (int, error) {
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.p.mu.Lock()
		label := l.p.label
		l.p.mu.Unlock()
		l.p.t.Logf("%s: %s", label, l.buf[:i])
		l.buf = l.buf[i+1:]
	}
	return len(b), nil
}

func (p *peerProc) readReplies(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		at := time.Now()
		tag, rest, _ := strings.Cut(sc.Text(), " ")
		var r peerReply
		switch {
		case rest == "ok" || strings.HasPrefix(rest, "ok "):
			r = peerReply{text: strings.TrimPrefix(strings.TrimPrefix(rest, "ok"), " "), at: at}
		case strings.HasPrefix(rest, "err "):
			r = peerReply{err: errors.New(strings.TrimPrefix(rest, "err ")), at: at}
		default:
			r = peerReply{err: fmt.Errorf("bad reply %q", sc.Text()), at: at}
		}
		p.mu.Lock()
		ch := p.pending[tag]
		delete(p.pending, tag)
		p.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
	p.mu.Lock()
	p.exited = true
	close(p.gone)
	for tag, ch := range p.pending {
		ch <- peerReply{err: fmt.Errorf("%s exited", p.label), at: time.Now()}
		delete(p.pending, tag)
	}
	p.mu.Unlock()
}

// start sends the request req ("VERB ARGS...") and returns a channel that
// receives its reply, or an error if the peer exits first.
func (p *peerProc) start(req string) <-chan peerReply {
	ch := make(chan peerReply, 1)
	p.mu.Lock()
	if p.exited {
		p.mu.Unlock()
		ch <- peerReply{err: fmt.Errorf("%s exited", p.label), at: time.Now()}
		return ch
	}
	p.seq++
	tag := "r" + strconv.Itoa(p.seq)
	p.pending[tag] = ch
	p.mu.Unlock()
	p.inMu.Lock()
	_, err := io.WriteString(p.stdin, tag+" "+req+"\n")
	p.inMu.Unlock()
	if err != nil {
		p.mu.Lock()
		if p.pending[tag] == ch {
			delete(p.pending, tag)
			ch <- peerReply{err: fmt.Errorf("%s: %v", p.label, err), at: time.Now()}
		}
		p.mu.Unlock()
	}
	return ch
}

// do sends req and waits up to peerTimeout for its reply: the text after
// "ok", or an error for an "err" reply, the peer's death or the timeout.
func (p *peerProc) do(t testing.TB, req string) (string, error) {
	t.Helper()
	return p.doTimeout(req, peerTimeout)
}

func (p *peerProc) doTimeout(req string, d time.Duration) (string, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case r := <-p.start(req):
		if r.err != nil {
			return "", fmt.Errorf("%s: %s: %w", p.label, req, r.err)
		}
		return r.text, nil
	case <-timer.C:
		return "", fmt.Errorf("%s: %s: no reply within %v: %w", p.label, req, d, os.ErrDeadlineExceeded)
	}
}

// must is do that fails t on an error.
func (p *peerProc) must(t testing.TB, req string) string {
	t.Helper()
	s, err := p.do(t, req)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// kill kills the peer with SIGKILL, as kill -9 does, and waits for it. It
// records when the signal was sent (see killTime); killing a dead peer does
// nothing.
func (p *peerProc) kill() {
	p.killOnce.Do(func() {
		p.killedAt = time.Now()
		p.cmd.Process.Kill()
		p.cmd.Wait()
		p.stdin.Close()
	})
}

// killTime returns when kill sent SIGKILL.
func (p *peerProc) killTime() time.Time { return p.killedAt }

// peerCheck is a parsed check reply.
type peerCheck struct {
	bytes int64
	errno string // "none" while the stream is well
	at    time.Time
	text  string
}

func (p *peerProc) check(t testing.TB, id string) peerCheck {
	t.Helper()
	s := p.must(t, "check "+id)
	f := strings.SplitN(s, " ", 4)
	if len(f) < 3 {
		t.Fatalf("%s: check %s: %q", p.label, id, s)
	}
	var c peerCheck
	var err error
	if c.bytes, err = strconv.ParseInt(f[0], 10, 64); err != nil {
		t.Fatalf("%s: check %s: %q", p.label, id, s)
	}
	c.errno = f[1]
	ns, _ := strconv.ParseInt(f[2], 10, 64)
	if ns != 0 {
		c.at = time.Unix(0, ns)
	}
	if len(f) > 3 {
		c.text = f[3]
	}
	return c
}

// peerReadErr is a parsed readerr reply.
type peerReadErr struct {
	errno string
	at    time.Time
	text  string
}

func parseReadErr(t testing.TB, r peerReply) peerReadErr {
	t.Helper()
	if r.err != nil {
		t.Fatalf("readerr: %v", r.err)
	}
	f := strings.SplitN(r.text, " ", 3)
	if len(f) < 2 {
		t.Fatalf("readerr reply %q", r.text)
	}
	ns, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatalf("readerr reply %q", r.text)
	}
	e := peerReadErr{errno: f[0], at: time.Unix(0, ns)}
	if len(f) > 2 {
		e.text = f[2]
	}
	return e
}

// dialPeer makes p dial addr with the options opts and returns the conn's
// id.
func (p *peerProc) dial(t testing.TB, addr string, opts ...string) string {
	t.Helper()
	s := p.must(t, strings.Join(append([]string{"dial", addr}, opts...), " "))
	id, _, _ := strings.Cut(s, " ")
	return id
}

// listen makes p listen on addr in mode and returns the port.
func (p *peerProc) listen(t testing.TB, addr, mode string, opts ...string) uint16 {
	t.Helper()
	s := p.must(t, strings.Join(append([]string{"listen", addr, mode}, opts...), " "))
	// The zone names the peer's interface, which need not exist here, so
	// the reply is not resolved.
	port, err := strconv.ParseUint(s[strings.LastIndexByte(s, ':')+1:], 10, 16)
	if err != nil {
		t.Fatalf("%s: listen reply %q: %v", p.label, s, err)
	}
	return uint16(port)
}

// TestIntegrationPeerProcess drives peer processes on a segment through
// every verb, and checks that they run in the namespaces asked for.
func TestIntegrationPeerProcess(t *testing.T) {
	watchdog(t)
	seg := testenv.NewSegment(t, 3, 1500)
	a, b := seg.Hosts[1], seg.Hosts[2]
	srv := startPeer(t, a.Netns, "MYPROTO_NAME=peer-srv")
	cli := startPeer(t, b.Netns, "MYPROTO_NAME=peer-cli")
	local := startPeer(t, nil)
	for _, c := range []struct {
		p  *peerProc
		ns string
	}{{srv, a.Netns.String()}, {cli, b.Netns.String()}, {local, mustReadlink(t, "/proc/self/ns/net")}} {
		if got := mustReadlink(t, fmt.Sprintf("/proc/%d/ns/net", c.p.pid)); got != c.ns {
			t.Errorf("%s runs in %s, want %s", c.p.label, got, c.ns)
		}
	}
	for _, req := range []string{"frobnicate", "read c9 1", "dial nowhere", "listen " + b.Interface.Name + ":0 juggle"} {
		if s, err := cli.do(t, req); err == nil {
			t.Errorf("%s: ok %q, want an error", req, s)
		}
	}

	port := srv.listen(t, a.Interface.Name+":0", "echo")
	addr := fmt.Sprintf("[%v%%%s]:%d", a.Interface.HardwareAddr, b.Interface.Name, port)
	if s := cli.must(t, "lookup peer-srv 2s"); s != a.Interface.HardwareAddr.String()+" "+b.Interface.Name {
		t.Errorf("lookup peer-srv: %q, want %v %s", s, a.Interface.HardwareAddr, b.Interface.Name)
	}
	c1 := cli.dial(t, addr, "5s")
	c2 := cli.dial(t, fmt.Sprintf("peer-srv:%d", port), "keepalive=1s", "usertimeout=3s")
	c3 := cli.dial(t, addr)
	cli.must(t, "copy "+c1+" 3000000")
	cli.must(t, "write "+c1+" 1000")
	cli.must(t, "read "+c1+" 1000")
	if s := cli.must(t, "info "+c1); !strings.HasPrefix(s, "ESTABLISHED ") || !strings.HasSuffix(s, " 3001000 3001000") {
		t.Errorf("info %s: %q, want ESTABLISHED with 3001000 bytes each way", c1, s)
	}
	cli.must(t, "stream "+c2)

	// readerr blocks; other requests go on meanwhile.
	blocked := cli.start("readerr " + c3)
	var accepted string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if accepted = srv.must(t, "accepted"); accepted == "a1 a2 a3" {
			break
		}
	}
	if accepted != "a1 a2 a3" {
		t.Fatalf("server accepted %q, want a1 a2 a3", accepted)
	}
	time.Sleep(300 * time.Millisecond)
	select {
	case r := <-blocked:
		t.Fatalf("readerr on an idle conn returned %+v", r)
	default:
	}
	if ck := cli.check(t, c2); ck.bytes == 0 || ck.errno != "none" {
		t.Errorf("stream after 300ms: %+v", ck)
	}
	// The server closes its end (accepted third): the client reads EOF.
	srv.must(t, "close a3")
	select {
	case r := <-blocked:
		if e := parseReadErr(t, r); e.errno != "EOF" || time.Since(e.at) > 5*time.Second {
			t.Errorf("readerr after the server closed: %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("readerr did not return after the server closed")
	}

	// The server dies: the stream fails, and so will requests to it.
	srv.kill()
	if _, err := srv.do(t, "pid"); err == nil {
		t.Error("a killed peer answered")
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ck := cli.check(t, c2)
		if ck.errno != "none" {
			t.Logf("stream of %d bytes failed %v after the kill: %s (%s)", ck.bytes, ck.at.Sub(srv.killTime()).Round(time.Millisecond), ck.errno, ck.text)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream still going 10s after the server died: %+v", ck)
		}
	}
	cli.must(t, "exit")
	select {
	case <-cli.gone:
	case <-time.After(5 * time.Second):
		t.Error("a peer still runs 5s after exit")
	}
	if _, err := cli.do(t, "pid"); err == nil {
		t.Error("a peer answered after it exited")
	}
}

func mustReadlink(t testing.TB, path string) string {
	t.Helper()
	s, err := os.Readlink(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
