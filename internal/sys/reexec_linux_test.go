package sys_test

import (
	"encoding/json"
	"os"
	"slices"
	"syscall"
	"testing"

	"github.com/myproto/myproto/internal/sys"
)

// reexecChildEnv tells a test binary that ReexecInPrivateNetns started it
// and what to do: its value is a JSON reexecChild.
const reexecChildEnv = "MYPROTO_SYS_REEXEC_CHILD"

type reexecChild struct {
	Args   []string // the parent's os.Args, which the child must get
	Signal bool     // die of SIGKILL rather than exit
}

// Exit statuses of a child that ran.
const (
	childPrivate    = 11 // in a private namespace, with the parent's arguments
	childNotPrivate = 12
	childWrongArgs  = 13
)

// init runs the child's side before any test, so that it runs no tests.
func init() {
	v, ok := os.LookupEnv(reexecChildEnv)
	if !ok {
		return
	}
	var c reexecChild
	if err := json.Unmarshal([]byte(v), &c); err != nil {
		os.Exit(2)
	}
	switch {
	case c.Signal:
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	case !sys.InPrivateNetns():
		os.Exit(childNotPrivate)
	case !slices.Equal(os.Args, c.Args):
		os.Exit(childWrongArgs)
	}
	os.Exit(childPrivate)
}

func reexecChildArg(t *testing.T, c reexecChild) string {
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return reexecChildEnv + "=" + string(b)
}

func TestIntegrationReexecInPrivateNetns(t *testing.T) {
	// TestMain already runs the tests in a private namespace; this test
	// re-executes once more, from there, and checks the child is private
	// relative to its parent.
	code, err := sys.ReexecInPrivateNetns(reexecChildArg(t, reexecChild{Args: os.Args}))
	if code == -1 {
		t.Skipf("cannot re-execute in a private network namespace (%v); run as root, "+
			"or enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 "+
			"user.max_user_namespaces=10000 kernel.apparmor_restrict_unprivileged_userns=0)", err)
	}
	if err != nil || code != childPrivate {
		t.Errorf("ReexecInPrivateNetns = %d, %v; want %d (%d: not private, %d: wrong arguments)",
			code, err, childPrivate, childNotPrivate, childWrongArgs)
	}

	code, err = sys.ReexecInPrivateNetns(reexecChildArg(t, reexecChild{Signal: true}))
	if want := 128 + int(syscall.SIGKILL); err != nil || code != want {
		t.Errorf("child killed by SIGKILL: ReexecInPrivateNetns = %d, %v; want %d", code, err, want)
	}
}

// TestInPrivateNetnsMarker checks that the marker alone is not enough: it
// must name another namespace than this one.
func TestInPrivateNetnsMarker(t *testing.T) {
	cur, err := sys.CurrentNetns()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	t.Setenv("MYPROTO_HOST_NETNS", cur.String())
	if sys.InPrivateNetns() {
		t.Error("InPrivateNetns with the marker naming this namespace")
	}
	t.Setenv("MYPROTO_HOST_NETNS", "")
	if sys.InPrivateNetns() {
		t.Error("InPrivateNetns with an empty marker")
	}
}
