//go:build !linux

package sys

// TotalMemory returns 0: the stack asks on Linux only.
func TotalMemory() uint64 { return 0 }
