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
//   - *Addr implements net.Addr: a hardware address, a port and a zone
//     naming the interface, as for IPv6 link-local addresses.
//   - Resolver finds neighbours' node names on the link (neighbour
//     discovery, as ARP and NDP), and Watch waits for one to appear.
//   - Config sets up the per-process stack: EtherType, node name, buffers.
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
// hardware address.
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
// socket: operation not permitted". The diagnostic functions (Sockets and
// the like) need no privilege, but other users' processes answer only to
// root.
//
// Only Linux is supported; elsewhere the package builds and every socket
// call fails with an error wrapping errors.ErrUnsupported.
package myproto

import (
	"sync"
	"time"
)

// DefaultEtherType is the EtherType of myproto frames unless
// Config.EtherType says otherwise: 0x88B5, IEEE's "local experimental 1".
const DefaultEtherType = 0x88B5

// Config configures the stack. A nil *Config means the defaults.
//
// Sockets created with the same EtherType share one stack in a process, and
// the first one's Config sets it up.
type Config struct {
	// EtherType is the Ethernet type of myproto frames; 0 means
	// DefaultEtherType. Hosts must agree on it.
	EtherType uint16

	// ReadBuffer and WriteBuffer size each interface's packet socket buffers
	// in bytes (SO_RCVBUFFORCE, socket(7)); 0 means 32 MiB, which keeps bulk
	// transfers free of socket drops. Without CAP_NET_ADMIN the kernel caps
	// them at net.core.rmem_max and wmem_max.
	ReadBuffer, WriteBuffer int

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

// stacks are the per-process stacks, one per EtherType: the only package
// state besides the family registry.
var stacks struct {
	mu sync.Mutex
	m  map[uint16]*stack
}

// defaultStack returns the process's stack for cfg's EtherType, creating it
// on first use.
func defaultStack(cfg *Config) (*stack, error) {
	stacks.mu.Lock()
	defer stacks.mu.Unlock()
	et := cfg.etherType()
	if s, ok := stacks.m[et]; ok {
		return s, nil
	}
	var c Config
	if cfg != nil {
		c = *cfg
	}
	c.EtherType = et
	s := newStack(c, packetProvider{})
	if s.err != nil {
		return nil, s.err
	}
	if stacks.m == nil {
		stacks.m = make(map[uint16]*stack)
	}
	stacks.m[et] = s
	return s, nil
}
