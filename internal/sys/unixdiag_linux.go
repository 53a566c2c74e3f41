//go:build linux

package sys

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// AbstractListeners returns the names, without the leading '@', of the
// listening abstract Unix sockets (unix(7)) in the calling thread's network
// namespace whose names start with prefix, as /proc/net/unix lists them.
// Abstract names belong to a network namespace, so this is every such socket
// of every process in it.
func AbstractListeners(prefix string) ([]string, error) {
	// The thread's view, not the process's: a caller inside Netns.Do asks
	// about that namespace.
	f, err := os.Open("/proc/thread-self/net/unix")
	if errors.Is(err, os.ErrNotExist) {
		f, err = os.Open("/proc/net/unix")
	}
	if err != nil {
		return nil, fmt.Errorf("sys: listing Unix sockets: %w", err)
	}
	defer f.Close()
	return parseProcNetUnix(bufio.NewScanner(f), prefix)
}

// acceptCon is __SO_ACCEPTCON in the Flags column of /proc/net/unix: the
// socket listens.
const acceptCon = 1 << 16

// parseProcNetUnix reads /proc/net/unix lines:
//
//	Num       RefCount Protocol Flags    Type St Inode Path
//	0000000044de87ee: 00000002 00000000 00010000 0001 01 21162 @name
func parseProcNetUnix(sc *bufio.Scanner, prefix string) ([]string, error) {
	var out []string
	seen := make(map[string]bool)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 8 {
			continue
		}
		var flags uint32
		if _, err := fmt.Sscanf(f[3], "%x", &flags); err != nil || flags&acceptCon == 0 {
			continue
		}
		// A path may hold spaces; it is the rest of the line.
		path := strings.Join(f[7:], " ")
		name, ok := strings.CutPrefix(path, "@")
		if !ok || !strings.HasPrefix(name, prefix) || seen[name] {
			continue
		}
		seen[name] = true
		out = append(out, name)
	}
	return out, sc.Err()
}

// PeerCred returns the process ID and user ID of the process at the other
// end of a Unix socket connection as the kernel recorded them when it
// connected (SO_PEERCRED, unix(7)), translated into the caller's namespaces.
func PeerCred(c net.Conn) (pid, uid int, err error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, 0, errors.New("sys: peer credentials: not a Unix socket")
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var cred *unix.Ucred
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		cred, gerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, 0, err
	}
	if gerr != nil {
		return 0, 0, os.NewSyscallError("getsockopt", gerr)
	}
	return int(cred.Pid), int(cred.Uid), nil
}
