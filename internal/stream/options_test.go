package stream

import (
	"bytes"
	"testing"
	"time"
)

// TestEngineResizeBuffers changes both buffers with data held, in both
// directions, and checks that no byte is lost or reordered and the limits
// hold.
func TestEngineResizeBuffers(t *testing.T) {
	cfg := Config{NoDelay: true, SendBuffer: 40 << 10, RecvBuffer: 64 << 10}
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
			p.c.SetSendBuffer(1 << 20) // grow with data held
		case 6:
			p.s.SetRecvBuffer(1 << 20)
		case 20:
			p.c.SetSendBuffer(20 << 10) // shrink below what is held
			if p.c.Writable() != 0 {
				t.Fatalf("writable %d after shrinking below the held bytes", p.c.Writable())
			}
		case 25:
			p.s.SetRecvBuffer(32 << 10)
		}
		written += p.c.Write(data[written:])
		if held := int(p.c.sbuf.end - p.c.sbuf.una); held > max(p.c.cfg.SendBuffer, 1<<20) {
			t.Fatalf("send buffer holds %d", held)
		}
		p.flush()
		// Read slowly on odd steps, so the receive buffer holds data when it
		// is resized.
		if step%2 == 1 {
			n := p.s.Read(buf)
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
	p := newTestPair(t, Config{NoDelay: true}, Config{NoDelay: true})
	p.c.SetKeepAlive(-1)
	p.c.SetUserTimeout(0)
	if p.c.cfg.KeepAlive != 0 || p.c.cfg.UserTimeout != defaultUserTimeout {
		t.Fatalf("options %+v", p.c.cfg)
	}
	p.c.SetUserTimeout(time.Second)
	p.c.Write([]byte("x"))
	p.drop = func(bool, []byte) bool { return true }
	p.flush()
	for range 30 {
		p.tick(100 * time.Millisecond)
	}
	if p.c.Err() == nil {
		t.Fatal("a 1 s user timeout did not fire in 3 s")
	}
}
