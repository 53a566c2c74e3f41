package myproto

import (
	"io"
	"slices"
)

// Streams and datagrams have separate port spaces, as TCP and UDP do: a
// PacketConn on port 7 does not keep a Listener off port 7, in this process
// or in another. Each space has its own table here, its own host-wide
// reservations (@myproto/<ethertype>/<port> for streams,
// @myproto/<ethertype>/dgram/<port> for datagrams) and its own port set in
// the data socket's kernel filter. A SYN to a port that only a datagram
// socket holds finds no stream owner on the host, so the host agent refuses
// it at once. The host agent's port reports carry stream ports only: it
// answers SYNs and probes, which are stream frames.

// portsOf returns the table of b's space; s.mu is held.
func (s *stack) portsOf(b *binding) map[uint16]*binding {
	if b.pc != nil {
		return s.dports
	}
	return s.ports
}

// reservePort reserves port host-wide in b's space.
func (s *stack) reservePort(b *binding, port uint16) (io.Closer, error) {
	if b.pc != nil {
		return s.prov.reserveDatagram(s.etherType, port)
	}
	return s.prov.reserve(s.etherType, port)
}

// lookupDgram returns the binding that owns datagram port, or nil. It
// takes no lock.
func (s *stack) lookupDgram(port uint16) *binding {
	b := (*s.dtable.Load())[port]
	if b == nil || b.released.Load() {
		return nil
	}
	return b
}

// dgramPortListLocked returns the datagram ports this process owns,
// sorted; s.mu is held.
func (s *stack) dgramPortListLocked() []uint16 {
	ports := make([]uint16, 0, len(s.dports))
	for p := range s.dports {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	return ports
}
