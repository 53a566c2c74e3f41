package myproto

import (
	"bytes"
	"testing"
	"time"
)

// TestEngineResizeBuffers changes both buffers with data held, in both
// directions, and checks that no byte is lost or reordered and the limits
// hold.
func TestEngineResizeBuffers(t *testing.T) {
	cfg := engineConfig{NoDelay: true, SendBuffer: 40 << 10, RecvBuffer: 64 << 10}
	p := newTestPair(t, cfg, cfg)
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	var got []byte
	buf := make([]byte, 5000)
	written := 0
	for step := 0; len(got) < len(data); step++ {
		switch step {
		case 3:
			p.c.setSendBuffer(1 << 20) // grow with data held
		case 6:
			p.s.setRecvBuffer(1 << 20)
		case 20:
			p.c.setSendBuffer(20 << 10) // shrink below what is held
			if p.c.writable() != 0 {
				t.Fatalf("writable %d after shrinking below the held bytes", p.c.writable())
			}
		case 25:
			p.s.setRecvBuffer(32 << 10)
		}
		written += p.c.write(data[written:])
		if held := int(p.c.sbuf.end - p.c.sbuf.una); held > max(p.c.cfg.SendBuffer, 1<<20) {
			t.Fatalf("send buffer holds %d", held)
		}
		p.flush()
		// Read slowly on odd steps, so the receive buffer holds data when it
		// is resized.
		if step%2 == 1 {
			n := p.s.read(buf)
			got = append(got, buf[:n]...)
		} else {
			got = append(got, readAll(p.s)...)
		}
		p.tick(time.Millisecond)
		if step > 100000 {
			t.Fatal("stuck")
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatal("stream corrupted across buffer resizes")
	}
	if p.s.rcvWindow > 32<<10 {
		t.Errorf("receive window %d after shrinking the buffer to 32 KiB", p.s.rcvWindow)
	}
}

func TestEngineSetOptions(t *testing.T) {
	p := newTestPair(t, engineConfig{NoDelay: true}, engineConfig{NoDelay: true})
	p.c.setKeepAlive(-1)
	p.c.setUserTimeout(0)
	if p.c.cfg.KeepAlive != 0 || p.c.cfg.UserTimeout != defaultUserTimeout {
		t.Fatalf("options %+v", p.c.cfg)
	}
	p.c.setUserTimeout(time.Second)
	p.c.write([]byte("x"))
	p.drop = func(bool, []byte) bool { return true }
	p.flush()
	for range 30 {
		p.tick(100 * time.Millisecond)
	}
	if p.c.err() == nil {
		t.Fatal("a 1 s user timeout did not fire in 3 s")
	}
}
