package myproto

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/testenv"
)

// inB runs f in host b's network namespace.
func inB(t *testing.T, h *testHosts, f func() error) {
	t.Helper()
	if err := h.pair.NetnsB.Do(f); err != nil {
		t.Fatal(err)
	}
}

// TestIntegrationDiagSockets: the diagnostic channel lists each stack's
// listener and connections with their process, and counts frames.
func TestIntegrationDiagSockets(t *testing.T) {
	watchdog(t)
	h := vethHosts(t, 1500)
	ln := listenB(t, h, nil)
	c, s := streamPair(t, h, ln)
	defer c.Close()
	defer s.Close()
	echo(t, c, s)
	port := ln.Addr().(*Addr).Port
	ctx := context.Background()

	var socks []SocketInfo
	inB(t, h, func() (err error) {
		socks, err = Sockets(ctx, nil)
		return err
	})
	var listening, established bool
	for _, si := range socks {
		if si.Process.NodeID != h.b.names.nodeID {
			continue
		}
		if si.Process.PID != os.Getpid() || si.Process.Command == "" {
			t.Errorf("process %+v", si.Process)
		}
		switch {
		case si.State == "LISTEN" && si.Local.Port == port && si.Proto == "stream":
			listening = si.SendQ == defaultBacklog
		case si.State == "ESTABLISHED" && si.Local.Port == port && si.Remote.Port == c.local.Port &&
			si.Remote.HardwareAddr.String() == h.aMAC.String() && si.Info != nil && si.Info.BytesReceived > 0:
			established = si.Info.SRTT > 0
		}
		t.Logf("%s %s %v %v %d %d", si.Proto, si.State, si.Local, si.Remote, si.RecvQ, si.SendQ)
	}
	if !listening || !established {
		t.Fatalf("b's sockets: listening %v, established %v: %+v", listening, established, socks)
	}

	var stats []ProcessStats
	inB(t, h, func() (err error) {
		stats, err = HostStats(ctx, nil)
		return err
	})
	found := false
	for _, ps := range stats {
		if ps.Process.NodeID == h.b.names.nodeID && len(ps.Stats) == 1 && ps.Stats[0].Interface == h.bIf &&
			ps.Stats[0].FramesIn > 0 && ps.Stats[0].FramesOut > 0 {
			found = true
		}
	}
	if !found {
		t.Fatalf("b's counters: %+v", stats)
	}

	procs, err := Processes(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	found = false
	for _, p := range procs {
		found = found || p.NodeID == h.a.names.nodeID
	}
	if !found {
		t.Fatalf("a's stack is not among %+v", procs)
	}
}

// nextEvent waits for an event that match accepts.
func nextEvent(t *testing.T, ch <-chan Event, what string, match func(*Event) bool) Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("waiting for %s: the channel closed", what)
			}
			t.Logf("event: %v", &ev)
			if match(&ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s event", what)
		}
	}
}

// TestIntegrationSubscribe: a subscription sees another stack's listener
// open, a connection established and reset, a name appear on the link, the
// link go down.
func TestIntegrationSubscribe(t *testing.T) {
	watchdog(t)
	h := vethHosts(t, 1500)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := Subscribe(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Give the subscription time to find stack a's socket once a opens.
	pa, err := h.a.listenPacket("myproto", h.aIf+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	time.Sleep(3 * subscribePoll)

	aNode := h.a.names.nodeID
	ln, err := h.a.listen(&ListenConfig{}, "myproto", h.aIf+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*Addr).Port
	nextEvent(t, events, "listen", func(e *Event) bool {
		return e.Type == EventListen && e.Process.NodeID == aNode && e.Local.Port == port && e.Proto == "stream"
	})

	// b dials a: a's connection is established; b's name appears on the
	// link (b claims it when it opens its interface).
	acc := make(chan *Conn, 1)
	go func() {
		c, _ := ln.AcceptMyproto()
		acc <- c
	}()
	cb, err := h.b.dial(ctx, &Dialer{}, "myproto", h.addrA(port).String())
	if err != nil {
		t.Fatal(err)
	}
	sa := <-acc
	nextEvent(t, events, "conn-established", func(e *Event) bool {
		return e.Type == EventConnEstablished && e.Process.NodeID == aNode && e.Local.Port == port &&
			e.Remote.HardwareAddr.String() == h.bMAC.String()
	})
	nextEvent(t, events, "name-appeared", func(e *Event) bool {
		return e.Type == EventNameAppeared && e.Name == "host-b" && e.Interface == h.aIf &&
			e.HardwareAddr.String() == h.bMAC.String() && e.NodeID == h.b.names.nodeID
	})
	// Unread data makes Close reset.
	if _, err := cb.Write([]byte("unread")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	sa.Close()
	cb.Close()
	nextEvent(t, events, "conn-closed", func(e *Event) bool {
		return e.Type == EventConnClosed && e.Process.NodeID == aNode && e.Local.Port == port
	})

	testenv.SetLinkUp(t, nil, h.aIf, false)
	ev := nextEvent(t, events, "link-down", func(e *Event) bool {
		return e.Type == EventLinkDown && e.Interface == h.aIf
	})
	if ev.Process.PID != os.Getpid() {
		t.Errorf("link-down from %+v", ev.Process)
	}
	testenv.SetLinkUp(t, nil, h.aIf, true)
	nextEvent(t, events, "link-up", func(e *Event) bool {
		return e.Type == EventLinkUp && e.Interface == h.aIf
	})
	ln.Close()
	nextEvent(t, events, "listen-close", func(e *Event) bool {
		return e.Type == EventListenClose && e.Process.NodeID == aNode && e.Local.Port == port
	})
	cancel()
	for range events {
	}
}

// envDiagChild makes TestMain run diagChild: a process that asks the
// diagnostic socket named by the variable for its process.
const envDiagChild = "MYPROTO_DIAG_CHILD"

// diagChild asks one stack for its process and prints the outcome.
func diagChild(name string) {
	_, err := ask(context.Background(), diagTarget{name: name}, &diagRequest{Op: "process"})
	switch {
	case err == nil:
		os.Stdout.WriteString("ok\n")
	case errors.Is(err, os.ErrPermission):
		os.Stdout.WriteString("refused\n")
	default:
		os.Stdout.WriteString("error: " + err.Error() + "\n")
	}
	os.Exit(0)
}

// TestIntegrationDiagRefusesOtherUsers: another user's process is refused;
// the stack's own user, and root, are served.
func TestIntegrationDiagRefusesOtherUsers(t *testing.T) {
	watchdog(t)
	h := vethHosts(t, 1500)
	pc, err := h.a.listenPacket("myproto", h.aIf+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	name := h.a.diagName()

	bin := os.Args[0]
	run := func(cred *syscall.Credential) string {
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), envDiagChild+"="+name)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("child as %+v: %v %s", cred, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := run(nil); got != "ok" {
		t.Fatalf("same user: %s", got)
	}
	// Another user: only where this process may become one, which needs a
	// second user ID mapped in its user namespace: as real root. In the
	// user namespace testenv makes for a normal user only root (the caller)
	// is mapped, and the kernel lets nobody map a second ID without
	// privilege over the parent namespace (newuidmap and /etc/subuid).
	if os.Geteuid() != 0 || !uidMapped(65534) {
		t.Skip("no second user ID to run as: this namespace maps only one (run the tests as root to test another user)")
	}
	// The test binary's directory is its builder's alone: copy it where
	// the other user may run it.
	dir, err := os.MkdirTemp("", "myproto-diag")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	b, err := os.ReadFile(os.Args[0])
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err == nil {
		bin = filepath.Join(dir, "myproto.test")
		err = os.WriteFile(bin, b, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := run(&syscall.Credential{Uid: 65534, Gid: 65534}); got != "refused" {
		t.Fatalf("another user: %s, want refused", got)
	}
}

// uidMapped reports whether uid exists in this user namespace.
func uidMapped(uid int) bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		var in, out, n int
		if _, err := fmt.Sscan(line, &in, &out, &n); err == nil && uid >= in && uid < in+n {
			return true
		}
	}
	return false
}

func TestDiagAllowed(t *testing.T) {
	for _, tt := range []struct {
		uid, own int
		want     bool
	}{{0, 1000, true}, {1000, 1000, true}, {1001, 1000, false}, {1000, 0, false}, {0, 0, true}} {
		if got := diagAllowed(tt.uid, tt.own); got != tt.want {
			t.Errorf("diagAllowed(%d, %d) = %v", tt.uid, tt.own, got)
		}
	}
}
