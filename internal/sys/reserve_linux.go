//go:build linux

package sys

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// A Reservation is a port held host-wide, in the current network namespace,
// by this process. It lasts until Close or until the process dies, whichever
// comes first: the kernel releases it with the process's descriptors, so a
// crash never leaves a port stuck.
type Reservation struct {
	mu sync.Mutex
	fd int // -1 once closed
}

// ReservePort reserves stream port of etherType for this process among all
// the processes of the network namespace, by binding an abstract Unix
// socket named "@myproto/<ethertype in hex>/<port>" (unix(7)) and holding it
// open. If another process, or this one, already holds the port, the error
// is a *os.SyscallError for bind wrapping syscall.EADDRINUSE, as bind(2)
// gives for a TCP port: "bind: address already in use".
//
// The reservation is not tied to garbage collection: dropping the
// *Reservation without calling Close keeps the port until the process exits.
func ReservePort(etherType, port uint16) (*Reservation, error) {
	return reserve(reserveAddr(etherType, port))
}

// ReserveDatagramPort reserves datagram port of etherType as ReservePort
// reserves a stream port; the name is
// "@myproto/<ethertype in hex>/dgram/<port>". Streams and datagrams have
// separate port spaces, as TCP and UDP do.
func ReserveDatagramPort(etherType, port uint16) (*Reservation, error) {
	return reserve(&unix.SockaddrUnix{Name: fmt.Sprintf("\x00myproto/%04x/dgram/%d", etherType, port)})
}

func reserve(sa *unix.SockaddrUnix) (*Reservation, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		_ = unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	return &Reservation{fd: fd}, nil
}

// Close releases the reservation. Closing a closed Reservation does nothing
// and returns nil.
func (r *Reservation) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fd < 0 {
		return nil
	}
	err := unix.Close(r.fd)
	r.fd = -1
	return os.NewSyscallError("close", err)
}

// ReserveName reserves a node name of etherType for this process among all
// the processes of the network namespace, as ReservePort reserves a port
// (the abstract name is "@myproto/<ethertype in hex>/name/<name>"), so that
// one process per host answers neighbour discovery for it. A name held by
// another process gives an error wrapping syscall.EADDRINUSE.
func ReserveName(etherType uint16, name string) (*Reservation, error) {
	return reserve(&unix.SockaddrUnix{Name: fmt.Sprintf("\x00myproto/%04x/name/%s", etherType, name)})
}

// PortOwned reports whether some process in the current network namespace,
// this one included, holds port of etherType through ReservePort.
//
// It asks by connect(2)ing a throwaway socket to the reservation's name
// rather than trying to bind it, so the question never takes the name even
// for an instant and cannot make a concurrent ReservePort fail. If the
// question cannot be asked (say, out of descriptors), PortOwned reports true:
// the answer that makes a caller hold back a reset rather than send a wrong
// one.
func PortOwned(etherType, port uint16) bool {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return true
	}
	defer unix.Close(fd)
	for {
		err = unix.Connect(fd, reserveAddr(etherType, port))
		if err != unix.EINTR {
			break
		}
	}
	// Nobody bound to the name is ECONNREFUSED.
	return !errors.Is(err, unix.ECONNREFUSED)
}

// reserveAddr returns the abstract socket address (its name starts with a
// NUL byte, unix(7)) that stands for port of etherType.
func reserveAddr(etherType, port uint16) *unix.SockaddrUnix {
	return &unix.SockaddrUnix{Name: fmt.Sprintf("\x00myproto/%04x/%d", etherType, port)}
}
