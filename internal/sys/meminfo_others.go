//go:build !linux

package sys

// MemoryLimit returns 0: the stack asks on Linux only.
func MemoryLimit() uint64 { return 0 }
