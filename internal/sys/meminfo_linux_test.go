//go:build linux

package sys

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMemoryLimit: some memory, and no more than the machine's.
func TestMemoryLimit(t *testing.T) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		t.Fatal(err)
	}
	total := uint64(si.Totalram) * uint64(si.Unit)
	got := MemoryLimit()
	t.Logf("memory limit %d MiB, machine %d MiB", got>>20, total>>20)
	if got == 0 || got > total {
		t.Fatalf("MemoryLimit() = %d, machine %d", got, total)
	}
}

// TestCgroupLimit: the lowest limit on the way up from the process's
// cgroup counts, in either version; "max" and v1's huge number mean none.
func TestCgroupLimit(t *testing.T) {
	fs := t.TempDir()
	put := func(file, v string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const total = 24 << 30
	put(fs+"/memory.max", "max")
	put(fs+"/a/memory.max", "8589934592") // 8 GiB
	put(fs+"/a/b/memory.max", "max")
	put(fs+"/memory/memory.limit_in_bytes", "9223372036854771712")
	put(fs+"/memory/x/memory.limit_in_bytes", "1073741824") // 1 GiB
	for _, tc := range []struct {
		cgroup string
		want   uint64
	}{
		{"0::/a/b\n", 8 << 30},
		{"0::/\n", total},
		{"0::/nowhere\n", total},
		{"4:memory:/x\n0::/\n", 1 << 30},
		{"5:cpu,memory:/x/y\n", 1 << 30},
		{"4:memory:/\n", total},
		{"garbage\n\n", total},
	} {
		if got := cgroupLimit(total, tc.cgroup, fs); got != tc.want {
			t.Errorf("cgroupLimit for %q = %d MiB, want %d MiB", tc.cgroup, got>>20, tc.want>>20)
		}
	}
}
