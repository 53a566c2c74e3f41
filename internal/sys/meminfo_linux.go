//go:build linux

package sys

import (
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// MemoryLimit returns how much memory the process may use, in bytes: the
// machine's (sysinfo(2)), or less where a memory cgroup it is in, or one
// above, sets a limit (memory.max in cgroup v2, memory.limit_in_bytes in
// v1); 0 if it cannot tell.
func MemoryLimit() uint64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	b, _ := os.ReadFile("/proc/self/cgroup")
	return cgroupLimit(uint64(si.Totalram)*uint64(si.Unit), string(b), "/sys/fs/cgroup")
}

// cgroupLimit returns limit lowered to the memory limits of the cgroups
// that procCgroup (/proc/self/cgroup's text) names, and of those above
// them, in the hierarchies mounted at fs.
func cgroupLimit(limit uint64, procCgroup, fs string) uint64 {
	for _, line := range strings.Split(procCgroup, "\n") {
		// "0::/path" (v2) or "4:memory:/path" (v1).
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		var root, file string
		switch {
		case f[0] == "0" && f[1] == "":
			root, file = fs, "memory.max"
		case strings.Contains(","+f[1]+",", ",memory,"):
			root, file = path.Join(fs, "memory"), "memory.limit_in_bytes"
		default:
			continue
		}
		for dir := path.Join(root, f[2]); ; dir = path.Dir(dir) {
			if v, err := os.ReadFile(path.Join(dir, file)); err == nil {
				// "max" (v2) or a huge number (v1) means none.
				if n, err := strconv.ParseUint(strings.TrimSpace(string(v)), 10, 64); err == nil && n > 0 {
					limit = min(limit, n)
				}
			}
			if dir == root || len(dir) < len(root) {
				break
			}
		}
	}
	return limit
}
