package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/bpf"

	"github.com/myproto/myproto/internal/sys"
	"github.com/myproto/myproto/internal/testenv"
)

// The perf tests check that every kind of test runs between two processes
// and reports figures that parse and are positive. How fast is not their
// business: speed lives in bench/run.sh.

// perfHosts are two private namespaces joined by a veth pair with IPv4
// addresses (documentation ranges, existing only in the namespaces), and
// a perf server running in the second.
type perfHosts struct {
	nsA, nsB *sys.Netns
	mac      string // the server's, [mac]
	tcp      string // the server's TCP address
}

// newPerfHosts builds the hosts and starts the server, or skips t when
// namespaces cannot be made.
func newPerfHosts(t *testing.T) *perfHosts {
	t.Helper()
	h := &perfHosts{tcp: "192.0.2.2:5201"}
	for _, ns := range []**sys.Netns{&h.nsA, &h.nsB} {
		n, err := sys.NewNetns()
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("making network namespaces needs CAP_SYS_ADMIN: run the tests as root: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		*ns = n
	}
	err := h.nsA.Do(func() error {
		if err := sys.CreateVeth("pfa", "pfb", 0, h.nsB); err != nil {
			return err
		}
		return sys.AddAddress(nil, "pfa", netip.MustParsePrefix("192.0.2.1/24"))
	})
	if err == nil {
		err = sys.AddAddress(h.nsB, "pfb", netip.MustParsePrefix("192.0.2.2/24"))
	}
	if err != nil {
		t.Fatal(err)
	}

	cmd := perfCmd("perf", "-s", "--udp", "--tcp-listen", h.tcp)
	cmd.Env = append(cmd.Env, "MYPROTO_NAME=perf-server")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := h.nsB.Do(cmd.Start); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		timer := time.AfterFunc(5*time.Second, func() { cmd.Process.Kill() })
		defer timer.Stop()
		if err := cmd.Wait(); err != nil {
			t.Errorf("perf server: %v\n%s", err, &stderr)
		}
	})
	timer := time.AfterFunc(10*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	br := bufio.NewReader(out)
	re := regexp.MustCompile(`listening on myproto (\[[0-9a-f:]{17}\]):5201 \(pfb\)`)
	for h.mac == "" {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("perf server: %v\n%s", err, &stderr)
		}
		if m := re.FindStringSubmatch(line); m != nil {
			h.mac = m[1]
		}
	}
	go io.Copy(io.Discard, br)
	return h
}

// perfCmd returns this test binary run as the command with args.
func perfCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), envRunCommand+"=1", "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
	return cmd
}

// client runs perf -c against the server with args, in the first
// namespace, and returns its standard output.
func (h *perfHosts) client(t *testing.T, args ...string) string {
	t.Helper()
	return h.clientTo(t, h.mac, args...)
}

// clientTo runs perf -c ADDR with args.
func (h *perfHosts) clientTo(t *testing.T, addr string, args ...string) string {
	t.Helper()
	cmd := perfCmd(append([]string{"perf", "-c", addr}, args...)...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	cmd.WaitDelay = time.Second
	if err := h.nsA.Do(cmd.Start); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("perf -c %s %q: %v\nstdout:\n%s\nstderr:\n%s", addr, args, err, &out, &stderr)
	}
	return out.String()
}

// clientJSON runs the client with -J and decodes its report.
func (h *perfHosts) clientJSON(t *testing.T, args ...string) map[string]*perfReport {
	t.Helper()
	out := h.client(t, append(args, "-J")...)
	var res struct {
		Myproto *perfReport `json:"myproto"`
		TCP     *perfReport `json:"tcp"`
		Ratio   float64     `json:"ratio"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("-J output does not parse: %v\n%s", err, out)
	}
	if res.Myproto == nil {
		t.Fatalf("no myproto report:\n%s", out)
	}
	reps := map[string]*perfReport{"myproto": res.Myproto}
	if res.TCP != nil {
		reps["tcp"] = res.TCP
		if res.Ratio <= 0 {
			t.Errorf("ratio %v", res.Ratio)
		}
	}
	return reps
}

// checkCPU checks that both sides' CPU figures count something.
func checkCPU(t *testing.T, name string, rep *perfReport) {
	t.Helper()
	for side, f := range map[string]cpuFigures{"client": rep.CPU.Client, "server": rep.CPU.Server} {
		if f.UserSeconds+f.SysSeconds <= 0 || f.FramesIn+f.FramesOut == 0 || f.CPUNsPerFrame <= 0 {
			t.Errorf("%s: %s CPU figures %+v", name, side, f)
		}
		if f.Syscalls < 0 && f.SyscallsNote == "" {
			t.Errorf("%s: %s: system calls not counted, and no note says why", name, side)
		}
	}
}

func TestIntegrationPerf(t *testing.T) {
	testenv.Watchdog(t, 5*time.Minute)
	h := newPerfHosts(t)

	t.Run("bulk", func(t *testing.T) {
		reps := h.clientJSON(t, "-t", "1", "--tcp", "192.0.2.2")
		for name, rep := range reps {
			if len(rep.Intervals) == 0 || rep.Sender == nil || rep.Receiver == nil ||
				rep.Receiver.Bytes <= 0 || rep.Receiver.BitsPerSecond <= 0 || rep.Receiver.Bytes != rep.Sender.Bytes {
				t.Errorf("%s: %+v, sender %+v, receiver %+v", name, rep, rep.Sender, rep.Receiver)
			}
			checkCPU(t, name, rep)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		rep := h.clientJSON(t, "-n", "3M", "-l", "64K")["myproto"]
		if rep.Receiver == nil || rep.Receiver.Bytes != 3<<20 {
			t.Errorf("-n 3M: receiver %+v", rep.Receiver)
		}
	})
	t.Run("reverse-parallel-tls", func(t *testing.T) {
		out := h.client(t, "-t", "1", "-R", "-P", "3", "--tls", "-i", "0.5")
		t.Logf("\n%s", out)
		for _, re := range []string{
			`bulk server → client, 3 connection\(s\).*TLS 1.3`,
			// An interval line: this end receives, so no Retr or Cwnd.
			`\[SUM\] +0\.00-0\.\d\d +sec +[0-9.]+ [KMG]?Bytes +[0-9.]+ [kMG]bit/s +- +- `,
			`\[SUM\] +0\.00-[0-9.]+ +sec +[0-9.]+ [KMG]?Bytes +[0-9.]+ [kMG]bit/s +\d+ +sender`,
			`\[SUM\] +0\.00-[0-9.]+ +sec +[0-9.]+ [KMG]?Bytes +[0-9.]+ [kMG]bit/s +receiver`,
			`CPU client: [0-9.]+ s user, [0-9.]+ s sys; [1-9]\d* frames in, \d+ out \(myproto\); per frame: [0-9.]+ µs CPU`,
			`CPU server: `,
		} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("output does not match %q", re)
			}
		}
	})
	t.Run("udp", func(t *testing.T) {
		// The UDP bearer: the server's IP address, as -c takes it and in
		// brackets with the bearer's zone, with and without offload.
		for _, args := range [][]string{{"192.0.2.2"}, {"[192.0.2.2%udp]", "--no-offload"}} {
			out := h.clientTo(t, args[0], append(args[1:], "-t", "0.5", "-i", "0")...)
			t.Logf("\n%s", out)
			re := `to \[?192\.0\.2\.2(%udp\])?:5201 over myproto[^\n]*\n(.*\n)*.* [0-9.]+ [kMG]bit/s +receiver`
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("perf -c %s: output does not match %q", args[0], re)
			}
		}
	})
	t.Run("rr", func(t *testing.T) {
		reps := h.clientJSON(t, "--rr", "-n", "300", "--tcp", "192.0.2.2")
		for name, rep := range reps {
			l := rep.Latency
			if l == nil || l.Count != 300 || l.P50Micros <= 0 || l.P99Micros < l.P50Micros || l.MaxMicros < l.P99Micros {
				t.Errorf("%s: latency %+v", name, l)
			}
			checkCPU(t, name, rep)
		}
	})
	t.Run("rr-tls", func(t *testing.T) {
		if l := h.clientJSON(t, "--rr", "-t", "0.3", "--tls")["myproto"].Latency; l == nil || l.Count == 0 {
			t.Errorf("latency %+v", l)
		}
	})
	t.Run("crr", func(t *testing.T) {
		reps := h.clientJSON(t, "--crr", "-n", "50", "--tcp", "192.0.2.2")
		for name, rep := range reps {
			if l := rep.Latency; l == nil || l.Count != 50 || l.PerSecond <= 0 {
				t.Errorf("%s: latency %+v", name, l)
			}
		}
	})
	t.Run("raw", func(t *testing.T) {
		rep := h.clientJSON(t, "--raw", "-t", "0.5")["myproto"]
		r := rep.Raw
		if r == nil || r.FramesSent == 0 || r.FramesReceived == 0 || r.FramesReceived > r.FramesSent ||
			r.BitsPerSecond <= 0 || r.FrameBytes != 1514 || len(rep.Intervals) == 0 {
			t.Fatalf("raw figures %+v", r)
		}
		checkCPU(t, "raw", rep)
	})
	t.Run("raw-rr", func(t *testing.T) {
		rep := h.clientJSON(t, "--raw", "--rr", "-n", "300")["myproto"]
		if l := rep.Latency; l == nil || l.Count != 300 || l.P50Micros <= 0 {
			t.Errorf("latency %+v", l)
		}
		checkCPU(t, "raw-rr", rep)
	})
	t.Run("loss", func(t *testing.T) {
		nftPath, err := sys.Tool("nft")
		if err != nil {
			t.Skip("needs the nft binary: apt-get install nftables")
		}
		// 5 % of myproto's frames dropped on the server's ingress.
		nft := func(script string) {
			t.Helper()
			err := h.nsB.Do(func() error {
				cmd := exec.Command(nftPath, "-f", "-")
				cmd.Stdin = strings.NewReader(script)
				if out, err := cmd.CombinedOutput(); err != nil {
					return errors.New(string(out))
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		nft("table netdev perfloss {\n chain ingress {\n type filter hook ingress device \"pfb\" priority 0; policy accept;\n" +
			" meta protocol 0x88b5 numgen random mod 100 < 5 drop\n }\n}\n")
		defer nft("delete table netdev perfloss\n")
		rep := h.clientJSON(t, "-n", "4M")["myproto"]
		if rep.Receiver == nil || rep.Receiver.Bytes != 4<<20 || rep.Receiver.BitsPerSecond <= 0 || rep.Sender.Retransmits == 0 {
			t.Errorf("at 5 %% loss: sender %+v, receiver %+v", rep.Sender, rep.Receiver)
		}
	})
}

func TestPerfUsage(t *testing.T) {
	for _, tt := range []struct {
		args     []string
		code     int
		complain string
	}{
		{[]string{"-h"}, 0, ""},
		{nil, 2, "give one of -s and -c"},
		{[]string{"-s", "-c", "x"}, 2, "give one of -s and -c"},
		{[]string{"-c", "x", "--rr", "--crr"}, 2, "exclude each other"},
		{[]string{"-c", "x", "--raw", "--tls"}, 2, "--raw measures raw frames"},
		{[]string{"-c", "x", "--rr", "-P", "2"}, 2, "-P is for bulk tests"},
		{[]string{"-c", "x", "-t", "soon"}, 2, "invalid value"},
		{[]string{"-c", "x", "extra"}, 2, "unexpected arguments"},
		{[]string{"-s", "a", "b"}, 2, "unexpected arguments"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"perf"}, tt.args...), &stdout, &stderr)
		usageOut := &stderr
		if tt.code == 0 {
			usageOut = &stdout
		}
		if code != tt.code || !strings.Contains(usageOut.String(), perfUsage) || !strings.Contains(stderr.String(), tt.complain) {
			t.Errorf("perf %q = %d\nstdout:\n%s\nstderr:\n%s", tt.args, code, &stdout, &stderr)
		}
	}
}

func TestParsePerf(t *testing.T) {
	o, err := parsePerf([]string{"-c", "02:00:5e:10:00:01", "-t", "2.5", "-n", "3M", "-l", "64K", "--tcp", "10.0.0.2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.client != "[02:00:5e:10:00:01]:5201" || o.duration != 2500*time.Millisecond || o.count != 3<<20 ||
		o.length != 64<<10 || o.tcp != "10.0.0.2:5201" || o.mode() != modeBulk {
		t.Errorf("parsed %+v", o)
	}
	o, err = parsePerf([]string{"-s", "eth0", "-p", "7000", "--tcp-listen", ":7000"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !o.server || o.listen != "eth0:7000" || o.tcpListen != ":7000" {
		t.Errorf("parsed %+v", o)
	}
	for addr, want := range map[string]string{
		"nodeb":                        "nodeb:5201",
		"nodeb:80":                     "nodeb:80",
		"[02:00:5e:10:00:01]":          "[02:00:5e:10:00:01]:5201",
		"[02:00:5e:10:00:01%eth0]":     "[02:00:5e:10:00:01%eth0]:5201",
		"[02:00:5e:10:00:01%eth0]:443": "[02:00:5e:10:00:01%eth0]:443",
	} {
		if got := withPort(addr, perfPort); got != want {
			t.Errorf("withPort(%q) = %q, want %q", addr, got, want)
		}
	}
}

// TestRawFilter runs the raw tests' BPF program on frames it must take
// and frames it must not.
func TestRawFilter(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0x5e, 0x10, 0, 1}
	prog, err := rawFilter(mac)
	if err != nil {
		t.Fatal(err)
	}
	insns := make([]bpf.Instruction, len(prog))
	for i, r := range prog {
		insns[i] = r.Disassemble()
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	other := net.HardwareAddr{0x02, 0, 0x5e, 0x10, 0, 2}
	good := rawFrame(mac, other, rawPingSize)
	for _, tt := range []struct {
		name  string
		frame func([]byte)
		pass  bool
	}{
		{"raw frame to us", func([]byte) {}, true},
		{"to another station", func(f []byte) { copy(f, other) }, false},
		{"to another station, same last four bytes", func(f []byte) { f[0] = 0x06 }, false},
		{"myproto's own version", func(f []byte) { f[14] = 1 }, false},
		{"another EtherType", func(f []byte) { f[12] = 0x08; f[13] = 0 }, false},
	} {
		f := bytes.Clone(good)
		tt.frame(f)
		n, err := vm.Run(f)
		if err != nil {
			t.Fatal(err)
		}
		if (n > 0) != tt.pass {
			t.Errorf("%s: filter returned %d, want pass %v", tt.name, n, tt.pass)
		}
	}
	if _, err := rawFilter(net.HardwareAddr{1, 2}); err == nil {
		t.Error("rawFilter took a 2-byte address")
	}
}
