package sys_test

import (
	"bytes"
	"errors"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/sys"
	"github.com/myproto/myproto/internal/testenv"
)

// eventTimeout bounds the wait for one link event. The kernel sends most
// at once; those that linkwatch defers (operational state) take up to a
// second only when it deems them not urgent, which the tests avoid.
const eventTimeout = time.Second

// watchLinks starts a watcher in ns (nil: the test's thread's namespace)
// and closes it in t's cleanup.
func watchLinks(t *testing.T, ns *sys.Netns) *sys.LinkWatcher {
	t.Helper()
	w, err := sys.WatchLinks(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// waitEvent returns the first event from w that match accepts, failing t
// if none comes within eventTimeout. It logs the events it passes over and
// the time the wait took.
func waitEvent(t *testing.T, w *sys.LinkWatcher, what string, match func(sys.LinkEvent) bool) sys.LinkEvent {
	t.Helper()
	start := time.Now()
	if err := w.SetReadDeadline(start.Add(eventTimeout)); err != nil {
		t.Fatal(err)
	}
	defer w.SetReadDeadline(time.Time{})
	var skipped []sys.LinkEvent
	for {
		ev, err := w.Next()
		if err != nil {
			t.Fatalf("waiting for %s: %v (passed over %+v)", what, err, skipped)
		}
		if match(ev) {
			t.Logf("%s after %v (passed over %d events)", what, time.Since(start).Round(time.Microsecond), len(skipped))
			return ev
		}
		skipped = append(skipped, ev)
	}
}

// noEvent fails t if w reports an event that bad accepts within d.
func noEvent(t *testing.T, w *sys.LinkWatcher, d time.Duration, bad func(sys.LinkEvent) bool) {
	t.Helper()
	if err := w.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	defer w.SetReadDeadline(time.Time{})
	for {
		ev, err := w.Next()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if bad(ev) {
			t.Errorf("unexpected event %+v", ev)
		}
	}
}

func named(name string) func(sys.LinkEvent) bool {
	return func(ev sys.LinkEvent) bool { return ev.Name == name }
}

// TestIntegrationWatchLinks follows a veth pair through the changes the
// link functions make, each event within eventTimeout of its change.
func TestIntegrationWatchLinks(t *testing.T) {
	testenv.Watchdog(t, time.Minute)
	ns := newNetnsOrSkip(t)
	if err := ns.Do(func() error { return sys.CreateVeth("vwa", "vwb", 0, nil) }); err != nil {
		t.Fatal(err)
	}
	a, b := interfaceIn(t, ns, "vwa"), interfaceIn(t, ns, "vwb")
	w := watchLinks(t, ns)

	// Administratively down: IFF_UP goes at once.
	if err := sys.SetLinkUp(ns, "vwa", false); err != nil {
		t.Fatal(err)
	}
	ev := waitEvent(t, w, "vwa down", func(ev sys.LinkEvent) bool { return ev.Index == a.Index && !ev.Up })
	want := sys.LinkEvent{Index: a.Index, Name: "vwa", MTU: 1500, HardwareAddr: a.HardwareAddr}
	if ev.Name != want.Name || ev.MTU != want.MTU || !bytes.Equal(ev.HardwareAddr, want.HardwareAddr) || ev.Deleted {
		t.Errorf("vwa down: %+v, want %+v", ev, want)
	}
	// The peer stays IFF_UP but loses its carrier, so it is not Up either.
	waitEvent(t, w, "vwb losing its carrier", func(ev sys.LinkEvent) bool { return ev.Index == b.Index && !ev.Up })

	if err := sys.SetLinkUp(ns, "vwa", true); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, w, "vwa up", func(ev sys.LinkEvent) bool { return ev.Index == a.Index && ev.Up })
	waitEvent(t, w, "vwb up", func(ev sys.LinkEvent) bool { return ev.Index == b.Index && ev.Up })

	if err := sys.SetLinkMTU(ns, "vwa", 9000); err != nil {
		t.Fatal(err)
	}
	ev = waitEvent(t, w, "vwa MTU 9000", func(ev sys.LinkEvent) bool { return ev.Index == a.Index && ev.MTU == 9000 })
	if !ev.Up || ev.Deleted {
		t.Errorf("vwa MTU 9000: %+v, want Up and not Deleted", ev)
	}

	// Deleting one end deletes both.
	if err := sys.DeleteLink(ns, "vwa"); err != nil {
		t.Fatal(err)
	}
	deleted := map[int]bool{}
	waitEvent(t, w, "both ends deleted", func(ev sys.LinkEvent) bool {
		if ev.Deleted {
			deleted[ev.Index] = true
		}
		return deleted[a.Index] && deleted[b.Index]
	})
}

// TestIntegrationWatchLinksNetns checks that a watcher sees its own
// namespace's links only, and that a link moved away is Deleted there.
func TestIntegrationWatchLinksNetns(t *testing.T) {
	testenv.Watchdog(t, time.Minute)
	nsA, nsB := newNetnsOrSkip(t), newNetnsOrSkip(t)
	if err := nsA.Do(func() error { return sys.CreateVeth("vxa", "vxb", 0, nil) }); err != nil {
		t.Fatal(err)
	}
	if err := nsB.Do(func() error { return sys.CreateVeth("vya", "vyb", 0, nil) }); err != nil {
		t.Fatal(err)
	}
	wA, wB := watchLinks(t, nsA), watchLinks(t, nsB)

	if err := sys.SetLinkMTU(nsA, "vxa", 1400); err != nil {
		t.Fatal(err)
	}
	if err := sys.SetLinkMTU(nsB, "vya", 1300); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, wA, "vxa MTU 1400 in A", func(ev sys.LinkEvent) bool { return ev.Name == "vxa" && ev.MTU == 1400 })
	waitEvent(t, wB, "vya MTU 1300 in B", func(ev sys.LinkEvent) bool { return ev.Name == "vya" && ev.MTU == 1300 })
	// Indexes repeat across namespaces, names here do not.
	noEvent(t, wA, 100*time.Millisecond, func(ev sys.LinkEvent) bool { return ev.Name != "vxa" && ev.Name != "vxb" })
	noEvent(t, wB, 100*time.Millisecond, func(ev sys.LinkEvent) bool { return ev.Name != "vya" && ev.Name != "vyb" })

	// CreateVeth makes vmb next to vma in A and then moves it to B.
	if err := nsA.Do(func() error { return sys.CreateVeth("vma", "vmb", 0, nsB) }); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, wA, "vmb leaving A", func(ev sys.LinkEvent) bool { return ev.Name == "vmb" && ev.Deleted })
	waitEvent(t, wB, "vmb arriving in B", func(ev sys.LinkEvent) bool { return ev.Name == "vmb" && !ev.Deleted })
	noEvent(t, wB, 100*time.Millisecond, named("vma"))
}

// TestIntegrationWatchLinksOverflow fills the watcher's socket buffer and
// checks that the loss is reported, not hidden, and that the events queued
// before it are discarded: what follows is newer than the loss.
func TestIntegrationWatchLinksOverflow(t *testing.T) {
	testenv.Watchdog(t, time.Minute)
	ns := newNetnsOrSkip(t)
	if err := ns.Do(func() error { return sys.CreateVeth("vwa", "vwb", 0, nil) }); err != nil {
		t.Fatal(err)
	}
	w := watchLinks(t, ns)

	// Each change queues a notification of about 1.5 KiB, taking more
	// than that of the socket buffer (net.core.rmem_default, 208 KiB by
	// default, where under a hundred fit).
	changes := 500
	if b, err := os.ReadFile("/proc/sys/net/core/rmem_default"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			changes = max(changes, n/1000)
		}
	}
	for i := range changes {
		if err := sys.SetLinkMTU(ns, "vwa", 1400+i%2); err != nil {
			t.Fatal(err)
		}
	}
	_, err := w.Next()
	if !errors.Is(err, syscall.ENOBUFS) {
		t.Fatalf("Next after %d unread changes: %v, want an error wrapping ENOBUFS", changes, err)
	}
	t.Logf("after %d changes: %v", changes, err)

	if err := sys.SetLinkMTU(ns, "vwa", 1234); err != nil {
		t.Fatal(err)
	}
	ev := waitEvent(t, w, "vwa MTU 1234", named("vwa"))
	if ev.MTU != 1234 {
		t.Errorf("first event after the loss: %+v, want MTU 1234: events from before the loss were kept", ev)
	}
}

// TestWatchLinksClose checks that Close unblocks a blocked Next, that the
// watcher leaves no goroutine behind, and the errors after Close. It needs
// no privilege: subscribing is open to anyone, and the test changes nothing.
func TestWatchLinksClose(t *testing.T) {
	testenv.Watchdog(t, time.Minute)
	before := runtime.NumGoroutine()
	w, err := sys.WatchLinks(nil)
	if err != nil {
		t.Fatal(err)
	}

	// A deadline makes Next return, and leaves the watcher usable.
	if err := w.SetReadDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	for {
		// Events from the namespace, if any, come first.
		_, err := w.Next()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("Next past the deadline: %v, want os.ErrDeadlineExceeded", err)
		}
	}
	if err := w.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}

	errc := make(chan error, 1)
	go func() {
		for {
			if _, err := w.Next(); err != nil {
				errc <- err
				return
			}
		}
	}()
	// Give Next time to block; Close must work either way.
	time.Sleep(50 * time.Millisecond)
	closed := time.Now()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Next unblocked by Close: %v, want net.ErrClosed", err)
		}
		t.Logf("Close unblocked Next after %v", time.Since(closed).Round(time.Microsecond))
	case <-time.After(eventTimeout):
		t.Fatalf("Next still blocked %v after Close", eventTimeout)
	}

	for name, err := range map[string]error{
		"Close":           w.Close(),
		"Next":            func() error { _, err := w.Next(); return err }(),
		"SetReadDeadline": w.SetReadDeadline(time.Now()),
	} {
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s after Close: %v, want net.ErrClosed", name, err)
		}
	}

	// The watcher starts no goroutine, so only ours had to end.
	for deadline := time.Now().Add(time.Second); runtime.NumGoroutine() > before; {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before WatchLinks:\n%s",
				runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond)
	}
}
