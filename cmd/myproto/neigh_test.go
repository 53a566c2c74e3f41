package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestIntegrationNeigh: a fresh process on host a shows host b's two names
// (two processes on b), looks them up both ways, and prints JSON that
// parses.
func TestIntegrationNeigh(t *testing.T) {
	h := newTwoHosts(t)
	for _, p := range []*proc{
		h.start("b", "nodeb", nil, nil, "listen", "-k", "-v", h.bIf+":7"),
		h.start("b", "nodec", nil, nil, "listen", "-u", "-v", h.bIf+":9"),
	} {
		p.waitStderr("listening")
	}
	// Past b's start-up announces (the last within 150+125+250 ms of
	// listening; the next a third of a minute later), so that only
	// neigh's query can tell a fresh process about b.
	time.Sleep(700 * time.Millisecond)

	out, errOut, code := h.run("a", "nodea", nil, "neigh", "-w", "1")
	t.Logf("\n%s", out)
	if code != 0 || errOut != "" {
		t.Fatalf("neigh exited with %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, name := range []string{"nodeb", "nodec"} {
		re := `(?m)^` + name + ` dev ` + h.aIf + ` lladdr ` + h.bMAC + ` mtu 1500 age \S+ expires \S+ REACHABLE$`
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("neigh output does not match %q", re)
		}
	}

	out, _, code = h.run("a", "nodea", nil, "neigh", "show", "dev", h.aIf, "-J", "-w", "1")
	var entries []neighEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil || code != 0 {
		t.Fatalf("neigh show -J: %d, %v\n%s", code, err, out)
	}
	if len(entries) != 2 || entries[0].Dst != "nodeb" || entries[1].Dst != "nodec" {
		t.Fatalf("neigh show -J: %+v", entries)
	}
	for _, e := range entries {
		if e.Dev != h.aIf || e.LLAddr != h.bMAC || e.State != "REACHABLE" || e.MTU != 1500 || e.AgeMS == nil || *e.ExpiresMS <= 0 {
			t.Errorf("entry %+v", e)
		}
	}

	out, _, code = h.run("a", "nodea", nil, "neigh", "lookup", "NodeB")
	if want := "nodeb dev " + h.aIf + " lladdr " + h.bMAC + "\n"; code != 0 || out != want {
		t.Errorf("neigh lookup NodeB: %d, %q, want %q", code, out, want)
	}
	out, _, code = h.run("a", "nodea", nil, "neigh", "lookup", "-J", h.bMAC)
	entries = nil
	if err := json.Unmarshal([]byte(out), &entries); err != nil || code != 0 || len(entries) != 2 ||
		entries[0].Dst != "nodeb" || entries[1].Dst != "nodec" || entries[0].LLAddr != h.bMAC {
		t.Errorf("neigh lookup -J MAC: %d, %v, %s", code, err, out)
	}

	for _, tt := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"neigh", "lookup", "nobody", "-w", "0.2"}, 1, "myproto: neigh lookup: lookup nobody: no such host on the link\n"},
		{[]string{"neigh", "show", "dev", "nosuch0"}, 1, "myproto: neigh show: address nosuch0: no such interface\n"},
		{[]string{"neigh", "flush"}, 1, "myproto: neigh flush: not supported"},
	} {
		_, errOut, code := h.run("a", "nodea", nil, tt.args...)
		if code != tt.code || !strings.HasPrefix(errOut, tt.stderr) {
			t.Errorf("%q: %d, %q; want %d, %q", tt.args, code, errOut, tt.code, tt.stderr)
		}
	}
}
