//go:build linux

package sys

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
)

// ifaceInfo is what a link knows of its interface: a copy of it, whose
// HardwareAddr is the link's own, and its MTU, which link events change.
// PacketLink and QuietLink embed it for the link.Link methods that describe
// the interface.
type ifaceInfo struct {
	ifi net.Interface
	mtu atomic.Int64
}

func (i *ifaceInfo) init(ifi *net.Interface) {
	i.ifi = *ifi
	i.ifi.HardwareAddr = slices.Clone(ifi.HardwareAddr)
	i.mtu.Store(int64(ifi.MTU))
}

// Name implements the link.Link Name method.
func (i *ifaceInfo) Name() string { return i.ifi.Name }

// Index implements the link.Link Index method.
func (i *ifaceInfo) Index() int { return i.ifi.Index }

// HardwareAddr implements the link.Link HardwareAddr method. The address
// returned is shared by all calls; do not modify it.
func (i *ifaceInfo) HardwareAddr() net.HardwareAddr { return i.ifi.HardwareAddr }

// MTU implements the link.Link MTU method: the interface's MTU when the link
// was opened, or the last value given to SetMTU.
func (i *ifaceInfo) MTU() int { return int(i.mtu.Load()) }

// SetMTU records a new MTU for the interface, as reported by a link event.
func (i *ifaceInfo) SetMTU(mtu int) { i.mtu.Store(int64(mtu)) }

// checkOpen returns the error of an Open function (what names the link) for
// a nil interface or a zero EtherType, or nil.
func checkOpen(what string, ifi *net.Interface, cfg PacketConfig) error {
	if ifi == nil {
		return fmt.Errorf("sys: open %s: nil interface", what)
	}
	if cfg.EtherType == 0 {
		return fmt.Errorf("sys: open %s on %s: EtherType must not be zero", what, ifi.Name)
	}
	return nil
}

var _ = errors.New
