package myproto

import (
	"context"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/memlink"
)

// wantWatch waits for the next event of a watch.
func wantWatch(t *testing.T, ch <-chan Event, typ EventType, h *testHosts) {
	t.Helper()
	select {
	case ev := <-ch:
		if ev.Type != typ || ev.Name != "host-b" || ev.Interface != h.aIf ||
			(typ != EventNameLeft || ev.Reason != "expired") && ev.HardwareAddr.String() != h.bMAC.String() {
			t.Fatalf("event %v, want %v of host-b", &ev, typ)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no %v event", typ)
	}
}

// TestWatch: a watch reports a name appearing when its holder starts,
// leaving when it closes, and appearing again; and at once a name already
// there.
func TestWatch(t *testing.T) {
	watchdog(t)
	h := memHosts(t, memlink.Config{Seed: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := h.a.watchName(ctx, "Host-B")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ch:
		t.Fatalf("event %v before b started", &ev)
	case <-time.After(200 * time.Millisecond):
	}
	pb, err := h.b.listenPacket("myproto", h.bIf+":0")
	if err != nil {
		t.Fatal(err)
	}
	wantWatch(t, ch, EventNameAppeared, h)
	pb.Close()
	wantWatch(t, ch, EventNameLeft, h)
	pb, err = h.b.listenPacket("myproto", h.bIf+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	wantWatch(t, ch, EventNameAppeared, h)

	// A second watch finds the name at once.
	ctx2, cancel2 := context.WithCancel(ctx)
	ch2, err := h.a.watchName(ctx2, "host-b")
	if err != nil {
		t.Fatal(err)
	}
	wantWatch(t, ch2, EventNameAppeared, h)
	cancel2()
	for range ch2 {
	}
	cancel()
	for range ch {
	}
}
