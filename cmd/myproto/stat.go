package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/myproto/myproto"
)

const statUsage = `usage: myproto stat [IFACE] [-J]

Print the interface counters of every process's myproto stack on this
host, as ip -s link prints the kernel's: frames and bytes received and
sent, what the kernel dropped because the socket buffer was full (which
looks exactly like loss), and the frames the stack itself discarded, by
reason. Every process has its own packet sockets and counts its own
copies of the frames. IFACE limits it to one interface. Needs no
privilege; other users' processes are shown only to root.

Flags:
  -J  print JSON: an array of {"pid", "command", "node_id", "dev", ...}
`

// statEntry is one process's counters on one interface, as -J prints them.
type statEntry struct {
	PID     int               `json:"pid"`
	Command string            `json:"command"`
	NodeID  string            `json:"node_id"`
	Names   []string          `json:"names"`
	Dev     string            `json:"dev"`
	RX      statDir           `json:"rx"`
	TX      statDir           `json:"tx"`
	Kernel  statKernel        `json:"kernel"`
	Control statKernel        `json:"control"`
	Drops   map[string]uint64 `json:"drops"`
}

type statDir struct {
	Frames uint64 `json:"frames"`
	Bytes  uint64 `json:"bytes"`
}

type statKernel struct {
	Packets uint64 `json:"packets"`
	Drops   uint64 `json:"drops"`
}

func statCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("stat")
	asJSON := fs.Bool("J", false, "")
	ops, code, ok := parseFlags(fs, statUsage, args, stdout, stderr)
	if !ok {
		return code
	}
	dev := ""
	switch len(ops) {
	case 0:
	case 1:
		dev = ops[0]
	default:
		return usageError(stderr, statUsage, "myproto stat: unexpected %q", strings.Join(ops[1:], " "))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ps, err := myproto.HostStats(ctx, nil)
	if err != nil {
		if len(ps) == 0 && !errors.Is(err, os.ErrPermission) {
			return fail(stderr, "stat", err)
		}
		warnDiag(stderr, "stat", err)
	}
	out := []statEntry{}
	for _, p := range ps {
		for _, st := range p.Stats {
			if dev != "" && st.Interface != dev {
				continue
			}
			d := st.Drops
			names := p.Process.Names
			if names == nil {
				names = []string{}
			}
			out = append(out, statEntry{
				PID: p.Process.PID, Command: p.Process.Command, NodeID: fmt.Sprintf("%016x", p.Process.NodeID),
				Names: names, Dev: st.Interface,
				RX:      statDir{st.FramesIn, st.BytesIn},
				TX:      statDir{st.FramesOut, st.BytesOut},
				Kernel:  statKernel{st.KernelPackets, st.KernelDrops},
				Control: statKernel{st.ControlPackets, st.ControlDrops},
				Drops: map[string]uint64{
					"short": d.Short, "ethertype": d.EtherType, "version": d.Version,
					"type": d.Type, "length": d.Length, "checksum": d.Checksum,
					"reserved": d.Reserved, "no_socket": d.NoSocket, "not_for_us": d.NotForUs,
					"queue_full": d.QueueFull, "malformed": d.Malformed,
				},
			})
		}
	}
	if dev != "" && len(out) == 0 && err == nil {
		fmt.Fprintf(stderr, "myproto: stat: no process has myproto open on %s\n", dev)
		return 1
	}
	if *asJSON {
		if err := writeJSON(stdout, out); err != nil {
			return fail(stderr, "stat", err)
		}
		return 0
	}
	for _, e := range out {
		fmt.Fprintf(stdout, "%s: pid %d %s node-id %s", e.Dev, e.PID, e.Command, e.NodeID)
		if len(e.Names) > 0 {
			fmt.Fprintf(stdout, " names %s", strings.Join(e.Names, ","))
		}
		fmt.Fprintln(stdout)
		fmt.Fprintf(stdout, "    RX: frames %d bytes %d\n", e.RX.Frames, e.RX.Bytes)
		fmt.Fprintf(stdout, "    TX: frames %d bytes %d\n", e.TX.Frames, e.TX.Bytes)
		fmt.Fprintf(stdout, "    kernel: passed %d dropped %d\n", e.Kernel.Packets, e.Kernel.Drops)
		fmt.Fprintf(stdout, "    control (SYNs, discovery): passed %d dropped %d\n", e.Control.Packets, e.Control.Drops)
		var drops []string
		for _, k := range []string{"short", "ethertype", "version", "type", "length", "checksum", "reserved",
			"no_socket", "not_for_us", "queue_full", "malformed"} {
			if n := e.Drops[k]; n > 0 {
				drops = append(drops, fmt.Sprintf("%s %d", k, n))
			}
		}
		if len(drops) == 0 {
			drops = []string{"none"}
		}
		fmt.Fprintf(stdout, "    discarded: %s\n", strings.Join(drops, " "))
	}
	return 0
}
