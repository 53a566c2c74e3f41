package myproto

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/sys"
	"github.com/myproto/myproto/internal/testenv"
)

// Issue 8: many connections in one process. Each test runs the client and
// the server in processes of their own (proc_linux_test.go), in two private
// namespaces joined by a veth pair, and measures them from /proc.

// envConns overrides how many connections the tests hold; envProfile names
// a directory where they leave pprof profiles of their peers.
const (
	envConns   = "MYPROTO_CONNS"
	envProfile = "MYPROTO_PROFILE"
)

// profile has p write a pprof profile of kind (cpu for d: in the
// background, done before t's cleanup) to MYPROTO_PROFILE/name if that is
// set.
func (p *peerProc) profile(t testing.TB, kind, name string, d time.Duration) {
	t.Helper()
	dir := os.Getenv(envProfile)
	if dir == "" {
		return
	}
	path := fmt.Sprintf("%s/%s", dir, name)
	if kind != "cpu" {
		p.must(t, fmt.Sprintf("profile %s %s", kind, path))
		t.Logf("%s profile of %s: %s", kind, p.label, path)
		return
	}
	ch := p.start(fmt.Sprintf("profile cpu %s %v", path, d))
	t.Cleanup(func() {
		if r := <-ch; r.err != nil {
			t.Errorf("cpu profile of %s: %v", p.label, r.err)
		}
		t.Logf("cpu profile of %s: %s", p.label, path)
	})
}

// newVethHosts returns two hosts, each a private namespace of its own,
// joined by a veth pair with the given MTU. Both go in t's cleanup.
func newVethHosts(t *testing.T, mtu int) (a, b testenv.Host) {
	t.Helper()
	if ok, reason := testenv.Available(); !ok {
		t.Skip("testenv: " + reason)
	}
	nsA, err := sys.NewNetns()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nsA.Close() })
	nsB, err := sys.NewNetns()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nsB.Close() })
	// The pair goes with the namespaces.
	if err := nsA.Do(func() error { return sys.CreateVeth("vetha", "vethb", mtu, nsB) }); err != nil {
		t.Fatal(err)
	}
	ifA, err := sys.WaitLinkReady(nsA, "vetha", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ifB, err := sys.WaitLinkReady(nsB, "vethb", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return testenv.Host{Netns: nsA, Interface: ifA}, testenv.Host{Netns: nsB, Interface: ifB}
}

// peerFields parses a reply of "key=value" fields with integer values.
func peerFields(t testing.TB, s string) map[string]int64 {
	t.Helper()
	m := make(map[string]int64)
	for _, f := range strings.Fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("reply %q: %v", s, err)
		}
		m[k] = n
	}
	return m
}

// mem asks p for its mem report (see the verb).
func (p *peerProc) mem(t testing.TB, args ...string) map[string]int64 {
	t.Helper()
	s, err := p.doTimeout(strings.Join(append([]string{"mem"}, args...), " "), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return peerFields(t, s)
}

// stats asks p for its link counters (see the verb).
func (p *peerProc) stats(t testing.TB) map[string]int64 {
	t.Helper()
	return peerFields(t, p.must(t, "stats"))
}

// cpuTime returns the CPU time p has used so far, user and system.
func (p *peerProc) cpuTime(t testing.TB) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		t.Fatal(err)
	}
	// proc(5): the fields after the command's closing parenthesis; utime
	// and stime are fields 14 and 15, in clock ticks (100 a second).
	rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
	f := strings.Fields(rest)
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// waitLive waits up to d until p's stack knows want connections (mem's
// live), and returns the last mem report.
func (p *peerProc) waitLive(t testing.TB, want int64, d time.Duration) map[string]int64 {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		m := p.mem(t)
		if m["live"] == want || time.Now().After(deadline) {
			return m
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitHeld waits until the server knows n connections, and fails t with
// what both sides say if it does not within 30 s.
func waitHeld(t *testing.T, cli, srv *peerProc, n int) {
	t.Helper()
	sm := srv.waitLive(t, int64(n), 30*time.Second)
	if sm["live"] == int64(n) {
		return
	}
	cm := cli.mem(t)
	t.Fatalf("the server has %d connections, the client %d, want %d; client %v, %v; server %v, %v",
		sm["live"], cm["live"], n, cli.must(t, "stats"), cli.must(t, "connstats"), srv.must(t, "stats"), srv.must(t, "connstats"))
}

func mibs(b int64) float64 { return float64(b) / (1 << 20) }

// TestIntegrationManyConns: one client process dials N connections (100,000
// by default; MYPROTO_CONNS) to one listener process and holds them idle.
// All must succeed with a handful of file descriptors (the hard
// RLIMIT_NOFILE here is 20,000, so no connection may need one of its own),
// and dialing must not slow down as connections are held. It reports the
// dial rate at 1k, 10k and 100k held, the memory per idle connection on
// both sides, and what keepalive costs with that many.
func TestIntegrationManyConns(t *testing.T) {
	n := 100_000
	if raceEnabled {
		// Race-instrumented peers cost ten times the CPU per frame; beside
		// busy loops on the two vCPUs, 25,000 connections' keepalives
		// outran them and connections timed out while held.
		n = 5_000
	}
	if s := os.Getenv(envConns); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("bad %s=%q", envConns, s)
		}
	}
	testenv.Watchdog(t, 15*time.Minute)
	a, b := newVethHosts(t, 1500)
	srv := startPeer(t, b.Netns, "MYPROTO_NAME=srv")
	port := srv.listen(t, listenAddr(b, 0), "hold")
	cli := startPeer(t, a.Netns, "MYPROTO_NAME=cli")
	addr := segAddr(b, a, port)
	cli.dial(t, addr, "5s") // the client's stack is up: what follows is per connection
	srv.waitLive(t, 1, 5*time.Second)
	cliBefore, srvBefore := cli.mem(t, "gc"), srv.mem(t, "gc")
	t.Logf("before: client RSS %.1f MiB, heap %.1f MiB, %d fds; server RSS %.1f MiB, heap %.1f MiB, %d fds",
		mibs(cliBefore["rss"]), mibs(cliBefore["heap"]), cliBefore["fds"], mibs(srvBefore["rss"]), mibs(srvBefore["heap"]), srvBefore["fds"])

	cpuCli, cpuSrv := cli.cpuTime(t), srv.cpuTime(t)
	cli.profile(t, "cpu", "manyconns-dial-client.cpu", 5*time.Second)
	srv.profile(t, "cpu", "manyconns-dial-server.cpu", 5*time.Second)
	start := time.Now()
	s, err := cli.doTimeout(fmt.Sprintf("dialmany %s %d", addr, n), 12*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(s)
	if len(f) != 3 {
		t.Fatalf("dialmany: %q", s)
	}
	if held, _ := strconv.Atoi(f[0]); held != n {
		t.Fatalf("the client holds %d connections, want %d", held, n)
	}
	took := time.Since(start)
	t.Logf("%d dials in %s (%.0f/s); CPU client %v, server %v", n, f[1], float64(n)/took.Seconds(),
		(cli.cpuTime(t) - cpuCli).Round(time.Millisecond), (srv.cpuTime(t) - cpuSrv).Round(time.Millisecond))
	t.Logf("time per 1,000 dials with that many held: %s", strings.ReplaceAll(f[2], ",", ", "))
	marks := make(map[string]time.Duration)
	for _, m := range strings.Split(f[2], ",") {
		k, v, _ := strings.Cut(m, "=")
		v, _, _ = strings.Cut(v, "@")
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("dialmany marks %q", f[2])
		}
		marks[k] = d
	}
	waitHeld(t, cli, srv, n+1)
	t.Logf("link counters: client %s; server %s", cli.must(t, "stats"), srv.must(t, "stats"))
	time.Sleep(time.Second)
	cliAfter, srvAfter := cli.mem(t), srv.mem(t)
	cli.profile(t, "heap", "manyconns-client.heap", 0)
	srv.profile(t, "heap", "manyconns-server.heap", 0)
	cliGC, srvGC := cli.mem(t, "gc"), srv.mem(t, "gc")
	perConn := func(after, before map[string]int64, k string) float64 {
		return float64(after[k]-before[k]) / float64(n) / 1024
	}
	t.Logf("client: %d fds, %d goroutines; RSS %.1f MiB (%.1f KiB/conn), after GC %.1f MiB (%.1f KiB/conn), heap %.1f KiB/conn",
		cliAfter["fds"], cliAfter["gor"], mibs(cliAfter["rss"]), perConn(cliAfter, cliBefore, "rss"),
		mibs(cliGC["rss"]), perConn(cliGC, cliBefore, "rss"), perConn(cliGC, cliBefore, "heap"))
	t.Logf("server: %d fds, %d goroutines; RSS %.1f MiB (%.1f KiB/conn), after GC %.1f MiB (%.1f KiB/conn), heap %.1f KiB/conn",
		srvAfter["fds"], srvAfter["gor"], mibs(srvAfter["rss"]), perConn(srvAfter, srvBefore, "rss"),
		mibs(srvGC["rss"]), perConn(srvGC, srvBefore, "rss"), perConn(srvGC, srvBefore, "heap"))
	// An idle connection costs a few KiB: its engine, its Conn and their
	// bookkeeping, no buffers. (The race detector multiplies memory.)
	const maxPerConn = 6 // KiB
	if !raceEnabled {
		for _, c := range []struct {
			side       string
			gc, before map[string]int64
		}{{"client", cliGC, cliBefore}, {"server", srvGC, srvBefore}} {
			if k := perConn(c.gc, c.before, "rss"); k > maxPerConn {
				t.Errorf("the %s's RSS grew by %.1f KiB per idle connection, want at most %d", c.side, k, maxPerConn)
			}
		}
	}
	if cliAfter["fds"] >= 200 {
		t.Errorf("the client has %d open files holding %d connections, want fewer than 200", cliAfter["fds"], n)
	}
	if g := cliAfter["gor"] - cliBefore["gor"]; g > 100 {
		t.Errorf("the client runs %d more goroutines holding %d idle connections", g, n)
	}
	if g := srvAfter["gor"] - srvBefore["gor"]; g > 100 {
		t.Errorf("the server runs %d more goroutines holding %d idle connections", g, n)
	}
	// Dialing stays flat: the last thousand dials take at most a few times
	// the first thousand (the medians of ten, and 100 ms more, for a
	// machine whose other load comes and goes).
	if first, last := marks["first"], marks["last"]; n >= 2000 && last > 4*first+100*time.Millisecond {
		t.Errorf("1,000 dials took %v with the first 10,000 held and %v with the last", first, last)
	}

	// Keepalive: every idle connection pings its peer every period (15 s by
	// default) on both sides.
	if testing.Short() {
		return
	}
	const window = 16 * time.Second
	cs0, ss0 := cli.stats(t), srv.stats(t)
	t.Logf("connections: client %s; server %s", cli.must(t, "connstats"), srv.must(t, "connstats"))
	cpuCli, cpuSrv = cli.cpuTime(t), srv.cpuTime(t)
	cli.profile(t, "cpu", "manyconns-idle-client.cpu", window-time.Second)
	srv.profile(t, "cpu", "manyconns-idle-server.cpu", window-time.Second)
	time.Sleep(window)
	cs1, ss1 := cli.stats(t), srv.stats(t)
	t.Logf("connections: client %s; server %s", cli.must(t, "connstats"), srv.must(t, "connstats"))
	dc, ds := cli.cpuTime(t)-cpuCli, srv.cpuTime(t)-cpuSrv
	rate := func(a, b map[string]int64, k string) float64 { return float64(b[k]-a[k]) / window.Seconds() }
	t.Logf("held idle for %v: client sends %.0f frames/s, receives %.0f, CPU %.0f %%; server sends %.0f, receives %.0f, CPU %.0f %%; kernel drops client %d, server %d",
		window, rate(cs0, cs1, "out"), rate(cs0, cs1, "in"), 100*dc.Seconds()/window.Seconds(),
		rate(ss0, ss1, "out"), rate(ss0, ss1, "in"), 100*ds.Seconds()/window.Seconds(),
		cs1["kdrops"]-cs0["kdrops"], ss1["kdrops"]-ss0["kdrops"])
	if m := cli.mem(t); m["live"] != int64(n+1) {
		t.Errorf("after %v idle the client has %d connections, want %d", window, m["live"], n+1)
	}
}

// TestIntegrationMassClose: a client holds 10,000 connections to a server
// that never closes its side, and 2,000 datagram sockets (ports), and closes
// them all at once. The connections linger in FIN-WAIT-2 and expire together
// after the user timeout (2 s here), while another connection of the same
// client streams. The expiry must take no goroutine per connection, the
// client's sockets must drop nothing, the stream must keep moving, the
// memory peak must stay bounded, and the 2,000 ports given up must cost a
// few filter updates, not one each.
func TestIntegrationMassClose(t *testing.T) {
	n := 10_000
	if raceEnabled {
		n = 2_500 // see TestIntegrationManyConns
	}
	if s := os.Getenv(envConns); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("bad %s=%q", envConns, s)
		}
	}
	const userTimeout = 2 * time.Second
	testenv.Watchdog(t, 10*time.Minute)
	a, b := newVethHosts(t, 1500)
	srv := startPeer(t, b.Netns, "MYPROTO_NAME=srv")
	holdPort := srv.listen(t, listenAddr(b, 0), "hold")
	echoPort := srv.listen(t, listenAddr(b, 0), "echo")
	cli := startPeer(t, a.Netns, "MYPROTO_NAME=cli")

	live := cli.dial(t, segAddr(b, a, echoPort), "5s")
	cli.must(t, "stream "+live)
	s, err := cli.doTimeout(fmt.Sprintf("dialmany %s %d usertimeout=%v", segAddr(b, a, holdPort), n, userTimeout), 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dialmany: %s", s)
	ports := int64(2000)
	if raceEnabled {
		ports = 500
	}
	cli.must(t, fmt.Sprintf("bindmany %s:0 %d", a.Interface.Name, ports))
	waitHeld(t, cli, srv, n+1)

	before := cli.mem(t, "gc", "reset")
	st0 := cli.stats(t)
	ck0 := cli.check(t, live)
	cli.must(t, "gap "+live)
	cli.profile(t, "cpu", "massclose-client.cpu", userTimeout+3*time.Second)
	srv.profile(t, "cpu", "massclose-server.cpu", userTimeout+3*time.Second)
	closed := time.Now()
	if s, err = cli.doTimeout("closemany", time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("closemany: %s", s)
	// Every connection expires about userTimeout after the close; the
	// stack must have forgotten them all well within a few seconds more.
	limit := userTimeout + 10*time.Second
	m := cli.waitLive(t, 1, limit)
	gone := time.Since(closed)
	// Watch the aftermath a little: the server's keepalives meet
	// connections the client has forgotten.
	time.Sleep(time.Second)
	after := cli.mem(t)
	st1 := cli.stats(t)
	ck1 := cli.check(t, live)
	gs, gt, _ := strings.Cut(cli.must(t, "gap "+live), " ")
	gap, err := time.ParseDuration(gs)
	if err != nil {
		t.Fatal(err)
	}
	gapEnd, _ := strconv.ParseInt(gt, 10, 64)
	t.Logf("%d connections gone from the client %v after the close (%d left); goroutines %d before, at most %d; RSS %.1f MiB before, peak %.1f MiB; fds %d, then %d",
		n, gone.Round(time.Millisecond), m["live"]-1, before["gor"], after["maxgor"], mibs(before["rss"]), mibs(after["hwm"]), before["fds"], after["fds"])
	t.Logf("frames to the data sockets %d; kernel drops: data %d, control %d; filter updates for %d ports given up: %d; live stream: %d bytes echoed meanwhile, longest wait for a chunk %v (until %v after the close), error %s",
		st1["kpkts"]-st0["kpkts"], st1["kdrops"]-st0["kdrops"], st1["ctldrops"]-st0["ctldrops"], ports, st1["attaches"]-st0["attaches"], ck1.bytes-ck0.bytes,
		gap.Round(time.Millisecond), time.Unix(0, gapEnd).Sub(closed).Round(time.Millisecond), ck1.errno)

	if m["live"] != 1 {
		t.Errorf("%d of %d closed connections still there %v after the close", m["live"]-1, n, limit)
	}
	if g := after["maxgor"] - before["gor"]; g > 200 {
		t.Errorf("goroutines went from %d to %d while %d connections expired", before["gor"], after["maxgor"], n)
	}
	if u := st1["attaches"] - st0["attaches"]; u > ports/20 {
		t.Errorf("%d ports given up at once cost %d filter updates", ports, u)
	}
	// With the 32 MiB buffer the stack asks for, the data sockets drop
	// nothing. In a user namespace of its own (a normal user's run) the
	// buffer is net.core.rmem_max (208 KiB here, some hundreds of small
	// frames), and the acknowledgments of 10,000 FINs arriving at once on
	// top of the live stream's window overrun it in about a third of the
	// runs: as user nobody, 776–7,885 drops in 8 of 29 runs that saw
	// 19,000–45,000 frames (18 % at most), the code before and after
	// Dec 1 2026 alike. What is lost there is sent again, and the stream
	// must keep moving, as checked below; a quarter is allowed.
	allowed := int64(0)
	if testenv.InUserNamespace() {
		allowed = (st1["kpkts"] - st0["kpkts"]) / 4 // frames that passed the filter, dropped ones included
	}
	if d := st1["kdrops"] - st0["kdrops"]; d > allowed {
		t.Errorf("the client's data sockets dropped %d frames (%d allowed)", d, allowed)
	}
	if ck1.errno != "none" || ck1.bytes == ck0.bytes {
		t.Errorf("the live stream: %+v", ck1)
	}
	if gap > time.Second {
		t.Errorf("the live stream stalled for %v", gap)
	}
	bound := int64(64 << 20)
	if raceEnabled {
		bound *= 4 // the race detector's shadow memory
	}
	if peak := after["hwm"] - before["rss"]; peak > bound {
		t.Errorf("RSS peaked %.1f MiB above the %.1f MiB before the close", mibs(peak), mibs(before["rss"]))
	}
}
