package main

import (
	"bytes"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSubcommandUsage: every tool answers -h/--help with its usage on
// standard output, and a mistake with a complaint and its usage on
// standard error and status 2, before touching the network.
func TestSubcommandUsage(t *testing.T) {
	for _, tt := range []struct {
		args     []string
		code     int
		usage    string
		complain string
	}{
		{args: []string{"connect", "--help"}, usage: ncUsage},
		{args: []string{"listen", "-h"}, usage: ncUsage},
		{args: []string{"ping", "-help"}, usage: pingUsage},
		{args: []string{"ping", "nodeb", "--help"}, usage: pingUsage},
		{args: []string{"neigh", "--help"}, usage: neighUsage},
		{args: []string{"neigh", "lookup", "-h"}, usage: neighUsage},
		{args: []string{"ss", "--help"}, usage: ssUsage},
		{args: []string{"stat", "-h"}, usage: statUsage},
		{args: []string{"monitor", "-help"}, usage: monitorUsage},
		{args: []string{"ss", "-x"}, code: 2, usage: ssUsage, complain: "flag provided but not defined: -x"},
		{args: []string{"ss", "extra"}, code: 2, usage: ssUsage, complain: `unexpected "extra"`},
		{args: []string{"stat", "a", "b"}, code: 2, usage: statUsage, complain: `unexpected "b"`},
		{args: []string{"monitor", "now"}, code: 2, usage: monitorUsage, complain: `unexpected "now"`},
		{args: []string{"connect"}, code: 2, usage: ncUsage, complain: "myproto connect: want one address, got 0 arguments"},
		{args: []string{"connect", "-k", "x:1"}, code: 2, usage: ncUsage, complain: "myproto connect: -k is for listen"},
		{args: []string{"listen", "-x", "7"}, code: 2, usage: ncUsage, complain: "myproto listen: flag provided but not defined: -x"},
		{args: []string{"ping", "-c", "x", "nodeb"}, code: 2, usage: pingUsage, complain: `invalid value "x" for flag -c`},
		{args: []string{"ping", "-i", "soon", "nodeb"}, code: 2, usage: pingUsage, complain: `"soon" is not a time`},
		{args: []string{"ping", "a", "b"}, code: 2, usage: pingUsage, complain: "want one target, got 2 arguments"},
		{args: []string{"ping", "-i", "0", "nodeb"}, code: 2, usage: pingUsage, complain: "-i and -W must be more than 0"},
		{args: []string{"neigh", "frob"}, code: 2, usage: neighUsage, complain: `myproto neigh: unknown command "frob"`},
		{args: []string{"neigh", "show", "eth0"}, code: 2, usage: neighUsage, complain: `unexpected "eth0"`},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tt.args, &stdout, &stderr)
		out, other := &stdout, &stderr
		if tt.code != 0 {
			out, other = &stderr, &stdout
		}
		if code != tt.code || !strings.Contains(out.String(), tt.usage) || other.Len() != 0 ||
			!strings.Contains(stderr.String(), tt.complain) {
			t.Errorf("run(%q) = %d\nstdout:\n%s\nstderr:\n%s", tt.args, code, &stdout, &stderr)
		}
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--version"}, &stdout, &stderr); code != 0 || stderr.Len() != 0 ||
		!regexp.MustCompile(`^myproto \S+( \S+)? go\S+ \w+/\w+\n$`).MatchString(stdout.String()) {
		t.Errorf("--version: %d, %q, %q", code, &stdout, &stderr)
	}
}

func TestParseFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		ops  []string
		c    int
		i    time.Duration
	}{
		{[]string{"nodeb"}, []string{"nodeb"}, 0, time.Second},
		{[]string{"-c", "3", "nodeb", "-i", "0.2"}, []string{"nodeb"}, 3, 200 * time.Millisecond},
		{[]string{"nodeb", "-i=250ms", "x", "-c=1"}, []string{"nodeb", "x"}, 1, 250 * time.Millisecond},
		{[]string{"-c", "2", "--", "-i", "x"}, []string{"-i", "x"}, 2, time.Second},
		{[]string{"--c", "4", "-"}, []string{"-"}, 4, time.Second},
	} {
		fs := newFlags("test")
		c := fs.Int("c", 0, "")
		i := secondsFlag(fs, "i", time.Second, "")
		var stdout, stderr bytes.Buffer
		ops, code, ok := parseFlags(fs, "usage", tt.args, &stdout, &stderr)
		if !ok || code != 0 || !slices.Equal(ops, tt.ops) || *c != tt.c || *i != tt.i {
			t.Errorf("parseFlags(%q) = %q, %d, %v; -c %d -i %v", tt.args, ops, code, ok, *c, *i)
		}
	}
	for _, bad := range []string{"", "x", "-1", "-1s", "1e10"} {
		var d time.Duration
		if err := (secondsValue{&d}).Set(bad); err == nil {
			t.Errorf("time %q accepted as %v", bad, d)
		}
	}
}

func TestProgressFormat(t *testing.T) {
	for _, tt := range []struct {
		sent, recv, total int64
		elapsed           time.Duration
		final             bool
		want              string
	}{
		{8 << 20, 0, 16 << 20, time.Second, false, "sent 8.0 MiB of 16.0 MiB (50%), received 0 B, 8.0 MiB/s, ETA 0:01"},
		{1 << 30, 1 << 30, -1, 2 * time.Second, false, "sent 1.0 GiB, received 1.0 GiB, 1.0 GiB/s"},
		{100, 0, 1 << 40, time.Second, false, "sent 100 B of 1.0 TiB (0%), received 0 B, 100 B/s, ETA --:--:--"},
		{3 << 20, 0, 4000 << 20, 3 * time.Second, false, "sent 3.0 MiB of 3.9 GiB (0%), received 0 B, 1.0 MiB/s, ETA 1:06:37"},
		{16 << 20, 512, 16 << 20, 1500 * time.Millisecond, true, "sent 16.0 MiB, received 512 B in 1.5s, 10.7 MiB/s"},
	} {
		if got := formatProgress(tt.sent, tt.recv, tt.total, tt.elapsed, tt.final); got != tt.want {
			t.Errorf("formatProgress(%d, %d, %d, %v, %v) = %q, want %q", tt.sent, tt.recv, tt.total, tt.elapsed, tt.final, got, tt.want)
		}
	}
	// Piped, as in the tests, there is no meter at all.
	var b bytes.Buffer
	if showProgress(&b, &b) {
		t.Error("progress on a buffer")
	}
}

func TestRank(t *testing.T) {
	d := []time.Duration{1, 2, 3, 4}
	if rank(d, 50) != 2 || rank(d, 99) != 4 || rank(d[:1], 99) != 1 || rank(d, 0) != 1 {
		t.Errorf("rank of %v: p50 %v p99 %v", d, rank(d, 50), rank(d, 99))
	}
}
