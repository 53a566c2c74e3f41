package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/sys"
	"github.com/myproto/myproto/internal/testenv"
)

// connected starts a listener on b and a client on a that stays connected
// (its standard input open) and returns the listener; close the returned
// writer to end the client.
func (h *twoHosts) connected() (srv *proc, stdin io.WriteCloser) {
	h.t.Helper()
	// Both keep their standard input open, so neither half-closes.
	sr, sw := io.Pipe()
	srv = h.start("b", "nodeb", sr, nil, "listen", "-k", "-v", h.bIf+":7")
	h.t.Cleanup(func() { sw.Close() })
	srv.waitStderr("listening")
	pr, pw := io.Pipe()
	h.start("a", "nodea", pr, nil, "connect", h.bEndpt+":7")
	// Cleanups run last first: this one before start's, which waits for
	// the command and so for its standard input to end.
	h.t.Cleanup(func() { pw.Close() })
	srv.waitStderr("connection from")
	// Something each way, so the counters and the figures move.
	if _, err := pw.Write([]byte("hello\n")); err != nil {
		h.t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	return srv, pw
}

// TestIntegrationSS: ss, a third process on b, lists the listener and the
// established connection of the listen process, with its pid.
func TestIntegrationSS(t *testing.T) {
	h := newTwoHosts(t)
	srv, _ := h.connected()
	pid := srv.cmd.Process.Pid

	out, errOut, code := h.run("b", "nodex", nil, "ss", "-a", "-p")
	t.Logf("\n%s", out)
	if code != 0 || errOut != "" {
		t.Fatalf("ss exited with %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	users := fmt.Sprintf(`users:\(\("[^"]+",pid=%d\)\)`, pid)
	local := regexp.QuoteMeta("[" + h.pair.B.HardwareAddr.String() + "%" + h.bIf + "]:7")
	for _, re := range []string{
		`(?m)^Netid +State +Recv-Q +Send-Q +Local Address:Port +Peer Address:Port +Process$`,
		`(?m)^str +LISTEN +0 +512 +` + local + ` +\* +` + users + `$`,
		`(?m)^str +ESTAB +0 +0 +` + local + ` +\[[0-9a-f:]{17}%` + h.bIf + `\]:\d+ +` + users + `$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("ss output does not match %q", re)
		}
	}

	out, _, code = h.run("b", "nodex", nil, "ss", "-l")
	if code != 0 || strings.Contains(out, "ESTAB") || !strings.Contains(out, "LISTEN") {
		t.Errorf("ss -l: %d\n%s", code, out)
	}
	out, _, code = h.run("b", "nodex", nil, "ss", "-i")
	if code != 0 || !regexp.MustCompile(`rtt:[0-9.]+/[0-9.]+ .*cwnd:\d+ .*retrans:\d+ .*bytes_received:6 `).MatchString(out) {
		t.Errorf("ss -i: %d\n%s", code, out)
	}
	out, _, code = h.run("b", "nodex", nil, "ss", "-a", "-J")
	var entries []ssEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil || code != 0 {
		t.Fatalf("ss -J: %d, %v\n%s", code, err, out)
	}
	states := map[string]bool{}
	for _, e := range entries {
		if e.PID == pid {
			states[e.State] = true
		}
	}
	if !states["LISTEN"] || !states["ESTABLISHED"] {
		t.Errorf("ss -J: %+v", entries)
	}
	// On a, the client's side.
	out, _, code = h.run("a", "nodex", nil, "ss", "-t")
	if code != 0 || !regexp.MustCompile(`(?m)^str +ESTAB .*`+regexp.QuoteMeta(h.bEndpt+":7")+` *$`).MatchString(out) {
		t.Errorf("ss -t on a: %d\n%s", code, out)
	}
}

// TestIntegrationStat: stat counts the frames of the listen process.
func TestIntegrationStat(t *testing.T) {
	h := newTwoHosts(t)
	srv, _ := h.connected()
	out, errOut, code := h.run("b", "nodex", nil, "stat")
	t.Logf("\n%s", out)
	if code != 0 || errOut != "" {
		t.Fatalf("stat exited with %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	re := fmt.Sprintf(`(?m)^%s: pid %d \S+ node-id [0-9a-f]{16} names nodeb\n    RX: frames [1-9]\d* bytes [1-9]\d*\n    TX: frames [1-9]\d* bytes [1-9]\d*\n    kernel: passed \d+ dropped 0\n    control \(SYNs, discovery\): passed \d+ dropped 0\n    discarded: `,
		h.bIf, srv.cmd.Process.Pid)
	if !regexp.MustCompile(re).MatchString(out) {
		t.Errorf("stat output does not match %q", re)
	}
	out, _, code = h.run("b", "nodex", nil, "stat", h.bIf, "-J")
	var entries []statEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil || code != 0 || len(entries) == 0 {
		t.Fatalf("stat -J: %d, %v\n%s", code, err, out)
	}
	for _, e := range entries {
		if e.PID == srv.cmd.Process.Pid && (e.RX.Frames == 0 || e.TX.Frames == 0 || e.Dev != h.bIf) {
			t.Errorf("stat -J: %+v", e)
		}
	}
	if _, errOut, code := h.run("b", "nodex", nil, "stat", "nosuch0"); code != 1 || !strings.Contains(errOut, "no process has myproto open on nosuch0") {
		t.Errorf("stat nosuch0: %d, %q", code, errOut)
	}
}

// waitSubscribed waits until the process with pid has a stack open on a,
// as monitor does once it is subscribed.
func waitSubscribed(t *testing.T, p *proc) {
	t.Helper()
	prefix := fmt.Sprintf("myproto/88b5/diag/%d/", p.cmd.Process.Pid)
	deadline := time.Now().Add(10 * time.Second)
	for {
		names, _ := sys.AbstractListeners(prefix)
		if len(names) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q never opened its stack\nstderr:\n%s", p.args, p.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lines follows a command's standard output line by line.
func lines(t *testing.T, r io.Reader) <-chan string {
	// Never full, so that the command's output never blocks.
	ch := make(chan string, 100000)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- sc.Text()
		}
		close(ch)
	}()
	return ch
}

// waitLine waits for a line that matches re.
func waitLine(t *testing.T, ch <-chan string, re string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				t.Fatalf("output ended without a line matching %q", re)
			}
			t.Logf("monitor: %s", l)
			if regexp.MustCompile(re).MatchString(l) {
				return l
			}
		case <-timeout:
			t.Fatalf("no line matching %q", re)
		}
	}
}

// TestIntegrationMonitor: monitor on a prints a name appearing when a peer
// starts on b, and the link going down; with -J every line parses.
func TestIntegrationMonitor(t *testing.T) {
	h := newTwoHosts(t)
	pr, pw := io.Pipe()
	mon := h.start("a", "mona", nil, pw, "monitor")
	out := lines(t, pr)
	waitSubscribed(t, mon)

	srv := h.start("b", "nodeb", nil, nil, "listen", "-v", h.bIf+":7")
	srv.waitStderr("listening")
	waitLine(t, out, `^name-appeared nodeb dev `+h.aIf+` lladdr `+h.bMAC+` node-id [0-9a-f]{16} mtu 1500 pid \d+ comm \S+$`)
	srv.stop()
	testenv.SetLinkUp(t, nil, h.aIf, false)
	waitLine(t, out, `^link-down dev `+h.aIf+` pid \d+ comm \S+$`)
	testenv.SetLinkUp(t, nil, h.aIf, true)
	waitLine(t, out, `^link-up dev `+h.aIf+` mtu 1500 `)
	mon.stop()

	pr, pw = io.Pipe()
	mon = h.start("a", "mona", nil, pw, "monitor", "-J")
	out = lines(t, pr)
	waitSubscribed(t, mon)
	h.start("b", "nodec", nil, nil, "listen", "-u", "-v", h.bIf+":9").waitStderr("listening")
	for {
		l := waitLine(t, out, `.`)
		var ev monitorEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("monitor -J: %v: %s", err, l)
		}
		if ev.Type == "name-appeared" && ev.Name == "nodec" && ev.Dev == h.aIf && ev.LLAddr == h.bMAC && ev.PID == mon.cmd.Process.Pid {
			break
		}
	}
	mon.stop()
}
