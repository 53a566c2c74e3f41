package myproto

import (
	"context"
	"time"
)

// Watch reports the name appearing on the link and leaving it, as TIPC's
// topology service reports a service published and withdrawn: a client can
// wait for its server to come up instead of polling with lookups. Events
// come on the returned channel, closed when ctx is done:
//
//   - EventNameAppeared when a station on the link answers for the name:
//     at once if the name is known or answers the first lookup, else when
//     its holder claims it (announces it) later;
//   - EventNameMoved when it is back with a new node ID or MAC (a
//     restart, or another station);
//   - EventNameLeft when its holder says goodbye (closes its last socket on
//     the link) or its entry expires (Config.NameLifetime after it was last
//     heard of: a holder that died without a word).
//
// Each event's Interface, HardwareAddr and NodeID say where and who. Watch
// opens r's stack on every usable interface for as long as ctx lasts, as a
// lookup does, and looks at the neighbour tables, not at
// static entries (Hosts, HostsFile).
func (r *Resolver) Watch(ctx context.Context, name string) (<-chan Event, error) {
	s, err := r.stack()
	if err != nil {
		return nil, err
	}
	return s.watchName(ctx, name)
}

func (s *stack) watchName(ctx context.Context, name string) (<-chan Event, error) {
	canon, err := canonicalName(name)
	if err != nil {
		return nil, err
	}
	eps, release, err := s.holdEndpoints("")
	if err != nil {
		return nil, err
	}
	// Subscribed before the first look, so nothing falls in between.
	sub := s.subscribe(classLink)
	out := make(chan Event, 16)
	present := make(map[string]bool) // by interface
	send := func(ev Event) bool {
		ev.Process = Process{}
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	// sync reports what the tables hold that was not reported, as after
	// events were lost.
	sync := func() bool {
		now := time.Now()
		for _, ep := range eps {
			n, ok := ep.disc.table.lookup(canon, now)
			switch {
			case ok && !present[ep.name]:
				present[ep.name] = true
				if !send(tableEvent(EventNameAppeared, ep.name, &n)) {
					return false
				}
			case !ok && present[ep.name]:
				present[ep.name] = false
				if !send(Event{Type: EventNameLeft, Time: now, Interface: ep.name, Name: canon, Reason: "expired"}) {
					return false
				}
			}
		}
		return true
	}
	go func() {
		defer close(out)
		defer release()
		defer s.unsubscribe(sub)
		if !sync() {
			return
		}
		// Ask once: an answer enters the tables, which reports it.
		w := make(chan discAnswer, 4)
		nonce := randNonce()
		for _, ep := range eps {
			ep.disc.solicit(broadcastMAC, &discMsg{op: discSolicit, nonce: nonce, name: canon}, w)
		}
		unwait := time.AfterFunc(s.names.lifetime, func() {
			for _, ep := range eps {
				ep.disc.unwait(nonce)
			}
		})
		defer unwait.Stop()
		for {
			ev, ok := sub.next(ctx.Done())
			if !ok {
				return
			}
			switch {
			case ev.Type == EventLost:
				if !sync() {
					return
				}
				continue
			case ev.Name != canon:
				continue
			case ev.Type == EventNameAppeared && !present[ev.Interface]:
				present[ev.Interface] = true
			case ev.Type == EventNameLeft && present[ev.Interface]:
				present[ev.Interface] = false
			case ev.Type == EventNameMoved:
				present[ev.Interface] = true
			default:
				continue
			}
			if !send(ev) {
				return
			}
		}
	}()
	return out, nil
}

// tableEvent is the event that reports the entry n.
func tableEvent(typ EventType, ifname string, n *neighbor) Event {
	return Event{Type: typ, Time: time.Now(), Interface: ifname, Name: n.name,
		HardwareAddr: append([]byte(nil), n.mac[:]...), NodeID: n.nodeID, MTU: n.mtu}
}
