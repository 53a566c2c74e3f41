package sys

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
)

// envHostNetns marks a process ReexecInPrivateNetns started and names the
// network namespace it started from. Comparing it with the current namespace
// tells a real private namespace from the variable set by hand or inherited
// by a process that is back in the original namespace.
const envHostNetns = "MYPROTO_HOST_NETNS"

// InPrivateNetns reports whether this process was started by
// ReexecInPrivateNetns, or by a process it started (inheriting the
// environment), and is not in the network namespace ReexecInPrivateNetns was
// called in. Links made there never touch the host's namespace.
func InPrivateNetns() bool {
	host := os.Getenv(envHostNetns)
	if host == "" {
		return false
	}
	cur, err := CurrentNetns()
	if err != nil {
		return false
	}
	defer cur.Close()
	return cur.String() != host
}

// ReexecInPrivateNetns runs this program again (/proc/self/exe with os.Args)
// in a new network namespace, waits for it and returns its exit status:
// 128+n when signal n killed it, as shells report it. The child inherits the
// environment plus env ("KEY=value" each) and InPrivateNetns's marker, and
// standard input, output and error; SIGINT, SIGTERM and SIGQUIT sent to the
// caller are forwarded to it, and it is killed if the caller dies first.
//
// As root it unshares only the network namespace (CLONE_NEWNET, with
// clone(2)). Otherwise, or if that fails (root without CAP_SYS_ADMIN, in a
// container), the child also gets a new user namespace
// (CLONE_NEWUSER|CLONE_NEWNET, user_namespaces(7)) mapping root to the
// caller's user and group, which gives it every capability over its network
// namespace.
//
// If no child could be started, ReexecInPrivateNetns returns -1 and an
// error saying why for each attempt; nothing ran. If the child started but
// its status could not be collected, it returns 2 and an error: the child
// did run, so the caller must not run its work again in place.
//
// # Privileges
//
// As root it needs CAP_SYS_ADMIN; as anyone else, unprivileged user
// namespaces: kernel.unprivileged_userns_clone=1 where that sysctl exists,
// user.max_user_namespaces > 0, and no AppArmor restriction
// (kernel.apparmor_restrict_unprivileged_userns=0). Without them starting
// the child fails with an error wrapping syscall.EPERM or syscall.ENOSPC.
func ReexecInPrivateNetns(env ...string) (exitCode int, err error) {
	host, err := CurrentNetns()
	if err != nil {
		return -1, fmt.Errorf("sys: re-execute in a private network namespace: %w", err)
	}
	hostID := host.String()
	host.Close()

	// Pdeathsig is sent when the thread that started the child exits, not
	// the process: stay on this thread until the child is reaped, so a
	// parent that dies takes the child, and its namespaces, with it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	defer signal.Stop(sigs)

	// The last value of a variable wins in exec.Cmd.Env, so a stale marker
	// from the caller's environment is replaced.
	childEnv := append(append(os.Environ(), env...), envHostNetns+"="+hostID)
	var failed []string
	var errs []any
	for _, a := range reexecAttempts() {
		cmd := &exec.Cmd{
			Path:        "/proc/self/exe",
			Args:        os.Args,
			Env:         childEnv,
			Stdin:       os.Stdin,
			Stdout:      os.Stdout,
			Stderr:      os.Stderr,
			SysProcAttr: a.attr,
		}
		if err := cmd.Start(); err != nil {
			failed = append(failed, a.name+": %w")
			errs = append(errs, err)
			continue
		}
		return waitForwarding(cmd, sigs)
	}
	// One %w per attempt keeps the message on one line and every cause
	// visible to errors.Is.
	return -1, fmt.Errorf("sys: re-execute in a private network namespace: "+strings.Join(failed, "; "), errs...)
}

// reexecAttempt is one way of starting the child, named for error messages.
type reexecAttempt struct {
	name string
	attr *syscall.SysProcAttr
}

// reexecAttempts lists the ways to try, cheapest first.
func reexecAttempts() []reexecAttempt {
	var as []reexecAttempt
	if os.Geteuid() == 0 {
		as = append(as, reexecAttempt{"CLONE_NEWNET", &syscall.SysProcAttr{
			Cloneflags: syscall.CLONE_NEWNET,
			Pdeathsig:  syscall.SIGKILL,
		}})
	}
	// Root without CAP_SYS_ADMIN (a container) may still own a user
	// namespace.
	as = append(as, reexecAttempt{"CLONE_NEWUSER|CLONE_NEWNET", &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		// An unprivileged process may write gid_map only with setgroups
		// denied.
		GidMappingsEnableSetgroups: false,
		Pdeathsig:                  syscall.SIGKILL,
	}})
	return as
}

// waitForwarding waits for cmd, passing it the signals that arrive on sigs,
// and returns its exit status as ReexecInPrivateNetns does.
func waitForwarding(cmd *exec.Cmd, sigs <-chan os.Signal) (int, error) {
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
	if err == nil {
		return 0, nil
	}
	if exit, ok := errors.AsType[*exec.ExitError](err); ok {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return exit.ExitCode(), nil
	}
	return 2, fmt.Errorf("sys: waiting for the re-executed process: %w", err)
}
