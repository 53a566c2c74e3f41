package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
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
	code, err := reexec()
	if err == nil {
		os.Exit(code)
	}
	env.reason = fmt.Sprintf("cannot re-execute the test binary in a private network namespace (%v); "+
		"run the tests as root, or enable unprivileged user namespaces "+
		"(sysctl kernel.unprivileged_userns_clone=1 user.max_user_namespaces=10000, "+
		"and kernel.apparmor_restrict_unprivileged_userns=0 where AppArmor has it)", err)
	os.Exit(m.Run())
}

// reexec runs the test binary again in new namespaces and returns its exit
// status, or an error if it could not be started at all.
func reexec() (int, error) {
	host, err := netnsID()
	if err != nil {
		return 0, err
	}
	// Pdeathsig is delivered when the thread that started the child exits;
	// keep this goroutine on it for good so a killed parent takes the child
	// (and its namespaces) with it.
	runtime.LockOSThread()

	var attrs []*syscall.SysProcAttr
	if os.Geteuid() == 0 {
		attrs = append(attrs, &syscall.SysProcAttr{
			Cloneflags: syscall.CLONE_NEWNET,
			Pdeathsig:  syscall.SIGKILL,
		})
	}
	// Root without CAP_SYS_ADMIN (a container) may still own a user
	// namespace.
	attrs = append(attrs, &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		GidMappingsEnableSetgroups: false,
		Pdeathsig:                  syscall.SIGKILL,
	})

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	defer signal.Stop(sigs)

	var errs []error
	for _, attr := range attrs {
		cmd := &exec.Cmd{
			Path:        "/proc/self/exe",
			Args:        os.Args,
			Env:         append(os.Environ(), envTestenv+"=1", envHostNetns+"="+host),
			Stdin:       os.Stdin,
			Stdout:      os.Stdout,
			Stderr:      os.Stderr,
			SysProcAttr: attr,
		}
		if err := cmd.Start(); err != nil {
			errs = append(errs, err)
			continue
		}
		done := make(chan struct{})
		go func() {
			for {
				select {
				case sig := <-sigs:
					cmd.Process.Signal(sig)
				case <-done:
					return
				}
			}
		}()
		err := cmd.Wait()
		close(done)
		var exit *exec.ExitError
		switch {
		case err == nil:
			return 0, nil
		case errors.As(err, &exit):
			if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return 128 + int(ws.Signal()), nil
			}
			return exit.ExitCode(), nil
		default:
			// Started but not waited for: its status is unknown, and
			// running the tests again in place would run them twice.
			fmt.Fprintf(os.Stderr, "testenv: waiting for the re-executed test binary: %v\n", err)
			return 2, nil
		}
	}
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	return 0, errors.New(strings.Join(msgs, "; "))
}

// checkPrivate records whether this re-executed binary really is in a
// namespace of its own, and brings its loopback up.
func checkPrivate() {
	host := os.Getenv(envHostNetns)
	cur, err := netnsID()
	switch {
	case err != nil:
		env.reason = fmt.Sprintf("cannot tell which network namespace this is: %v", err)
		return
	case host == "":
		env.reason = envTestenv + "=1 was set by hand, not by testenv.Main, so this may be the host's " +
			"network namespace; unset it to let Main make a private one"
		return
	case host == cur:
		env.reason = "still in the network namespace testenv.Main started in (" + cur + ")"
		return
	}
	if err := setUp(nil, "lo", true); err != nil {
		env.reason = fmt.Sprintf("bringing lo up in the private namespace: %v", err)
		return
	}
	env.private = true
}

// netnsID identifies the calling thread's network namespace.
func netnsID() (string, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return "", fmt.Errorf("stat /proc/thread-self/ns/net: %w", err)
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino), nil
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
		if err := addVeth(a, b, 0, nil); err != nil {
			probe.reason = fmt.Sprintf("cannot create a veth pair in the private namespace (%v); "+
				"the kernel needs CONFIG_VETH (modprobe veth)", err)
			return
		}
		if err := delLink(nil, a); err != nil {
			probe.reason = fmt.Sprintf("cannot delete a veth: %v", err)
		}
	})
	if probe.reason != "" {
		return false, probe.reason
	}
	return true, ""
}
