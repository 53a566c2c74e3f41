package myproto

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/myproto/myproto/internal/stream"
	"github.com/myproto/myproto/internal/sys"
	"golang.org/x/net/bpf"
)

// Ephemeral ports, as Linux's net.ipv4.ip_local_port_range suggests (RFC 6335).
const (
	ephemeralLow  = 49152
	ephemeralHigh = 65535
)

// A stack is the per-process protocol instance for one EtherType: the
// endpoints (one packet socket per interface, shared by every socket of the
// process on it), the port table and the host-wide port reservations.
type stack struct {
	cfg       Config
	etherType uint16
	prov      provider

	mu        sync.Mutex
	endpoints map[int]*endpoint   // by interface index; opened on first use
	ports     map[uint16]*binding // every stream port this process owns
	dports    map[uint16]*binding // every datagram port: a space of its own (ports.go)
	nextEph   uint16              // where the ephemeral search starts

	// conns are the stream connections by our connection ID.
	conns sync.Map // uint64 → *Conn
	// timers runs the connections' timers.
	timers *timerQueue

	// refuse limits RSTs for SYNs to ports nobody on the host owns (and
	// the agent's questions about ownership); resets limits stateless
	// resets.
	refuse rateLimiter
	resets rateLimiter
	// rmem bounds what the connections hold received and unread.
	rmem rcvMem
	// verify limits how often hints of a peer's death (discovery frames,
	// which anyone can send) make connections probe.
	verify rateLimiter
	// verified says when the connections to a peer stack last all
	// probed because one of them was reset (Conn.statelessReset).
	verifiedMu sync.Mutex
	verified   map[peerStack]time.Time

	// peers are the established connections by their peer's MAC and
	// connection ID, to match a stateless reset, which echoes the latter.
	peers sync.Map // peerKey → *Conn

	// names are what discovery answers for; err is a bad configured name.
	names names
	err   error
	// claims hold the names this process answers for host-wide, while it
	// has any endpoint open; tables are the neighbour tables by interface
	// index, kept across endpoint closes. Both under mu.
	claims map[string]io.Closer
	tables map[int]*neighborTable
	// nameRetry claims names another process held again, nameRetryDelay
	// apart (see retryNames); under mu.
	nameRetry      *time.Timer
	nameRetryDelay time.Duration
	// watcher follows link events while any endpoint is open; under mu.
	watcher linkWatcher
	// host is the stack's part in the host agent election while any
	// endpoint is open; under mu.
	host *host
	// hostRef is host for readers without mu: the control loop.
	hostRef atomic.Pointer[host]
	// diag is the diagnostic socket while any endpoint is open (diag.go);
	// under mu. events are the stack's event subscribers (events.go).
	diag   *diagServer
	events eventHub
	// clients are the ports outgoing connections share, by interface
	// index; under mu.
	clients map[int]*binding
	// closed is set by close; under mu.
	closed bool
	// wg counts the stack's goroutines, for close to wait for.
	wg sync.WaitGroup

	// table is an immutable snapshot of ports for the receive path, which
	// reads it once per frame without locks; publish replaces it.
	table atomic.Pointer[map[uint16]*binding]
	// dtable is the same for datagram ports.
	dtable atomic.Pointer[map[uint16]*binding]

	// pubGen counts changes the tables, the kernel filters and the host
	// agent must learn of (ports, the agent role, a MAC); pubSoon is set
	// while a background publish is due. Both under mu. pubMu serialises
	// publish, which brings everything to the generation it finds; pubDone
	// (under pubMu) is the last generation published.
	pubGen  uint64
	pubSoon bool
	pubMu   sync.Mutex
	pubDone uint64

	// ifCache is the system's interfaces as last read, kept while the link
	// watcher runs (watching) and reports no change; ifGen counts the
	// changes. Both under ifMu. See interfaces.
	ifMu     sync.Mutex
	ifCache  []net.Interface
	ifGen    uint64
	watching atomic.Bool
}

// A binding is one owned port.
type binding struct {
	// refs are the owner and the connections using the port. Connections
	// come and go without the stack's lock; the last release takes it.
	refs atomic.Int32
	// released is set once the port is given up: until the tables are
	// published without it, the receive path treats it as unowned.
	released atomic.Bool
	client   bool        // the port outgoing connections share (see clientBinding)
	linger   *time.Timer // a client port's release once unused; under stack.mu
	port     uint16
	res      io.Closer   // the host-wide reservation
	ifindex  int         // 0: every interface the socket was bound on
	eps      []*endpoint // endpoints this binding holds a reference on
	pc       *PacketConn // datagram owner
	ln       *Listener   // stream listener
}

func newStack(cfg Config, prov provider) *stack {
	s := &stack{
		cfg:       cfg,
		etherType: cfg.etherType(),
		prov:      prov,
		endpoints: make(map[int]*endpoint),
		ports:     make(map[uint16]*binding),
		dports:    make(map[uint16]*binding),
		nextEph:   uint16(ephemeralLow + rand.IntN(ephemeralHigh-ephemeralLow+1)),
		claims:    make(map[string]io.Closer),
		clients:   make(map[int]*binding),
		tables:    make(map[int]*neighborTable),
		resets:    rateLimiter{rate: resetRate, burst: resetBurst},
		verify:    rateLimiter{rate: verifyRate, burst: verifyBurst},
	}
	s.timers = newTimerQueue(&s.wg)
	s.rmem.budget = recvBudget(&cfg)
	s.names, s.err = stackNames(&cfg)
	if bp, err := withBearers(&cfg, prov); err != nil {
		if s.err == nil {
			s.err = err
		}
	} else {
		s.prov = bp
	}
	empty := map[uint16]*binding{}
	s.table.Store(&empty)
	s.dtable.Store(&empty)
	return s
}

// lookup returns the binding that owns port, or nil. It takes no lock.
func (s *stack) lookup(port uint16) *binding {
	b := (*s.table.Load())[port]
	if b == nil || b.released.Load() {
		return nil
	}
	return b
}

// interfaces returns the system's interfaces, which callers must not
// modify. Reading them is a netlink dump, 40 % of a dial's CPU, so while
// the link watcher runs (any endpoint is open) the list is kept until it
// reports a change of any interface.
func (s *stack) interfaces() ([]net.Interface, error) {
	s.ifMu.Lock()
	ifis, gen := s.ifCache, s.ifGen
	s.ifMu.Unlock()
	if ifis != nil {
		return ifis, nil
	}
	watching := s.watching.Load()
	ifis, err := s.prov.interfaces()
	if err != nil || !watching {
		return ifis, err
	}
	s.ifMu.Lock()
	if s.ifGen == gen {
		s.ifCache = ifis
	}
	s.ifMu.Unlock()
	return ifis, nil
}

// linksChanged forgets the interfaces read, on a link event or when the
// watcher stops.
func (s *stack) linksChanged() {
	s.ifMu.Lock()
	s.ifGen++
	s.ifCache = nil
	s.ifMu.Unlock()
}

// usable reports whether the stack can use ifi: an up Ethernet interface.
func usable(ifi *net.Interface) bool {
	return ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagLoopback == 0 && len(ifi.HardwareAddr) == 6
}

// selectInterfaces returns the interfaces a local address names: its zone or
// host (an interface name), its MAC, or with neither every usable interface.
func (s *stack) selectInterfaces(mac net.HardwareAddr, name string) ([]net.Interface, error) {
	var out []net.Interface
	for try := range 2 {
		if try == 1 {
			// None: perhaps the interface is newer than the news of it.
			s.linksChanged()
		}
		ifis, err := s.interfaces()
		if err != nil {
			return nil, err
		}
		for _, ifi := range ifis {
			switch {
			case name != "" && ifi.Name != name:
				continue
			case mac != nil && !slices.Equal(ifi.HardwareAddr, mac):
				continue
			case name == "" && mac == nil && !s.byDefault(&ifi):
				continue
			}
			out = append(out, ifi)
		}
		if len(out) > 0 {
			break
		}
	}
	if len(out) == 0 {
		switch {
		case name != "":
			return nil, errNoInterface(name)
		case mac != nil:
			return nil, errNoInterface(mac.String())
		default:
			return nil, errors.New("no up Ethernet interface")
		}
	}
	for i := range out {
		if len(out[i].HardwareAddr) != 6 {
			return nil, &net.AddrError{Err: errNotEthernet, Addr: out[i].Name}
		}
	}
	return out, nil
}

func errNoInterface(what string) error {
	return &net.AddrError{Err: "no such interface", Addr: what}
}

// bindLocal binds b on the local address of a listening socket ("iface:port",
// "[mac]:port", "[mac%iface]:port" or ":port") and returns the socket's
// local address: without hardware address or zone when it is on every
// interface. Its errors are ready to return.
func (s *stack) bindLocal(netw, address string, b *binding) (*Addr, error) {
	pa, err := s.parseLocal(netw, address)
	if err != nil {
		return nil, opError("listen", nil, nil, err)
	}
	mac, zone, host, port := pa.mac, pa.zone, pa.host, pa.port
	if pa.ip.IsValid() {
		// A UDP bearer's own IP address names the bearer.
		if zone, err = s.udpLocal(pa.ip, zone, address); err != nil {
			return nil, opError("listen", nil, nil, err)
		}
	}
	if zone == "" {
		zone = host
	}
	ifis, err := s.selectInterfaces(mac, zone)
	err = inAddress(err, address)
	if err == nil {
		b.port = port
		err = s.bind(b, ifis)
	}
	if err != nil {
		return nil, opError("listen", nil, &Addr{HardwareAddr: mac, Port: port, Zone: zone}, err)
	}
	local := &Addr{Port: b.port}
	if len(ifis) == 1 {
		local = b.eps[0].addr(b.port)
	}
	return local, nil
}

// bind claims port (0: an ephemeral one) on the given interfaces for b's
// owner, opening their endpoints as needed. On failure nothing is left held.
func (s *stack) bind(b *binding, ifis []net.Interface) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	if err := s.claimPort(b); err != nil {
		s.mu.Unlock()
		return err
	}
	b.refs.Store(1)
	s.portsOf(b)[b.port] = b
	for i := range ifis {
		ep, err := s.acquireEndpoint(&ifis[i])
		if err != nil {
			closing := s.releaseLocked(b)
			s.mu.Unlock()
			for _, ep := range closing {
				ep.close()
			}
			return err
		}
		b.eps = append(b.eps, ep)
	}
	if len(ifis) == 1 {
		b.ifindex = ifis[0].Index
	}
	s.changedLocked()
	s.mu.Unlock()
	// A new port receives from the moment bind returns.
	s.publish()
	return nil
}

// claimPort reserves b.port, or an ephemeral port when it is zero, both in
// this process and host-wide.
func (s *stack) claimPort(b *binding) error {
	if b.port != 0 {
		if _, ok := s.portsOf(b)[b.port]; ok {
			return os.NewSyscallError("bind", syscall.EADDRINUSE)
		}
		res, err := s.reservePort(b, b.port)
		if err != nil {
			return err
		}
		b.res = res
		return nil
	}
	const n = ephemeralHigh - ephemeralLow + 1
	for range n {
		port := s.nextEph
		s.nextEph++
		if s.nextEph < ephemeralLow {
			s.nextEph = ephemeralLow
		}
		if _, ok := s.portsOf(b)[port]; ok {
			continue
		}
		res, err := s.reservePort(b, port)
		if errors.Is(err, syscall.EADDRINUSE) {
			continue
		}
		if err != nil {
			return err
		}
		b.port, b.res = port, res
		return nil
	}
	return os.NewSyscallError("bind", syscall.EADDRINUSE)
}

// retain adds a user to b, which release then removes.
func (s *stack) retain(b *binding) {
	b.refs.Add(1)
}

// clientPortLinger is how long a client port outlives its last connection,
// so that a program dialing one connection after another keeps one port
// (and does not re-attach its filters every time).
const clientPortLinger = 2 * time.Second

// clientBinding returns the port outgoing connections on ifi share, with a
// reference for a new connection, reserving one on first use. Connections
// are told apart by connection IDs, not ports, so every dial of a stack can
// use one local port (as QUIC does), and holding 100,000 connections costs
// no port and no file descriptor each: one reservation per interface.
func (s *stack) clientBinding(ifi *net.Interface) (*binding, error) {
	s.mu.Lock()
	if b := s.clients[ifi.Index]; b != nil {
		b.refs.Add(1)
		if b.linger != nil {
			b.linger.Stop()
			b.linger = nil
		}
		s.mu.Unlock()
		return b, nil
	}
	s.mu.Unlock()
	b := &binding{client: true}
	if err := s.bind(b, []net.Interface{*ifi}); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if old := s.clients[ifi.Index]; old != nil {
		// Another dial got there first: use its port.
		old.refs.Add(1)
		s.mu.Unlock()
		s.release(b)
		return old, nil
	}
	s.clients[ifi.Index] = b
	s.mu.Unlock()
	return b, nil
}

// release drops a user of b; the last one gives up b's port and its endpoint
// references (a client port after a while: see clientPortLinger). Only the
// last takes the stack's lock, so that connections ending together (on the
// receive path, or the timer queue) do not queue for it.
func (s *stack) release(b *binding) {
	if b.refs.Add(-1) > 0 {
		return
	}
	s.mu.Lock()
	if b.refs.Load() > 0 {
		// A dial took the client port again meanwhile.
		s.mu.Unlock()
		return
	}
	if b.client && s.clients[b.ifindex] == b {
		if b.linger == nil {
			b.linger = time.AfterFunc(clientPortLinger, func() { s.releaseClient(b) })
		}
		s.mu.Unlock()
		return
	}
	closing := s.releaseLocked(b)
	s.mu.Unlock()
	for _, ep := range closing {
		ep.close()
	}
}

// releaseClient releases a client port that lingered unused.
func (s *stack) releaseClient(b *binding) {
	s.mu.Lock()
	if b.refs.Load() > 0 || s.clients[b.ifindex] != b {
		s.mu.Unlock()
		return
	}
	delete(s.clients, b.ifindex)
	b.linger = nil
	closing := s.releaseLocked(b)
	s.mu.Unlock()
	for _, ep := range closing {
		ep.close()
	}
}

// releaseLocked undoes bind and returns endpoints nobody uses any more, for
// the caller to close once it has dropped the lock. The port is free at
// once, here and host-wide; the tables, the filters and the host agent learn
// of it from a publish soon after, one for any number of releases.
func (s *stack) releaseLocked(b *binding) []*endpoint {
	b.released.Store(true)
	if ports := s.portsOf(b); ports[b.port] == b {
		delete(ports, b.port)
		s.publishSoonLocked()
	}
	if b.res != nil {
		b.res.Close()
		b.res = nil
	}
	var closing []*endpoint
	for _, ep := range b.eps {
		ep.refs--
		if ep.refs == 0 {
			delete(s.endpoints, ep.index)
			closing = append(closing, ep)
		}
	}
	b.eps = nil
	if len(s.endpoints) == 0 {
		// Gone from every link: another process on the host may answer
		// for the names now.
		for n, c := range s.claims {
			c.Close()
			delete(s.claims, n)
		}
		s.stopWatchingLocked()
		s.stopHostLocked()
		s.stopDiagLocked()
		if s.nameRetry != nil {
			s.nameRetry.Stop()
		}
	}
	return closing
}

// acquireEndpoint returns the endpoint on ifi, opening it on first use.
func (s *stack) acquireEndpoint(ifi *net.Interface) (*endpoint, error) {
	if ep, ok := s.endpoints[ifi.Index]; ok {
		ep.refs++
		return ep, nil
	}
	data, ctl, err := s.filtersFor(ifi.HardwareAddr, s.portListLocked(), s.dgramPortListLocked(), s.host)
	if err != nil {
		return nil, err
	}
	l, err := s.prov.open(ifi, s.etherType, data, s.cfg.ReadBuffer, s.cfg.WriteBuffer)
	if err != nil {
		return nil, err
	}
	c, err := s.openControl(ifi, ctl)
	if err != nil {
		l.Close()
		return nil, err
	}
	ep := newEndpoint(s, ifi, l, c)
	ep.refs = 1
	s.endpoints[ifi.Index] = ep
	t := s.tables[ifi.Index]
	if t == nil {
		t = newNeighborTable(ifi.Name)
		t.events = &s.events
		s.tables[ifi.Index] = t
	}
	ep.disc = newDiscovery(ep, t)
	s.goroutine(ep.readLoop)
	s.goroutine(ep.controlLoop)
	s.watchLinksLocked()
	s.startHostLocked()
	s.startDiagLocked()
	ep.startDiscovery(s.claimNamesLocked())
	return ep, nil
}

// claimNamesLocked reserves the stack's names host-wide where no other
// process holds them yet, and returns those this process holds.
func (s *stack) claimNamesLocked() []string {
	var owned []string
	for _, n := range s.names.list {
		if _, ok := s.claims[n]; !ok {
			c, err := s.prov.reserveName(s.etherType, n)
			if err != nil {
				continue // another process on this host answers for it
			}
			s.claims[n] = c
		}
		owned = append(owned, n)
	}
	return owned
}

// filtersFor builds the kernel filters of an interface with the given MAC:
// its data socket's, which passes every frame but SYNs to the ports this
// process owns (stream frames to its stream ports, datagrams to its
// datagram ports), and its control socket's, which passes discovery and SYNs
// to those ports, and, for the host agent, SYNs and probes to ports no
// process on the host owns (see host.go).
func (s *stack) filtersFor(mac net.HardwareAddr, own, dgram []uint16, h *host) (data, ctl []bpf.RawInstruction, err error) {
	streamType := []uint8{uint8(typeStream)}
	data, err = sys.Filter(sys.FilterConfig{
		EtherType:    s.etherType,
		Version:      wireVersion,
		HardwareAddr: mac,
		Rules: []sys.Rule{
			{Types: streamType, FlagsAny: stream.FlagSYN},
			{Types: streamType, Ports: own, InPorts: true},
			{Types: []uint8{uint8(typeDatagram)}, Ports: dgram, InPorts: true},
		},
	})
	if err != nil {
		return nil, nil, err
	}
	rules := []sys.Rule{{Types: []uint8{uint8(typeDiscovery)}, OtherPorts: true}}
	if agent, others := h.isAgent(); agent {
		rules = append(rules,
			sys.Rule{Types: streamType, FlagsAny: stream.FlagSYN, Ports: others, OtherPorts: true},
			sys.Rule{Types: streamType, FlagsAny: stream.FlagProbe, Ports: append(slices.Clone(others), own...), OtherPorts: true},
		)
	} else {
		rules = append(rules, sys.Rule{Types: streamType, FlagsAny: stream.FlagSYN, Ports: own, InPorts: true})
	}
	ctl, err = sys.Filter(sys.FilterConfig{
		EtherType:    s.etherType,
		Version:      wireVersion,
		HardwareAddr: mac,
		Rules:        rules,
	})
	return data, ctl, err
}

// portListLocked returns the stream ports this process owns, sorted; s.mu
// is held.
func (s *stack) portListLocked() []uint16 {
	ports := make([]uint16, 0, len(s.ports))
	for p := range s.ports {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	return ports
}

// changedLocked records a change that publish must pass on; s.mu is held.
func (s *stack) changedLocked() {
	s.pubGen++
}

// publishSoonLocked records a change and has publish pass it on in the
// background; s.mu is held. Changes made before that publish starts share
// it: 10,000 ports given up at once cost one filter update, not 10,000 of
// growing size, and none is made on the caller's path (the receive loop,
// the timer queue).
func (s *stack) publishSoonLocked() {
	s.pubGen++
	if s.pubSoon {
		return
	}
	s.pubSoon = true
	s.goroutine(func() {
		s.mu.Lock()
		s.pubSoon = false
		s.mu.Unlock()
		s.publish()
	})
}

// publish brings the receive path, the kernel filters and the host agent
// up to date with the ports this process owns: it makes the port tables
// visible to the receive path, re-attaches the filters (the swap is atomic
// in the kernel: SO_ATTACH_FILTER) and tells the agent. It does the work
// outside s.mu, so nothing that needs the stack's lock waits for it.
func (s *stack) publish() {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	s.mu.Lock()
	gen := s.pubGen
	if gen == s.pubDone {
		s.mu.Unlock()
		return
	}
	m := make(map[uint16]*binding, len(s.ports))
	for p, b := range s.ports {
		m[p] = b
	}
	dm := make(map[uint16]*binding, len(s.dports))
	for p, b := range s.dports {
		dm[p] = b
	}
	ports, dgram := s.portListLocked(), s.dgramPortListLocked()
	eps := make([]*endpoint, 0, len(s.endpoints))
	for _, ep := range s.endpoints {
		eps = append(eps, ep)
	}
	h := s.host
	s.mu.Unlock()

	s.table.Store(&m)
	s.dtable.Store(&dm)
	for _, ep := range eps {
		data, ctl, err := s.filtersFor(ep.hwaddrSlice(), ports, dgram, h)
		if err == nil {
			err = ep.l.SetFilter(data)
		}
		if err == nil {
			err = ep.ctl.SetFilter(ctl)
		}
		switch {
		case err == nil:
			ep.stats.filterUpdates.Add(1)
		case !errors.Is(err, net.ErrClosed):
			// The user-space demultiplexer still drops what the old filter
			// lets through; count it rather than fail the caller.
			ep.stats.filterErrors.Add(1)
		}
	}
	h.tellPorts(ports)
	s.pubDone = gen
}

// republish publishes at once a change made elsewhere (the agent role, the
// other processes' ports, a MAC).
func (s *stack) republish() {
	s.mu.Lock()
	s.changedLocked()
	s.mu.Unlock()
	s.publish()
}

// endpointsSnapshot returns the open endpoints, for statistics.
func (s *stack) endpointsSnapshot() []*endpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	eps := make([]*endpoint, 0, len(s.endpoints))
	for _, ep := range s.endpoints {
		eps = append(eps, ep)
	}
	slices.SortFunc(eps, func(a, b *endpoint) int { return a.index - b.index })
	return eps
}

// goroutine runs f on a goroutine of the stack's, which close waits for.
func (s *stack) goroutine(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// isClosed reports whether close has run.
func (s *stack) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// close closes every socket of the stack, resets its connections, gives
// back its ports and names, closes its interfaces and waits for its
// goroutines. It reports false if the stack was closed already.
func (s *stack) close() bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.closed = true
	var lns []*Listener
	var pcs []*PacketConn
	for _, b := range s.ports {
		if b.ln != nil {
			lns = append(lns, b.ln)
		}
	}
	for _, b := range s.dports {
		pcs = append(pcs, b.pc)
	}
	s.mu.Unlock()
	s.conns.Range(func(_, v any) bool {
		v.(*Conn).kill()
		return true
	})
	for _, ln := range lns {
		ln.Close()
	}
	for _, pc := range pcs {
		pc.Close()
	}
	// The client ports linger once their connections are gone: not now.
	s.mu.Lock()
	var closing []*endpoint
	for idx, b := range s.clients {
		delete(s.clients, idx)
		if b.linger != nil {
			b.linger.Stop()
			b.linger = nil
		}
		if b.refs.Load() == 0 {
			closing = append(closing, s.releaseLocked(b)...)
		}
	}
	s.changedLocked()
	s.mu.Unlock()
	s.publish()
	for _, ep := range closing {
		ep.close()
	}
	s.wg.Wait()
	return true
}
