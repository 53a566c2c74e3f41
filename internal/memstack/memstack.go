// Package memstack lets package mptest make stacks on in-memory links. The
// stack's constructor is unexported in the root package, which fills in New
// when it initialises; mptest, in the same module, calls it.
package memstack

import (
	"net"

	"github.com/myproto/myproto/internal/memlink"
)

// New makes a *myproto.Stack (returned as any) for cfg (a *myproto.Config,
// nil for the defaults) with one interface named ifname, with the given MAC
// and MTU, attached to seg, on a host of its own.
var New func(seg *memlink.Segment, ifname string, mac net.HardwareAddr, mtu int, cfg any) (any, error)
