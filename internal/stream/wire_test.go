package stream

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestVarint(t *testing.T) {
	var b [8]byte
	for _, v := range []uint64{0, 1, 63, 64, 16383, 16384, 1<<30 - 1, 1 << 30, maxVarint} {
		n := putVarint(b[:], v)
		if n != varintLen(v) {
			t.Errorf("putVarint(%d) used %d bytes, varintLen says %d", v, n, varintLen(v))
		}
		got, m := readVarint(b[:n])
		if got != v || m != n {
			t.Errorf("varint %d: read %d (%d bytes)", v, got, m)
		}
		if _, m := readVarint(b[:n-1]); m != 0 && n > 1 {
			t.Errorf("truncated varint %d read", v)
		}
	}
}

// TestAckFrameRoundTrip encodes random sets of received packet numbers and
// checks that the decoded ACK reports exactly the most recent ranges.
func TestAckFrameRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1500)
	for iter := range 2000 {
		var rs rangeSet
		pn := rng.Uint64N(1 << 40)
		for range 1 + rng.IntN(60) {
			l := 1 + rng.Uint64N(50)
			rs.add(pn, pn+l)
			pn += l + 1 + rng.Uint64N(1000)
		}
		room := 8 + rng.IntN(300)
		delay := rng.Uint64N(1 << 20)
		n := putAckFrame(buf, room, &rs, delay)
		if n > room {
			t.Fatalf("ACK frame of %d bytes in %d of room", n, room)
		}
		if n == 0 {
			if room >= minAckLen(&rs, delay) {
				t.Fatalf("iter %d: no ACK in %d bytes, the minimal one takes %d", iter, room, minAckLen(&rs, delay))
			}
			continue
		}
		var a ackFrame
		if m := parseAck(buf[1:n], &a); m != n-1 {
			t.Fatalf("iter %d: parseAck used %d of %d", iter, m, n-1)
		}
		if a.delay != delay {
			t.Fatalf("delay %d, want %d", a.delay, delay)
		}
		if a.n > maxAckRanges {
			t.Fatalf("%d ranges", a.n)
		}
		for i := 0; i < a.n; i++ {
			r := rs.r[len(rs.r)-1-i]
			if a.ranges[i] != (pnRange{r.lo, r.hi - 1}) {
				t.Fatalf("iter %d range %d: %v, want [%d, %d]", iter, i, a.ranges[i], r.lo, r.hi-1)
			}
		}
		if a.n < min(len(rs.r), maxAckRanges) && n+8 < room {
			t.Fatalf("iter %d: only %d of %d ranges with %d bytes spare", iter, a.n, len(rs.r), room-n)
		}
	}
}

func TestParsePacketFrames(t *testing.T) {
	buf := make([]byte, 2000)
	n := putPN(buf, 12345)
	n += putHandshakeFrame(buf[n:], sfSynAck, hsParams{cid: 7, maxData: 1 << 20, maxPacket: 1476})
	n += putConfirmFrame(buf[n:], &confirmFrame{client: hsParams{cid: 9, maxData: 99, maxPacket: 300}, server: hsParams{maxData: 77, maxPacket: 400}, rttMicros: 55})
	n += putU64Frame(buf[n:], sfMaxData, 1<<30)
	n += putU64Frame(buf[n:], sfDataBlocked, 1<<29)
	n += putStreamHeader(buf[n:], 4096, 5, true)
	n += copy(buf[n:], "hello")
	buf[n] = sfPing
	n++
	buf[n] = sfPadding
	n++
	var rs rangeSet
	rs.add(10, 20)
	rs.add(30, 31)
	n += putAckFrame(buf[n:], 100, &rs, 250)
	var pv packetView
	if !parsePacket(buf[:n], &pv) {
		t.Fatal("parse failed")
	}
	if pv.pn != 12345 || !pv.hasSA || pv.synAck.cid != 7 || pv.synAck.maxData != 1<<20 || pv.synAck.maxPacket != 1476 {
		t.Errorf("SYN-ACK: %+v", pv.synAck)
	}
	if !pv.hasConf || pv.confirm.client.cid != 9 || pv.confirm.server.maxPacket != 400 || pv.confirm.rttMicros != 55 {
		t.Errorf("confirm: %+v", pv.confirm)
	}
	if !pv.hasAck || pv.ack.n != 2 || pv.ack.ranges[0] != (pnRange{30, 30}) || pv.ack.ranges[1] != (pnRange{10, 19}) || pv.ack.delay != 250 {
		t.Errorf("ack: %+v", pv.ack)
	}
	if pv.nframes != 4 || !pv.elicit {
		t.Fatalf("%d frames", pv.nframes)
	}
	f := pv.frames
	if f[0].typ != sfMaxData || f[0].value != 1<<30 || f[1].typ != sfDataBlocked || f[1].value != 1<<29 {
		t.Errorf("control frames %+v %+v", f[0], f[1])
	}
	if f[2].typ != sfStream || !f[2].fin || f[2].value != 4096 || string(f[2].data) != "hello" || f[3].typ != sfPing {
		t.Errorf("stream %+v", f[2])
	}
	// Every truncation is rejected or parses a prefix; none panics.
	for i := range n {
		parsePacket(buf[:i], &pv)
	}
	// Two ACK frames in one body are malformed.
	m := putPN(buf, 1)
	m += putAckFrame(buf[m:], 100, &rs, 0)
	m += putAckFrame(buf[m:], 100, &rs, 0)
	if parsePacket(buf[:m], &pv) {
		t.Error("two ACK frames accepted")
	}
	// An unknown frame type is malformed.
	if parsePacket([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0x7f}, &pv) {
		t.Error("unknown frame type accepted")
	}
	// A stream frame whose offset plus length overflows is malformed.
	m = putPN(buf, 1)
	m += putStreamHeader(buf[m:], maxStreamOffset, 1, false)
	buf[m] = 'x'
	if parsePacket(buf[:m+1], &pv) {
		t.Error("stream frame beyond the maximum offset accepted")
	}
}

func TestParsePacketNoAllocs(t *testing.T) {
	buf := make([]byte, 1500)
	n := putPN(buf, 1)
	n += putStreamHeader(buf[n:], 0, 1000, false)
	n += 1000
	var rs rangeSet
	rs.add(1, 100)
	n += putAckFrame(buf[n:], 100, &rs, 3)
	var pv packetView
	if a := testing.AllocsPerRun(100, func() { parsePacket(buf[:n], &pv) }); a != 0 {
		t.Errorf("parsePacket allocates %.1f times", a)
	}
}

func FuzzParsePacket(f *testing.F) {
	buf := make([]byte, 200)
	n := putPN(buf, 1)
	var rs rangeSet
	rs.add(1, 5)
	rs.add(9, 12)
	n += putAckFrame(buf[n:], 100, &rs, 3)
	n += putStreamHeader(buf[n:], 0, 3, true)
	n += copy(buf[n:], "abc")
	f.Add(bytes.Clone(buf[:n]))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, sfPing})
	f.Fuzz(func(t *testing.T, b []byte) {
		var pv packetView
		if !parsePacket(b, &pv) {
			return
		}
		for i := 0; i < pv.nframes; i++ {
			if fr := pv.frames[i]; fr.typ == sfStream && fr.value+uint64(len(fr.data)) > maxStreamOffset {
				t.Fatalf("stream frame beyond the maximum offset")
			}
		}
		if pv.hasAck {
			for i := 0; i < pv.ack.n; i++ {
				r := pv.ack.ranges[i]
				if r.lo > r.hi || (i > 0 && r.hi+1 >= pv.ack.ranges[i-1].lo) {
					t.Fatalf("bad ACK ranges %v", pv.ack.ranges[:pv.ack.n])
				}
			}
		}
	})
}
