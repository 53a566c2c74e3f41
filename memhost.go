package myproto

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

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
	ends := memPipe()
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

// memPipe returns the two ends of an in-memory stream connection that, like
// a Unix socket pair and unlike net.Pipe, buffers what is written: both
// sides of the host agent's protocol write first and read after. Closing
// either end ends the other's reads with io.EOF once it has read what came
// before, and fails its writes.
func memPipe() [2]net.Conn {
	a, b := &memQueue{}, &memQueue{}
	a.cond.L, b.cond.L = &a.mu, &b.mu
	return [2]net.Conn{&memEnd{in: a, out: b}, &memEnd{in: b, out: a}}
}

// memQueue is one direction of a memPipe.
type memQueue struct {
	mu     sync.Mutex
	cond   sync.Cond
	buf    []byte
	closed bool
}

func (q *memQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}

// memEnd is one end of a memPipe. Deadlines are accepted and ignored:
// writes never block, and the host agent sets none on reads.
type memEnd struct {
	in, out *memQueue
	once    sync.Once
}

func (e *memEnd) Read(b []byte) (int, error) {
	q := e.in
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.buf) == 0 && !q.closed {
		q.cond.Wait()
	}
	if len(q.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(b, q.buf)
	q.buf = q.buf[n:]
	return n, nil
}

func (e *memEnd) Write(b []byte) (int, error) {
	q := e.out
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return 0, net.ErrClosed
	}
	q.buf = append(q.buf, b...)
	q.cond.Broadcast()
	return len(b), nil
}

func (e *memEnd) Close() error {
	e.once.Do(func() {
		e.in.close()
		e.out.close()
	})
	return nil
}

func (e *memEnd) LocalAddr() net.Addr                { return memPipeAddr{} }
func (e *memEnd) RemoteAddr() net.Addr               { return memPipeAddr{} }
func (e *memEnd) SetDeadline(t time.Time) error      { return nil }
func (e *memEnd) SetReadDeadline(t time.Time) error  { return nil }
func (e *memEnd) SetWriteDeadline(t time.Time) error { return nil }

type memPipeAddr struct{}

func (memPipeAddr) Network() string { return "memhost" }
func (memPipeAddr) String() string  { return "memhost" }
