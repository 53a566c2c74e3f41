package stream

import (
	"crypto/hmac"
	"crypto/sha256"
	"testing"
	"time"
)

var (
	cookieMAC  = [6]byte{2, 0, 0x5e, 0x10, 0, 1}
	cookieTime = time.Date(2026, 11, 23, 9, 0, 30, 0, time.UTC) // mid-epoch
)

func synBody(cid uint64, pn uint64) []byte {
	b := make([]byte, pnLen+synFrameLen)
	n := putPN(b, pn)
	putHandshakeFrame(b[n:], sfSyn, hsParams{cid: cid, maxData: 1 << 18, maxPacket: 1476})
	return b
}

func confirmBody(cid uint64, rtt uint32) []byte {
	b := make([]byte, pnLen+confirmFrameLen+1)
	n := putPN(b, 77)
	n += putConfirmFrame(b[n:], &confirmFrame{
		client:    hsParams{cid: cid, maxData: 1 << 18, maxPacket: 1476},
		server:    hsParams{maxData: 1 << 19, maxPacket: 9000 - headerLen},
		rttMicros: rtt,
	})
	b[n] = sfPing
	return b
}

func TestHMACMatchesStdlib(t *testing.T) {
	for _, key := range [][]byte{[]byte("k"), make([]byte, 64), make([]byte, 100)} {
		for _, msg := range [][]byte{nil, []byte("message"), make([]byte, 64)} {
			k := newHMACKey(key)
			got := k.mac(msg)
			m := hmac.New(sha256.New, key)
			m.Write(msg)
			if want := m.Sum(nil); string(got[:]) != string(want) {
				t.Fatalf("HMAC mismatch for key %d bytes, msg %d bytes", len(key), len(msg))
			}
		}
	}
}

func TestCookieRoundTrip(t *testing.T) {
	jar := NewCookieJar([]byte("secret"), Config{MaxPacket: 9000 - headerLen, RecvBuffer: 1 << 20})
	out := make([]byte, 100)
	n, dst, ok := jar.RespondSYN(cookieTime, cookieMAC, 50000, 80, synBody(42, 1000), out)
	if !ok || dst != 42 {
		t.Fatalf("respondSYN: ok %v dst %d", ok, dst)
	}
	var pv packetView
	if !parsePacket(out[:n], &pv) || !pv.hasSA || !pv.hasAck {
		t.Fatal("SYN-ACK does not parse")
	}
	if pv.ack.ranges[0] != (pnRange{1000, 1000}) {
		t.Errorf("SYN-ACK acknowledges %v, want the SYN's 1000", pv.ack.ranges[0])
	}
	c := pv.synAck.cid
	if c == 0 || pv.pn != initialPN(c) {
		t.Errorf("cookie %x, packet number %d", c, pv.pn)
	}
	if pv.synAck.maxPacket != 9000-headerLen || pv.synAck.maxData != 256<<10 {
		t.Errorf("SYN-ACK advertises %+v", pv.synAck)
	}
	// Stateless: a retransmitted SYN gets the same cookie.
	n2, _, _ := jar.RespondSYN(cookieTime.Add(time.Second), cookieMAC, 50000, 80, synBody(42, 1001), out)
	var pv2 packetView
	if !parsePacket(out[:n2], &pv2) || pv2.synAck.cid != c {
		t.Error("cookie changed within an epoch")
	}

	p, ok := jar.Accept(cookieTime, cookieMAC, 50000, 80, c, confirmBody(42, 123))
	if !ok {
		t.Fatal("valid confirmation rejected")
	}
	want := HandshakeParams{peerCID: 42, peerMaxData: 1 << 18, peerMaxPacket: 1476, localMaxData: 1 << 19, localMaxPacket: 9000 - headerLen, rtt: 123 * time.Microsecond,
		cookie: c, epoch: cookieTime.Unix() / int64(cookieEpoch/time.Second)}
	if p != want {
		t.Errorf("params %+v, want %+v", p, want)
	}

	// Anything that differs fails.
	for name, f := range map[string]func() bool{
		"other MAC": func() bool {
			m := cookieMAC
			m[5]++
			_, ok := jar.Accept(cookieTime, m, 50000, 80, c, confirmBody(42, 0))
			return ok
		},
		"other source port": func() bool { _, ok := jar.Accept(cookieTime, cookieMAC, 50001, 80, c, confirmBody(42, 0)); return ok },
		"other dest port":   func() bool { _, ok := jar.Accept(cookieTime, cookieMAC, 50000, 81, c, confirmBody(42, 0)); return ok },
		"other client CID":  func() bool { _, ok := jar.Accept(cookieTime, cookieMAC, 50000, 80, c, confirmBody(43, 0)); return ok },
		"other cookie":      func() bool { _, ok := jar.Accept(cookieTime, cookieMAC, 50000, 80, c^4, confirmBody(42, 0)); return ok },
		"no confirmation":   func() bool { _, ok := jar.Accept(cookieTime, cookieMAC, 50000, 80, c, synBody(42, 1)); return ok },
		"other secret": func() bool {
			_, ok := NewCookieJar([]byte("other")).Accept(cookieTime, cookieMAC, 50000, 80, c, confirmBody(42, 0))
			return ok
		},
	} {
		if f() {
			t.Errorf("%s accepted", name)
		}
	}

	// Valid for the rest of this epoch and the next, then never again.
	for _, d := range []time.Duration{0, 29 * time.Second, 30 * time.Second, 89 * time.Second} {
		if _, ok := jar.Accept(cookieTime.Add(d), cookieMAC, 50000, 80, c, confirmBody(42, 0)); !ok {
			t.Errorf("cookie rejected %v after issue", d)
		}
	}
	for _, d := range []time.Duration{90 * time.Second, 150 * time.Second, 1000 * time.Second, -31 * time.Second} {
		if _, ok := jar.Accept(cookieTime.Add(d), cookieMAC, 50000, 80, c, confirmBody(42, 0)); ok {
			t.Errorf("cookie accepted %v after issue", d)
		}
	}
}

func TestCookieRejectsBadSYN(t *testing.T) {
	jar := NewCookieJar(nil)
	out := make([]byte, 100)
	for name, body := range map[string][]byte{
		"empty":    nil,
		"zero CID": synBody(0, 1),
		"no SYN":   confirmBody(1, 0),
		"garbage":  []byte("0123456789abcdef"),
		// Max Packet follows the packet number, the type, the CID and Max Data.
		"small pkts": func() []byte { b := synBody(1, 1); b[pnLen+17], b[pnLen+18] = 0, 100; return b }(),
	} {
		if _, _, ok := jar.RespondSYN(cookieTime, cookieMAC, 1, 2, body, out); ok {
			t.Errorf("%s: SYN-ACK sent", name)
		}
	}
	if _, _, ok := jar.RespondSYN(cookieTime, cookieMAC, 1, 2, synBody(1, 1), out[:10]); ok {
		t.Error("SYN-ACK built into a short buffer")
	}
}

func TestRefuseSYN(t *testing.T) {
	out := make([]byte, 64)
	n, dst, ok := RefuseSYN(synBody(99, 4242), out)
	if !ok || dst != 99 {
		t.Fatalf("refuseSYN: %v %d", ok, dst)
	}
	var pv packetView
	if !parsePacket(out[:n], &pv) || !pv.hasReset || pv.proof != 4242 {
		t.Fatalf("refusal %+v", pv)
	}
	if _, _, ok := RefuseSYN(confirmBody(1, 0), out); ok {
		t.Error("refused a non-SYN")
	}
}

func TestCookieNoAllocs(t *testing.T) {
	jar := NewCookieJar([]byte("k"))
	out := make([]byte, 100)
	syn := synBody(42, 1)
	n, _, _ := jar.RespondSYN(cookieTime, cookieMAC, 1, 80, syn, out)
	var pv packetView
	parsePacket(out[:n], &pv)
	conf := confirmBody(42, 0)
	if a := testing.AllocsPerRun(100, func() { jar.RespondSYN(cookieTime, cookieMAC, 1, 80, syn, out) }); a != 0 {
		t.Errorf("respondSYN allocates %.1f times", a)
	}
	if a := testing.AllocsPerRun(100, func() { jar.Accept(cookieTime, cookieMAC, 1, 80, pv.synAck.cid, conf) }); a != 0 {
		t.Errorf("accept allocates %.1f times", a)
	}
}

func BenchmarkCookieRespondSYN(b *testing.B) {
	jar := NewCookieJar([]byte("k"))
	out := make([]byte, 100)
	syn := synBody(42, 1)
	b.ReportAllocs()
	for b.Loop() {
		jar.RespondSYN(cookieTime, cookieMAC, 1, 80, syn, out)
	}
}
