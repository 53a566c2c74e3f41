//go:build !linux

package sys

import "net/netip"

// AddRoute adds a route; Linux only.
func AddRoute(ns *Netns, name string, dst netip.Prefix, gw netip.Addr) error {
	return errNetnsUnsupported
}

// SetSysctl writes a sysctl; Linux only.
func SetSysctl(ns *Netns, key, value string) error { return errNetnsUnsupported }
