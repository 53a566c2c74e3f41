package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/myproto/myproto"
)

const neighUsage = `usage: myproto neigh [show] [dev IFACE] [-w secs] [-J]
       myproto neigh lookup NAME|MAC [-w secs] [-J]
       myproto neigh flush

The neighbour table, as ip neigh shows the kernel's ARP and NDP caches.

  show    Ask the link who is there (one broadcast, which every station
          running myproto answers with its names), wait -w for the answers
          (default 0.3 s), and print the table: name, interface, MAC, MTU,
          time since last heard, time to expiry, and state (REACHABLE if
          heard from within half the name's lifetime, else STALE). Other
          processes on this host are not shown, as ip neigh does not show
          the host itself. The default command.
  lookup  Resolve a name as connect does and print its MAC and interface;
          given a MAC, print its names (a reverse lookup). Waits up to -w
          (default 1 s); a name nobody answers for exits 1.
  flush   Not supported: every process keeps a table of its own, which
          goes when the process exits; there is no shared table to flush.

Flags:
  -w secs  how long to wait for answers
  -J       print JSON: an array of {"dst", "dev", "lladdr", ...}
`

// neighEntry is one neighbour, as -J prints it; the keys follow ip -j neigh.
type neighEntry struct {
	Dst       string   `json:"dst"`
	Dev       string   `json:"dev,omitempty"`
	LLAddr    string   `json:"lladdr"`
	Addr      string   `json:"addr,omitempty"` // on a UDP bearer: IP:port
	MTU       int      `json:"mtu,omitempty"`
	NodeID    string   `json:"node_id,omitempty"`
	State     string   `json:"state,omitempty"`
	AgeMS     *float64 `json:"age_ms,omitempty"`
	ExpiresMS *float64 `json:"expires_ms,omitempty"`
}

func neighCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("neigh")
	wait := secondsFlag(fs, "w", 0, "")
	asJSON := fs.Bool("J", false, "")
	ops, code, ok := parseFlags(fs, neighUsage, args, stdout, stderr)
	if !ok {
		return code
	}
	sub := "show"
	if len(ops) > 0 {
		sub, ops = ops[0], ops[1:]
	}
	var entries []neighEntry
	var err error
	switch sub {
	case "show", "list", "ls":
		dev := ""
		switch {
		case len(ops) == 2 && ops[0] == "dev":
			dev = ops[1]
		case len(ops) != 0:
			return usageError(stderr, neighUsage, "myproto neigh show: unexpected %q", strings.Join(ops, " "))
		}
		entries, err = neighShow(dev, durationOr(*wait, 300*time.Millisecond))
	case "lookup", "get":
		if len(ops) != 1 {
			return usageError(stderr, neighUsage, "myproto neigh lookup: want one name or MAC, got %d arguments", len(ops))
		}
		entries, err = neighLookup(ops[0], durationOr(*wait, time.Second))
	case "flush":
		fmt.Fprintln(stderr, "myproto: neigh flush: not supported: every process keeps a neighbour table of its own, "+
			"which goes when the process exits; there is no shared table to flush")
		return 1
	default:
		return usageError(stderr, neighUsage, "myproto neigh: unknown command %q", sub)
	}
	if err != nil {
		return fail(stderr, "neigh "+sub, err)
	}
	if *asJSON {
		if entries == nil {
			entries = []neighEntry{}
		}
		if err := writeJSON(stdout, entries); err != nil {
			return fail(stderr, "neigh", err)
		}
		return 0
	}
	for _, e := range entries {
		line := e.Dst
		if e.Dev != "" {
			line += " dev " + e.Dev
		}
		line += " lladdr " + e.LLAddr
		if e.Addr != "" {
			line += " addr " + e.Addr
		}
		if e.MTU != 0 {
			line += fmt.Sprintf(" mtu %d", e.MTU)
		}
		if e.AgeMS != nil {
			line += fmt.Sprintf(" age %v expires %v", msDuration(*e.AgeMS), msDuration(*e.ExpiresMS))
		}
		if e.State != "" {
			line += " " + e.State
		}
		fmt.Fprintln(stdout, line)
	}
	return 0
}

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func msDuration(v float64) time.Duration {
	return time.Duration(v * float64(time.Millisecond)).Round(time.Millisecond)
}

// neighShow asks the link who is there and returns the table.
func neighShow(dev string, wait time.Duration) ([]neighEntry, error) {
	r := &myproto.Resolver{Timeout: wait}
	ns, err := r.QueryNeighbors(context.Background(), dev)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var out []neighEntry
	for _, n := range ns {
		age, exp := ms(now.Sub(n.Confirmed)), ms(n.Expires.Sub(now))
		e := neighEntry{
			Dst: n.Name, Dev: n.Interface, LLAddr: n.HardwareAddr.String(), MTU: n.MTU,
			NodeID: fmt.Sprintf("%016x", n.NodeID), State: n.State, AgeMS: &age, ExpiresMS: &exp,
		}
		if n.Addr.IsValid() {
			e.Addr = n.Addr.String()
		}
		out = append(out, e)
	}
	return out, nil
}

// neighLookup resolves a name, or the names of a MAC.
func neighLookup(what string, wait time.Duration) ([]neighEntry, error) {
	r := &myproto.Resolver{Timeout: wait}
	ctx := context.Background()
	if mac, err := net.ParseMAC(what); err == nil {
		names, err := r.LookupAddr(ctx, mac)
		if err != nil {
			return nil, err
		}
		var out []neighEntry
		for _, n := range names {
			out = append(out, neighEntry{Dst: n, LLAddr: mac.String()})
		}
		return out, nil
	}
	a, err := r.LookupName(ctx, what)
	if err != nil {
		return nil, err
	}
	return []neighEntry{{Dst: strings.ToLower(what), Dev: a.Zone, LLAddr: a.HardwareAddr.String()}}, nil
}
