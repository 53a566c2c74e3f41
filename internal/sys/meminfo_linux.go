//go:build linux

package sys

import "golang.org/x/sys/unix"

// TotalMemory returns the machine's physical memory in bytes (sysinfo(2)),
// or 0 if it cannot tell.
func TotalMemory() uint64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	return uint64(si.Totalram) * uint64(si.Unit)
}
