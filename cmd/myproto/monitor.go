package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/myproto/myproto"
)

const monitorUsage = `usage: myproto monitor [-t] [-J]

Print what happens to myproto on this host as it happens, one line per
event, as ip monitor does: names appearing on the link, leaving and
conflicting; neighbours going STALE or REACHABLE; interfaces going down or
up or changing MTU or MAC; every process's listeners and datagram sockets
opening and closing, and connections established and closed. Runs until
interrupted.

The link is watched by this process's own stack, on every usable
interface, so monitor needs CAP_NET_RAW like listen; the sockets and
connections are every process's, through their diagnostic sockets
(SPEC.md §17; other users' processes only for root).

Flags:
  -t  prefix each line with the time
  -J  print JSON lines: one object per event
`

// monitorEvent is one event, as -J prints it.
type monitorEvent struct {
	Type    string `json:"type"`
	Time    string `json:"time"`
	Dev     string `json:"dev,omitempty"`
	Name    string `json:"name,omitempty"`
	LLAddr  string `json:"lladdr,omitempty"`
	NodeID  string `json:"node_id,omitempty"`
	State   string `json:"state,omitempty"`
	MTU     int    `json:"mtu,omitempty"`
	Proto   string `json:"proto,omitempty"`
	Local   string `json:"local,omitempty"`
	Remote  string `json:"remote,omitempty"`
	Kept    *bool  `json:"kept,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Lost    uint64 `json:"lost,omitempty"`
	PID     int    `json:"pid"`
	Command string `json:"command"`
}

func monitorCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("monitor")
	stamp := fs.Bool("t", false, "")
	asJSON := fs.Bool("J", false, "")
	ops, code, ok := parseFlags(fs, monitorUsage, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(ops) > 0 {
		return usageError(stderr, monitorUsage, "myproto monitor: unexpected %q", strings.Join(ops, " "))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	events, err := myproto.Subscribe(ctx, nil)
	if err != nil {
		return fail(stderr, "monitor", err)
	}
	enc := json.NewEncoder(stdout)
	for ev := range events {
		if *asJSON {
			if err := enc.Encode(toMonitorEvent(&ev)); err != nil {
				return fail(stderr, "monitor", err)
			}
			continue
		}
		line := ev.String()
		if *stamp {
			line = ev.Time.Format("15:04:05.000000") + " " + line
		}
		if _, err := fmt.Fprintln(stdout, line); err != nil {
			return fail(stderr, "monitor", err)
		}
	}
	return 0
}

func toMonitorEvent(e *myproto.Event) monitorEvent {
	m := monitorEvent{Type: e.Type.String(), Time: e.Time.Format(time.RFC3339Nano), Dev: e.Interface,
		Name: e.Name, State: e.State, MTU: e.MTU, Proto: e.Proto, Reason: e.Reason, Lost: e.Lost,
		PID: e.Process.PID, Command: e.Process.Command}
	if len(e.HardwareAddr) > 0 {
		m.LLAddr = e.HardwareAddr.String()
	}
	if e.NodeID != 0 {
		m.NodeID = fmt.Sprintf("%016x", e.NodeID)
	}
	if e.Local != nil {
		m.Local = e.Local.String()
	}
	if e.Remote != nil {
		m.Remote = e.Remote.String()
	}
	if e.Type == myproto.EventNameConflict {
		m.Kept = &e.Kept
	}
	return m
}
