package myproto

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/myproto/myproto/internal/link"
)

// The myproto frame. Every frame kind (datagram, stream, discovery, control)
// shares one header, which follows the Ethernet II header; all fields are
// big-endian:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                 Destination MAC (Ethernet, 6)                 |
//	+                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                               |                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+       Source MAC (6)          +
//	|                                                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|      EtherType (0x88B5)       |    Version    |     Type      |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|             Flags             |            Length             |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|          Source Port          |       Destination Port        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|      Reserved (zero)          |                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//	|                  Connection ID (64)                           |
//	+                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                               |                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+        CRC32C (32)            +
//	|                               |                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                     Body (Length - 24 bytes) ...
//
// Length counts the myproto header and body, not the Ethernet header: real
// NICs pad short frames to 60 bytes and veth does not, so the frame's own
// size cannot be trusted. Bytes after Length are padding and are ignored.
//
// The CRC32C (Castagnoli) covers the Ethernet header as a pseudo-header (so a
// frame re-addressed or re-typed in flight fails), the myproto header up to
// the CRC field, and the body. veth, lo, bridges and taps have no FCS, so
// without it corruption would go unnoticed on exactly the links tests use.
//
// The Connection ID is zero for datagrams; for stream frames it is the one
// the receiver chose and demultiplexes by. The body of a stream frame starts
// with a 64-bit packet number followed by stream frames (data at a 64-bit
// offset, ACK ranges, max data and the like; see SPEC.md). Discovery and
// control frames carry their own bodies and are addressed to no port.

// The header's constants.
const (
	wireVersion = 1
	headerLen   = 24
	// maxBodyLen is the largest body Length can describe; links with
	// larger MTUs (lo's is 65536) are used up to it.
	maxBodyLen = 0xffff - headerLen

	// Offsets of the header fields within a whole frame, shared with the BPF
	// programs in internal/sys.
	offVersion = link.EthernetHeaderLen + 0
	offType    = link.EthernetHeaderLen + 1
	offFlags   = link.EthernetHeaderLen + 2
	offLength  = link.EthernetHeaderLen + 4
	offSrcPort = link.EthernetHeaderLen + 6
	offDstPort = link.EthernetHeaderLen + 8
	offRsvd    = link.EthernetHeaderLen + 10
	offConnID  = link.EthernetHeaderLen + 12
	offCRC     = link.EthernetHeaderLen + 20
	offBody    = link.EthernetHeaderLen + headerLen
)

// frameType says what a frame's body is.
type frameType uint8

// Frame types. The zero value is invalid.
const (
	_ frameType = iota
	typeDatagram
	typeStream
	typeDiscovery
	typeControl
	typeMax // first invalid value
)

// castagnoli is the CRC32C table; package hash/crc32 uses the SSE4.2/ARMv8
// instructions for it where the CPU has them.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// header is a decoded myproto header with its Ethernet addressing.
type header struct {
	dst, src  [6]byte
	etherType uint16
	typ       frameType
	flags     uint16
	length    uint16 // header + body
	srcPort   uint16
	dstPort   uint16
	connID    uint64
}

// dropReason says why a received frame was discarded before reaching a
// socket. The zero value means the frame is good.
type dropReason int

// Reasons a frame is dropped, each counted in Stats.
const (
	dropNone        dropReason = iota
	dropShort                  // shorter than the two headers
	dropEtherType              // another EtherType
	dropVersion                // another protocol version
	dropType                   // unknown frame type
	dropLength                 // Length field shorter than the header or past the frame
	dropChecksum               // CRC32C mismatch
	dropReserved               // reserved bits set
	dropNoSocket               // no socket owns the destination port or connection
	dropNotForUs               // unicast to another MAC, or a group nobody joined
	dropQueueFull              // the socket's receive buffer was full
	dropMalformed              // a discovery body that does not parse
	dropReasonCount            // number of reasons
)

// marshalFrame writes the Ethernet and myproto headers of h into b, whose
// body (bodyLen bytes) must already be at b[offBody:], sets h.length and
// fills in the CRC. It returns the frame's length. b must hold
// offBody+bodyLen bytes; callers size it from the link MTU, capped so that
// bodyLen never exceeds maxBodyLen.
func marshalFrame(b []byte, h *header, bodyLen int) int {
	if bodyLen > maxBodyLen {
		panic("myproto: frame body longer than the Length field can say")
	}
	n := offBody + bodyLen
	_ = b[n-1] // one bounds check for all the stores below
	h.length = uint16(headerLen + bodyLen)
	copy(b[0:6], h.dst[:])
	copy(b[6:12], h.src[:])
	binary.BigEndian.PutUint16(b[12:14], h.etherType)
	b[offVersion] = wireVersion
	b[offType] = byte(h.typ)
	binary.BigEndian.PutUint16(b[offFlags:], h.flags)
	binary.BigEndian.PutUint16(b[offLength:], h.length)
	binary.BigEndian.PutUint16(b[offSrcPort:], h.srcPort)
	binary.BigEndian.PutUint16(b[offDstPort:], h.dstPort)
	binary.BigEndian.PutUint16(b[offRsvd:], 0)
	binary.BigEndian.PutUint64(b[offConnID:], h.connID)
	binary.BigEndian.PutUint32(b[offCRC:], frameCRC(b[:n]))
	return n
}

// frameCRC is the CRC32C over the Ethernet header, the myproto header up to
// the CRC field, and the body: everything in frame but the CRC itself.
func frameCRC(frame []byte) uint32 {
	crc := crc32.Update(0, castagnoli, frame[:offCRC])
	return crc32.Update(crc, castagnoli, frame[offBody:])
}

// parseFrame decodes and validates the frame in b, which must be of the
// given EtherType. On success it returns the header and the body, which
// aliases b. It never panics, whatever b holds.
func parseFrame(b []byte, etherType uint16) (h header, body []byte, reason dropReason) {
	if len(b) < offBody {
		return h, nil, dropShort
	}
	copy(h.dst[:], b[0:6])
	copy(h.src[:], b[6:12])
	h.etherType = binary.BigEndian.Uint16(b[12:14])
	if h.etherType != etherType {
		return h, nil, dropEtherType
	}
	if b[offVersion] != wireVersion {
		return h, nil, dropVersion
	}
	h.typ = frameType(b[offType])
	if h.typ == 0 || h.typ >= typeMax {
		return h, nil, dropType
	}
	h.length = binary.BigEndian.Uint16(b[offLength:])
	end := link.EthernetHeaderLen + int(h.length)
	if h.length < headerLen || end > len(b) {
		return h, nil, dropLength
	}
	b = b[:end] // drop Ethernet padding
	if binary.BigEndian.Uint32(b[offCRC:]) != frameCRC(b) {
		return h, nil, dropChecksum
	}
	if binary.BigEndian.Uint16(b[offRsvd:]) != 0 {
		return h, nil, dropReserved
	}
	h.flags = binary.BigEndian.Uint16(b[offFlags:])
	h.srcPort = binary.BigEndian.Uint16(b[offSrcPort:])
	h.dstPort = binary.BigEndian.Uint16(b[offDstPort:])
	h.connID = binary.BigEndian.Uint64(b[offConnID:])
	return h, b[offBody:end:end], dropNone // no append may reach the padding
}
