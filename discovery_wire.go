package myproto

import (
	"encoding/binary"
	"net"
	"strings"
)

// Discovery messages: what ARP and NDP are to IP. They travel as frames of
// typeDiscovery with both ports 0 and the nonce in the Connection ID field.
// The body:
//
//	 0       1       2       3
//	+-------+-------+-------+-------+
//	|  Op   | Flags |   Reserved    |
//	+-------+-------+-------+-------+
//	|        Node ID (8 bytes)      |
//	|                               |
//	+-------------------------------+
//	|          MTU (4 bytes)        |
//	+-------------------------------+
//	|    Lifetime, ms (4 bytes)     |
//	+-------------------------------+
//	|  Target MAC (6 bytes) ...     |
//	+---------------+-------+-------+
//	|  ... Target   |NameLen| Name...
//	+---------------+-------+
//
// Op is one of the discOp values. Target is all zeros except in a solicit
// asking a station for its names (reverse lookup), where the solicit is
// unicast to it. Name is a node name (see validName), empty only in such a
// solicit. A body that does not parse, or carries a name that is not valid,
// is dropped.
type discOp uint8

const (
	discSolicit   discOp = 1 // who has Name? (broadcast; unicast to Target for a reverse lookup)
	discAdvertise discOp = 2 // I have Name: unicast answer, echoing the solicit's nonce
	discAnnounce  discOp = 3 // I have Name: broadcast at start-up, on changes and to refresh
	discGoodbye   discOp = 4 // I no longer have Name: broadcast at shutdown

	// Echo, what ICMP echo is to IP: the body above followed by data,
	// parsed by parseEcho (echo.go), not parseDisc.
	discEchoRequest discOp = 5 // are you there? unicast to the station asked
	discEchoReply   discOp = 6 // yes: unicast answer, echoing the nonce and data
	// The stack with Node ID (not the sender's) died on the sender's host:
	// broadcast by the host agent, with no name. A hint, not a proof: its
	// peers probe their connections to it.
	discGone discOp = 7

	discMaxOp = discGone
)

// Discovery flags.
const (
	discFlagProbe = 0x01 // a solicit for a name its sender wants to claim: any holder must answer
)

const (
	discFixedLen = 27
	maxNameLen   = 63
)

// discMsg is a decoded discovery message.
type discMsg struct {
	op       discOp
	flags    uint8
	nonce    uint64 // the frame's Connection ID
	nodeID   uint64
	mtu      uint32
	lifetime uint32 // milliseconds
	target   [6]byte
	name     string
}

// marshalDisc writes m's body at b and returns its length; b must have room
// for discFixedLen+len(m.name) bytes.
func marshalDisc(b []byte, m *discMsg) int {
	b[0], b[1], b[2], b[3] = byte(m.op), m.flags, 0, 0
	binary.BigEndian.PutUint64(b[4:], m.nodeID)
	binary.BigEndian.PutUint32(b[12:], m.mtu)
	binary.BigEndian.PutUint32(b[16:], m.lifetime)
	copy(b[20:26], m.target[:])
	b[26] = byte(len(m.name))
	return discFixedLen + copy(b[discFixedLen:], m.name)
}

// parseDisc decodes a discovery body; ok is false for anything malformed.
func parseDisc(body []byte, nonce uint64, m *discMsg) bool {
	if len(body) < discFixedLen {
		return false
	}
	n := int(body[26])
	if len(body) != discFixedLen+n || body[2] != 0 || body[3] != 0 {
		return false
	}
	*m = discMsg{
		op:       discOp(body[0]),
		flags:    body[1],
		nonce:    nonce,
		nodeID:   binary.BigEndian.Uint64(body[4:]),
		mtu:      binary.BigEndian.Uint32(body[12:]),
		lifetime: binary.BigEndian.Uint32(body[16:]),
	}
	copy(m.target[:], body[20:26])
	if m.op < discSolicit || m.op > discMaxOp || m.op == discEchoRequest || m.op == discEchoReply {
		return false
	}
	name := body[discFixedLen:]
	if m.op == discGone {
		return n == 0 && m.nodeID != 0
	}
	if n == 0 {
		// Only a reverse-lookup solicit names nobody.
		return m.op == discSolicit && m.target != [6]byte{}
	}
	if !validName(string(name)) {
		return false
	}
	m.name = string(name) // validName allows lower case only: no folding needed
	return true
}

// validName reports whether s is a node name: a DNS label (RFC 1123) in
// lower case, 1 to 63 letters, digits and hyphens, neither starting nor ending
// with a hyphen, and not all digits and hyphens, so it is never mistaken for
// a port or an address.
func validName(s string) bool {
	if len(s) == 0 || len(s) > maxNameLen || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	letter := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9', c == '-':
		default:
			return false
		}
	}
	return letter
}

// canonicalName folds name to lower case and checks it, giving a
// *net.AddrError for a name that can never be a node name.
func canonicalName(name string) (string, error) {
	n := strings.ToLower(name)
	if !validName(n) {
		return "", &net.AddrError{Err: errInvalidName, Addr: name}
	}
	return n, nil
}
