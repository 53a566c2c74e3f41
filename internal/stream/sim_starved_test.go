package stream

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"
)

// starvedReader models the receive path of a host whose reader goroutine
// gets little CPU: every frame, whatever its size, costs the same time to
// take in, frames wait in one drop-tail queue shared by all connections (a
// packet socket's, or memlink's), and a frame that finds limit frames waiting
// is lost. Installed as a link's drop function, it delivers what it admits
// itself.
type starvedReader struct {
	n         *simNet
	cost      time.Duration // per frame
	limit     int           // frames waiting
	busyUntil time.Duration
	delivered int
	drops     int
}

func (r *starvedReader) admit(p *simPacket) bool {
	n := r.n
	start := max(n.now, r.busyUntil)
	if int((start-n.now)/r.cost) >= r.limit {
		r.drops++
		return true
	}
	r.busyUntil = start + r.cost
	q := *p
	q.body = bytes.Clone(p.body)
	n.at(r.busyUntil, func() {
		r.delivered++
		q.dst.deliver(&q)
	})
	return true
}

// TestSimStarvedListener: 1,000 clients dial, 10 ms apart, a listener whose
// host takes in 1,000 frames a second through a 4,096-frame queue (issue 8
// item 5: the many-connections load test under -race beside a CPU hog), and
// each sends 32 KiB. Round trips reach seconds as the queue fills. With
// default settings every handshake must complete and every stream arrive:
// that needs probes that back off with the round trip. Probes capped at one
// a second whatever the RTT (two from the second timeout on) came to twice
// what this host can take in: they crowded out SYNs, first flights and ACKs,
// so handshakes ran out their 20 s and connections their 30 s user timeout.
func TestSimStarvedListener(t *testing.T) {
	seed := simSeed(t, 21)
	n := newSimNet(t, seed)
	a, b := n.host("clients"), n.host("server")
	const (
		conns   = 1000
		size    = 32 << 10
		spacing = 10 * time.Millisecond
	)
	r := &starvedReader{n: n, cost: time.Millisecond, limit: 4096}
	n.link(a, b).drop = r.admit
	// Default settings: a 20 s handshake timeout, a 30 s user timeout.
	cfg := defaultSimConfig()
	// Server connections by their client's connection ID.
	servers := make(map[uint64]*simConn)
	b.listenOn(80, cfg, func(c *simConn) {
		servers[c.e.peerCID] = c
		c.stream(0, 0, true) // reads everything, sends nothing back
	})
	var clients []*simConn
	var handshakes []time.Duration
	for i := range conns {
		dialAt := time.Duration(i) * spacing
		n.at(dialAt, func() {
			c := a.dial(b, 80, cfg)
			c.stream(size, seed+uint64(i), true)
			established := false
			c.onPump = func(c *simConn) {
				if !established && c.e.Established() {
					established = true
					handshakes = append(handshakes, n.now-dialAt)
				}
			}
			clients = append(clients, c)
		})
	}
	n.run(conns*spacing, nil)
	done := func() bool {
		for _, c := range clients {
			if c.e.Err() == nil && !(c.finished() && c.e.finAcked) {
				return false
			}
		}
		return true
	}
	if !n.run(5*time.Minute, done) {
		t.Fatal("transfers incomplete after 5 minutes")
	}

	var sent, ptos uint64
	failed := map[string]int{}
	for _, c := range clients {
		sent += c.e.stats.PacketsSent
		ptos += c.e.stats.PTOs
		switch s := servers[c.e.localCID]; {
		case c.e.Err() != nil:
			state := "established"
			if !c.e.Established() {
				state = "handshake"
			}
			failed[state+": "+c.e.Err().Error()]++
		case s == nil || !sameHash(c.sendHash, s.recvHash):
			t.Errorf("client %x: stream corrupted", c.e.localCID)
		}
	}
	slices.Sort(handshakes)
	var hs string
	if k := len(handshakes); k > 0 {
		hs = (handshakes[k/2].Round(time.Millisecond)).String() + " median, " + handshakes[k-1].Round(time.Millisecond).String() + " max"
	}
	// The data alone is 1,000 × 24 full packets.
	data := uint64(conns * ((size + 1414) / 1415))
	t.Logf("done at %v; %d handshakes (%s); client packets %d for %d of data, %d probe timeouts; receiver took %d frames, dropped %d",
		n.now.Round(time.Millisecond), len(handshakes), hs, sent, data, ptos, r.delivered, r.drops)
	if len(failed) > 0 {
		t.Errorf("connections failed: %v", failed)
	}
	if sent > 2*data {
		t.Errorf("%d packets sent to move %d packets of data: probes outran the receiver", sent, data)
	}
}

// TestSimUserTimeoutLongRTT: with a round trip of 12 s (a starved host), the
// client's first flight and its first probe are lost. Probes go out once per
// smoothed RTT at most, so the second round leaves 24 s after the first
// flight and its answer comes back 36 s after it: past the 30 s user timeout,
// but within four smoothed RTTs, the timeout's floor. The live peer must not
// be given up on, with keepalive on (the root package's default) or off: a
// loss probe is not a keepalive probe, whose own timeout (5 s) would
// otherwise end the connection 5 s after the probe at 36 s.
func TestSimUserTimeoutLongRTT(t *testing.T) {
	for _, ka := range []time.Duration{0, 15 * time.Second} {
		for _, size := range []int64{64 << 10, 1 << 10} {
			t.Run(fmt.Sprintf("keepalive=%v/%dB", ka, size), func(t *testing.T) { testUserTimeoutLongRTT(t, ka, size) })
		}
	}
}

// testUserTimeoutLongRTT: a write of size bytes; a small one leaves
// nothing new to send, so the probes are PINGs.
func testUserTimeoutLongRTT(t *testing.T, keepAlive time.Duration, size int64) {
	seed := simSeed(t, 22)
	cfg := defaultSimConfig()
	cfg.KeepAlive = keepAlive
	p := newSimPair(t, seed, cfg)
	ab, ba := p.n.link(p.a, p.b), p.n.link(p.b, p.a)
	ab.delay, ba.delay = 6*time.Second, 6*time.Second
	// The SYN passes; what the client sends once established at 12 s is
	// lost until 30 s: the first flight and the probe at 24 s.
	lost := 0
	ab.drop = func(sp *simPacket) bool {
		if sp.flags&FlagSYN == 0 && p.n.now < 30*time.Second {
			lost++
			return true
		}
		return false
	}
	p.dial(cfg)
	p.client.stream(size, seed, true)
	ok := p.n.run(2*time.Minute, func() bool {
		return p.client.e.Err() != nil || p.server != nil && p.server.e.EOF()
	})
	in := p.client.e.Info(p.n.wall())
	t.Logf("%d packets lost; srtt %v; %d probe timeouts; done at %v", lost, in.SRTT, in.ProbeTimeouts, p.n.now)
	if !ok || p.client.e.Err() != nil {
		t.Fatalf("live peer given up on: %v at %v", p.client.e.Err(), p.n.now)
	}
	if !sameHash(p.client.sendHash, p.server.recvHash) {
		t.Fatal("data corrupted")
	}
	// The server's acknowledgement reaches the client 6 s later; the
	// half-closed connection then idles, its keepalive PINGs answered
	// after 12 s each. Nothing may fail it.
	p.n.run(time.Minute, func() bool { return p.client.e.Err() != nil })
	if err := p.client.e.Err(); err != nil {
		t.Fatalf("live peer given up on after the transfer: %v at %v", err, p.n.now)
	}
}
