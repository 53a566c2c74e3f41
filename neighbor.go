package myproto

import (
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// The neighbour table of one interface: names to hardware addresses, in the
// spirit of RFC 4861's neighbour cache. An entry is made by an answer to our
// solicit or by an announce, refreshed by later ones, and removed by a
// goodbye or when its lifetime runs out. Any valid packet from the
// neighbour confirms that it is reachable. The table is bounded: a full one
// evicts the entry closest to expiry.

// maxNeighbors bounds each interface's table, so no flood grows it further.
const maxNeighbors = 1024

// Neighbor is one entry of a neighbour table, as Neighbors reports it.
type Neighbor struct {
	// Interface is the interface the neighbour was found on.
	Interface string
	// Name is the neighbour's node or service name.
	Name string
	// HardwareAddr is its MAC address.
	HardwareAddr net.HardwareAddr
	// Addr, on a UDP bearer, is the neighbour's IP address and UDP port;
	// the zero value elsewhere.
	Addr netip.AddrPort
	// MTU is the MTU it announced.
	MTU int
	// NodeID identifies the neighbour's stack; a new one for a known name
	// means the neighbour restarted.
	NodeID uint64
	// State is "REACHABLE" if the neighbour was heard from (any valid
	// packet) within its reachable time, half its lifetime; else "STALE".
	State string
	// Expires is when the entry goes unless refreshed.
	Expires time.Time
	// Confirmed is when the neighbour was last heard from.
	Confirmed time.Time
}

type neighbor struct {
	name      string
	heard     bool // made by an announce, not by an answer to our solicit
	mac       [6]byte
	mtu       int
	nodeID    uint64
	lifetime  time.Duration
	expires   time.Time
	confirmed time.Time
}

type neighborTable struct {
	ifname  string
	mu      sync.Mutex
	entries map[string]*neighbor
	// stations are the entries' MACs, each with its count of entries
	// and its refusals (allowRefusal).
	stations map[[6]byte]*station
	heard    int // entries made by announces: at most maxNeighbors/2
	// events gets the entries' comings and goings (events.go); nil in
	// tables made by tests.
	events *eventHub
}

func newNeighborTable(ifname string) *neighborTable {
	return &neighborTable{ifname: ifname, entries: make(map[string]*neighbor), stations: make(map[[6]byte]*station)}
}

// A station is a MAC the table holds names of.
type station struct {
	names  int         // entries with this MAC
	refuse tokenBucket // its refusals, at refuseRate
}

// addStationLocked and dropStationLocked count an entry of mac in and out.
func (t *neighborTable) addStationLocked(mac [6]byte) {
	st := t.stations[mac]
	if st == nil {
		st = new(station)
		t.stations[mac] = st
	}
	st.names++
}

func (t *neighborTable) dropStationLocked(mac [6]byte) {
	if st := t.stations[mac]; st != nil {
		if st.names--; st.names <= 0 {
			delete(t.stations, mac)
		}
	}
}

// allowRefusal reports whether mac is a station of the table (known) and,
// if so, whether a SYN from it may be refused now: each station has
// refuseRate refusals a second of its own (see stack.allowRefusal).
func (t *neighborTable) allowRefusal(mac [6]byte, now time.Time) (known, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.stations[mac]
	if st == nil {
		return false, false
	}
	return true, st.refuse.take(now, refuseRate, refuseBurst)
}

// lookup returns the live entry for name.
func (t *neighborTable) lookup(name string, now time.Time) (neighbor, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, ok := t.entries[name]
	if !ok {
		return neighbor{}, false
	}
	if !now.Before(n.expires) {
		t.deleteLocked(n, "expired")
		return neighbor{}, false
	}
	return *n, true
}

// namesOf returns the live names of the station with mac.
func (t *neighborTable) namesOf(mac [6]byte, now time.Time) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var names []string
	for _, n := range t.entries {
		if n.mac == mac && now.Before(n.expires) {
			names = append(names, n.name)
		}
	}
	slices.Sort(names)
	return names
}

// update records that the station mac has name. An answer to our solicit
// (solicited) may make an entry; an announce may make one only while
// announces hold less than half the table, and evicts only what announces
// made, so a flood of forged announces cannot push out the neighbours we
// asked for; any other message only refreshes. It returns the entry's
// previous state, if any, so the caller can tell a restart (a new node ID)
// or a move (a new MAC).
func (t *neighborTable) update(m *discMsg, mac [6]byte, now time.Time, solicited bool) (old neighbor, existed bool) {
	life := time.Duration(m.lifetime) * time.Millisecond
	t.mu.Lock()
	defer t.mu.Unlock()
	n, ok := t.entries[m.name]
	if ok && !now.Before(n.expires) {
		t.deleteLocked(n, "expired")
		ok = false
	}
	if !ok {
		switch {
		case solicited:
			if len(t.entries) >= maxNeighbors {
				t.evictLocked(now, t.heard > 0)
			}
		case m.op == discAnnounce:
			if t.heard >= maxNeighbors/2 || len(t.entries) >= maxNeighbors {
				t.evictLocked(now, true)
			}
		default:
			return neighbor{}, false
		}
		n = &neighbor{name: m.name, heard: !solicited}
		if n.heard {
			t.heard++
		}
		t.entries[m.name] = n
	} else {
		old = *n
		if solicited && n.heard {
			n.heard = false
			t.heard--
		}
	}
	switch {
	case !ok:
		t.addStationLocked(mac)
	case n.mac != mac:
		t.dropStationLocked(n.mac)
		t.addStationLocked(mac)
	}
	n.mac, n.mtu, n.nodeID, n.lifetime = mac, int(m.mtu), m.nodeID, life
	n.expires = now.Add(life)
	n.confirmed = now
	switch {
	case !ok:
		t.event(EventNameAppeared, n, "")
	case old.nodeID != n.nodeID || old.mac != n.mac:
		t.event(EventNameMoved, n, "")
	}
	return old, ok
}

// deleteLocked removes n, for reason ("expired", "evicted", "goodbye").
func (t *neighborTable) deleteLocked(n *neighbor, reason string) {
	if n.heard {
		t.heard--
	}
	delete(t.entries, n.name)
	t.dropStationLocked(n.mac)
	t.event(EventNameLeft, n, reason)
}

// evictLocked drops expired entries, then, if the table (or the announces'
// half of it, with heardOnly) is still full, the entry closest to expiry.
func (t *neighborTable) evictLocked(now time.Time, heardOnly bool) {
	var victim *neighbor
	for _, n := range t.entries {
		if !now.Before(n.expires) {
			t.deleteLocked(n, "expired")
			continue
		}
		if (!heardOnly || n.heard) && (victim == nil || n.expires.Before(victim.expires)) {
			victim = n
		}
	}
	full := len(t.entries) >= maxNeighbors || heardOnly && t.heard >= maxNeighbors/2
	if full && victim != nil {
		t.deleteLocked(victim, "evicted")
	}
}

// remove deletes name if the station mac holds it (a goodbye).
func (t *neighborTable) remove(name string, mac [6]byte) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n, ok := t.entries[name]; ok && n.mac == mac {
		t.deleteLocked(n, "goodbye")
		return true
	}
	return false
}

// confirm notes that a valid packet came from mac.
func (t *neighborTable) confirm(mac [6]byte, now time.Time) {
	t.mu.Lock()
	for _, n := range t.entries {
		if n.mac == mac {
			n.confirmed = now
		}
	}
	t.mu.Unlock()
}

// snapshot returns the live entries for Neighbors.
func (t *neighborTable) snapshot(now time.Time) []Neighbor {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Neighbor, 0, len(t.entries))
	for _, n := range t.entries {
		if !now.Before(n.expires) {
			t.deleteLocked(n, "expired")
			continue
		}
		state := "STALE"
		if now.Sub(n.confirmed) < n.lifetime/2 {
			state = "REACHABLE"
		}
		out = append(out, Neighbor{
			Interface:    t.ifname,
			Name:         n.name,
			HardwareAddr: net.HardwareAddr(append([]byte(nil), n.mac[:]...)),
			MTU:          n.mtu,
			NodeID:       n.nodeID,
			State:        state,
			Expires:      n.expires,
			Confirmed:    n.confirmed,
		})
	}
	return out
}

func (t *neighborTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}
