package main

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/testenv"
)

// envRunCommand makes the test binary be the command: the demo re-executes
// /proc/self/exe, which under test is this binary.
const envRunCommand = "MYPROTO_CMD_TEST_RUN"

func TestMain(m *testing.M) {
	if os.Getenv(envRunCommand) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	// The tests run in a private network namespace, where they make the
	// links the tools' integration tests run the command on.
	testenv.Main(m)
}

// command runs this binary as the command with args and returns its
// output and exit status.
func command(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	// Under -race every process sleeps a second at exit, and the demo is
	// three deep.
	cmd.Env = append(os.Environ(), envRunCommand+"=1", "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = time.Second
	timer := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

func TestIntegrationDemo(t *testing.T) {
	stdout, stderr, code := command(t, "demo")
	if code != 0 && strings.Contains(stderr, "cannot make a private network namespace") {
		t.Skip(stderr)
	}
	if code != 0 {
		t.Fatalf("demo exited with %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	t.Logf("\n%s", stdout)
	for _, re := range []string{
		`server +\[[0-9a-f:]{17}\]:7 on mp1`,
		`client +\[[0-9a-f:]{17}%mp0\]:\d+ on mp0`,
		`latency +2000 round trips of 1-byte datagrams: p50 [0-9.]+[µm]s, p99 [0-9.]+[µm]s, none lost`,
		`throughput +10000 × 1400-byte datagrams echoed in [0-9.]+m?s: \d+ Mbit/s each way, none lost`,
		`mp0 +\d+ frames out, \d+ in; dropped: none`,
	} {
		if !regexp.MustCompile(re).MatchString(stdout) {
			t.Errorf("output does not match %q", re)
		}
	}
	if stderr != "" {
		t.Errorf("stderr: %s", stderr)
	}
}

func TestUsage(t *testing.T) {
	for _, tt := range []struct {
		args     []string
		code     int
		stdout   bool // usage on stdout rather than stderr
		complain string
	}{
		{args: []string{"help"}, code: 0, stdout: true},
		{args: []string{"-h"}, code: 0, stdout: true},
		{args: []string{"--help"}, code: 0, stdout: true},
		{args: []string{"demo", "--help"}, code: 0, stdout: true},
		{args: []string{"bogus"}, code: 2, complain: `unknown command "bogus"`},
		{args: []string{"bogus", "extra"}, code: 2, complain: `unknown command "bogus"`},
		{args: []string{"demo", "extra"}, code: 2, complain: "myproto demo takes no arguments"},
		// Only the demo may start the server half.
		{args: []string{serverCmd}, code: 2, complain: `unknown command "demo-server"`},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tt.args, &stdout, &stderr)
		usageOut, other := &stderr, &stdout
		if tt.stdout {
			usageOut, other = &stdout, &stderr
		}
		if code != tt.code || !strings.Contains(usageOut.String(), usage) || other.Len() != 0 ||
			!strings.Contains(stderr.String(), tt.complain) {
			t.Errorf("run(%q) = %d\nstdout:\n%s\nstderr:\n%s", tt.args, code, &stdout, &stderr)
		}
	}
}
