package sys

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
)

// Virtual MACs of the UDP bearer (SPEC.md §18). The stack names every
// station by a 6-byte MAC, and frames carry an Ethernet header that their
// CRC covers; over UDP a station is an IP address and a UDP port, so each
// gets a virtual MAC that every host computes the same way from that address
// alone:
//
//   - an IPv4 address at the bearer port all hosts agree on (as they agree
//     on the EtherType): 02:00 and the four address bytes, so that
//     192.0.2.7 is 02:00:c0:00:02:07;
//   - anything else (IPv6, or another port): 06 and the first five bytes of
//     SHA-256("myproto udp bearer" ‖ the address as 16 bytes, IPv4 mapped
//     ‖ the port, big-endian).
//
// Both are locally administered (bit 1 of the first byte) unicast (bit 0
// clear) addresses, and the two forms never meet: their first bytes differ.
// A receiver checks that a frame's source MAC is the virtual MAC of the
// address it came from, so a station cannot speak for another without
// forging its IP source address.

// udpMACSalt starts the hashed form's input.
const udpMACSalt = "myproto udp bearer"

// UDPMAC returns the virtual MAC of the UDP end point ap, for stacks whose
// bearer port is bearerPort.
func UDPMAC(ap netip.AddrPort, bearerPort uint16) [6]byte {
	ip := ap.Addr().Unmap()
	var m [6]byte
	if ip.Is4() && ap.Port() == bearerPort {
		a := ip.As4()
		m[0] = 0x02
		copy(m[2:], a[:])
		return m
	}
	var in [len(udpMACSalt) + 16 + 2]byte
	copy(in[:], udpMACSalt)
	a := ip.As16()
	copy(in[len(udpMACSalt):], a[:])
	binary.BigEndian.PutUint16(in[len(udpMACSalt)+16:], ap.Port())
	sum := sha256.Sum256(in[:])
	m[0] = 0x06
	copy(m[1:], sum[:5])
	return m
}

// udpMACAddr inverts the IPv4 form of UDPMAC: the address 02:00:a:b:c:d
// stands for a.b.c.d at the bearer port. The hashed form has no inverse.
func udpMACAddr(m [6]byte, bearerPort uint16) (netip.AddrPort, bool) {
	if m[0] != 0x02 || m[1] != 0x00 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(m[2:6])), bearerPort), true
}
