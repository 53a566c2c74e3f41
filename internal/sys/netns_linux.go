package sys

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// A Netns is a handle to a network namespace (network_namespaces(7)). It
// holds the namespace open, so the namespace lives at least until Close even
// when no process is in it. Tests use one as a second "host": sockets opened
// inside Do stay in the namespace.
//
// # Privileges
//
// Creating a namespace or entering one needs CAP_SYS_ADMIN in the user
// namespace that owns it: run as root, or inside a user namespace of your own
// (internal/testenv re-executes test binaries in one). Without it NewNetns
// and Do fail with an error wrapping syscall.EPERM.
type Netns struct {
	f *os.File
}

// netnsSelf is the calling thread's network namespace. Threads, not
// processes, have namespaces; /proc/self would name the main thread's.
const netnsSelf = "/proc/thread-self/ns/net"

// NewNetns creates a new network namespace and returns a handle to it,
// without moving the caller: on a locked OS thread it calls
// unshare(CLONE_NEWNET), opens the new namespace and setns(2)s back. A new
// namespace holds only a loopback interface, down.
func NewNetns() (*Netns, error) {
	var ns *Netns
	err := netnsOnThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return netnsUnmoved{os.NewSyscallError("unshare", err)}
		}
		f, err := os.Open(netnsSelf)
		if err == nil {
			ns = &Netns{f: f}
		}
		return err
	})
	if err != nil {
		if ns != nil {
			ns.f.Close()
		}
		return nil, fmt.Errorf("sys: new network namespace: %w", err)
	}
	return ns, nil
}

// CurrentNetns returns a handle to the network namespace the process's
// threads run in.
func CurrentNetns() (*Netns, error) {
	// Lock so that the file names the namespace of the thread that opens it,
	// which is then the process's: no unlocked thread is ever left elsewhere.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := os.Open(netnsSelf)
	if err != nil {
		return nil, fmt.Errorf("sys: current network namespace: %w", err)
	}
	return &Netns{f: f}, nil
}

// NetnsFromFile returns a handle to the network namespace f refers to, such
// as an open /proc/PID/ns/net or /run/netns/NAME, or the descriptor
// SIOCGSKNS returns for a socket. It duplicates the descriptor, so the caller
// still owns f.
func NetnsFromFile(f *os.File) (*Netns, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("sys: network namespace from %s: %w", f.Name(), err)
	}
	var fd int
	var opErr error
	err = rc.Control(func(s uintptr) {
		typ, err := unix.IoctlRetInt(int(s), unix.NS_GET_NSTYPE)
		if err != nil {
			opErr = os.NewSyscallError("ioctl NS_GET_NSTYPE", err)
			return
		}
		if typ != unix.CLONE_NEWNET {
			opErr = fmt.Errorf("not a network namespace: %w", unix.EINVAL)
			return
		}
		fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
		opErr = os.NewSyscallError("fcntl", err)
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		return nil, fmt.Errorf("sys: network namespace from %s: %w", f.Name(), err)
	}
	return &Netns{f: os.NewFile(uintptr(fd), f.Name())}, nil
}

// Do runs fn on an OS thread switched into n and switches the thread back
// before returning fn's error. Sockets fn creates stay in n, and so do
// processes it starts with os/exec, which forks from the calling thread.
//
// fn runs on a goroutine of its own, locked to its thread, so that a thread
// that cannot be switched back is never reused: the goroutine exits with the
// thread still locked and the runtime discards the thread. fn must therefore
// not call t.FailNow or t.Fatal; a panic in fn is re-raised in the caller.
func (n *Netns) Do(fn func() error) error {
	if n == nil || n.f == nil {
		return fmt.Errorf("sys: enter network namespace: %w", os.ErrInvalid)
	}
	var fnErr error
	var panicked any
	err := netnsOnThread(func() error {
		if err := unix.Setns(int(n.f.Fd()), unix.CLONE_NEWNET); err != nil {
			return netnsUnmoved{os.NewSyscallError("setns", err)}
		}
		func() {
			defer func() { panicked = recover() }()
			fnErr = fn()
		}()
		return nil
	})
	if panicked != nil {
		panic(panicked)
	}
	if err != nil {
		return fmt.Errorf("sys: enter network namespace: %w", err)
	}
	return fnErr
}

// Fd returns the namespace's file descriptor, for APIs that take one (the
// IFLA_NET_NS_FD attribute, netlink.Config.NetNS). It is valid until Close.
func (n *Netns) Fd() int {
	return int(n.f.Fd())
}

// Equal reports whether n and m are the same namespace.
func (n *Netns) Equal(m *Netns) bool {
	var a, b unix.Stat_t
	if unix.Fstat(int(n.f.Fd()), &a) != nil || unix.Fstat(int(m.f.Fd()), &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// String returns the namespace as ip-netns(8) and /proc show it,
// "net:[inode]".
func (n *Netns) String() string {
	var st unix.Stat_t
	if err := unix.Fstat(int(n.f.Fd()), &st); err != nil {
		return "net:[?]"
	}
	return fmt.Sprintf("net:[%d]", st.Ino)
}

// Close releases the handle. The namespace itself lives on while a process
// or a socket is in it; its interfaces, veth ends included, go with it.
func (n *Netns) Close() error {
	return n.f.Close()
}

// netnsUnmoved wraps an error after which the calling thread is still in its
// original namespace, so it needs no switching back.
type netnsUnmoved struct{ err error }

func (e netnsUnmoved) Error() string { return e.err.Error() }
func (e netnsUnmoved) Unwrap() error { return e.err }

// errNetnsGoexit is what Do returns when fn calls runtime.Goexit, as
// t.FailNow does.
var errNetnsGoexit = errors.New("function called runtime.Goexit (t.FailNow?) inside Netns.Do")

// netnsOnThread runs fn on a new goroutine locked to its OS thread and
// switches the thread back to its original namespace afterwards. If that fails the goroutine exits still locked, so the runtime
// terminates the thread instead of letting other goroutines run in the wrong
// namespace.
func netnsOnThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(netnsSelf)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		// Deferred so that it also runs when fn calls runtime.Goexit.
		err = errNetnsGoexit
		defer func() {
			defer orig.Close()
			var unmoved netnsUnmoved
			if errors.As(err, &unmoved) {
				runtime.UnlockOSThread()
				errc <- unmoved.err
				return
			}
			if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
				// Leave the thread locked: it dies with this goroutine.
				errc <- errors.Join(err, fmt.Errorf("switching back: %w", os.NewSyscallError("setns", serr)))
				return
			}
			runtime.UnlockOSThread()
			errc <- err
		}()
		err = fn()
	}()
	return <-errc
}
