//go:build !linux

package testenv_test

import "testing"

// hostInterfaces is not needed off Linux, where NewPair skips.
func hostInterfaces(t *testing.T) []string { return nil }
