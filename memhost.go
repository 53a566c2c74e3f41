package myproto

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/myproto/myproto/internal/link"
	"github.com/myproto/myproto/internal/memlink"
	"github.com/myproto/myproto/internal/memstack"
	"golang.org/x/net/bpf"
)

// The in-memory host: a provider whose interface is a link on an in-memory
// segment (internal/memlink) and whose host-wide reservations and abstract
// sockets live in a memHost, so that stacks run without privileges or
// namespaces: in tests, and in package mptest for users' own tests.

// memProvider gives a stack one in-memory interface on a segment.
type memProvider struct {
	seg  *memlink.Segment
	name string
	mac  net.HardwareAddr
	mtu  int
	host *memHost
}

func (p *memProvider) interfaces() ([]net.Interface, error) {
	return []net.Interface{{
		Index:        1,
		MTU:          p.mtu,
		Name:         p.name,
		HardwareAddr: p.mac,
		Flags:        net.FlagUp | net.FlagBroadcast | net.FlagMulticast,
	}}, nil
}

func (p *memProvider) open(ifi *net.Interface, _ uint16, filter []bpf.RawInstruction, _, _ int) (link.Link, error) {
	l := p.seg.Attach(ifi.Name, ifi.HardwareAddr)
	l.SetMTU(p.mtu)
	if err := l.SetFilter(filter); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func (p *memProvider) reserve(_, port uint16) (io.Closer, error) { return p.host.reserve(int(port)) }
func (p *memProvider) reserveDatagram(_, port uint16) (io.Closer, error) {
	return p.host.reserve(1<<16 | int(port))
}
func (p *memProvider) owned(_, port uint16) bool        { return p.host.owned(port) }
func (p *memProvider) watchLinks() (linkWatcher, error) { return nil, errors.ErrUnsupported }
func (p *memProvider) reserveName(_ uint16, name string) (io.Closer, error) {
	return p.host.reserveName(name)
}
func (p *memProvider) listenHost(name string) (net.Listener, error) { return p.host.listenHost(name) }
func (p *memProvider) dialHost(name string) (net.Conn, error)       { return p.host.dialHost(name) }

// memHost stands in for the host-wide port reservations and abstract
// sockets of one host.
type memHost struct {
	mu        sync.Mutex
	ports     map[int]bool // stream ports, and datagram ports + 1<<16
	names     map[string]bool
	listeners map[string]*memListener
}

func newMemHost() *memHost {
	return &memHost{ports: make(map[int]bool), names: make(map[string]bool),
		listeners: make(map[string]*memListener)}
}

// memListener is an abstract Unix stream socket of a memHost; its
// connections are socket pairs, buffered as real ones are.
type memListener struct {
	h      *memHost
	name   string
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (h *memHost) listenHost(name string) (net.Listener, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.listeners[name] != nil {
		return nil, os.NewSyscallError("bind", syscall.EADDRINUSE)
	}
	l := &memListener{h: h, name: name, conns: make(chan net.Conn, 64), closed: make(chan struct{})}
	h.listeners[name] = l
	return l, nil
}

func (h *memHost) dialHost(name string) (net.Conn, error) {
	h.mu.Lock()
	l := h.listeners[name]
	h.mu.Unlock()
	if l == nil {
		return nil, os.NewSyscallError("connect", syscall.ECONNREFUSED)
	}
	// SOCK_CLOEXEC is not everywhere (darwin): close-on-exec is set under
	// the fork lock instead, as package syscall does.
	syscall.ForkLock.RLock()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fds[0])
		syscall.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, err
	}
	var ends [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "memhost")
		ends[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	select {
	case l.conns <- ends[1]:
		return ends[0], nil
	case <-l.closed:
		ends[0].Close()
		ends[1].Close()
		return nil, os.NewSyscallError("connect", syscall.ECONNREFUSED)
	}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() {
		l.h.mu.Lock()
		delete(l.h.listeners, l.name)
		l.h.mu.Unlock()
		close(l.closed)
		for {
			select {
			case c := <-l.conns:
				c.Close()
			default:
				return
			}
		}
	})
	return nil
}

func (l *memListener) Addr() net.Addr { return &net.UnixAddr{Name: "@" + l.name, Net: "unix"} }

func (h *memHost) reserveName(name string) (io.Closer, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.names[name] {
		return nil, os.NewSyscallError("bind", syscall.EADDRINUSE)
	}
	h.names[name] = true
	return closerFunc(func() error {
		h.mu.Lock()
		delete(h.names, name)
		h.mu.Unlock()
		return nil
	}), nil
}

func (h *memHost) reserve(port int) (io.Closer, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ports[port] {
		return nil, os.NewSyscallError("bind", syscall.EADDRINUSE)
	}
	h.ports[port] = true
	return closerFunc(func() error {
		h.mu.Lock()
		delete(h.ports, port)
		h.mu.Unlock()
		return nil
	}), nil
}

func (h *memHost) owned(port uint16) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ports[int(port)]
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

func init() {
	memstack.New = func(seg *memlink.Segment, ifname string, mac net.HardwareAddr, mtu int, cfg any) (any, error) {
		c, _ := cfg.(*Config)
		s, err := openStack(c, &memProvider{seg: seg, name: ifname, mac: mac, mtu: mtu, host: newMemHost()})
		if err != nil {
			return nil, err
		}
		return &Stack{s: s}, nil
	}
}
