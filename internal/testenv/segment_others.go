//go:build !linux

package testenv

import "testing"

// NewSegment skips t: bridges and veth pairs need Linux.
func NewSegment(t testing.TB, n, mtu int) *Segment {
	t.Helper()
	t.Skip("testenv: " + unsupported)
	return nil
}
