package myproto

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/link"
	"github.com/myproto/myproto/internal/stream"
	"github.com/myproto/myproto/internal/sys"
	"github.com/myproto/myproto/internal/testenv"
)

// SYN floods (issue 8): a flood of forged handshakes aimed at a listener
// must cost it a bounded share of a CPU and drop only SYNs, never the data
// of its established connections, and must cost the other myproto processes
// of its host (almost) nothing. The attacker is a peer process with one raw
// packet socket (the synflood verb), the victims are peer processes too
// (proc_linux_test.go): every figure is taken across process boundaries,
// as in the field.
//
// Peer verbs added here:
//
//	synflood IFNAME MAC PORT SEED [RATE] ok
//	    Starts sending forged SYNs to MAC's PORT from IFNAME, 64 per
//	    sendmmsg(2), as fast as one socket goes or RATE a second: every
//	    frame from a new random source MAC and port, with a new random
//	    connection ID.
//	stopflood                            ok FRAMES NANOSECONDS
//	bulk DURATION SIZE ID...             ok COUNT NANOSECONDS P50 MAX
//	    Copies SIZE bytes through the echo server on each connection, again
//	    and again until DURATION has passed, all connections at once, and
//	    waits for the last: COUNT copies of SIZE bytes each way took
//	    NANOSECONDS; P50 and MAX are single copies' times.
//	dials ADDR N INTERVAL TIMEOUT        ok OK FAILED P50 P99 MAX [ERROR]
//	    Starts a dial of ADDR every INTERVAL, N in all, each with TIMEOUT,
//	    closes each conn once dialed, and reports how many succeeded and
//	    the successful dials' times.
//	refusals ADDR N INTERVAL TIMEOUT     ok REFUSED OTHER P50 P99 MAX [ERROR]
//	    Dials as dials does, at a port nobody holds, and reports how many
//	    were refused (ECONNREFUSED), how many ended otherwise, and the
//	    refused dials' times.
//	ctlstats                             ok DATA DATADROPS CTL CTLDROPS OUT
//	    The kernel's counters (PACKET_STATISTICS) of the stack's data and
//	    control sockets on its one interface, and the frames it sent.

func init() {
	peerVerbs["synflood"] = peerSYNFlood
	peerVerbs["stopflood"] = peerStopFlood
	peerVerbs["bulk"] = peerBulk
	peerVerbs["dials"] = peerDials
	peerVerbs["refusals"] = peerRefusals
	peerVerbs["ctlstats"] = peerCtlStats
}

// synBodyLen is a SYN's stream body (SPEC.md §3): the packet number, then
// the SYN frame's type, connection ID, Max Data, Max Packet and node ID.
const synBodyLen = 8 + 1 + 8 + 8 + 2 + 8

// forgeSYN builds in b (offBody+synBodyLen bytes at least) a SYN to port
// on dst from a random station, port and connection ID, as a flooder
// forges them, and returns the frame's length.
func forgeSYN(b []byte, dst [6]byte, port uint16, rng *rand.Rand) int {
	h := header{dst: dst, etherType: DefaultEtherType, typ: typeStream, flags: stream.FlagSYN, dstPort: port}
	r := rng.Uint64()
	binary.BigEndian.PutUint64(b[offBody:], r) // scratch for the MAC
	copy(h.src[:], b[offBody:offBody+6])
	h.src[0] = h.src[0]&^1 | 2 // unicast, locally administered: a bridge forwards it
	h.srcPort = uint16(r >> 8)
	body := b[offBody : offBody+synBodyLen]
	binary.BigEndian.PutUint64(body[0:], rng.Uint64()>>35) // packet number
	body[8] = 0x20                                         // SYN
	binary.BigEndian.PutUint64(body[9:], rng.Uint64()|1)   // connection ID, never 0
	binary.BigEndian.PutUint64(body[17:], 1<<20)           // Max Data
	binary.BigEndian.PutUint16(body[25:], 1476)            // Max Packet
	binary.BigEndian.PutUint64(body[27:], rng.Uint64())    // node ID
	return marshalFrame(b, &h, synBodyLen)
}

// flood is a peer process's running flood.
var flood struct {
	mu   sync.Mutex
	stop chan struct{}
	done chan string // the stopflood reply
}

func peerSYNFlood(_ *peerState, args []string) (string, error) {
	if len(args) < 4 {
		return "", fmt.Errorf("synflood needs IFNAME MAC PORT SEED [RATE], has %v", args)
	}
	ifi, err := net.InterfaceByName(args[0])
	if err != nil {
		return "", err
	}
	mac, err := net.ParseMAC(args[1])
	if err != nil {
		return "", err
	}
	port, err := strconv.ParseUint(args[2], 10, 16)
	if err != nil {
		return "", err
	}
	seed, err := strconv.ParseUint(args[3], 10, 64)
	if err != nil {
		return "", err
	}
	var rate float64 // frames a second; 0: as fast as it can
	if len(args) > 4 {
		if rate, err = strconv.ParseFloat(args[4], 64); err != nil {
			return "", err
		}
	}
	flood.mu.Lock()
	defer flood.mu.Unlock()
	if flood.stop != nil {
		return "", errors.New("already flooding")
	}
	s, err := sys.OpenSender(ifi)
	if err != nil {
		return "", err
	}
	flood.stop, flood.done = make(chan struct{}), make(chan string, 1)
	go func(stop <-chan struct{}, done chan<- string) {
		defer s.Close()
		rng := rand.New(rand.NewPCG(seed, 0x5f1d))
		ms := make([]link.Message, 64)
		for i := range ms {
			ms[i].Buf = make([]byte, offBody+synBodyLen)
		}
		dst := [6]byte(mac)
		var sent uint64
		start := time.Now()
		for {
			select {
			case <-stop:
				done <- fmt.Sprintf("%d %d", sent, time.Since(start).Nanoseconds())
				return
			default:
			}
			batch := ms
			if rate > 0 {
				// Small batches, so that the flood is even, not bursts
				// with room between them.
				batch = ms[:max(1, min(len(ms), int(rate/5000)))]
			}
			for i := range batch {
				batch[i].N = forgeSYN(batch[i].Buf, dst, uint16(port), rng)
			}
			n, err := s.WriteBatch(batch)
			sent += uint64(n)
			if ahead := time.Duration(float64(sent)/rate*float64(time.Second)) - time.Since(start); rate > 0 && ahead > 0 {
				time.Sleep(ahead)
			}
			if err != nil {
				<-stop
				done <- fmt.Sprintf("%d %d %v", sent, time.Since(start).Nanoseconds(), err)
				return
			}
		}
	}(flood.stop, flood.done)
	return "", nil
}

func peerStopFlood(_ *peerState, _ []string) (string, error) {
	flood.mu.Lock()
	defer flood.mu.Unlock()
	if flood.stop == nil {
		return "", errors.New("no flood")
	}
	close(flood.stop)
	r := <-flood.done
	flood.stop, flood.done = nil, nil
	return r, nil
}

func peerBulk(p *peerState, args []string) (string, error) {
	if len(args) < 3 {
		return "", fmt.Errorf("bulk needs DURATION SIZE ID..., has %v", args)
	}
	d, err := time.ParseDuration(args[0])
	if err != nil {
		return "", err
	}
	size, err := strconv.ParseInt(args[1], 10, 64)
	if err != nil {
		return "", err
	}
	var conns []*peerConn
	for _, id := range args[2:] {
		pc, err := p.conn(id)
		if err != nil {
			return "", err
		}
		conns = append(conns, pc)
	}
	var (
		mu    sync.Mutex
		times []time.Duration
		errs  []error
		wg    sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	for _, pc := range conns {
		wg.Go(func() {
			for time.Now().Before(end) {
				t0 := time.Now()
				err := pc.copy(size)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				times = append(times, time.Since(t0))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	slices.Sort(times)
	return fmt.Sprintf("%d %d %d %d", len(times), took.Nanoseconds(), quantile(times, 0.5).Nanoseconds(), times[len(times)-1].Nanoseconds()), nil
}

// quantile returns the q-quantile of sorted (nearest rank), 0 if empty.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func peerDials(_ *peerState, args []string) (string, error) {
	return tallyDials("dials", args, func(c *Conn, err error) error {
		if err == nil {
			c.Close()
		}
		return err
	})
}

func peerRefusals(_ *peerState, args []string) (string, error) {
	return tallyDials("refusals", args, func(c *Conn, err error) error {
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return nil
		case err == nil:
			c.Close()
			return errors.New("connected")
		}
		return err
	})
}

// tallyDials dials as dialEach does and replies "OK FAILED P50 P99 MAX
// [ERROR]": how many dials judge found as wanted (nil) and how many not,
// the wanted ones' times, and the first other's error.
func tallyDials(verb string, args []string, judge func(c *Conn, err error) error) (string, error) {
	var (
		times []time.Duration
		fails int
		first error
	)
	err := dialEach(verb, args, func(c *Conn, took time.Duration, err error) {
		if err := judge(c, err); err != nil {
			fails++
			if first == nil {
				first = err
			}
			return
		}
		times = append(times, took)
	})
	if err != nil {
		return "", err
	}
	slices.Sort(times)
	r := fmt.Sprintf("%d %d %d %d %d", len(times), fails, quantile(times, 0.5).Nanoseconds(),
		quantile(times, 0.99).Nanoseconds(), quantile(times, 1).Nanoseconds())
	if first != nil {
		r += " " + first.Error()
	}
	return r, nil
}

// dialEach starts a dial of ADDR every INTERVAL, N in all, each with
// TIMEOUT (args), and calls done, one call at a time, with each one's
// result and time.
func dialEach(verb string, args []string, done func(c *Conn, took time.Duration, err error)) error {
	if len(args) < 4 {
		return fmt.Errorf("%s needs ADDR N INTERVAL TIMEOUT, has %v", verb, args)
	}
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	interval, err := time.ParseDuration(args[2])
	if err != nil {
		return err
	}
	timeout, err := time.ParseDuration(args[3])
	if err != nil {
		return err
	}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	d := &Dialer{Timeout: timeout}
	for range n {
		wg.Go(func() {
			t0 := time.Now()
			c, err := d.dial(context.Background(), "myproto", args[0])
			took := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			done(c, took, err)
		})
		time.Sleep(interval)
	}
	wg.Wait()
	return nil
}

func peerCtlStats(_ *peerState, _ []string) (string, error) {
	s, err := defaultStack(nil)
	if err != nil {
		return "", err
	}
	eps := s.endpointsSnapshot()
	if len(eps) != 1 {
		return "", fmt.Errorf("%d endpoints open, want 1", len(eps))
	}
	ep := eps[0]
	data, err := ep.l.Stats()
	if err != nil {
		return "", err
	}
	ctl, err := ep.ctl.Stats()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d %d %d %d %d", data.Packets, data.Drops, ctl.Packets, ctl.Drops, ep.stats.framesOut.Load()), nil
}

// cpuTime returns the CPU time (user and system) process pid has used, from
// /proc/PID/stat (proc(5)), in clock ticks of 10 ms.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name may hold spaces; the fields after it are fixed.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ is 100
}

// loadavg returns the first three fields of /proc/loadavg.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// ints parses the first n space-separated integers of s.
func ints(t *testing.T, s string, n int) []int64 {
	t.Helper()
	f := strings.Fields(s)
	if len(f) < n {
		t.Fatalf("%q: want %d numbers", s, n)
	}
	v := make([]int64, n)
	for i := range v {
		var err error
		if v[i], err = strconv.ParseInt(f[i], 10, 64); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
	}
	return v
}

// bulkResult is a parsed bulk reply.
type bulkResult struct {
	count    int64
	took     time.Duration
	p50, max time.Duration
	size     int64
}

func (r bulkResult) mibps() float64 {
	return float64(r.count*r.size) / (1 << 20) / r.took.Seconds()
}

func (r bulkResult) String() string {
	return fmt.Sprintf("%d × %d KiB in %v: %.0f MiB/s each way; one copy p50 %v, max %v",
		r.count, r.size>>10, r.took.Round(time.Millisecond), r.mibps(), r.p50.Round(100*time.Microsecond), r.max.Round(100*time.Microsecond))
}

func bulk(t *testing.T, p *peerProc, d time.Duration, size int64, ids []string) bulkResult {
	t.Helper()
	s, err := p.doTimeout(fmt.Sprintf("bulk %v %d %s", d, size, strings.Join(ids, " ")), d+60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	v := ints(t, s, 4)
	return bulkResult{count: v[0], took: time.Duration(v[1]), p50: time.Duration(v[2]), max: time.Duration(v[3]), size: size}
}

// dialResult is a parsed dials reply.
type dialResult struct {
	ok, failed    int64
	p50, p99, max time.Duration
	err           string
}

func (r dialResult) String() string {
	s := fmt.Sprintf("%d of %d dials succeeded, p50 %v, p99 %v, max %v", r.ok, r.ok+r.failed,
		r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), r.max.Round(10*time.Microsecond))
	if r.err != "" {
		s += "; first failure: " + r.err
	}
	return s
}

func dials(t *testing.T, p *peerProc, addr string, n int, interval, timeout time.Duration) dialResult {
	t.Helper()
	s, err := p.doTimeout(fmt.Sprintf("dials %s %d %v %v", addr, n, interval, timeout), time.Duration(n)*interval+timeout+30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	v := ints(t, s, 5)
	r := dialResult{ok: v[0], failed: v[1], p50: time.Duration(v[2]), p99: time.Duration(v[3]), max: time.Duration(v[4])}
	if f := strings.SplitN(s, " ", 6); len(f) == 6 {
		r.err = f[5]
	}
	return r
}

// ctlStats is a parsed ctlstats reply.
type ctlStats struct{ data, dataDrops, ctl, ctlDrops, out int64 }

func getCtlStats(t *testing.T, p *peerProc) ctlStats {
	t.Helper()
	v := ints(t, p.must(t, "ctlstats"), 5)
	return ctlStats{v[0], v[1], v[2], v[3], v[4]}
}

func (a ctlStats) sub(b ctlStats) ctlStats {
	return ctlStats{a.data - b.data, a.dataDrops - b.dataDrops, a.ctl - b.ctl, a.ctlDrops - b.ctlDrops, a.out - b.out}
}

// TestForgedSYNIsValid checks that the flooder's frames are SYNs a listener
// answers: frames that parse, to the port, with a SYN the cookie jar takes.
func TestForgedSYNIsValid(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, offBody+synBodyLen)
	dst := [6]byte{0x02, 0, 0x5e, 0x10, 0, 1}
	jar := stream.NewCookieJar(nil)
	srcs := map[[6]byte]bool{}
	for range 100 {
		n := forgeSYN(b, dst, 80, rng)
		h, body, reason := parseFrame(b[:n], DefaultEtherType)
		if reason != dropNone || h.dst != dst || h.dstPort != 80 || h.flags != stream.FlagSYN || h.connID != 0 || h.src[0]&1 != 0 {
			t.Fatalf("forged SYN % x: %v, %+v", b[:n], reason, h)
		}
		srcs[h.src] = true
		out := make([]byte, 128)
		if _, cid, ok := jar.RespondSYN(time.Now(), h.src, h.srcPort, h.dstPort, body, out); !ok || cid == 0 {
			t.Fatalf("the cookie jar does not answer the forged SYN % x", body)
		}
	}
	if len(srcs) < 100 {
		t.Errorf("100 forged SYNs came from %d source MACs", len(srcs))
	}
}

// TestIntegrationSYNFlood floods a listener's port with forged SYNs from
// one raw packet socket as fast as it sends, while a client on another host
// moves data through the listener over connections established before the
// flood and then dials it; a second myproto process on the listener's host,
// the bystander, listens on another port and does nothing. Then the same
// with the flood aimed at the bystander's port. The transfers must go on at
// half their unflooded rate at least (the median of five pairs of
// measurements, unflooded then flooded, so that other load on the machine
// shifts both alike), and the process the flood is not aimed at must spend
// at most 5 % of the CPU time the target spends while it has nothing else
// to do. Dials under the flood are logged: a SYN the kernel drops is sent
// again after 200 ms, 400 ms...
func TestIntegrationSYNFlood(t *testing.T) {
	testenv.Watchdog(t, 5*time.Minute)
	seed := testenv.Seed(t)
	const (
		pairs    = 5
		window   = 1500 * time.Millisecond // for each bulk measurement
		size     = 1 << 20                 // bytes each way per copy
		nconns   = 8
		ndials   = 40
		interval = 75 * time.Millisecond
		timeout  = 5 * time.Second
		idle     = 2 * time.Second // the flood alone, for the CPU figures
	)
	t.Logf("load average before: %s", loadavg())
	seg := testenv.NewSegment(t, 3, 1500)
	// The flooder's port learns no source MAC: a bridge that learnt every
	// forged one would fill its table with millions.
	seg.Untrusted(t, 0)
	atk, srv, cli := seg.Hosts[0], seg.Hosts[1], seg.Hosts[2]
	// The bystander starts first and so is its host's agent, whose filter
	// passes SYNs to ports no process holds: it must see none of a flood
	// at another process's port either.
	by := startPeer(t, srv.Netns, "MYPROTO_NAME=bystander")
	byPort := by.listen(t, listenAddr(srv, 0), "echo")
	ln := startPeer(t, srv.Netns, "MYPROTO_NAME=server")
	lnPort := ln.listen(t, listenAddr(srv, 0), "echo")
	client := startPeer(t, cli.Netns, "MYPROTO_NAME=client")
	flooder := startPeer(t, nil, "MYPROTO_NAME=flooder") // host 0: the test's namespace
	lnAddr := segAddr(srv, cli, lnPort)
	var conns []string
	for range nconns {
		conns = append(conns, client.dial(t, lnAddr, "5s"))
	}
	// Warm up: the connections' windows grow, the processes' heaps too.
	bulk(t, client, window/2, size, conns)
	base := dials(t, client, lnAddr, 10, 10*time.Millisecond, timeout)
	t.Logf("dials of the listener, unflooded: %v", base)

	for _, sc := range []struct {
		name          string
		target, other *peerProc
		port          uint16
	}{
		{"AtListener", ln, by, lnPort},
		{"AtBystander", by, ln, byPort},
	} {
		t.Run(sc.name, func(t *testing.T) {
			procs := []*peerProc{sc.target, sc.other, client, flooder}
			cpu := func() []time.Duration {
				var d []time.Duration
				for _, p := range procs {
					d = append(d, cpuTime(t, p.pid))
				}
				return d
			}
			var (
				ratios             []float64
				frames             int64
				flooding           time.Duration
				bulkCPU, dialCPU   = make([]time.Duration, len(procs)), make([]time.Duration, len(procs))
				idleCPU            = make([]time.Duration, len(procs))
				dialTime, bulkTime time.Duration
				fd                 dialResult
				flooded, unflooded float64
				st0                = getCtlStats(t, sc.target)
				stop               func()
			)
			add := func(sum, a, b []time.Duration) {
				for i := range sum {
					sum[i] += b[i] - a[i]
				}
			}
			defer func() {
				if stop != nil {
					stop()
				}
			}()
			for i := range pairs {
				u := bulk(t, client, window, size, conns)
				flooder.must(t, fmt.Sprintf("synflood %s %v %d %d", atk.Interface.Name, srv.Interface.HardwareAddr, sc.port, seed+int64(i)))
				stop = func() {
					stop = nil
					v := ints(t, flooder.must(t, "stopflood"), 2)
					frames += v[0]
					flooding += time.Duration(v[1])
				}
				time.Sleep(200 * time.Millisecond) // the control socket overflows
				c0 := cpu()
				f := bulk(t, client, window, size, conns)
				c1 := cpu()
				add(bulkCPU, c0, c1)
				bulkTime += f.took
				if i == pairs-1 {
					at := time.Now()
					fd = dials(t, client, lnAddr, ndials, interval, timeout)
					dialTime = time.Since(at)
					c2 := cpu()
					add(dialCPU, c1, c2)
					// Nothing but the flood.
					time.Sleep(idle)
					add(idleCPU, c2, cpu())
				}
				stop()
				ratios = append(ratios, f.mibps()/u.mibps())
				unflooded += u.mibps()
				flooded += f.mibps()
				t.Logf("unflooded: %v", u)
				t.Logf("flooded:   %v: %.2f×", f, f.mibps()/u.mibps())
			}
			st := getCtlStats(t, sc.target).sub(st0)
			slices.Sort(ratios)
			ratio := ratios[len(ratios)/2]
			t.Logf("flood: %d forged SYNs in %v from one raw socket: %.0f/s; load average %s", frames, flooding.Round(time.Millisecond), float64(frames)/flooding.Seconds(), loadavg())
			t.Logf("transfers: %.0f MiB/s unflooded, %.0f MiB/s flooded (means); flooded/unflooded, median of %d pairs: %.2f×", unflooded/pairs, flooded/pairs, pairs, ratio)
			t.Logf("dials of the listener during the flood: %v", fd)
			t.Logf("%s's sockets during the floods: control %d frames, %d of them dropped by the kernel (%.0f %%); data %d frames, %d dropped; %d frames sent (answers and data)",
				sc.target.label, st.ctl, st.ctlDrops, 100*float64(st.ctlDrops)/float64(max(1, st.ctl)), st.data, st.dataDrops, st.out)
			for _, ph := range []struct {
				what string
				d    time.Duration
				c    []time.Duration
			}{{"transfers under the flood", bulkTime, bulkCPU}, {"the dials", dialTime, dialCPU}, {"the flood alone", idle, idleCPU}} {
				t.Logf("CPU during %s (%v): %s (target) %v = %.2f CPUs, %s %v, client %v, flooder %v", ph.what, ph.d.Round(time.Millisecond),
					sc.target.label, ph.c[0], ph.c[0].Seconds()/ph.d.Seconds(), sc.other.label, ph.c[1], ph.c[2], ph.c[3])
			}

			// On two vCPUs the flooder and the control loop's share
			// (controlShare) take one between them, so the transfers get
			// about half of what they had: medians of 0.50–0.55× were
			// measured. A starved data path would show far less; 0.4×
			// leaves room for the noise of a shared machine, which had
			// 0.5× fail about one run in four.
			if ratio < 0.4 {
				t.Errorf("under the flood the transfers ran at %.2f× their unflooded rate, want 0.4× at least", ratio)
			}
			// With the 32 MiB buffer the stack asks for, the data socket
			// drops nothing. In a user namespace of its own (a normal
			// user's run) it gets net.core.rmem_max, a few hundred
			// kilobytes, which a reader slowed by the flood's share of the
			// CPU can overrun now and then: there, 1 % of the data.
			allowed := int64(0)
			if testenv.InUserNamespace() {
				allowed = st.data / 100
			}
			if st.dataDrops > allowed {
				t.Errorf("the kernel dropped %d frames on %s's data socket (%d allowed)", st.dataDrops, sc.target.label, allowed)
			}
			// The process the flood is not aimed at, while it has nothing
			// else to do: the bystander throughout, the listener while the
			// flood alone goes on.
			other, target := idleCPU[1], idleCPU[0]
			if sc.target == ln {
				other, target = bulkCPU[1]+dialCPU[1]+idleCPU[1], bulkCPU[0]+dialCPU[0]+idleCPU[0]
			}
			if float64(other) > 0.05*float64(target) {
				t.Errorf("%s spent %v of CPU while %s, which the flood aims at, spent %v: more than 5 %%", sc.other.label, other, sc.target.label, target)
			}
			// While only the flood goes on, the target's control loop
			// keeps to its share of a CPU (controlShare, 0.5): 0.48–0.53
			// CPUs were measured; a loop that answered all it could
			// would take the CPU the flooder leaves.
			if share := idleCPU[0].Seconds() / idle.Seconds(); share > 0.75 {
				t.Errorf("with only the flood going on, %s used %.2f CPUs: its control loop does not keep to its share", sc.target.label, share)
			}
			if fd.ok == 0 {
				t.Errorf("no dial succeeded during the flood")
			}
		})
	}
	// After the floods, dials go through at once.
	after := dials(t, client, lnAddr, 10, 10*time.Millisecond, timeout)
	t.Logf("dials of the listener after the floods: %v", after)
	if after.failed > 0 {
		t.Errorf("after the floods: %v", after)
	}
}

// TestIntegrationSYNFloodClosedPort: while a flood of forged SYNs aimed at a
// port nobody holds keeps the host's agent (the server process, the
// host's first) refusing, a client's dials of another closed port are still
// refused, each within its timeout, rather than left to time out: the
// flood must not spend the refusals of everyone else.
func TestIntegrationSYNFloodClosedPort(t *testing.T) {
	testenv.Watchdog(t, 3*time.Minute)
	seed := testenv.Seed(t)
	const (
		ndials   = 20
		interval = 50 * time.Millisecond
		timeout  = 5 * time.Second
	)
	seg := testenv.NewSegment(t, 3, 1500)
	seg.Untrusted(t, 0)
	atk, srv, cli := seg.Hosts[0], seg.Hosts[1], seg.Hosts[2]
	server := startPeer(t, srv.Netns, "MYPROTO_NAME=server")
	lnPort := server.listen(t, listenAddr(srv, 0), "echo")
	client := startPeer(t, cli.Netns, "MYPROTO_NAME=client")
	flooder := startPeer(t, nil, "MYPROTO_NAME=flooder")
	closed := lnPort + 1 // nobody holds it, nor the flood's port
	flooded := lnPort + 2
	addr := segAddr(srv, cli, closed)
	refusals := func() []int64 {
		s, err := client.doTimeout(fmt.Sprintf("refusals %s %d %v %v", addr, ndials, interval, timeout), ndials*interval+timeout+30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s", s)
		return ints(t, s, 5)
	}
	if v := refusals(); v[0] != ndials {
		t.Fatalf("unflooded, %d of %d dials of a closed port were refused", v[0], ndials)
	}
	// First a flood the server's control loop takes whole, 30 times its
	// refusals for made-up MACs: every dial must be refused at its first
	// SYN. Then one as
	// fast as the flooder goes, where the kernel drops most SYNs at the
	// control socket, the dials' too: a dial is then refused once one of
	// its SYNs (sent again after 200 ms, 400 ms...) gets through.
	for _, rate := range []int{30_000, 0} {
		st0 := getCtlStats(t, server)
		flooder.must(t, fmt.Sprintf("synflood %s %v %d %d %d", atk.Interface.Name, srv.Interface.HardwareAddr, flooded, seed, rate))
		time.Sleep(200 * time.Millisecond) // the control socket overflows
		v := refusals()
		f := ints(t, flooder.must(t, "stopflood"), 2)
		st := getCtlStats(t, server).sub(st0)
		t.Logf("flood: %d forged SYNs at port %d in %v: %.0f/s; the server's control socket took %d frames and dropped %d, it sent %d",
			f[0], flooded, time.Duration(f[1]).Round(time.Millisecond), float64(f[0])/time.Duration(f[1]).Seconds(), st.ctl, st.ctlDrops, st.out)
		t.Logf("during the flood, %d of %d dials of port %d were refused, p50 %v, max %v; %d ended otherwise",
			v[0], ndials, closed, time.Duration(v[2]).Round(time.Millisecond), time.Duration(v[4]).Round(time.Millisecond), v[1])
		if want := int64(ndials); rate == 0 {
			if v[0] == 0 {
				t.Errorf("during a flood at full speed, no dial of a closed port was refused")
			}
		} else if v[0] != want || time.Duration(v[4]) >= 150*time.Millisecond {
			// The control socket drops none of this flood: each dial's
			// first SYN is refused, no retry (200 ms) needed.
			t.Errorf("during a flood of %d SYNs/s, %d of %d dials of a closed port were refused, the slowest after %v; want all, at their first SYN",
				rate, v[0], ndials, time.Duration(v[4]).Round(time.Millisecond))
		}
	}
}
