// Package family is a registry of protocol families, the user-space
// counterpart of the kernel's sock_register(9): a family such as myproto
// registers itself from an init function, and Dial, Listen and ListenPacket
// then reach it by network name, as they reach package net's networks.
//
// It is shaped like database/sql.Register. Because Dial has the signature of
// net.Dialer.DialContext, one function serves an http.Transport's DialContext
// (or a gRPC or TLS dialer) for every registered family and for TCP alike:
//
//	tr := &http.Transport{DialContext: family.Dial}
package family

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
)

// A Family is a protocol family that can be plugged into the registry.
//
// Its methods are called with the network name it registered under, so that
// one implementation may serve several names; they must be safe for
// concurrent use.
type Family interface {
	// Name returns the network name, such as "myproto".
	Name() string

	// Dial connects to the address on the named network, as
	// net.Dialer.DialContext does.
	Dial(ctx context.Context, network, address string) (net.Conn, error)

	// Listen announces on the local address of a stream network, as
	// net.ListenConfig.Listen does.
	Listen(ctx context.Context, network, address string) (net.Listener, error)

	// ListenPacket announces on the local address of a datagram network, as
	// net.ListenConfig.ListenPacket does.
	ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error)
}

// registry holds the registered families by name. It is the package's only
// state.
var registry struct {
	mu       sync.RWMutex
	families map[string]Family
}

// Register makes a family available under the name f.Name(). It is meant to
// be called from the init function of the package that implements the family.
//
// Register panics if f is nil, if its name is empty or one of package net's
// networks ("tcp", "udp", "unix", "ip" and their variants, including "ip:proto"
// forms, which Dial, Listen and ListenPacket hand to package net), or if a
// family of that name is already registered.
func Register(f Family) {
	if f == nil {
		panic("family: Register family is nil")
	}
	name := f.Name()
	if name == "" {
		panic("family: Register family with an empty name")
	}
	if isNetNetwork(name) {
		panic("family: Register of package net's network " + name)
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if _, dup := registry.families[name]; dup {
		panic("family: Register called twice for family " + name)
	}
	if registry.families == nil {
		registry.families = make(map[string]Family)
	}
	registry.families[name] = f
}

// Lookup returns the family registered under name, if any. It does not
// report package net's networks, which are served without registration.
func Lookup(name string) (Family, bool) {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	f, ok := registry.families[name]
	return f, ok
}

// Networks returns the sorted names of the registered families.
func Networks() []string {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	return slices.Sorted(maps.Keys(registry.families))
}

// Dial connects to the address on the named network. A registered family
// serves its own name; package net's networks ("tcp", "udp", "unix", "ip" and
// their variants) go to a zero net.Dialer. Any other network gives a
// *net.OpError wrapping net.UnknownNetworkError, whose message says to
// import the family's package: a program that dials "myproto" needs
//
//	import _ "github.com/myproto/myproto"
//
// somewhere, or it has no "myproto" to dial.
func Dial(ctx context.Context, network, address string) (net.Conn, error) {
	if f, ok := Lookup(network); ok {
		return f.Dial(ctx, network, address)
	}
	if isNetNetwork(network) {
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	}
	return nil, unknownNetwork("dial", network)
}

// Listen announces on the local address of a stream network. It dispatches
// as Dial does, to a registered family or to a zero net.ListenConfig.
func Listen(ctx context.Context, network, address string) (net.Listener, error) {
	if f, ok := Lookup(network); ok {
		return f.Listen(ctx, network, address)
	}
	if isNetNetwork(network) {
		var lc net.ListenConfig
		return lc.Listen(ctx, network, address)
	}
	return nil, unknownNetwork("listen", network)
}

// ListenPacket announces on the local address of a datagram network. It
// dispatches as Dial does, to a registered family or to a zero
// net.ListenConfig.
func ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	if f, ok := Lookup(network); ok {
		return f.ListenPacket(ctx, network, address)
	}
	if isNetNetwork(network) {
		var lc net.ListenConfig
		return lc.ListenPacket(ctx, network, address)
	}
	return nil, unknownNetwork("listen", network)
}

// unknownNetwork is the error package net gives for a network it does not
// know, so callers can treat both alike, saying how a family gets
// registered: errors.Is(err, net.UnknownNetworkError(network)) holds.
func unknownNetwork(op, network string) error {
	return &net.OpError{Op: op, Net: network, Err: unregisteredError(network)}
}

// unregisteredError is a network no family registered.
type unregisteredError string

func (e unregisteredError) Error() string {
	return fmt.Sprintf("unknown network %s: no family of that name is registered; "+
		"import the package that implements it, as import _ %q does for \"myproto\"",
		string(e), "github.com/myproto/myproto")
}

func (e unregisteredError) Unwrap() error { return net.UnknownNetworkError(e) }

// isNetNetwork reports whether network is one of package net's: those are
// never registered, so that no plug-in can capture TCP, and are passed to
// package net, which rejects the ones an operation does not support (such as
// "udp" for Listen) with its own error.
func isNetNetwork(network string) bool {
	switch network {
	case "tcp", "tcp4", "tcp6",
		"udp", "udp4", "udp6",
		"unix", "unixgram", "unixpacket",
		"ip", "ip4", "ip6":
		return true
	}
	// Raw IP takes a protocol: "ip4:icmp", "ip6:58".
	ip, _, ok := strings.Cut(network, ":")
	return ok && (ip == "ip" || ip == "ip4" || ip == "ip6")
}
