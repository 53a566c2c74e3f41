package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/myproto/myproto"
)

const pingUsage = `usage: myproto ping [-c count] [-i interval] [-W timeout] [-w deadline] [-s size] [-q] [-J] TARGET

Send echo requests to a neighbour and print each reply and then the
round-trip times, as ping does. TARGET is a node name, found on the link by
discovery, or a MAC: [02:00:5e:10:00:01%eth0] (the interface may be left out
when there is only one). Any process with myproto open on the neighbour
answers: for a name, the one that holds it; for a MAC, the first of them.
Replies are rate-limited like discovery answers (100 a second per interface,
burst 20): the default interval never comes near that, -i 0.01 may, and
the excess shows as loss.

Exit status: 0 if any reply came, 1 if none, 2 on an error (such as an
unknown name).

Flags:
  -c count     stop after sending count requests (default: until interrupted)
  -i interval  time between requests (default 1)
  -W timeout   time to wait for each reply, and for the name lookup (default 1)
  -w deadline  stop after this long, whatever the count
  -s size      data bytes in each request (default 56)
  -q           print only the summary
  -J           print the result as JSON instead: the replies and the summary
`

// pingResult is a ping run, as -J prints it.
type pingResult struct {
	Target      string      `json:"target"`
	Name        string      `json:"name,omitempty"`
	LLAddr      string      `json:"lladdr"`
	Dev         string      `json:"dev"`
	DataBytes   int         `json:"data_bytes"`
	Transmitted int         `json:"transmitted"`
	Received    int         `json:"received"`
	LossPercent float64     `json:"loss_percent"`
	TimeMS      float64     `json:"time_ms"`
	RTT         *rttSummary `json:"rtt_ms,omitempty"`
	Replies     []pingReply `json:"replies"`
}

type pingReply struct {
	Seq    int     `json:"seq"`
	Bytes  int     `json:"bytes"`
	From   string  `json:"from,omitempty"`
	NodeID string  `json:"node_id"`
	TimeMS float64 `json:"time_ms"`
}

type rttSummary struct {
	Min float64 `json:"min"`
	Avg float64 `json:"avg"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func pingCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("ping")
	count := fs.Int("c", 0, "")
	interval := secondsFlag(fs, "i", time.Second, "")
	timeout := secondsFlag(fs, "W", time.Second, "")
	deadline := secondsFlag(fs, "w", 0, "")
	size := fs.Int("s", 56, "")
	quiet := fs.Bool("q", false, "")
	asJSON := fs.Bool("J", false, "")
	ops, code, ok := parseFlags(fs, pingUsage, args, stdout, stderr)
	if !ok {
		return code
	}
	switch {
	case len(ops) != 1:
		return usageError(stderr, pingUsage, "myproto ping: want one target, got %d arguments", len(ops))
	case *count < 0 || *size < 0:
		return usageError(stderr, pingUsage, "myproto ping: -c and -s cannot be negative")
	case *timeout == 0 || *interval == 0:
		return usageError(stderr, pingUsage, "myproto ping: -i and -W must be more than 0")
	}
	target := ops[0]

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *deadline > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *deadline)
		defer cancel()
	}
	cfg := &myproto.PingConfig{Size: *size, Timeout: *timeout, Resolver: &myproto.Resolver{Timeout: *timeout}}
	if *size == 0 {
		cfg.Size = -1 // none: PingConfig's 0 means the default
	}
	p, err := myproto.NewPinger(ctx, target, cfg)
	if err != nil {
		fail(stderr, "ping "+target, err)
		return 2
	}
	defer p.Close()

	addr := p.Addr()
	res := &pingResult{Target: target, Name: p.Name(), LLAddr: addr.HardwareAddr.String(), Dev: addr.Zone,
		DataBytes: *size, Replies: []pingReply{}}
	show := func(format string, args ...any) {
		if !*asJSON {
			fmt.Fprintf(stdout, format, args...)
		}
	}
	who := fmt.Sprintf("[%v%%%s]", addr.HardwareAddr, addr.Zone)
	if addr.IP.IsValid() {
		// A UDP bearer station: its IP address, port 0 left out.
		who = strings.TrimSuffix(addr.String(), ":0")
	}
	if p.Name() != "" {
		show("PING %s %s: %d data bytes\n", p.Name(), who, *size)
	} else {
		show("PING %s: %d data bytes\n", who, *size)
	}

	var (
		mu   sync.Mutex
		rtts []time.Duration
		wg   sync.WaitGroup
	)
	start := time.Now()
	last := start
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for seq := 1; *count == 0 || seq <= *count; seq++ {
		if seq > 1 {
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		res.Transmitted++
		wg.Go(func() {
			r, err := p.Ping(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, context.Canceled) {
					fmt.Fprintf(stderr, "myproto: ping %s: seq=%d: %s\n", target, seq, errText(err))
				}
				return
			}
			if now := time.Now(); now.After(last) {
				last = now
			}
			rtts = append(rtts, r.RTT)
			res.Replies = append(res.Replies, pingReply{Seq: seq, Bytes: r.Len, From: r.Name,
				NodeID: fmt.Sprintf("%016x", r.NodeID), TimeMS: ms(r.RTT)})
			if !*quiet {
				from := who
				if r.Name != "" {
					from = r.Name + " " + who
				}
				show("%d bytes from %s: seq=%d time=%.3f ms\n", r.Len, from, seq, ms(r.RTT))
			}
		})
	}
	wg.Wait()

	res.Received = len(rtts)
	if res.Transmitted > 0 {
		res.LossPercent = 100 * float64(res.Transmitted-res.Received) / float64(res.Transmitted)
	}
	// Like ping's "time": from the first request to the last reply or to
	// the end, whichever the run stopped at.
	res.TimeMS = ms(time.Since(start))
	if res.Received == res.Transmitted {
		res.TimeMS = ms(last.Sub(start))
	}
	if len(rtts) > 0 {
		slices.Sort(rtts)
		var sum time.Duration
		for _, d := range rtts {
			sum += d
		}
		res.RTT = &rttSummary{Min: ms(rtts[0]), Avg: ms(sum / time.Duration(len(rtts))),
			P50: ms(rank(rtts, 50)), P99: ms(rank(rtts, 99)), Max: ms(rtts[len(rtts)-1])}
	}
	slices.SortFunc(res.Replies, func(a, b pingReply) int { return a.Seq - b.Seq })

	if *asJSON {
		if err := writeJSON(stdout, res); err != nil {
			return fail(stderr, "ping", err)
		}
	} else {
		name := p.Name()
		if name == "" {
			name = who
		}
		fmt.Fprintf(stdout, "\n--- %s ping statistics ---\n", name)
		fmt.Fprintf(stdout, "%d packets transmitted, %d received, %.4g%% packet loss, time %.0fms\n",
			res.Transmitted, res.Received, res.LossPercent, res.TimeMS)
		if r := res.RTT; r != nil {
			fmt.Fprintf(stdout, "rtt min/avg/p50/p99/max = %.3f/%.3f/%.3f/%.3f/%.3f ms\n", r.Min, r.Avg, r.P50, r.P99, r.Max)
		}
	}
	if res.Received == 0 {
		return 1
	}
	return 0
}

// rank returns the p-th percentile of sorted by the nearest-rank method, so
// that with few replies p99 is the largest, as one expects.
func rank(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100 // ceil(n·p/100)
	return sorted[max(i-1, 0)]
}
