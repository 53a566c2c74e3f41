// Package testenv is the harness for myproto's integration tests: it runs a
// test binary in a private network namespace, makes veth pairs and second
// "hosts" (namespaces) in it, drops a share of frames with nftables, turns
// hangs into failures with a stack dump, and hands out replayable seeds.
//
// A package that uses it calls Main from its TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// Main re-executes the test binary in a new network namespace (inside a new
// user namespace when not root), so the links tests create never touch the
// host, and everything is gone when the binary exits.
//
// # Privileges
//
// As root, Main needs CAP_SYS_ADMIN to unshare the network namespace. As any
// other user it needs unprivileged user namespaces
// (kernel.unprivileged_userns_clone=1 where that sysctl exists,
// user.max_user_namespaces > 0, and no AppArmor restriction such as
// kernel.apparmor_restrict_unprivileged_userns=1). Where neither works the
// tests run in place, Available reports why, and NewPair and the other link
// helpers skip. DropShare also needs the nft binary (apt-get install
// nftables).
package testenv

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/sys"
)

// Environment variables Main uses to tell a re-executed binary where it is.
const (
	// envTestenv is "1" in a binary Main re-executed, and in the processes
	// it starts (fuzz workers), which must not re-execute again.
	envTestenv = "MYPROTO_TESTENV"
	// envSeed replays a seed; see Seed.
	envSeed = "MYPROTO_SEED"
)

// env records what Main found; it is written before m.Run and only read
// after, so it needs no lock.
var env struct {
	mainCalled bool
	private    bool   // in a private network namespace made by Main
	reason     string // why not, when !private
}

// A Pair is a veth pair whose ends are in two network namespaces, like two
// hosts on one cable.
type Pair struct {
	// A is the end in the test's own namespace.
	A *net.Interface
	// B is the end in NetnsB; open sockets on it inside NetnsB.Do.
	B *net.Interface
	// NetnsB is a second private namespace, the other "host". It is closed
	// in the test's cleanup.
	NetnsB *sys.Netns
}

// Seed returns a seed for a randomised test: the value of MYPROTO_SEED if
// set, else one derived from the clock. It logs the seed, and when the test
// fails it logs how to replay it, "replay with MYPROTO_SEED=N".
func Seed(t testing.TB) int64 {
	t.Helper()
	var seed int64
	if s := os.Getenv(envSeed); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 0, 64); err != nil {
			t.Fatalf("testenv: bad %s: %v", envSeed, err)
		}
	} else {
		seed = time.Now().UnixNano()
	}
	t.Logf("seed %d", seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay with %s=%d", envSeed, seed)
		}
	})
	return seed
}

// Watchdog turns a hang into a failure: if t is still running after d, it
// prints every goroutine's stack to standard error and exits the test binary
// with status 2, as the testing package's own -test.timeout does, but for
// one test and with a bound the test chooses. It is disarmed in t's cleanup.
func Watchdog(t testing.TB, d time.Duration) {
	t.Helper()
	name := t.Name()
	timer := time.AfterFunc(d, func() {
		buf := make([]byte, 1<<20)
		for {
			n := runtime.Stack(buf, true)
			if n < len(buf) {
				buf = buf[:n]
				break
			}
			buf = make([]byte, 2*len(buf))
		}
		fmt.Fprintf(os.Stderr, "panic: testenv: watchdog: %s still running after %v\n\n%s\n", name, d, buf)
		os.Exit(2)
	})
	t.Cleanup(func() { timer.Stop() })
}

// mainMissing is the reason given when Main was not called.
const mainMissing = "testenv.Main is not this package's TestMain, so the test runs in the host's " +
	"network namespace: add func TestMain(m *testing.M) { testenv.Main(m) }"
