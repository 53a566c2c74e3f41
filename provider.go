package myproto

import (
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/myproto/myproto/internal/link"
	"github.com/myproto/myproto/internal/sys"
	"golang.org/x/net/bpf"
)

// A provider is where a stack gets its links and port reservations from: the
// host's packet sockets, or in tests a set of in-memory links. It is the
// seam between the stack and the machine.
type provider interface {
	// interfaces lists the interfaces the stack may use.
	interfaces() ([]net.Interface, error)
	// open opens a link on ifi with the filter attached before it
	// receives and socket buffers of the given sizes (0: the default).
	open(ifi *net.Interface, etherType uint16, filter []bpf.RawInstruction, readBuffer, writeBuffer int) (link.Link, error)
	// reserve claims stream port host-wide; the claim ends with Close or
	// the process.
	reserve(etherType, port uint16) (io.Closer, error)
	// reserveDatagram claims datagram port host-wide, as reserve does a
	// stream port: they are separate spaces.
	reserveDatagram(etherType, port uint16) (io.Closer, error)
	// owned reports whether any process on the host holds port.
	owned(etherType, port uint16) bool
	// reserveName claims a node name host-wide, as reserve does a port.
	reserveName(etherType uint16, name string) (io.Closer, error)
	// watchLinks subscribes to the interfaces' up/down/MTU changes.
	watchLinks() (linkWatcher, error)
	// listenHost binds the abstract Unix stream socket name host-wide
	// (unix(7)): held until closed or until the process dies. If another
	// socket holds it, the error wraps EADDRINUSE.
	listenHost(name string) (net.Listener, error)
	// dialHost connects to the socket holding name.
	dialHost(name string) (net.Conn, error)
}

// A controlProvider opens the control socket apart (see openControl):
// where a provider has no such method, the stack opens it like the others.
type controlProvider interface {
	openControl(ifi *net.Interface, etherType uint16, filter []bpf.RawInstruction, readBuffer, writeBuffer int) (link.Link, error)
}

// packetProvider opens AF_PACKET sockets, optionally inside another network
// namespace (tests use one per simulated host).
type packetProvider struct {
	ns   *sys.Netns // nil: the process's own namespace
	ring int        // Config.ReceiveRing, for the data sockets
}

func (p packetProvider) do(fn func() error) error {
	if p.ns == nil {
		return fn()
	}
	return p.ns.Do(fn)
}

func (p packetProvider) interfaces() ([]net.Interface, error) {
	var ifis []net.Interface
	err := p.do(func() error {
		var err error
		ifis, err = net.Interfaces()
		return err
	})
	return ifis, err
}

func (p packetProvider) open(ifi *net.Interface, etherType uint16, filter []bpf.RawInstruction, readBuffer, writeBuffer int) (link.Link, error) {
	// Outside the poller but while a read waits (sys.QuietLink): the
	// frames that arrive while a batch is handled, or between a sender's
	// sends, wake no idle thread.
	return p.openQuiet(ifi, sys.PacketConfig{
		EtherType:   etherType,
		Filter:      filter,
		ReadBuffer:  readBuffer,
		WriteBuffer: writeBuffer,
		RingSize:    p.ring,
	})
}

// openControl opens the control socket as open does the data socket, but
// without a receive ring whatever Config.ReceiveRing says: a QuietLink is
// in Go's poller only while the control loop waits for a frame, so a flood
// that keeps the socket full while the loop sleeps over its CPU share
// wakes nobody, and a loop waiting for the next SYN holds no thread (see
// controlLoop).
func (p packetProvider) openControl(ifi *net.Interface, etherType uint16, filter []bpf.RawInstruction, readBuffer, writeBuffer int) (link.Link, error) {
	return p.openQuiet(ifi, sys.PacketConfig{
		EtherType:   etherType,
		Filter:      filter,
		ReadBuffer:  readBuffer,
		WriteBuffer: writeBuffer,
	})
}

// openQuiet opens a sys.QuietLink with cfg in the provider's namespace.
func (p packetProvider) openQuiet(ifi *net.Interface, cfg sys.PacketConfig) (link.Link, error) {
	var l link.Link
	err := p.do(func() error {
		ql, err := sys.OpenQuiet(ifi, cfg)
		if errors.Is(err, syscall.EPERM) {
			return errNoRawSocket
		}
		if err != nil {
			return err
		}
		l = ql
		return nil
	})
	return l, err
}

func (p packetProvider) reserve(etherType, port uint16) (io.Closer, error) {
	var r io.Closer
	err := p.do(func() error {
		res, err := sys.ReservePort(etherType, port)
		if err != nil {
			return err
		}
		r = res
		return nil
	})
	return r, err
}

func (p packetProvider) reserveDatagram(etherType, port uint16) (io.Closer, error) {
	var r io.Closer
	err := p.do(func() error {
		res, err := sys.ReserveDatagramPort(etherType, port)
		if err != nil {
			return err
		}
		r = res
		return nil
	})
	return r, err
}

func (p packetProvider) reserveName(etherType uint16, name string) (io.Closer, error) {
	var r io.Closer
	err := p.do(func() error {
		res, err := sys.ReserveName(etherType, name)
		if err != nil {
			return err
		}
		r = res
		return nil
	})
	return r, err
}

func (p packetProvider) watchLinks() (linkWatcher, error) {
	w, err := sys.WatchLinks(p.ns)
	if err != nil {
		return nil, err
	}
	return w, nil
}

func (p packetProvider) owned(etherType, port uint16) bool {
	var owned bool
	_ = p.do(func() error {
		owned = sys.PortOwned(etherType, port)
		return nil
	})
	return owned
}

func (p packetProvider) listenHost(name string) (net.Listener, error) {
	var ln net.Listener
	err := p.do(func() error {
		var err error
		ln, err = net.Listen("unix", "@"+name)
		return err
	})
	return ln, err
}

func (p packetProvider) dialHost(name string) (net.Conn, error) {
	var c net.Conn
	err := p.do(func() error {
		var err error
		c, err = net.DialTimeout("unix", "@"+name, time.Second)
		return err
	})
	return c, err
}
