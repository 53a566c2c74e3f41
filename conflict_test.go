package myproto

import (
	"bytes"
	"log"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/memlink"
)

// syncBuffer is a bytes.Buffer the logger writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestNameConflictLoggedByDefault: without Config.OnNameConflict, a stack
// that loses its name to another station on the link says so in the log.
func TestNameConflictLoggedByDefault(t *testing.T) {
	watchdog(t)
	var buf syncBuffer
	out, flags := log.Writer(), log.Flags()
	log.SetOutput(&buf)
	defer log.SetOutput(out)
	defer log.SetFlags(flags)

	h := memHosts(t, memlink.Config{Seed: 1})
	first := sideStack(h, "a", Config{Name: "twin"})
	second := sideStack(h, "b", Config{Name: "twin"})
	p1, err := first.listenPacket("myproto", h.aIf+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer p1.Close()
	time.Sleep(2 * probeWait)
	p2, err := second.listenPacket("myproto", h.bIf+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	want := `myproto: name "twin" on ` + h.bIf + ` is also claimed by ` + h.aMAC.String() + `; this stack gave it up`
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(buf.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("log %q, want %q", buf.String(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
