package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/testenv"
)

// twoHosts are host a, the test's own network namespace (testenv.Main made
// it private), and host b, a second namespace, joined by a veth pair: the
// tests run the command on each as on two machines on one cable.
type twoHosts struct {
	t      *testing.T
	pair   *testenv.Pair
	aIf    string // a's end of the cable
	bIf    string // b's end
	bMAC   string // b's MAC, as a sees it on the wire
	bEndpt string // b's MAC with a's zone, "[mac%aIf]"
}

// newTwoHosts makes the hosts, or skips saying why it cannot, and arms a
// watchdog: a hung command fails the test with every goroutine's stack.
func newTwoHosts(t *testing.T) *twoHosts {
	t.Helper()
	testenv.Watchdog(t, 3*time.Minute)
	p := testenv.NewPair(t, 0)
	mac := p.B.HardwareAddr.String()
	return &twoHosts{t: t, pair: p, aIf: p.A.Name, bIf: p.B.Name, bMAC: mac, bEndpt: "[" + mac + "%" + p.A.Name + "]"}
}

// A proc is the command running on one of the hosts.
type proc struct {
	t      *testing.T
	args   []string
	cmd    *exec.Cmd
	stdout *lockedBuffer // unless the caller took standard output
	stderr *lockedBuffer
	done   chan struct{}
	code   int
}

// start runs the command with args on host "a" or "b", with the node name
// name (MYPROTO_NAME). stdin nil is empty input; stdout nil collects
// standard output in p.stdout. The process is killed in t's cleanup if it
// is still running.
func (h *twoHosts) start(host, name string, stdin io.Reader, stdout io.Writer, args ...string) *proc {
	h.t.Helper()
	p := &proc{t: h.t, args: args, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), envRunCommand+"=1", "MYPROTO_NAME="+name,
		"GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
	cmd.Stdin = stdin
	cmd.Stdout = p.stdout
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.Stderr = p.stderr
	cmd.WaitDelay = time.Second
	p.cmd = cmd
	var err error
	if host == "b" {
		// os/exec forks from the calling thread, which Do has switched
		// into b's namespace: the command starts there.
		err = h.pair.NetnsB.Do(cmd.Start)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		h.t.Fatalf("starting %q on %s: %v", args, host, err)
	}
	go func() {
		cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	h.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// run runs the command on a host to the end and returns its standard
// output, standard error and exit status.
func (h *twoHosts) run(host, name string, stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	h.t.Helper()
	p := h.start(host, name, stdin, nil, args...)
	code = p.wait(time.Minute)
	return p.stdout.String(), p.stderr.String(), code
}

// wait waits up to d for the command to exit and returns its status; if it
// is still running then, the test fails.
func (p *proc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(d):
		p.cmd.Process.Kill()
		<-p.done
		p.t.Fatalf("%q still running after %v\nstdout:\n%s\nstderr:\n%s", p.args, d, p.stdout, p.stderr)
		return -1
	}
}

// stop kills a command that runs until stopped, and waits for it.
func (p *proc) stop() {
	p.cmd.Process.Kill()
	<-p.done
}

// waitStderr waits until the command has written s to standard error, as
// listen -v does when it is ready.
func (p *proc) waitStderr(s string) {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stderr.String(), s) {
		select {
		case <-p.done:
			p.t.Fatalf("%q exited with %d before saying %q\nstderr:\n%s", p.args, p.code, s, p.stderr)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%q did not say %q\nstderr:\n%s", p.args, s, p.stderr)
		}
	}
}

// A lockedBuffer is a bytes.Buffer that a command writes while the test
// reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
