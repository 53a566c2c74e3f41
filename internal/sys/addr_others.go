//go:build !linux

package sys

import "net/netip"

// AddAddress assigns an IP address to an interface; Linux only.
func AddAddress(ns *Netns, name string, p netip.Prefix) error { return errNetnsUnsupported }
