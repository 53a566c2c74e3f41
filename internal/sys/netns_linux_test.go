package sys_test

import (
	"errors"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/myproto/myproto/internal/sys"
)

// newNetnsOrSkip creates a namespace or skips when the test lacks the
// privilege to.
func newNetnsOrSkip(t *testing.T) *sys.Netns {
	t.Helper()
	ns, err := sys.NewNetns()
	if errors.Is(err, syscall.EPERM) {
		t.Skipf("creating a network namespace needs CAP_SYS_ADMIN: run as root, or use a package whose TestMain calls testenv.Main: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

func interfaceNames(t *testing.T) []string {
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

// threadNetns returns a handle to the namespace of the calling goroutine's
// thread, which need not be the process's.
func threadNetns(t *testing.T) *sys.Netns {
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// CurrentNetns would lock a thread of its own; reopen the file instead.
	ns, err := sys.NetnsFromFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func TestNetns(t *testing.T) {
	ns := newNetnsOrSkip(t)
	cur, err := sys.CurrentNetns()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	if ns.Equal(cur) {
		t.Fatalf("new namespace %v is the current one", ns)
	}
	if !cur.Equal(cur) {
		t.Error("a namespace is not Equal to itself")
	}
	if ns.Fd() < 0 || ns.String() == cur.String() {
		t.Errorf("Fd %d, String %v and %v", ns.Fd(), ns, cur)
	}

	outside := interfaceNames(t)
	var inside []string
	var sock int
	err = ns.Do(func() error {
		inside = interfaceNames(t)
		here := threadNetns(t)
		defer here.Close()
		if !here.Equal(ns) {
			t.Errorf("Do runs in %v, want %v", here, ns)
		}
		var err error
		sock, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sock)
	if !slices.Equal(inside, []string{"lo"}) {
		t.Errorf("a new namespace has interfaces %v, want [lo]", inside)
	}
	if slices.Equal(inside, outside) && !slices.Equal(outside, []string{"lo"}) {
		t.Errorf("interfaces %v inside and outside", inside)
	}

	// The socket stays in the namespace it was made in (SIOCGSKNS returns a
	// descriptor for a socket's namespace).
	fd, err := unix.IoctlRetInt(sock, unix.SIOCGSKNS)
	if err != nil {
		t.Fatalf("SIOCGSKNS: %v", err)
	}
	f := os.NewFile(uintptr(fd), "socket netns")
	defer f.Close()
	sockNS, err := sys.NetnsFromFile(f)
	if err != nil {
		t.Fatal(err)
	}
	defer sockNS.Close()
	if !sockNS.Equal(ns) {
		t.Errorf("socket made in Do is in %v, want %v", sockNS, ns)
	}

	if err := ns.Do(func() error { return os.ErrExist }); !errors.Is(err, os.ErrExist) {
		t.Errorf("Do returned %v, want fn's error", err)
	}
}

// TestNetnsThreadsRestored checks that no thread is left in another
// namespace: after many Do calls every thread the runtime hands out is in
// the process's namespace.
func TestNetnsThreadsRestored(t *testing.T) {
	ns := newNetnsOrSkip(t)
	cur, err := sys.CurrentNetns()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if err := ns.Do(func() error { return nil }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for range 50 {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			here := threadNetns(t)
			defer here.Close()
			if !here.Equal(cur) {
				t.Errorf("a thread is in %v, want %v", here, cur)
			}
		})
	}
	wg.Wait()
}

func TestNetnsDoPanicAndGoexit(t *testing.T) {
	ns := newNetnsOrSkip(t)
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want boom", r)
			}
		}()
		ns.Do(func() error { panic("boom") })
		t.Error("Do did not re-raise fn's panic")
	}()
	if err := ns.Do(func() error { runtime.Goexit(); return nil }); err == nil {
		t.Error("Do returned nil after fn called runtime.Goexit")
	}
}

func TestNetnsClosed(t *testing.T) {
	ns := newNetnsOrSkip(t)
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ns.Do(func() error { return nil }); err == nil {
		t.Error("Do on a closed Netns succeeded")
	}
	var zero *sys.Netns
	if err := zero.Do(func() error { return nil }); err == nil {
		t.Error("Do on a nil Netns succeeded")
	}
}
