// Package myproto is a network protocol for one Ethernet segment, built in
// user space: it speaks its own frames on its own EtherType (0x88B5 by
// default) through AF_PACKET sockets (packet(7)), lets the kernel drop
// everything else with classic BPF socket filters, and hands Go programs the
// standard interfaces.
//
//   - *Conn implements net.Conn: a reliable, ordered byte stream with
//     TCP's semantics (half-close, reset, keepalive, user timeout) and the
//     extras of *net.TCPConn, made by Dial or a Listener.
//   - *Listener implements net.Listener: it accepts stream connections
//     (Listen).
//   - Dialer and ListenConfig hold options, as net.Dialer and
//     net.ListenConfig do; Dialer.DialContext fits http.Transport and
//     grpc.WithContextDialer.
//   - *PacketConn implements net.PacketConn: unreliable datagrams, with
//     broadcast and multicast (ListenPacket, ListenConfig.ListenPacket).
//   - *MsgConn implements net.Conn and *MsgListener net.Listener: message
//     connections, SOCK_SEQPACKET's semantics over the stream (DialMsg,
//     ListenMsg): each Write is one message, each Read returns one whole.
//   - *Addr implements net.Addr: a hardware address, a port and a zone
//     naming the interface, as for IPv6 link-local addresses; on a UDP
//     bearer, an IP address in place of the hardware address.
//   - Resolver finds neighbours' node names on the link (neighbour
//     discovery, as ARP and NDP), and Watch waits for one to appear.
//   - Config sets up a stack: EtherType, node name, buffers, and its
//     Bearers: the Ethernet interfaces, and UDP bearers, which carry the
//     same frames in UDP datagrams where only IP goes. The package-level
//     functions use a default stack per EtherType; *Stack (NewStack) is one
//     of their own, which Close releases at once.
//
// Streams and datagrams have separate port spaces, as TCP and UDP do.
//
// For tools, as ss, ip -s link and ip monitor are for the kernel's
// protocols: Sockets, HostStats, HostNeighbors and Processes ask every
// process's stack on the host through its diagnostic socket, Subscribe
// reports events as they happen, and LinkStats and Neighbors describe
// this process's own stack.
//
// It needs no IP configuration: hosts on one segment reach each other by
// hardware address. Beyond one segment, a UDP bearer carries the frames in
// UDP datagrams over IPv4 or IPv6, with segmentation offload (UDP_SEGMENT
// and UDP_GRO, udp(7)), as TIPC's UDP bearer does beside its Ethernet one:
// Dial("myproto", "[192.0.2.7%udp]:443").
//
// The kernel adds a protocol with sock_register, proto_ops and skbuffs; this
// package is that stack in user space. One stack per process and EtherType
// opens one packet socket per interface, shared by all of the process's
// sockets on it, and reserves the ports it owns host-wide so that processes
// sharing a MAC address never cross-talk. Package family is the registry of
// protocol families ("myproto" registers itself there).
//
// # Privileges
//
// Packet sockets need CAP_NET_RAW: run as root, give the binary the
// capability (setcap cap_net_raw+ep), or run inside a user and network
// namespace you own (unshare -rn). Without it, Listen, ListenPacket and
// Dial fail with a *net.OpError of that operation wrapping EPERM, for which
// errors.Is(err, os.ErrPermission) holds, whose message says so: "listen
// myproto eth0:80: packet sockets need CAP_NET_RAW: run as root, ...:
// socket: operation not permitted". UDP bearers need no privilege: a
// stack whose Config.Bearers lists no Ethernet bearer never opens a packet
// socket, and with the default Bearers a program without CAP_NET_RAW still
// dials IP addresses and resolves names over UDP. The diagnostic functions
// (Sockets and the like) need no privilege, but other users' processes
// answer only to root.
//
// Only Linux is supported; elsewhere the package builds and every socket
// call fails with an error wrapping errors.ErrUnsupported.
package myproto

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"sync"
	"time"
)

// DefaultEtherType is the EtherType of myproto frames unless
// Config.EtherType says otherwise: 0x88B5, IEEE's "local experimental 1".
const DefaultEtherType = 0x88B5

// Config configures a stack. A nil *Config means the defaults.
//
// The package-level functions, and Dialers, ListenConfigs and Resolvers
// without a Stack, use the process's default stack for the Config's
// EtherType: the first Config sets it up, and a later one that differs is an
// error. NewStack makes stacks of their own.
type Config struct {
	// EtherType is the Ethernet type of myproto frames; 0 means
	// DefaultEtherType. Hosts must agree on it.
	EtherType uint16

	// ReadBuffer and WriteBuffer size each interface's packet socket buffers
	// in bytes (SO_RCVBUFFORCE, socket(7)); 0 means 32 MiB, which keeps bulk
	// transfers free of socket drops. Without CAP_NET_ADMIN the kernel caps
	// them at net.core.rmem_max and wmem_max.
	ReadBuffer, WriteBuffer int

	// ReceiveRing, if above zero, gives each interface's data socket a
	// receive ring of that many bytes (TPACKET_V2, packet(7)) in place of
	// its receive buffer: the kernel copies frames into memory shared with
	// the process, which reads them without a system call. On a veth pair
	// at MTU 9000, in alternating runs, an 8 MiB ring moved 12-18 % more
	// in bulk and cost the receiver 13-15 % less CPU per frame; at MTU
	// 1500 it moved 12 % less, as the kernel's copy into the ring runs on
	// the sending CPU there; three-run benchmarks put it either side of
	// no ring (README, "Measured"). The ring is allocated whole as an interface
	// opens, and each slot holds a frame of the MTU whatever the frame's
	// size, so a burst of small frames that the default 32 MiB buffer
	// takes can overflow it (what overflows is lost, and sent again): 8
	// MiB holds 5,120 frames at MTU 1500 and 896 at 9000. 0 means no ring.
	ReceiveRing int

	// Name is this host's node name, which neighbours resolve through
	// discovery ("nodeb:80"). "" means $MYPROTO_NAME, else the first label
	// of the host name. It must be a DNS label (letters, digits, hyphens);
	// letters are folded to lower case. One process per host answers for a
	// name: the first to open a stack with it; the others take over if it
	// exits. Two hosts on a link that claim one name settle it as
	// OnNameConflict says.
	Name string
	// Services are further names this stack answers for, like aliases.
	Services []string
	// NameLifetime is how long neighbours keep our names without hearing
	// from us; we re-announce every third of it. 0 means 60 s.
	NameLifetime time.Duration
	// Bearers are the media the stack runs on, as TIPC's bearers: Ethernet
	// interfaces (MediaEthernet) and UDP bearers (MediaUDP), which carry the
	// same frames in UDP datagrams across routed networks (SPEC.md §18). nil
	// means every up Ethernet interface, plus a UDP bearer named "udp" on
	// the host's address that only addresses naming it use
	// ("[192.0.2.7%udp]:80", "192.0.2.7:80", "udp:80"); with a list, an
	// address naming no interface (":80", a name lookup) uses every bearer
	// in it. A list without MediaEthernet never opens a packet socket, so
	// the stack needs no privilege.
	Bearers []Bearer

	// ReceiveMemory bounds, in bytes, what the stack's stream connections
	// hold received and not yet read, together, as Linux's tcp_mem bounds
	// TCP's: each connection may be sent a window's worth at once, and
	// many whose applications do not read would otherwise hold it all.
	// Over the bound, a connection that no Read is in, and that was not
	// read in the last 10 ms, takes no more than 16 KiB beyond what it
	// holds; its peer sends the rest again once it is read. 0 means a
	// sixteenth of the memory the process may use (the machine's, or its
	// memory cgroup's limit), at least 64 MiB.
	ReceiveMemory int64

	// OnNameConflict is called (from the stack's receive goroutine: do
	// not block) when another station on a link holds or claims one of our
	// names: a station that finds the name taken when it starts gives it up
	// on that link (Kept false), a holder defends it once (Kept true). nil
	// means the standard logger (package log) prints the
	// *NameConflictError: "myproto: name "nodeb" on eth0 is also claimed by
	// 02:00:5e:10:00:01; this stack gave it up". Subscribe reports it too
	// (EventNameConflict).
	OnNameConflict func(*NameConflictError)
}

func (c *Config) etherType() uint16 {
	if c == nil || c.EtherType == 0 {
		return DefaultEtherType
	}
	return c.EtherType
}

// stacks are the process's default stacks, one per EtherType: the only
// package state besides the family registry.
var stacks struct {
	mu sync.Mutex
	m  map[uint16]*stack
}

// defaultStack returns the process's default stack for cfg's EtherType,
// creating it on first use. A non-nil cfg that differs from the one the
// stack was made with is an error: it would be silently ignored otherwise.
func defaultStack(cfg *Config) (*stack, error) {
	stacks.mu.Lock()
	defer stacks.mu.Unlock()
	et := cfg.etherType()
	if s, ok := stacks.m[et]; ok {
		if cfg != nil && !sameConfig(&s.cfg, cfg) {
			return nil, fmt.Errorf("myproto: the default stack for EtherType %#04x was set up with another Config; use NewStack for a second stack", et)
		}
		return s, nil
	}
	s, err := openStack(cfg, packetProvider{})
	if err != nil {
		return nil, err
	}
	if stacks.m == nil {
		stacks.m = make(map[uint16]*stack)
	}
	stacks.m[et] = s
	return s, nil
}

// openStack makes a stack for cfg (nil: the defaults) on prov.
func openStack(cfg *Config, prov provider) (*stack, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	c.EtherType = cfg.etherType()
	if pp, ok := prov.(packetProvider); ok {
		pp.ring = c.ReceiveRing
		prov = pp
	}
	s := newStack(c, prov)
	if s.err != nil {
		return nil, s.err
	}
	return s, nil
}

// sameConfig reports whether cfg asks for the stack a was made with.
func sameConfig(a, cfg *Config) bool {
	b := *cfg
	b.EtherType = cfg.etherType()
	fa, fb := a.OnNameConflict, b.OnNameConflict
	a2 := *a
	a2.OnNameConflict, b.OnNameConflict = nil, nil
	return reflect.DeepEqual(a2, b) && (fa == nil) == (fb == nil) &&
		(fa == nil || reflect.ValueOf(fa).Pointer() == reflect.ValueOf(fb).Pointer())
}

// A Stack is an instance of the protocol, as quic-go's Transport or gVisor's
// stack.Stack: its own interfaces (packet sockets), ports, connections, names
// and neighbour tables. Most programs need none: the package-level functions
// use a default stack per EtherType. NewStack makes more, with Configs of
// their own (another EtherType, another node name), and Close releases
// everything a stack holds at once, which the default stacks never do.
type Stack struct {
	s *stack
}

// NewStack returns a stack for cfg (nil: the defaults) over the host's
// interfaces. It opens nothing yet: sockets open the interfaces they use.
func NewStack(cfg *Config) (*Stack, error) {
	s, err := openStack(cfg, packetProvider{})
	if err != nil {
		return nil, err
	}
	return &Stack{s: s}, nil
}

// Dial connects to the address on the named network, as Dial does, through
// s.
func (s *Stack) Dial(network, address string) (*Conn, error) {
	d := Dialer{Stack: s}
	return d.dial(context.Background(), network, address)
}

// DialContext connects to the address on the named network using ctx, as
// net.Dialer.DialContext does, through s.
func (s *Stack) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	d := Dialer{Stack: s}
	return d.DialContext(ctx, network, address)
}

// Listen announces on the local address, as Listen does, through s.
func (s *Stack) Listen(network, address string) (*Listener, error) {
	lc := ListenConfig{Stack: s}
	return lc.listen(network, address)
}

// ListenPacket announces on the local address for datagrams, as
// ListenPacket does, through s.
func (s *Stack) ListenPacket(network, address string) (*PacketConn, error) {
	st, err := s.stack()
	if err != nil {
		return nil, opError("listen", nil, nil, err)
	}
	return st.listenPacket(network, address)
}

// Resolver returns a resolver that looks names up through s.
func (s *Stack) Resolver() *Resolver { return &Resolver{Stack: s} }

// Neighbors returns the neighbour tables of s, as Neighbors does.
func (s *Stack) Neighbors() []Neighbor {
	if s == nil || s.s.isClosed() {
		return nil
	}
	return s.s.neighbors()
}

// Stats returns the counters of the interfaces s has open, as LinkStats
// does.
func (s *Stack) Stats() []Stats {
	if s == nil || s.s.isClosed() {
		return nil
	}
	return s.s.stats()
}

// Close closes every socket of s (connections are reset, as by SetLinger(0)
// and Close), gives back its ports and names, closes its interfaces and
// waits for its goroutines. Later calls on s and its sockets fail with
// net.ErrClosed.
func (s *Stack) Close() error {
	if s == nil || !s.s.close() {
		return opError("close", nil, nil, net.ErrClosed)
	}
	return nil
}

func (s *Stack) stack() (*stack, error) {
	if s == nil || s.s == nil {
		return nil, errors.New("myproto: nil Stack")
	}
	if s.s.isClosed() {
		return nil, net.ErrClosed
	}
	return s.s, nil
}

// stackFor is the stack a Dialer, ListenConfig or Resolver uses: its Stack,
// or the default stack for its Config.
func stackFor(st *Stack, cfg *Config) (*stack, error) {
	if st != nil {
		return st.stack()
	}
	return defaultStack(cfg)
}
