package testenv_test

import (
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// helperEnv names the helper test a subprocess should run; helper tests
// skip unless they are the one named.
const helperEnv = "MYPROTO_TESTENV_HELPER"

// runHelper runs the test binary again with only the helper test name and
// returns its combined output and error.
func runHelper(t *testing.T, name string, env ...string) (string, error) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^"+name+"$", "-test.v")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+name), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func isHelper(t *testing.T) {
	if os.Getenv(helperEnv) != t.Name() {
		t.Skip("helper for another test; runs only in a subprocess")
	}
}

func TestAvailable(t *testing.T) {
	ok, reason := testenv.Available()
	t.Logf("Available() = %v, %q (euid %d)", ok, reason, os.Geteuid())
	if !ok {
		if reason == "" {
			t.Error("Available gives no reason")
		}
		t.Skip(reason)
	}
	if os.Getenv("MYPROTO_TESTENV") != "1" {
		t.Error("Available without MYPROTO_TESTENV=1: Main did not re-execute")
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if lo.Flags&net.FlagUp == 0 {
		t.Error("lo is down in the private namespace")
	}
	// A private namespace starts with lo alone; the probe's veth is gone.
	for _, name := range interfaceNames(t) {
		if strings.HasPrefix(name, "mpp") || strings.HasPrefix(name, "mpq") {
			t.Errorf("probe interface %s left behind", name)
		}
	}
}

func interfaceNames(t testing.TB) []string {
	ifs, err := net.Interfaces()
	if err != nil {
		t.Error(err)
	}
	var names []string
	for _, ifi := range ifs {
		names = append(names, ifi.Name)
	}
	return names
}

func TestIntegrationPair(t *testing.T) {
	testenv.Watchdog(t, time.Minute)
	var a, b string
	t.Run("create", func(t *testing.T) {
		p := testenv.NewPair(t, 9000)
		a, b = p.A.Name, p.B.Name
		if p.A.MTU != 9000 || p.B.MTU != 9000 {
			t.Errorf("MTUs %d and %d, want 9000", p.A.MTU, p.B.MTU)
		}
		if len(a) > 15 || len(b) > 15 || a == b {
			t.Errorf("names %q and %q", a, b)
		}
		if p.A.Flags&net.FlagUp == 0 || p.B.Flags&net.FlagUp == 0 {
			t.Errorf("flags %v and %v, want both up", p.A.Flags, p.B.Flags)
		}
		if len(p.A.HardwareAddr) != 6 || len(p.B.HardwareAddr) != 6 {
			t.Errorf("MACs %v and %v", p.A.HardwareAddr, p.B.HardwareAddr)
		}

		// A is here and B is not; in NetnsB the other way round.
		own := interfaceNames(t)
		var inB []string
		if err := p.NetnsB.Do(func() error { inB = interfaceNames(t); return nil }); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(own, a) || slices.Contains(own, b) {
			t.Errorf("own namespace has %v, want %s and not %s", own, a, b)
		}
		if !slices.Contains(inB, b) || slices.Contains(inB, a) {
			t.Errorf("NetnsB has %v, want %s and not %s", inB, b, a)
		}

		// Nothing of it is visible on the host.
		host := hostInterfaces(t)
		t.Logf("host interfaces: %v", host)
		for _, name := range host {
			if strings.HasPrefix(name, "mpa") || strings.HasPrefix(name, "mpb") {
				t.Errorf("host namespace has %s", name)
			}
		}
	})
	if a == "" {
		return // skipped
	}
	if _, err := net.InterfaceByName(a); err == nil {
		t.Errorf("%s still exists after cleanup", a)
	}
}

func TestIntegrationLocalPair(t *testing.T) {
	testenv.Watchdog(t, time.Minute)
	a, b := testenv.NewLocalPair(t, 1280)
	own := interfaceNames(t)
	if !slices.Contains(own, a.Name) || !slices.Contains(own, b.Name) {
		t.Errorf("own namespace has %v, want %s and %s", own, a.Name, b.Name)
	}
	if a.MTU != 1280 || b.MTU != 1280 {
		t.Errorf("MTUs %d and %d, want 1280", a.MTU, b.MTU)
	}
	c, d := testenv.NewLocalPair(t, 0)
	if c.MTU != 1500 || c.Name == a.Name || d.Name == b.Name {
		t.Errorf("second pair %s/%s, MTU %d", c.Name, d.Name, c.MTU)
	}
}

func TestIntegrationSetLinkUpAndMTU(t *testing.T) {
	testenv.Watchdog(t, time.Minute)
	p := testenv.NewPair(t, 0)
	testenv.SetMTU(t, nil, p.A.Name, 4000)
	testenv.SetMTU(t, p.NetnsB, p.B.Name, 4000)
	testenv.SetLinkUp(t, p.NetnsB, p.B.Name, false)

	a, err := net.InterfaceByName(p.A.Name)
	if err != nil {
		t.Fatal(err)
	}
	if a.MTU != 4000 {
		t.Errorf("A's MTU %d, want 4000", a.MTU)
	}
	// A veth has carrier only while its peer is up; the kernel's linkwatch
	// reports the change asynchronously.
	deadline := time.Now().Add(5 * time.Second)
	for a.Flags&net.FlagRunning != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		a, _ = net.InterfaceByName(p.A.Name)
	}
	if a.Flags&net.FlagRunning != 0 {
		t.Errorf("A is running (%v) with B down", a.Flags)
	}
	var b *net.Interface
	p.NetnsB.Do(func() (err error) { b, err = net.InterfaceByName(p.B.Name); return err })
	if b == nil || b.MTU != 4000 || b.Flags&net.FlagUp != 0 {
		t.Errorf("B is %+v, want down with MTU 4000", b)
	}
	testenv.SetLinkUp(t, p.NetnsB, p.B.Name, true)
	deadline = time.Now().Add(5 * time.Second)
	for a.Flags&net.FlagRunning == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		a, _ = net.InterfaceByName(p.A.Name)
	}
	if a.Flags&net.FlagRunning == 0 {
		t.Errorf("A not running after B came back up: %v", a.Flags)
	}
}

func TestWatchdog(t *testing.T) {
	out, err := runHelper(t, "TestWatchdogHelper")
	if err == nil {
		t.Fatalf("a hung test passed:\n%s", out)
	}
	for _, want := range []string{"watchdog: TestWatchdogHelper still running after 100ms", "goroutine ", "time.Sleep"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestWatchdogHelper(t *testing.T) {
	isHelper(t)
	testenv.Watchdog(t, 100*time.Millisecond)
	time.Sleep(time.Minute)
}

func TestWatchdogDisarmed(t *testing.T) {
	t.Run("quick", func(t *testing.T) { testenv.Watchdog(t, 20*time.Millisecond) })
	time.Sleep(100 * time.Millisecond) // still alive
}

func TestSeed(t *testing.T) {
	t.Setenv("MYPROTO_SEED", "42")
	if s := testenv.Seed(t); s != 42 {
		t.Errorf("Seed = %d with MYPROTO_SEED=42", s)
	}
	out, err := runHelper(t, "TestSeedHelper", "MYPROTO_SEED=7")
	if err == nil || !strings.Contains(out, "seed 7") || !strings.Contains(out, "replay with MYPROTO_SEED=7") {
		t.Errorf("failing test with MYPROTO_SEED=7: %v\n%s", err, out)
	}
}

func TestSeedHelper(t *testing.T) {
	isHelper(t)
	testenv.Seed(t)
	t.Error("failing on purpose")
}

// FuzzPrivateNamespace checks that fuzz workers, started by the coordinator
// with MYPROTO_TESTENV=1 inherited, run in the coordinator's private
// namespace rather than re-executing or landing on the host.
func FuzzPrivateNamespace(f *testing.F) {
	ok, reason := testenv.Available()
	f.Add([]byte("x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, _ := testenv.Available(); got != ok {
			t.Fatalf("worker Available() = %v, coordinator's = %v (%s)", got, ok, reason)
		}
		if ok && os.Getenv("MYPROTO_TESTENV") != "1" {
			t.Fatal("worker outside the private namespace")
		}
	})
}
