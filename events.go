package myproto

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Events: what `ip monitor` reports for the kernel's protocols, for a
// myproto stack. The stack emits them where they happen — names in the
// neighbour tables, link events, sockets opening and closing, connections
// established and ended — to the subscribers of its event hub, the
// diagnostic channel's subscriptions (diag.go) and Subscribe in this
// process. None of it is on the per-frame path: every hook is behind one
// atomic load that is false while nobody subscribes.

// An EventType says what an Event reports. The zero value is invalid.
type EventType uint8

const (
	_ EventType = iota
	// EventNameAppeared: a neighbour's name entered a neighbour table.
	EventNameAppeared
	// EventNameLeft: it left: a goodbye, expiry or eviction (Reason).
	EventNameLeft
	// EventNameMoved: a known name came with a new node ID or MAC: the
	// neighbour restarted or moved.
	EventNameMoved
	// EventNeighborState: a neighbour went REACHABLE or STALE (State).
	EventNeighborState
	// EventNameConflict: another station claims one of the stack's own
	// names (Kept says whether the stack kept it).
	EventNameConflict
	// EventLinkDown: an interface the stack uses went down or was
	// deleted.
	EventLinkDown
	// EventLinkUp: it came back up.
	EventLinkUp
	// EventLinkMTU: its MTU changed (MTU).
	EventLinkMTU
	// EventLinkAddr: its MAC changed (HardwareAddr).
	EventLinkAddr
	// EventListen: a listener or datagram socket opened (Proto, Local).
	EventListen
	// EventListenClose: one closed (Proto, Local).
	EventListenClose
	// EventConnEstablished: a stream connection completed its handshake.
	EventConnEstablished
	// EventConnClosed: an established connection ended; Reason is empty
	// after an orderly close, else why ("connection reset by peer",
	// "connection timed out", ...).
	EventConnClosed
	// EventLost: the subscriber fell behind and Lost events were dropped.
	EventLost
	eventTypeCount
)

var eventNames = [eventTypeCount]string{
	EventNameAppeared:    "name-appeared",
	EventNameLeft:        "name-left",
	EventNameMoved:       "name-moved",
	EventNeighborState:   "neigh-state",
	EventNameConflict:    "name-conflict",
	EventLinkDown:        "link-down",
	EventLinkUp:          "link-up",
	EventLinkMTU:         "link-mtu",
	EventLinkAddr:        "link-addr",
	EventListen:          "listen",
	EventListenClose:     "listen-close",
	EventConnEstablished: "conn-established",
	EventConnClosed:      "conn-closed",
	EventLost:            "lost",
}

// String returns the event type's name as the diagnostic protocol and
// `myproto monitor` spell it, such as "name-appeared".
func (t EventType) String() string {
	if t > 0 && t < eventTypeCount {
		return eventNames[t]
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// parseEventType is the inverse of String.
func parseEventType(s string) (EventType, bool) {
	for t, n := range eventNames {
		if n != "" && n == s {
			return EventType(t), true
		}
	}
	return 0, false
}

// An event class groups the types a subscription asks for.
type eventClass uint8

const (
	classLink  eventClass = 1 << iota // what every stack on the host sees alike: names, neighbours, links
	classStack                        // what is the stack's own: its sockets, connections, name conflicts
	classAll   = classLink | classStack
	// classNeigh subscribers make the neighbour scanner run.
	classNeigh = classLink
)

func (t EventType) class() eventClass {
	switch t {
	case EventNameConflict, EventListen, EventListenClose, EventConnEstablished, EventConnClosed:
		return classStack
	case EventLost:
		return classAll
	}
	return classLink
}

// An Event is one change a stack reports (see Subscribe).
type Event struct {
	// Type says what happened; the fields it uses are documented with it.
	Type EventType
	// Time is when the stack saw it.
	Time time.Time
	// Process is the process whose stack reports it.
	Process Process
	// Interface is the interface it happened on.
	Interface string
	// Name is the node or service name of a name or neighbour event.
	Name string
	// HardwareAddr is the neighbour's MAC of a name or neighbour event,
	// the other station's of a name conflict, the interface's new one of
	// EventLinkAddr.
	HardwareAddr net.HardwareAddr
	// NodeID is the neighbour's node ID of a name or neighbour event.
	NodeID uint64
	// State is a neighbour's new state ("REACHABLE", "STALE").
	State string
	// MTU is the new MTU of EventLinkMTU, the neighbour's of a name event.
	MTU int
	// Proto is "stream", "message" or "datagram" for socket events.
	Proto string
	// Local and Remote are the addresses of socket and connection events.
	Local, Remote *Addr
	// Kept is, for EventNameConflict, whether the stack kept the name.
	Kept bool
	// Reason says why a name left ("goodbye", "expired", "evicted") or a
	// connection ended.
	Reason string
	// Lost is how many events were dropped, for EventLost.
	Lost uint64
}

// String formats the event as one line, as `myproto monitor` prints it.
func (e *Event) String() string {
	var b strings.Builder
	b.WriteString(e.Type.String())
	add := func(k, v string) {
		if v != "" {
			b.WriteString(" ")
			if k != "" {
				b.WriteString(k + " ")
			}
			b.WriteString(v)
		}
	}
	switch e.Type {
	case EventLost:
		add("", fmt.Sprintf("%d events", e.Lost))
	case EventListen, EventListenClose, EventConnEstablished, EventConnClosed:
		add("", e.Proto)
		add("local", e.Local.orEmpty())
		add("remote", e.Remote.orEmpty())
	default:
		add("", e.Name)
		add("dev", e.Interface)
		if len(e.HardwareAddr) > 0 {
			add("lladdr", e.HardwareAddr.String())
		}
		if e.NodeID != 0 {
			add("node-id", fmt.Sprintf("%016x", e.NodeID))
		}
		if e.MTU != 0 {
			add("mtu", fmt.Sprint(e.MTU))
		}
		add("", e.State)
		if e.Type == EventNameConflict {
			if e.Kept {
				add("", "kept")
			} else {
				add("", "lost")
			}
		}
	}
	if e.Reason != "" {
		add("reason", fmt.Sprintf("%q", e.Reason))
	}
	if e.Process.PID != 0 {
		add("pid", fmt.Sprint(e.Process.PID))
		add("comm", e.Process.Command)
	}
	return b.String()
}

func (a *Addr) orEmpty() string {
	if a == nil {
		return ""
	}
	return a.String()
}

// eventHub multicasts a stack's events to its subscribers. emit never
// blocks: a subscriber that falls behind loses events and is told how many.
type eventHub struct {
	n    atomic.Int32 // subscribers; emitters check it first
	mu   sync.Mutex
	subs map[*eventSub]struct{}
	// scan stops the neighbour scanner, which runs while a subscriber
	// wants neighbour events.
	scan chan struct{}
}

// eventSub is one subscription.
type eventSub struct {
	classes eventClass
	ch      chan Event
	lost    atomic.Uint64
}

// eventQueue is how many events a subscriber may have waiting.
const eventQueue = 1024

// active reports whether anybody subscribes: emitters build no event
// otherwise.
func (h *eventHub) active() bool { return h != nil && h.n.Load() > 0 }

// emit hands ev to every subscriber of its class.
func (h *eventHub) emit(ev Event) {
	if !h.active() {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	c := ev.Type.class()
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		if sub.classes&c == 0 {
			continue
		}
		select {
		case sub.ch <- ev:
		default:
			sub.lost.Add(1)
		}
	}
}

// subscribe adds a subscriber of the given classes; s runs the neighbour
// scanner while one wants link events.
func (s *stack) subscribe(classes eventClass) *eventSub {
	h := &s.events
	sub := &eventSub{classes: classes, ch: make(chan Event, eventQueue)}
	h.mu.Lock()
	if h.subs == nil {
		h.subs = make(map[*eventSub]struct{})
	}
	h.subs[sub] = struct{}{}
	h.n.Add(1)
	if classes&classNeigh != 0 && h.scan == nil {
		h.scan = make(chan struct{})
		go s.scanNeighbors(h.scan)
	}
	h.mu.Unlock()
	return sub
}

// unsubscribe removes sub.
func (s *stack) unsubscribe(sub *eventSub) {
	h := &s.events
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[sub]; !ok {
		return
	}
	delete(h.subs, sub)
	h.n.Add(-1)
	for o := range h.subs {
		if o.classes&classNeigh != 0 {
			return
		}
	}
	if h.scan != nil {
		close(h.scan)
		h.scan = nil
	}
}

// next returns the subscriber's next event, an EventLost first if events
// were dropped since the last one.
func (sub *eventSub) next(done <-chan struct{}) (Event, bool) {
	if n := sub.lost.Swap(0); n > 0 {
		return Event{Type: EventLost, Time: time.Now(), Lost: n}, true
	}
	select {
	case ev := <-sub.ch:
		return ev, true
	case <-done:
		return Event{}, false
	}
}

// neighborScan is how often the scanner looks at the neighbour tables for
// entries that went STALE or REACHABLE, or expired: states that change
// with time, not with a message.
const neighborScan = 250 * time.Millisecond

// scanNeighbors reports neighbour state changes and expiries until stop
// closes.
func (s *stack) scanNeighbors(stop <-chan struct{}) {
	t := time.NewTicker(neighborScan)
	defer t.Stop()
	last := make(map[string]string) // interface/name → state
	for {
		cur := make(map[string]string)
		// snapshot removes expired entries, which emits their events.
		for _, n := range s.neighbors() {
			k := n.Interface + "/" + n.Name
			cur[k] = n.State
			if old, ok := last[k]; ok && old != n.State {
				s.events.emit(Event{Type: EventNeighborState, Interface: n.Interface, Name: n.Name,
					HardwareAddr: n.HardwareAddr, NodeID: n.NodeID, MTU: n.MTU, State: n.State})
			}
		}
		last = cur
		select {
		case <-t.C:
		case <-stop:
			return
		}
	}
}

// neighborEvent reports a change of a neighbour table entry; t.mu is held.
func (t *neighborTable) event(typ EventType, n *neighbor, reason string) {
	if !t.events.active() {
		return
	}
	t.events.emit(Event{Type: typ, Interface: t.ifname, Name: n.name,
		HardwareAddr: net.HardwareAddr(append([]byte(nil), n.mac[:]...)),
		NodeID:       n.nodeID, MTU: n.mtu, Reason: reason})
}

// socketEvent reports a listener or datagram socket opening or closing.
func (s *stack) socketEvent(typ EventType, proto string, local *Addr) {
	if !s.events.active() {
		return
	}
	s.events.emit(Event{Type: typ, Proto: proto, Local: local.clone(), Interface: local.Zone})
}

// connEvent reports a connection established or ended; err is why it ended.
func (s *stack) connEvent(typ EventType, c *Conn, err error) {
	if !s.events.active() {
		return
	}
	ev := Event{Type: typ, Proto: c.proto(), Local: c.local.clone(), Remote: c.remote.clone(), Interface: c.ep.name}
	if err != nil {
		ev.Reason = errText(err)
	}
	s.events.emit(ev)
}

// errText is err's message without the system call's name.
func errText(err error) string {
	if se, ok := err.(*os.SyscallError); ok {
		err = se.Err
	}
	return err.Error()
}
