package myproto

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/myproto/myproto/internal/stream"
)

// A Dialer contains options for connecting to an address, as net.Dialer
// does; its DialContext fits http.Transport.DialContext.
type Dialer struct {
	// Timeout is the most a dial may take, handshake included; 0 means the
	// handshake timeout of 20 s, and a negative one has passed already, as
	// for net.Dialer. A context deadline may cut it shorter. The SYN is
	// retransmitted until then. A dial that runs out of time fails with an
	// "i/o timeout" for which errors.Is(err, context.DeadlineExceeded) holds
	// (and errors.Is(err, os.ErrDeadlineExceeded)) when Timeout or the
	// context set the deadline, as net.Dialer's does, and ETIMEDOUT after
	// the default 20 s, as TCP's does when its SYN retries run out; both are
	// net.Errors whose Timeout method returns true.
	Timeout time.Duration
	// KeepAlive is the keepalive period: 0 means 15 s, negative disables.
	KeepAlive time.Duration
	// UserTimeout is how long sent data, or a keepalive probe, may go
	// unacknowledged before the connection fails with ETIMEDOUT, as Linux's
	// TCP_USER_TIMEOUT; 0 means 30 s.
	UserTimeout time.Duration
	// Config is the stack configuration; nil means defaults.
	Config *Config
	// Stack, if set, is the stack to dial from; Config is then unused.
	Stack *Stack
	// Resolver resolves node names ("nodeb:80"); nil means DefaultResolver
	// (its Config is not used: names are looked up by the Dialer's stack).
	Resolver *Resolver

	msg bool // DialMsg: a message connection
}

// Dial connects to the address on the named network, which must be
// "myproto". The address is "[mac]:port" or "[mac%iface]:port"; the zone
// picks the outgoing interface and may be left out when there is only one.
// A station of a UDP bearer is its IP address, "[192.0.2.7%udp]:port",
// "[2001:db8::7%udp]:port" or, with one UDP bearer, "192.0.2.7:port"; a
// node name ("nodeb:port") is looked up on every interface (see Resolver).
// Dialing a port nobody on that host listens on fails at once with an error
// for which errors.Is(err, syscall.ECONNREFUSED) holds.
func Dial(network, address string) (*Conn, error) {
	var d Dialer
	return d.dial(context.Background(), network, address)
}

// DialContext connects to the address on the named network using ctx, as
// net.Dialer.DialContext does.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := d.dial(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Dial connects to the address on the named network.
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

func (d *Dialer) dial(ctx context.Context, network, address string) (*Conn, error) {
	s, err := stackFor(d.Stack, d.Config)
	if err != nil {
		return nil, opError("dial", nil, nil, err)
	}
	return s.dial(ctx, d, network, address)
}

func (s *stack) dial(ctx context.Context, d *Dialer, netw, address string) (*Conn, error) {
	// The dial's deadline is also the handshake's: SYNs are retransmitted
	// until then rather than for a budget of the engine's own. On a starved
	// host a SYN and its SYN-ACK can wait seconds in receive queues, and the
	// caller has said how long it will wait. Whether the context or the
	// engine notices first, the error is the same: errDialTimeout
	// for a deadline the caller set, ETIMEDOUT for the default timeout.
	timeout, timeoutErr := d.Timeout, errDialTimeout
	if timeout == 0 {
		timeout, timeoutErr = stream.DefaultHandshakeTimeout, syscall.ETIMEDOUT
	}
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline, timeoutErr = dl, errDialTimeout
	}
	if !time.Now().Before(deadline) {
		return nil, opError("dial", nil, nil, timeoutErr)
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	remote, ifi, err := s.resolveRemote(ctx, d.Resolver, netw, address)
	if err != nil {
		return nil, opError("dial", nil, nil, err)
	}

	b, err := s.clientBinding(ifi)
	if err != nil {
		return nil, opError("dial", nil, remote, err)
	}
	if b.eps[0].down.Load() {
		s.release(b)
		return nil, opError("dial", nil, remote, os.NewSyscallError("connect", syscall.ENETDOWN))
	}
	if remote, err = b.eps[0].remoteAddr(remote); err != nil {
		s.release(b)
		return nil, opError("dial", nil, nil, err)
	}
	cid, err := s.newCID()
	if err != nil {
		s.release(b)
		return nil, opError("dial", nil, remote, err)
	}
	cfg := s.engineConfig(b.eps[0], d.KeepAlive, d.UserTimeout)
	now := time.Now()
	cfg.HandshakeTimeout = max(deadline.Sub(now), time.Nanosecond)
	c := newConn(s, b.eps[0], b, cid, remote, stream.NewClient(cfg, cid, now), d.msg)
	s.conns.Store(cid, c)
	c.flush() // the SYN
	c.awaitHandshake(ctx)
	c.mu.Lock()
	ok := c.e.Established() && c.e.Err() == nil && !c.done
	err = streamErr(c.e.Err())
	c.mu.Unlock()
	if ok {
		return c, nil
	}
	if err == nil {
		err = ctx.Err()
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ETIMEDOUT) {
		err = timeoutErr
	}
	c.mu.Lock()
	if !c.done {
		c.e.Abort()
	}
	c.mu.Unlock()
	c.flush()
	c.finish()
	return nil, opError("dial", c.local, remote, err)
}

// resolveRemote parses a remote address and picks the interface to reach it.
func (s *stack) resolveRemote(ctx context.Context, r *Resolver, netw, address string) (*Addr, *net.Interface, error) {
	pa, err := s.parseLocal(netw, address)
	if err != nil {
		return nil, nil, err
	}
	if pa.ip.IsValid() {
		return s.resolveUDP(pa, address)
	}
	mac, zone, host, port := pa.mac, pa.zone, pa.host, pa.port
	if mac == nil && host == "" {
		return nil, nil, &net.AddrError{Err: "missing host", Addr: address}
	}
	if mac == nil {
		// An interface of this host is never looked up as a name.
		ifi, err := s.hostInterface(host, address)
		if err != nil {
			return nil, nil, err
		}
		if ifi != nil {
			mac = ifi.HardwareAddr
			if zone == "" {
				zone = ifi.Name
			}
		}
	}
	if len(mac) > 0 && mac[0]&1 != 0 {
		return nil, nil, &net.AddrError{Err: errGroupAddr, Addr: address}
	}
	if mac == nil {
		if r == nil {
			r = DefaultResolver
		}
		a, err := s.lookupName(ctx, r, host, zone)
		if err != nil {
			return nil, nil, err
		}
		if a.isMulticast() {
			return nil, nil, &net.AddrError{Err: errGroupAddr, Addr: address}
		}
		mac = a.HardwareAddr
		if zone == "" {
			zone = a.Zone
		}
	}
	if port == 0 {
		return nil, nil, &net.AddrError{Err: "missing port", Addr: address}
	}
	ifis, err := s.selectInterfaces(nil, zone)
	if err != nil {
		return nil, nil, inAddress(err, address)
	}
	if len(ifis) != 1 {
		return nil, nil, &net.AddrError{Err: "zone needed to choose among several interfaces", Addr: address}
	}
	switch {
	case bytes.Equal(mac, make([]byte, len(mac))):
		return nil, nil, &net.AddrError{Err: errZeroMAC, Addr: address}
	case bytes.Equal(mac, ifis[0].HardwareAddr):
		// A packet socket's frames to its own interface's MAC leave by
		// the wire and never come back, to this process or another on
		// the host: the handshake would only time out.
		return nil, nil, &net.AddrError{Err: errOwnMAC, Addr: address}
	}
	return &Addr{HardwareAddr: mac, Port: port, Zone: ifis[0].Name}, &ifis[0], nil
}

// newCID returns a random connection ID not in use here. IDs are the
// demultiplexing key and part of the off-path defence, so they come from
// crypto/rand.
func (s *stack) newCID() (uint64, error) {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, err
		}
		cid := binary.BigEndian.Uint64(b[:])
		if _, used := s.conns.Load(cid); cid != 0 && !used {
			return cid, nil
		}
	}
}

// engineConfig is the engine configuration for a new connection.
func (s *stack) engineConfig(ep *endpoint, keepAlive, userTimeout time.Duration) stream.Config {
	cfg := stream.Config{NoDelay: true, UserTimeout: max(userTimeout, 0), Chunks: &streamChunks, NodeID: s.names.nodeID}
	cfg.MaxPacket = ep.maxPayload()
	switch {
	case keepAlive == 0:
		cfg.KeepAlive = defaultKeepAlive
	case keepAlive > 0:
		cfg.KeepAlive = keepAlive
	default:
		cfg.KeepAlive = 0
	}
	return cfg
}

// awaitHandshake waits until the handshake ends or ctx is done. Where the
// link can be driven (receive.go), the dialing goroutine reads the SYN-ACK
// itself rather than waking the read loop to read it and being woken by it:
// two hand-offs between goroutines fewer per dial.
func (c *Conn) awaitHandshake(ctx context.Context) {
	var dl deadline // ctx's end, for drive: set when ctx is done
	stop := context.AfterFunc(ctx, func() {
		dl.set(aLongTimeAgo)
		c.ep.kick(&c.rdrv)
	})
	defer stop()
	drove := false
	defer func() { c.ep.letGo(drove) }()
	for !isClosedChan(c.estab) && ctx.Err() == nil {
		if !c.drive(&c.rdrv, c.estab, &dl, &drove, false) {
			c.ep.needReader() // the answer comes on the data socket
			select {
			case <-c.estab:
			case <-ctx.Done():
			}
			return
		}
	}
}
