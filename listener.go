package myproto

import (
	"context"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/myproto/myproto/internal/stream"
)

var _ net.Listener = &Listener{}

// defaultBacklog is how many handshaken connections may wait for Accept.
const defaultBacklog = 512

// A Listener is a myproto stream listener. It implements net.Listener.
//
// The handshake is stateless: until a client's third packet proves it
// received the listener's SYN cookie, the listener keeps nothing, so a flood
// of SYNs costs no memory.
type Listener struct {
	s     *stack
	b     *binding
	eps   []*endpoint
	local *Addr
	keep  time.Duration // ListenConfig.KeepAlive
	user  time.Duration // ListenConfig.UserTimeout
	msg   bool          // a message listener (msgconn.go): SYNs must say so
	// jar answers SYNs; it is made once the port is bound (its parameters
	// depend on the interface), and frames that come before are dropped.
	jar atomic.Pointer[stream.CookieJar]
	// used: the cookies that made connections, so that a replay of the
	// packet that carried one makes no second connection.
	used usedCookies

	mu      sync.Mutex
	backlog int
	queue   []*Conn // handshaken, not yet accepted
	ready   chan struct{}
	closed  chan struct{}
	once    sync.Once
	dl      deadline
	drv     driver // Accept, when it drives the link
	// hot is the endpoint the last connection came in on: where an
	// Accept on several interfaces drives (see AcceptMyproto).
	hot atomic.Pointer[endpoint]
}

// ListenConfig contains options for listening, as net.ListenConfig does:
// Listen for streams, ListenPacket for datagrams. Backlog, KeepAlive and
// UserTimeout apply to streams only; Stack and Config to both.
type ListenConfig struct {
	// Backlog is how many established connections may wait for Accept;
	// handshakes beyond it are ignored and the clients retry. 0 means 512.
	Backlog int
	// KeepAlive is the keepalive period of accepted connections: 0 means
	// 15 s, negative disables keepalive.
	KeepAlive time.Duration
	// UserTimeout is the user timeout of accepted connections (see
	// Dialer.UserTimeout); 0 means 30 s.
	UserTimeout time.Duration
	// Config is the stack configuration; nil means defaults.
	Config *Config
	// Stack, if set, is the stack to listen on; Config is then unused.
	Stack *Stack

	msg bool // ListenMsg: a message listener
}

// Listen announces on the local address and returns a stream listener, as
// net.Listen does. The network must be "myproto"; the address forms are
// those of ListenPacket.
func Listen(network, address string) (*Listener, error) {
	var lc ListenConfig
	return lc.listen(network, address)
}

// Listen announces on the local address, as Listen does, with lc's options.
// ctx is not used after Listen returns.
func (lc *ListenConfig) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	if err := ctx.Err(); err != nil {
		return nil, opError("listen", nil, nil, err)
	}
	return lc.listen(network, address)
}

// ListenPacket announces on the local address and returns a datagram
// socket, as ListenPacket does, on lc.Stack or else the default stack that
// lc.Config sets up (its EtherType, its node name). ctx is not used after
// ListenPacket returns.
// The net.PacketConn it returns is a *PacketConn.
func (lc *ListenConfig) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, opError("listen", nil, nil, err)
	}
	c, err := lc.listenPacket(network, address)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (lc *ListenConfig) listenPacket(network, address string) (*PacketConn, error) {
	s, err := stackFor(lc.Stack, lc.Config)
	if err != nil {
		return nil, opError("listen", nil, nil, err)
	}
	return s.listenPacket(network, address)
}

func (lc *ListenConfig) listen(network, address string) (*Listener, error) {
	s, err := stackFor(lc.Stack, lc.Config)
	if err != nil {
		return nil, opError("listen", nil, nil, err)
	}
	return s.listen(lc, network, address)
}

func (s *stack) listen(lc *ListenConfig, netw, address string) (*Listener, error) {
	ln := &Listener{
		s:       s,
		keep:    lc.KeepAlive,
		user:    lc.UserTimeout,
		backlog: lc.Backlog,
		msg:     lc.msg,
		ready:   make(chan struct{}, 1),
		closed:  make(chan struct{}),
		dl:      makeDeadline(),
	}
	if ln.backlog <= 0 {
		ln.backlog = defaultBacklog
	}
	ln.drv.accept = true
	ln.b = &binding{ln: ln}
	var err error
	if ln.local, err = s.bindLocal(netw, address, ln.b); err != nil {
		return nil, err
	}
	ln.eps = append([]*endpoint(nil), ln.b.eps...)
	// The cookie carries no state, so the SYN-ACK's parameters must be
	// the ones every connection of this listener starts with.
	ln.jar.Store(stream.NewCookieJar(nil, s.engineConfig(ln.eps[0], ln.keep, ln.user)))
	s.socketEvent(EventListen, ln.proto(), ln.local)
	return ln, nil
}

// inputSYN answers a SYN statelessly, in the control loop's batch.
func (ln *Listener) inputSYN(ep *endpoint, h *header, body []byte) dropReason {
	jar := ln.jar.Load()
	if jar == nil || isClosedChan(ln.closed) {
		return dropNoSocket
	}
	if (h.flags&flagMessage != 0) != ln.msg {
		// A stream client at a message listener, or the reverse: as
		// nobody listened on the port.
		if ln.s.allowRefusal(ep, h.src) {
			ln.s.refuseSYN(ep, h, body)
		}
		return dropNoSocket
	}
	if ln.full() {
		return dropQueueFull // the client retries its SYN
	}
	out := &ep.ctlOut
	n, dst, ok := jar.RespondSYN(time.Now(), h.src, h.srcPort, h.dstPort, body, out.body())
	if !ok {
		return dropNoSocket
	}
	out.commit(&header{dst: h.src, typ: typeStream, srcPort: h.dstPort, dstPort: h.srcPort, connID: dst}, n)
	return dropNone
}

// input handles a stream frame for the listener's port that no connection
// claimed: a client's packet proving it got our cookie creates the
// connection. Anything else is dropNoSocket.
func (ln *Listener) input(ep *endpoint, h *header, body []byte) dropReason {
	jar := ln.jar.Load()
	if jar == nil || isClosedChan(ln.closed) {
		return dropNoSocket
	}
	now := time.Now()
	params, ok := jar.Accept(now, h.src, h.srcPort, h.dstPort, h.connID, body)
	if !ok || ln.used.has(params) {
		// Not a connection's first packet, or that of one that was made
		// and has ended: demux answers with a stateless reset, as for
		// any connection that no longer exists.
		return dropNoSocket
	}
	if ln.full() {
		return dropQueueFull // not used: the client sends it again
	}
	if !ln.used.add(params) {
		// A concurrent input of the same packet (a retransmission) is
		// making the connection: no reset, the next one reaches it.
		return dropNone
	}
	remote := ep.peerAddr(h.src, h.srcPort)
	ln.s.retain(ln.b)
	e := stream.NewServer(ln.s.engineConfig(ep, ln.keep, ln.user), h.connID, params, now)
	c := newConn(ln.s, ep, ln.b, h.connID, remote, e, ln.msg)
	if _, loaded := ln.s.conns.LoadOrStore(h.connID, c); loaded {
		ln.s.release(ln.b)
		return dropNoSocket
	}
	c.input(ep, h, body)
	if len(ln.eps) > 1 && ln.hot.Load() != ep {
		ln.hot.Store(ep)
	}
	ln.mu.Lock()
	ln.queue = append(ln.queue, c)
	ln.mu.Unlock()
	signal(ln.ready)
	ln.kickAccept()
	return dropNone
}

// kickAccept cuts short the wait of an Accept that drives a link, so that
// it looks again (a connection queued, Close, a new deadline).
func (ln *Listener) kickAccept() {
	for _, ep := range ln.eps {
		ep.kick(&ln.drv)
	}
}

// usedCookies remembers the cookies that made connections for as long as
// they are valid (one to two cookie epochs, SPEC.md §5.3): the packet that
// carried one, replayed by an on-path attacker or duplicated late by the
// network after its connection ended, must not make another, as a replayed
// segment of a closed TCP connection is answered with a reset. Slot e&1
// holds epoch e's; a slot two or more epochs behind is cleared when reused,
// so the memory is that of the connections made in the last two minutes.
type usedCookies struct {
	mu   sync.Mutex
	slot [2]struct {
		epoch int64
		set   map[uint64]struct{}
	}
}

func (u *usedCookies) has(p stream.HandshakeParams) bool {
	id, e := p.Cookie()
	u.mu.Lock()
	defer u.mu.Unlock()
	sl := &u.slot[e&1]
	_, ok := sl.set[id]
	return ok && sl.epoch == e
}

// add records p's cookie; it reports false if it was there already.
func (u *usedCookies) add(p stream.HandshakeParams) bool {
	id, e := p.Cookie()
	u.mu.Lock()
	defer u.mu.Unlock()
	sl := &u.slot[e&1]
	if sl.epoch != e || sl.set == nil {
		sl.epoch, sl.set = e, make(map[uint64]struct{})
	}
	if _, ok := sl.set[id]; ok {
		return false
	}
	sl.set[id] = struct{}{}
	return true
}

func (ln *Listener) full() bool {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	return len(ln.queue) >= ln.backlog
}

// Accept implements the net.Listener Accept method: it waits for the next
// established connection. After Close it returns a non-temporary error
// wrapping net.ErrClosed, which ends net/http's Serve loop.
func (ln *Listener) Accept() (net.Conn, error) {
	c, err := ln.AcceptMyproto()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// AcceptMyproto accepts the next connection and returns it as a *Conn.
func (ln *Listener) AcceptMyproto() (*Conn, error) {
	if !ln.ok() {
		return nil, syscall.EINVAL
	}
	// Accept reads the link itself while it waits (receive.go): the
	// handshake's last packet then queues the connection on the goroutine
	// that takes it, not on the read loop that would wake it. On several
	// interfaces it drives the one the last connection came in on and
	// leaves the others to their read loops, which it asks to read at once
	// rather than after the grace period of a Read that drove them: a
	// server's connections tend to come the way the last one came (on
	// Ethernet or on the UDP bearer), and one that comes another way is
	// queued by a read loop, which wakes this Accept as before.
	ep := ln.eps[0]
	if len(ln.eps) > 1 {
		ep = ln.hot.Load()
		for _, o := range ln.eps {
			if o != ep {
				o.needReader()
			}
		}
	}
	drove := false
	defer func() {
		if ep != nil {
			ep.letGo(drove)
		}
	}()
	for {
		switch {
		case isClosedChan(ln.closed):
			return nil, opError("accept", nil, ln.local, net.ErrClosed)
		case ln.dl.expired():
			return nil, opError("accept", nil, ln.local, os.ErrDeadlineExceeded)
		}
		ln.mu.Lock()
		var c *Conn
		if len(ln.queue) > 0 {
			c = ln.queue[0]
			ln.queue[0] = nil
			ln.queue = ln.queue[1:]
		}
		more := len(ln.queue) > 0
		ln.mu.Unlock()
		if more {
			signal(ln.ready)
		}
		if c != nil {
			return c, nil
		}
		if ep != nil && ep.drive(&ln.drv, ln.closed, ln.ready, &ln.dl, &drove, false) {
			continue
		}
		ln.s.needReaders() // handshakes end on the data sockets
		select {
		case <-ln.ready:
		case <-ln.closed:
		case <-ln.dl.wait():
		}
	}
}

// Close implements the net.Listener Close method: it stops listening and
// unblocks Accept. Connections already accepted are left alone; those
// established but not yet accepted are reset, as TCP does.
func (ln *Listener) Close() error {
	if !ln.ok() {
		return syscall.EINVAL
	}
	first := false
	ln.once.Do(func() {
		first = true
		close(ln.closed)
		ln.dl.stop()
		ln.kickAccept()
		ln.mu.Lock()
		q := ln.queue
		ln.queue = nil
		ln.mu.Unlock()
		for _, c := range q {
			c.SetLinger(0)
			c.Close()
		}
		ln.s.socketEvent(EventListenClose, ln.proto(), ln.local)
		ln.s.release(ln.b)
	})
	if !first {
		return opError("close", nil, ln.local, net.ErrClosed)
	}
	return nil
}

// Addr implements the net.Listener Addr method.
func (ln *Listener) Addr() net.Addr {
	if !ln.ok() {
		return nil
	}
	return ln.local
}

// ok reports whether ln was made by Listen: the methods of a nil or zero
// Listener fail with EINVAL, as *net.TCPListener's do, rather than panic.
func (ln *Listener) ok() bool { return ln != nil && ln.s != nil }

// SetDeadline sets the deadline for Accept; the zero time means none.
func (ln *Listener) SetDeadline(t time.Time) error {
	if !ln.ok() {
		return syscall.EINVAL
	}
	if isClosedChan(ln.closed) {
		return opError("set", nil, ln.local, net.ErrClosed)
	}
	ln.dl.set(t)
	ln.kickAccept()
	return nil
}
