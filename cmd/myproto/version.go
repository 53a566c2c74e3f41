package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is the module version the binary was built from, "(devel)" for a
// build from a work tree, with the VCS revision when the build recorded one
// (as go version -m shows them).
func version() string {
	v, rev, dirty := "(devel)", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	switch {
	case rev != "" && dirty:
		v += " " + rev + "+dirty"
	case rev != "":
		v += " " + rev
	}
	return fmt.Sprintf("myproto %s %s %s/%s", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
