package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestIntegrationPing pings host b by name and by MAC from host a, checks
// the lines and the percentiles, parses -J, and pings a name nobody has and
// a MAC nobody answers on.
func TestIntegrationPing(t *testing.T) {
	h := newTwoHosts(t)
	// Any process with myproto open answers echo requests.
	srv := h.start("b", "nodeb", nil, nil, "listen", "-k", "-v", h.bIf+":7")
	srv.waitStderr("listening on")

	out, errOut, code := h.run("a", "nodea", nil, "ping", "-c", "5", "-i", "0.05", "nodeb")
	t.Logf("\n%s", out)
	if code != 0 || errOut != "" {
		t.Fatalf("ping exited with %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	who := regexp.QuoteMeta("nodeb [" + h.bMAC + "%" + h.aIf + "]")
	for _, re := range []string{
		`(?m)^PING ` + who + `: 56 data bytes$`,
		`(?m)^112 bytes from ` + who + `: seq=1 time=[0-9.]+ ms$`,
		`(?m)^112 bytes from ` + who + `: seq=5 time=[0-9.]+ ms$`,
		`(?m)^--- nodeb ping statistics ---$`,
		`(?m)^5 packets transmitted, 5 received, 0% packet loss, time \d+ms$`,
		`(?m)^rtt min/avg/p50/p99/max = [0-9]+\.[0-9]{3}/[0-9.]+/[0-9.]+/[0-9.]+/[0-9.]+ ms$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %q", re)
		}
	}

	out, errOut, code = h.run("a", "nodea", nil, "ping", "-J", "-c", "3", "-i", "0.05", "-s", "100", h.bEndpt)
	var res pingResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 {
		t.Fatalf("ping -J: %d, %v\nstdout:\n%s\nstderr:\n%s", code, err, out, errOut)
	}
	r := res.RTT
	if res.Transmitted != 3 || res.Received != 3 || res.LossPercent != 0 || res.LLAddr != h.bMAC || res.Dev != h.aIf ||
		len(res.Replies) != 3 || r == nil || !(0 < r.Min && r.Min <= r.P50 && r.P50 <= r.P99 && r.P99 <= r.Max && r.Min <= r.Avg && r.Avg <= r.Max) {
		t.Fatalf("ping -J by MAC: %+v, rtt %+v", res, r)
	}
	for i, rep := range res.Replies {
		// By MAC the request names nobody; the reply names the holder.
		if rep.Seq != i+1 || rep.From != "nodeb" || rep.Bytes != 24+27+len("nodeb")+100 {
			t.Errorf("reply %+v", rep)
		}
	}

	_, errOut, code = h.run("a", "nodea", nil, "ping", "-c", "1", "-W", "0.2", "nobody")
	if code != 2 || errOut != "myproto: ping nobody: lookup nobody: no such host on the link\n" {
		t.Errorf("ping of an unknown name: %d, %q", code, errOut)
	}
	srv.stop()
	// Nobody on b runs myproto now: every request is lost.
	start := time.Now()
	out, _, code = h.run("a", "nodea", nil, "ping", "-c", "2", "-i", "0.1", "-W", "0.2", h.bEndpt)
	if code != 1 || !strings.Contains(out, "2 packets transmitted, 0 received, 100% packet loss") || strings.Contains(out, "rtt") {
		t.Errorf("ping of a silent MAC: %d\n%s", code, out)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("2 pings, 0.1 s apart, 0.2 s timeout, took %v", d)
	}
}
