package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/myproto/myproto"
)

const ssUsage = `usage: myproto ss [-l | -a] [-t | -u] [-i] [-p] [-J]

List the myproto sockets of every process on this host, as ss lists TCP
and UDP sockets: each process's stack answers on its diagnostic socket
(SPEC.md §17). Needs no privilege, but other users' processes are shown
only to root.

By default connections are shown; -l shows listeners and datagram
sockets (LISTEN, UNCONN), -a both.

Columns: Netid (str: stream, msg: message, dgr: datagram), State, Recv-Q and Send-Q (a
connection's buffered bytes; a listener's waiting connections and
backlog; a datagram socket's queued bytes), the local and peer addresses,
and with -p the process.

Flags:
  -l  listening sockets only
  -a  all sockets
  -t  streams only
  -u  datagram sockets only
  -i  show each connection's protocol figures (Conn.Info): smoothed RTT
      and its variation, congestion window, retransmissions, bytes
      delivered each way
  -p  show the process (command and pid)
  -J  print JSON: an array of sockets
`

// ssEntry is one socket, as -J prints it.
type ssEntry struct {
	Netid   string  `json:"netid"`
	State   string  `json:"state"`
	RecvQ   int     `json:"recv_q"`
	SendQ   int     `json:"send_q"`
	Local   string  `json:"local"`
	Peer    string  `json:"peer,omitempty"`
	PID     int     `json:"pid"`
	Command string  `json:"command"`
	NodeID  string  `json:"node_id"`
	Info    *ssInfo `json:"info,omitempty"`
}

// ssInfo are a connection's figures, as -i shows them.
type ssInfo struct {
	SRTTMS          float64 `json:"srtt_ms"`
	RTTVarMS        float64 `json:"rttvar_ms"`
	MinRTTMS        float64 `json:"min_rtt_ms"`
	Cwnd            int     `json:"cwnd"`
	Ssthresh        int     `json:"ssthresh,omitempty"`
	BytesInFlight   int     `json:"bytes_in_flight"`
	Retransmits     uint64  `json:"retransmits"`
	BytesRetrans    uint64  `json:"bytes_retrans"`
	PacketsLost     uint64  `json:"lost"`
	BytesSent       uint64  `json:"bytes_sent"`
	BytesReceived   uint64  `json:"bytes_received"`
	PacketsSent     uint64  `json:"segs_out"`
	PacketsReceived uint64  `json:"segs_in"`
}

func ssCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("ss")
	listening := fs.Bool("l", false, "")
	all := fs.Bool("a", false, "")
	streams := fs.Bool("t", false, "")
	dgrams := fs.Bool("u", false, "")
	info := fs.Bool("i", false, "")
	procs := fs.Bool("p", false, "")
	asJSON := fs.Bool("J", false, "")
	ops, code, ok := parseFlags(fs, ssUsage, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(ops) > 0 {
		return usageError(stderr, ssUsage, "myproto ss: unexpected %q", strings.Join(ops, " "))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	socks, err := myproto.Sockets(ctx, nil)
	if err != nil {
		if len(socks) == 0 && !errors.Is(err, os.ErrPermission) {
			return fail(stderr, "ss", err)
		}
		warnDiag(stderr, "ss", err)
	}
	var out []ssEntry
	for _, si := range socks {
		listener := si.State == "LISTEN" || si.State == "UNCONN"
		switch {
		case *streams && !*dgrams && si.Proto == "datagram", *dgrams && !*streams && si.Proto != "datagram":
			continue
		case *all:
		case *listening != listener:
			continue
		}
		e := ssEntry{Netid: netid(si.Proto), State: si.State, RecvQ: si.RecvQ, SendQ: si.SendQ,
			Local: addrOrStar(si.Local), PID: si.Process.PID, Command: si.Process.Command,
			NodeID: fmt.Sprintf("%016x", si.Process.NodeID)}
		if si.Remote != nil {
			e.Peer = si.Remote.String()
		}
		if si.Info != nil && (*info || *asJSON) {
			ci := si.Info
			if ci.Ssthresh > 1<<40 {
				ci.Ssthresh = 0 // none yet: still in slow start
			}
			e.Info = &ssInfo{SRTTMS: ms(ci.SRTT), RTTVarMS: ms(ci.RTTVar), MinRTTMS: ms(ci.MinRTT), Cwnd: ci.Cwnd,
				Ssthresh: ci.Ssthresh, BytesInFlight: ci.BytesInFlight, Retransmits: ci.PacketsRetransmitted,
				BytesRetrans: ci.BytesRetransmitted, PacketsLost: ci.PacketsLost, BytesSent: ci.BytesSent,
				BytesReceived: ci.BytesReceived, PacketsSent: ci.PacketsSent, PacketsReceived: ci.PacketsReceived}
		}
		out = append(out, e)
	}
	slices.SortStableFunc(out, func(a, b ssEntry) int { return strings.Compare(a.Netid, b.Netid) })
	if *asJSON {
		if out == nil {
			out = []ssEntry{}
		}
		if err := writeJSON(stdout, out); err != nil {
			return fail(stderr, "ss", err)
		}
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 8, 1, ' ', 0)
	header := "Netid\tState\tRecv-Q\tSend-Q\tLocal Address:Port\tPeer Address:Port"
	if *procs {
		header += "\tProcess"
	}
	fmt.Fprintln(tw, header)
	for _, e := range out {
		peer := e.Peer
		if peer == "" {
			peer = "*"
		}
		line := fmt.Sprintf("%s\t%s\t%d\t%d\t%s\t%s", e.Netid, shortState(e.State), e.RecvQ, e.SendQ, e.Local, peer)
		if *procs {
			line += fmt.Sprintf("\tusers:((%q,pid=%d))", e.Command, e.PID)
		}
		fmt.Fprintln(tw, line)
		if *info && e.Info != nil {
			i := e.Info
			fmt.Fprintf(tw, "\t rtt:%.3f/%.3f minrtt:%.3f cwnd:%d", i.SRTTMS, i.RTTVarMS, i.MinRTTMS, i.Cwnd)
			if i.Ssthresh > 0 {
				fmt.Fprintf(tw, " ssthresh:%d", i.Ssthresh)
			}
			fmt.Fprintf(tw, " unacked:%d retrans:%d bytes_retrans:%d lost:%d bytes_sent:%d bytes_received:%d segs_out:%d segs_in:%d\n",
				i.BytesInFlight, i.Retransmits, i.BytesRetrans, i.PacketsLost, i.BytesSent, i.BytesReceived, i.PacketsSent, i.PacketsReceived)
		}
	}
	tw.Flush()
	return 0
}

func netid(proto string) string {
	switch proto {
	case "datagram":
		return "dgr"
	case "message":
		return "msg"
	}
	return "str"
}

// shortState abbreviates as ss does.
func shortState(s string) string {
	if s == "ESTABLISHED" {
		return "ESTAB"
	}
	return s
}

// addrOrStar prints a socket on every interface as ss prints a wildcard
// bind: *:PORT.
func addrOrStar(a *myproto.Addr) string {
	if a == nil {
		return "*"
	}
	if len(a.HardwareAddr) == 0 && a.Zone == "" {
		return fmt.Sprintf("*:%d", a.Port)
	}
	return a.String()
}

// warnDiag says which processes did not answer: others' when not root.
func warnDiag(stderr io.Writer, what string, err error) {
	if errors.Is(err, os.ErrPermission) {
		fmt.Fprintf(stderr, "myproto: %s: processes of other users are not shown (run as root to see them)\n", what)
		return
	}
	fmt.Fprintf(stderr, "myproto: %s: %v\n", what, err)
}
