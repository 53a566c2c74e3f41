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

// TestNeighborEvents: a neighbour that falls silent goes STALE and then
// expires, and the stack's subscribers hear of both.
func TestNeighborEvents(t *testing.T) {
	watchdog(t)
	h := memHosts(t, memlink.Config{Seed: 1})
	a := sideStack(h, "a", Config{Name: "watcher"})
	b := sideStack(h, "b", Config{Name: "quiet", NameLifetime: 600 * time.Millisecond})
	sub := a.subscribe(classLink)
	defer a.unsubscribe(sub)
	pa, err := a.listenPacket("myproto", h.aIf+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	pb, err := b.listenPacket("myproto", h.bIf+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	want := func(typ EventType, check func(*Event) bool) {
		t.Helper()
		done := make(chan struct{})
		timer := time.AfterFunc(5*time.Second, func() { close(done) })
		defer timer.Stop()
		for {
			ev, ok := sub.next(done)
			if !ok {
				t.Fatalf("no %v event", typ)
			}
			if ev.Type == typ && ev.Name == "quiet" && check(&ev) {
				t.Logf("%v", &ev)
				return
			}
		}
	}
	want(EventNameAppeared, func(e *Event) bool { return e.HardwareAddr.String() == h.bMAC.String() })
	b.silence()
	want(EventNeighborState, func(e *Event) bool { return e.State == "STALE" })
	want(EventNameLeft, func(e *Event) bool { return e.Reason == "expired" })
}
