package sys

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// TestTool: a tool in /usr/sbin or /sbin is found with a PATH that lacks
// them, as a normal user's does.
func TestTool(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := Tool("no-such-tool-myproto"); !errors.Is(err, exec.ErrNotFound) {
		t.Fatalf("Tool(no-such-tool) = %v, want ErrNotFound", err)
	}
	if runtime.GOOS != "linux" {
		t.Skip("sbin layout is Linux's")
	}
	for _, name := range []string{"nft", "tc", "ip"} {
		var want string
		for _, dir := range sbinDirs {
			if fi, err := os.Stat(filepath.Join(dir, name)); err == nil && !fi.IsDir() {
				want = filepath.Join(dir, name)
				break
			}
		}
		if want == "" {
			continue
		}
		got, err := Tool(name)
		if err != nil || got != want {
			t.Errorf("Tool(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
}
