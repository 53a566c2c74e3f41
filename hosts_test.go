package myproto

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/link"
	"github.com/myproto/myproto/internal/memlink"
	"github.com/myproto/myproto/internal/sys"
	"github.com/myproto/myproto/internal/testenv"
	"golang.org/x/net/bpf"
)

func TestMain(m *testing.M) {
	if os.Getenv(envPeer) == "1" { // a peer process (proc_linux_test.go)
		runPeer()
	}
	// A child process of TestIntegrationPortAcrossProcesses.
	if spec := os.Getenv("MYPROTO_HOLD_PORT"); spec != "" {
		holdPort(spec)
		return
	}
	if spec := os.Getenv("MYPROTO_STREAM_PEER"); spec != "" {
		servePeer(spec)
		return
	}
	if ifname := os.Getenv(envNoRawChild); ifname != "" {
		noRawChild(ifname)
	}
	if name := os.Getenv(envDiagChild); name != "" {
		diagChild(name)
	}
	if arg := os.Getenv("MYPROTO_DGRAM_CHILD"); arg != "" {
		dgramChild(arg)
		return
	}
	// In the private namespace, give the examples (package myproto_test,
	// same binary) their veth pair before anything runs.
	// Fuzz workers are started by the coordinator inside the same
	// namespace, where the pair already exists.
	if _, err := net.InterfaceByName("myproto0"); err != nil && sys.InPrivateNetns() {
		if err := sys.CreateVeth("myproto0", "myproto1", 1500, nil); err != nil {
			fmt.Fprintln(os.Stderr, "examples' veth pair:", err)
			os.Exit(1)
		}
	}
	testenv.Main(m)
}

// testHosts are two hosts on one segment, each with its own stack: over
// in-memory links, or over a veth pair whose far end is in a second network
// namespace.
type testHosts struct {
	kind       string
	a, b       *stack
	aIf, bIf   string
	aMAC, bMAC net.HardwareAddr
	seg        *memlink.Segment // in-memory only
	pair       *testenv.Pair    // veth only
}

// addrB is host b's address for port as seen from a.
func (h *testHosts) addrB(port uint16) *Addr {
	return &Addr{HardwareAddr: h.bMAC, Port: port, Zone: h.aIf}
}

// addrA is host a's address for port as seen from b.
func (h *testHosts) addrA(port uint16) *Addr {
	return &Addr{HardwareAddr: h.aMAC, Port: port, Zone: h.bIf}
}

// memHosts returns two hosts joined by an in-memory segment.
func memHosts(t testing.TB, cfg memlink.Config) *testHosts {
	t.Helper()
	seg := memlink.NewSegment(cfg)
	aMAC := net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01}
	bMAC := net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x02}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = 1500
	}
	h := &testHosts{
		kind: "mem",
		a:    newStack(Config{EtherType: DefaultEtherType, Name: "host-a"}, &memProvider{seg: seg, name: "mem0", mac: aMAC, mtu: mtu, host: newMemHost()}),
		b:    newStack(Config{EtherType: DefaultEtherType, Name: "host-b"}, &memProvider{seg: seg, name: "mem1", mac: bMAC, mtu: mtu, host: newMemHost()}),
		aIf:  "mem0", bIf: "mem1",
		aMAC: aMAC, bMAC: bMAC,
		seg: seg,
	}
	return h
}

// vethHosts returns two hosts joined by a veth pair in private network
// namespaces, or skips saying why that is impossible here.
func vethHosts(t testing.TB, mtu int) *testHosts {
	t.Helper()
	p := testenv.NewPair(t, mtu)
	return &testHosts{
		kind: "veth",
		a:    newStack(Config{Name: "host-a"}, packetProvider{}),
		b:    newStack(Config{Name: "host-b"}, packetProvider{ns: p.NetnsB}),
		aIf:  p.A.Name, bIf: p.B.Name,
		aMAC: p.A.HardwareAddr, bMAC: p.B.HardwareAddr,
		pair: p,
	}
}

// onBothLinks runs f on the in-memory link and on veth.
func onBothLinks(t *testing.T, f func(t *testing.T, h *testHosts)) {
	t.Run("mem", func(t *testing.T) { f(t, memHosts(t, memlink.Config{Seed: 1})) })
	t.Run("veth", func(t *testing.T) { f(t, vethHosts(t, 1500)) })
}

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
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
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

// watchdog turns a hang into a failure with every goroutine's stack.
func watchdog(t testing.TB) { testenv.Watchdog(t, 2*time.Minute) }
