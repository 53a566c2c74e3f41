//go:build !linux

package sys

import (
	"errors"
	"fmt"
	"net"
	"time"
)

var errLinksUnsupported = fmt.Errorf("sys: creating and configuring links needs Linux: %w", errors.ErrUnsupported)

// CreateVeth returns an error wrapping errors.ErrUnsupported: veth pairs are
// Linux's.
func CreateVeth(a, b string, mtu int, peer *Netns) error { return errLinksUnsupported }

// WaitLinkReady returns an error wrapping errors.ErrUnsupported.
func WaitLinkReady(ns *Netns, name string, timeout time.Duration) (*net.Interface, error) {
	return nil, errLinksUnsupported
}

// SetLinkUp returns an error wrapping errors.ErrUnsupported.
func SetLinkUp(ns *Netns, name string, up bool) error { return errLinksUnsupported }

// SetLinkMTU returns an error wrapping errors.ErrUnsupported.
func SetLinkMTU(ns *Netns, name string, mtu int) error { return errLinksUnsupported }

// SetLinkAddr returns an error wrapping errors.ErrUnsupported.
func SetLinkAddr(ns *Netns, name string, mac net.HardwareAddr) error { return errLinksUnsupported }

// DeleteLink returns an error wrapping errors.ErrUnsupported.
func DeleteLink(ns *Netns, name string) error { return errLinksUnsupported }
