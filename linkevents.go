package myproto

import (
	"errors"
	"net"
	"syscall"

	"github.com/myproto/myproto/internal/stream"
	"github.com/myproto/myproto/internal/sys"
)

// Link events: the stack follows its interfaces through rtnetlink
// (RTNLGRP_LINK), as the kernel's protocols follow netdevice notifiers. An
// interface that goes down fails its connections at once with ENETDOWN and
// makes datagram writes fail; one that comes back up is used again and
// re-announced; an MTU change sizes new packets.

// minMTU is the smallest MTU the stream transport can use: room for the
// header and its smallest packet.
const minMTU = headerLen + stream.MinMaxPacket

// linkWatcher is sys.LinkWatcher, behind an interface so that in-memory
// test links can go without.
type linkWatcher interface {
	Next() (sys.LinkEvent, error)
	Close() error
}

// watchLinksLocked starts following link events when the stack opens its
// first endpoint. s.mu is held.
func (s *stack) watchLinksLocked() {
	if s.watcher != nil {
		return
	}
	w, err := s.prov.watchLinks()
	if err != nil {
		return // no events here (an in-memory link, or no rtnetlink): poll nothing
	}
	s.watcher = w
	s.watching.Store(true)
	s.goroutine(func() { s.followLinks(w) })
}

// stopWatchingLocked stops it when the last endpoint closes. s.mu is held.
func (s *stack) stopWatchingLocked() {
	if s.watcher != nil {
		s.watcher.Close()
		s.watcher = nil
		s.watching.Store(false)
		s.linksChanged()
	}
}

func (s *stack) followLinks(w linkWatcher) {
	for {
		ev, err := w.Next()
		if err == nil || errors.Is(err, syscall.ENOBUFS) {
			s.linksChanged()
		}
		switch {
		case err == nil:
			s.linkEvent(ev)
		case errors.Is(err, syscall.ENOBUFS):
			// Events were lost: read the current state instead.
			s.resyncLinks()
		default:
			return // closed
		}
	}
}

// resyncLinks applies the interfaces' current state as events.
func (s *stack) resyncLinks() {
	ifis, err := s.prov.interfaces()
	if err != nil {
		return
	}
	seen := make(map[int]bool)
	for _, ifi := range ifis {
		seen[ifi.Index] = true
		s.linkEvent(sys.LinkEvent{Index: ifi.Index, Name: ifi.Name, MTU: ifi.MTU,
			Up: ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagRunning != 0, HardwareAddr: ifi.HardwareAddr})
	}
	for _, ep := range s.endpointsSnapshot() {
		if !seen[ep.index] {
			s.linkEvent(sys.LinkEvent{Index: ep.index, Deleted: true})
		}
	}
}

// linkEvent applies one change to the endpoint on that interface, if any.
func (s *stack) linkEvent(ev sys.LinkEvent) {
	s.mu.Lock()
	ep := s.endpoints[ev.Index]
	s.mu.Unlock()
	if ep == nil {
		return
	}
	if ev.Deleted || !ev.Up {
		if !ep.down.Swap(true) {
			s.events.emit(Event{Type: EventLinkDown, Interface: ep.name})
			s.failConns(func(c *Conn) bool { return c.ep == ep }, syscall.ENETDOWN)
		}
		return
	}
	changed := false
	if len(ev.HardwareAddr) == 6 && string(ev.HardwareAddr) != string(ep.hwaddrSlice()) {
		// A new MAC: peers still send to the old one. Our connections
		// end now and reset their peers from the old address, which the
		// peers know; the filter must pass the new one.
		ep.setHwaddr(ev.HardwareAddr)
		s.republish()
		s.resetConns(ep, syscall.ENETRESET)
		s.events.emit(Event{Type: EventLinkAddr, Interface: ep.name, HardwareAddr: ep.hwaddrSlice()})
		changed = true
	}
	if ev.MTU >= minMTU && int64(ev.MTU) != ep.mtu.Load() {
		ep.mtu.Store(int64(ev.MTU))
		s.mtuChanged(ep)
		s.events.emit(Event{Type: EventLinkMTU, Interface: ep.name, MTU: ev.MTU})
		changed = true
	}
	wasDown := ep.down.Swap(false)
	if wasDown {
		s.events.emit(Event{Type: EventLinkUp, Interface: ep.name, MTU: int(ep.mtu.Load())})
	}
	if wasDown || changed {
		ep.disc.announceNow()
	}
}

// mtuChanged fits the connections on ep to its new MTU: a smaller one
// shrinks their packets now; a larger one helps new connections (the
// packet size was agreed in the handshake).
func (s *stack) mtuChanged(ep *endpoint) {
	limit := ep.maxPayload()
	s.conns.Range(func(_, v any) bool {
		if c := v.(*Conn); c.ep == ep {
			c.mu.Lock()
			c.e.LimitPacket(limit)
			c.mu.Unlock()
		}
		return true
	})
}
