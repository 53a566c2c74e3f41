//go:build !linux

package testenv

import "testing"

// NewRouted skips t: namespaces and routing need Linux.
func NewRouted(t testing.TB, mtu int) *Routed {
	t.Helper()
	t.Skip("testenv: " + unsupported)
	return nil
}

// Loss skips t: it needs Linux.
func (r *Routed) Loss(t testing.TB, percent int) {
	t.Helper()
	t.Skip("testenv: " + unsupported)
}
