package sys

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/link"
)

// ringTestNet opens a sender on mpa0 and a QuietLink with a receive ring of
// ringSize bytes on mpa1.
func ringTestNet(t *testing.T, ringSize int) (n *packetTestNet, tx *PacketLink, rx *QuietLink) {
	n = startPacketTestNet(t)
	everyPort, err := Filter(FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: n.b.HardwareAddr,
		Rules: []Rule{{Ports: allPorts(), InPorts: true}}})
	if err != nil {
		t.Fatal(err)
	}
	rx = n.openQuiet(t, n.b, PacketConfig{EtherType: testEtherType, Filter: everyPort, RingSize: ringSize})
	if rx.ring == nil {
		t.Fatal("no receive ring")
	}
	tx = n.open(t, n.a, PacketConfig{EtherType: testEtherType})
	return n, tx, rx
}

// TestIntegrationQuietLinkRing moves frames of every size through a ring of
// 80 slots many times over, in batches smaller than the ring and reading
// with each way of reading, so that the reader's position wraps round
// again and again in the middle of a batch; every frame arrives once and
// intact. A frame longer than the reader's buffer is cut to it.
func TestIntegrationQuietLinkRing(t *testing.T) {
	packetWatchdog(t, time.Minute)
	n, tx, rx := ringTestNet(t, 128<<10) // 2 blocks of 40 slots of 1600 bytes
	if rx.ring.frames != 80 {
		t.Fatalf("ring of %d slots, want 80", rx.ring.frames)
	}
	const count, batch = 3000, 37
	sent := make([]link.Message, count)
	for i := range sent {
		b := make([]byte, frameSize(i, 1500))
		sent[i] = link.Message{Buf: putFrame(b, n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, uint16(i), uint32(i), len(b)), N: len(b)}
	}
	var got [][]byte
	ms := make([]link.Message, 16)
	reads := []func([]link.Message) (int, error){rx.ReadBatch, rx.ReadBatchOnThread, rx.TryReadBatch}
	for i := 0; i < count; i += batch {
		if k, err := tx.WriteBatch(sent[i:min(i+batch, count)]); err != nil || k != min(batch, count-i) {
			t.Fatalf("WriteBatch = %d, %v", k, err)
		}
		for len(got) < min(i+batch, count) {
			for j := range ms {
				ms[j] = link.Message{Buf: make([]byte, 1514)}
			}
			k, err := reads[len(got)%len(reads)](ms)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			for _, m := range ms[:k] {
				got = append(got, m.Buf[:m.N])
			}
		}
	}
	checkFrames(t, got, sent)
	if st, err := rx.Stats(); err != nil || st.Drops != 0 || st.Packets != count {
		t.Errorf("Stats = %+v, %v; want %d packets, no drops", st, err, count)
	}

	b := putFrame(make([]byte, 1000), n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 80, 1, 1000)
	if _, err := tx.WriteBatch([]link.Message{{Buf: b, N: len(b)}}); err != nil {
		t.Fatal(err)
	}
	ms = []link.Message{{Buf: make([]byte, 100)}}
	if k, err := rx.ReadBatch(ms); err != nil || k != 1 {
		t.Fatalf("ReadBatch = %d, %v", k, err)
	}
	if ms[0].N != 100 || !bytes.Equal(ms[0].Buf, b[:100]) {
		t.Errorf("cut frame: N = %d, % x; want 100, % x", ms[0].N, ms[0].Buf[:ms[0].N], b[:100])
	}
}

// TestIntegrationQuietLinkRingFull sends more frames than the ring holds
// while nobody reads: the kernel drops the rest, Stats counts them, and the
// ring takes frames again once it is read.
func TestIntegrationQuietLinkRingFull(t *testing.T) {
	packetWatchdog(t, time.Minute)
	n, tx, rx := ringTestNet(t, 128<<10)
	const count = 200
	sent := make([]link.Message, count)
	for i := range sent {
		b := make([]byte, 300)
		sent[i] = link.Message{Buf: putFrame(b, n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 80, uint32(i), len(b)), N: len(b)}
	}
	if k, err := tx.WriteBatch(sent); err != nil || k != count {
		t.Fatalf("WriteBatch = %d, %v", k, err)
	}
	time.Sleep(50 * time.Millisecond) // veth delivers from the sender's softirq; let it finish
	var got [][]byte
	for {
		ms := []link.Message{{Buf: make([]byte, 1514)}, {Buf: make([]byte, 1514)}, {Buf: make([]byte, 1514)}}
		k, err := rx.TryReadBatch(ms)
		if err != nil {
			t.Fatal(err)
		}
		if k == 0 {
			break
		}
		for _, m := range ms[:k] {
			got = append(got, m.Buf[:m.N])
		}
	}
	if len(got) != rx.ring.frames {
		t.Errorf("read %d frames from a ring of %d slots", len(got), rx.ring.frames)
	}
	for i, f := range got {
		if seq := binary.BigEndian.Uint32(f[38:]); seq != uint32(i) {
			t.Fatalf("frame %d has sequence number %d", i, seq)
		}
	}
	st, err := rx.Stats()
	if err != nil || st.Packets != count || st.Drops != count-uint64(len(got)) {
		t.Errorf("Stats = %+v, %v; want %d packets, %d drops", st, err, count, count-len(got))
	}
	b := putFrame(make([]byte, 300), n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 80, 9999, 300)
	if _, err := tx.WriteBatch([]link.Message{{Buf: b, N: len(b)}}); err != nil {
		t.Fatal(err)
	}
	f, err := readFrames(rx, 1, 1, 1514)
	if err != nil || !bytes.Equal(f[0], b) {
		t.Fatalf("after the drops: read %v, %v", f, err)
	}
}

// TestIntegrationQuietLinkRingMTUGrows raises the MTU of both ends after the
// ring was made for 1500-byte frames: the first jumbo frame is lost (handed
// on cut short, which the stack drops as malformed), the ring is made again
// with larger slots, and the jumbo frames after it arrive whole.
func TestIntegrationQuietLinkRingMTUGrows(t *testing.T) {
	packetWatchdog(t, time.Minute)
	n, tx, rx := ringTestNet(t, 1<<20)
	n.do(func() {
		n.ip(t, "link", "set", "mpa0", "mtu", "9000")
		n.ip(t, "link", "set", "mpa1", "mtu", "9000")
	})
	const size = 9014
	for seq := uint32(1); seq <= 2; seq++ {
		b := putFrame(make([]byte, size), n.b.HardwareAddr, n.a.HardwareAddr, testEtherType, 80, seq, size)
		if _, err := tx.WriteBatch([]link.Message{{Buf: b, N: len(b)}}); err != nil {
			t.Fatal(err)
		}
		f, err := readFrames(rx, 1, 1, size)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case seq == 1 && len(f[0]) >= size:
			t.Errorf("the first jumbo frame came whole (%d bytes) through a ring for 1500-byte frames", len(f[0]))
		case seq == 2 && !bytes.Equal(f[0], b):
			t.Errorf("the second jumbo frame came as %d bytes, want the %d sent", len(f[0]), size)
		}
	}
	if rx.ring.frameSize < size {
		t.Errorf("ring slots of %d bytes after a %d-byte frame", rx.ring.frameSize, size)
	}
}
