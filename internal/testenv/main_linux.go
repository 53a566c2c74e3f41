package testenv

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/myproto/myproto/internal/sys"
)

// Main runs the tests of m in a private network namespace and exits with
// their status. Use it as the package's TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// Main re-executes the test binary (/proc/self/exe, with the same arguments,
// so -test.run, -test.v, -test.bench and the rest pass through) in a new
// network namespace, inside a new user namespace mapping root to the caller
// when not root; it forwards SIGINT, SIGTERM and SIGQUIT to the child and
// exits with the child's status. In the child it brings lo up and runs m.
// Processes the child starts from its own binary, such as fuzz workers,
// inherit its environment and run m in place.
//
// If the binary cannot be re-executed that way (user namespaces disabled,
// no CAP_SYS_ADMIN), Main runs m in place; Available then says why, and the
// helpers that create links skip.
func Main(m *testing.M) {
	env.mainCalled = true
	if os.Getenv(envTestenv) == "1" {
		checkPrivate()
		os.Exit(m.Run())
	}
	code, err := sys.ReexecInPrivateNetns(envTestenv + "=1")
	switch {
	case err == nil:
		os.Exit(code)
	case code >= 0:
		// Started but not waited for: its status is unknown, and running
		// the tests again in place would run them twice.
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		os.Exit(code)
	}
	env.reason = fmt.Sprintf("cannot re-execute the test binary in a private network namespace (%v); "+
		"run the tests as root, or enable unprivileged user namespaces "+
		"(sysctl kernel.unprivileged_userns_clone=1 user.max_user_namespaces=10000, "+
		"and kernel.apparmor_restrict_unprivileged_userns=0 where AppArmor has it)", err)
	os.Exit(m.Run())
}

// checkPrivate records whether this re-executed binary really is in a
// namespace of its own, and brings its loopback up.
func checkPrivate() {
	if !sys.InPrivateNetns() {
		env.reason = envTestenv + "=1 is set, but this binary is not in a private network namespace " +
			"made by testenv.Main, so this may be the host's network namespace; " +
			"unset it (was it set by hand?) to let Main make a private one"
		return
	}
	if err := sys.SetLinkUp(nil, "lo", true); err != nil {
		env.reason = fmt.Sprintf("bringing lo up in the private namespace: %v", err)
		return
	}
	env.private = true
}

var probe struct {
	once   sync.Once
	reason string
}

// Available reports whether tests can create links here: whether Main put
// the binary in a private network namespace where it may create veths. When
// not, reason says why and how to enable it.
func Available() (ok bool, reason string) {
	switch {
	case !env.mainCalled:
		return false, mainMissing
	case !env.private:
		return false, env.reason
	}
	// Try once, so a kernel without veth gives a skip that says so rather
	// than failures in every test.
	probe.once.Do(func() {
		a, b := fmt.Sprintf("mpp%d", os.Getpid()), fmt.Sprintf("mpq%d", os.Getpid())
		if err := sys.CreateVeth(a, b, 0, nil); err != nil {
			probe.reason = fmt.Sprintf("cannot create a veth pair in the private namespace (%v); "+
				"the kernel needs CONFIG_VETH (modprobe veth)", err)
			return
		}
		if err := sys.DeleteLink(nil, a); err != nil {
			probe.reason = fmt.Sprintf("cannot delete a veth: %v", err)
		}
	})
	if probe.reason != "" {
		return false, probe.reason
	}
	return true, ""
}

// InUserNamespace reports whether the binary runs in a user namespace of
// its own (as a normal user's tests are re-executed): there, capabilities
// hold only for the namespace, so socket buffers cannot be forced past
// net.core.rmem_max and wmem_max (SO_RCVBUFFORCE needs CAP_NET_ADMIN in the
// initial namespace) and stay a few hundred kilobytes.
func InUserNamespace() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	// The initial namespace maps every ID onto itself: "0 0 4294967295".
	return !(len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295")
}
