package myproto

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/myproto/myproto/internal/stream"
)

// network is the name of myproto in net.Addr.Network, *net.OpError.Net and
// the family registry.
const network = "myproto"

// Errors shared by the sockets. They are wrapped in *net.OpError by opError.
var (
	// errBroadcast mirrors sendto(2) without SO_BROADCAST: EACCES.
	errBroadcast = os.NewSyscallError("sendto", syscall.EACCES)
	// errTooBig mirrors a UDP datagram larger than the path MTU: EMSGSIZE.
	errTooBig = os.NewSyscallError("sendto", syscall.EMSGSIZE)
	// errNoRawSocket is what Listen, ListenPacket and Dial fail with when
	// the kernel refuses the packet socket: it says what to do.
	errNoRawSocket error = &permissionError{os.NewSyscallError("socket", syscall.EPERM)}
)

// errDialTimeout is what a dial fails with when its Timeout or its
// context's deadline passes: as net.Dialer's ("i/o timeout"), a net.Error
// whose Timeout method returns true and for which errors.Is(err,
// context.DeadlineExceeded) holds; errors.Is(err, os.ErrDeadlineExceeded)
// holds too, as for a deadline of the connection's own.
var errDialTimeout error = dialTimeoutError{}

type dialTimeoutError struct{}

func (dialTimeoutError) Error() string   { return "i/o timeout" }
func (dialTimeoutError) Timeout() bool   { return true }
func (dialTimeoutError) Temporary() bool { return true }

// Is matches context.DeadlineExceeded and os.ErrDeadlineExceeded.
func (dialTimeoutError) Is(target error) bool {
	return target == context.DeadlineExceeded || target == os.ErrDeadlineExceeded
}

// permissionError is a packet socket the kernel refused for want of
// CAP_NET_RAW. errors.Is(err, os.ErrPermission) and errors.Is(err,
// syscall.EPERM) hold for it.
type permissionError struct{ err error }

func (e *permissionError) Error() string {
	return "packet sockets need CAP_NET_RAW: run as root, give the binary the capability " +
		"(setcap cap_net_raw+ep), or run it in a user and network namespace of its own (unshare -rn): " + e.err.Error()
}

func (e *permissionError) Unwrap() error { return e.err }

// opError is the one funnel every exported method's error goes through. It
// builds a *net.OpError the way package net does: local is the socket's own
// address and remote the peer's; for listen, accept and set operations the
// caller passes the local address as remote, as net does for its listeners.
// io.EOF is never wrapped, since callers compare it with ==.
func opError(op string, local, remote *Addr, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	// Ours already (an inner call built it); one from a layer below
	// (package packet's, say) is wrapped like any other error.
	if oe, ok := err.(*net.OpError); ok && oe.Net == network {
		return err
	}
	e := &net.OpError{Op: op, Net: network, Err: err}
	// A nil *Addr in a net.Addr interface is not a nil interface; keep them nil.
	if local != nil {
		e.Source = local
	}
	if remote != nil {
		e.Addr = remote
	}
	return e
}

// streamErr maps a stream engine's failure to the errno TCP reports in its
// place, so errors.Is(err, syscall.ECONNRESET) and the like hold for what
// Dial, Read and Write return. Errors the stack failed a connection with
// itself (ENETDOWN, ENETRESET, ECONNRESET) are errnos already and pass
// unchanged. Every error the conn layer takes from the engine goes through
// here.
func streamErr(err error) error {
	switch err {
	case stream.ErrRefused:
		return syscall.ECONNREFUSED
	case stream.ErrReset:
		return syscall.ECONNRESET
	case stream.ErrTimeout:
		return syscall.ETIMEDOUT
	}
	return err
}

// errClosedFrom maps errors that mean "this socket is closed" from the layers
// below to net.ErrClosed, and leaves everything else alone.
func errClosedFrom(err error) error {
	if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
		return net.ErrClosed
	}
	return err
}
