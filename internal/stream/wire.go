package stream

import (
	"encoding/binary"
)

// The body of a typeStream frame (SPEC.md §3) is a 64-bit packet number
// followed by one or more stream frames, each starting with a type byte:
//
//	+--------------------------------+----------+----------+-----
//	|  Packet Number (64, big-endian)| Frame 1  | Frame 2  | ...
//	+--------------------------------+----------+----------+-----
//
// Fixed-width fields are big-endian like the common header; ACK fields are
// QUIC variable-length integers (RFC 9000 §16) so that 32 ranges fit in a
// minimum-size packet. A body that fails to parse is dropped as a whole:
// nothing in it takes effect and it is not acknowledged.
const (
	sfPadding     = 0x00 // one byte, ignored
	sfPing        = 0x01 // ack-eliciting, no payload
	sfAck         = 0x02 // largest, delay µs, range count, first range, (gap, length)*
	sfStream      = 0x08 // offset(8) length(2) data; sfStream|sfFinBit carries FIN
	sfFinBit      = 0x01
	sfMaxData     = 0x10 // maximum data(8): absolute byte offset the sender may reach
	sfDataBlocked = 0x11 // limit(8): the sender is blocked at this Max Data
	sfReset       = 0x12 // proof(8): largest packet number received from the peer
	sfSyn         = 0x20 // cid(8) max data(8) max packet(2) node(8)
	sfSynAck      = 0x21 // cid(8) max data(8) max packet(2) node(8)
	sfConfirm     = 0x22 // client cid(8) client max data(8) client max packet(2) server max data(8) server max packet(2) rtt µs(4) client node(8)
)

// Stream header flags, in the common header's Flags field of typeStream
// frames. They let the stack (and the kernel's filters) route a frame by its
// header alone; Receive never relies on them.
const (
	// FlagSYN marks a SYN, which also has Connection ID 0 since the client
	// does not know the server's ID yet.
	FlagSYN = 0x0001
	// FlagReset marks a stateless reset (SPEC.md §10.4): sent for a packet
	// to a connection that no longer exists, it echoes the packet's
	// Connection ID in the header and its packet number as the body.
	FlagReset = 0x0002
	// FlagProbe marks a packet that asks whether the connection is still
	// alive: a probe timeout's, a keepalive's, or one a hint of the peer's
	// death prompted (Verify). Should the peer's process be gone, the host
	// agent on its host sees it and answers with a stateless reset.
	FlagProbe = 0x0004
)

// PNLen is the length of the packet number that starts every stream body,
// and the body of a stateless reset.
const PNLen = pnLen

// MinMaxPacket is the smallest Max Packet (largest body accepted) an end
// may announce: a link needs an MTU of the frame header plus this.
const MinMaxPacket = 256

// Sizes of the fixed parts of frames and packets.
const (
	pnLen             = 8
	streamFrameHdrLen = 1 + 8 + 2
	resetFrameLen     = 1 + 8
	synFrameLen       = 1 + 8 + 8 + 2 + 8
	confirmFrameLen   = 1 + 8 + 8 + 2 + 8 + 2 + 4 + 8
	maxFramesPerPkt   = 16 // more frames than this in one body: malformed
	maxAckRanges      = 32 // ranges sent in, and read from, one ACK frame
	maxVarint         = 1<<62 - 1
	maxMaxPacket      = 1<<16 - 1 // Max Packet is 16 bits; the frame's own limit comes in through Config.MaxPacket
	maxStreamOffset   = 1<<62 - 1 // offsets and lengths stay below this
)

// putVarint writes v (< 2^62) as a QUIC variable-length integer at b[0:] and
// returns its length. b must have room (varintLen(v) bytes).
func putVarint(b []byte, v uint64) int {
	switch {
	case v < 1<<6:
		b[0] = byte(v)
		return 1
	case v < 1<<14:
		binary.BigEndian.PutUint16(b, uint16(v)|0x4000)
		return 2
	case v < 1<<30:
		binary.BigEndian.PutUint32(b, uint32(v)|0x80000000)
		return 4
	default:
		binary.BigEndian.PutUint64(b, v|0xc000000000000000)
		return 8
	}
}

// varintLen is how many bytes putVarint uses for v.
func varintLen(v uint64) int {
	switch {
	case v < 1<<6:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<30:
		return 4
	default:
		return 8
	}
}

// readVarint decodes a variable-length integer from b; n is 0 when b is too
// short.
func readVarint(b []byte) (v uint64, n int) {
	if len(b) == 0 {
		return 0, 0
	}
	n = 1 << (b[0] >> 6)
	if len(b) < n {
		return 0, 0
	}
	switch n {
	case 1:
		return uint64(b[0]), 1
	case 2:
		return uint64(binary.BigEndian.Uint16(b) & 0x3fff), 2
	case 4:
		return uint64(binary.BigEndian.Uint32(b) & 0x3fffffff), 4
	default:
		return binary.BigEndian.Uint64(b) & 0x3fffffffffffffff, 8
	}
}

// pnRange is an inclusive range of packet numbers.
type pnRange struct{ lo, hi uint64 }

// ackFrame is a decoded ACK: ranges[0] holds the largest acknowledged packet
// number; ranges are in descending order and do not touch.
type ackFrame struct {
	delay  uint64 // microseconds, as sent
	n      int
	ranges [maxAckRanges]pnRange
}

// largest is the largest acknowledged packet number.
func (a *ackFrame) largest() uint64 { return a.ranges[0].hi }

// hsParams are the connection parameters a SYN, SYN-ACK or handshake
// confirmation carries.
type hsParams struct {
	cid       uint64
	maxData   uint64
	maxPacket uint16
	node      uint64 // the sender's stack, which a restart replaces
}

// confirmFrame is the handshake confirmation the client repeats until the
// server acknowledges one of its packets.
type confirmFrame struct {
	client    hsParams
	server    hsParams // cid unused: it is the header's Connection ID
	rttMicros uint32
}

// wireFrame is one decoded frame other than ACK and the handshake frames.
type wireFrame struct {
	typ   uint8
	fin   bool   // STREAM
	value uint64 // STREAM offset; MAX_DATA; DATA_BLOCKED; RESET proof
	data  []byte // STREAM payload, aliasing the body
}

// packetView is a parsed body. At most one ACK, SYN, SYN-ACK, confirm and
// RESET frame may appear in a body; any number of the others up to
// maxFramesPerPkt in all.
type packetView struct {
	pn       uint64
	nframes  int
	frames   [maxFramesPerPkt]wireFrame
	hasAck   bool
	ack      ackFrame
	hasSyn   bool
	syn      hsParams
	hasSA    bool
	synAck   hsParams
	hasConf  bool
	confirm  confirmFrame
	hasReset bool
	proof    uint64
	elicit   bool // contains an ack-eliciting frame
}

// parsePacket decodes body into pv. It reports false for anything malformed
// and never panics, whatever body holds.
func parsePacket(body []byte, pv *packetView) bool {
	pv.nframes = 0
	pv.hasAck, pv.hasSyn, pv.hasSA, pv.hasConf, pv.hasReset, pv.elicit = false, false, false, false, false, false
	if len(body) < pnLen+1 {
		return false
	}
	pv.pn = binary.BigEndian.Uint64(body)
	b := body[pnLen:]
	count := 0
	for len(b) > 0 {
		count++
		if count > maxFramesPerPkt*4 { // padding runs count too; bound the work
			return false
		}
		typ := b[0]
		b = b[1:]
		switch typ {
		case sfPadding:
		case sfPing:
			if !pv.add(wireFrame{typ: sfPing}) {
				return false
			}
			pv.elicit = true
		case sfAck:
			if pv.hasAck {
				return false
			}
			n := parseAck(b, &pv.ack)
			if n == 0 {
				return false
			}
			pv.hasAck = true
			b = b[n:]
		case sfStream, sfStream | sfFinBit:
			if len(b) < streamFrameHdrLen-1 {
				return false
			}
			off := binary.BigEndian.Uint64(b)
			n := int(binary.BigEndian.Uint16(b[8:]))
			b = b[10:]
			if len(b) < n || off > maxStreamOffset-uint64(n) {
				return false
			}
			if !pv.add(wireFrame{typ: sfStream, fin: typ&sfFinBit != 0, value: off, data: b[:n:n]}) {
				return false
			}
			b = b[n:]
			pv.elicit = true
		case sfMaxData, sfDataBlocked:
			if len(b) < 8 {
				return false
			}
			v := binary.BigEndian.Uint64(b)
			b = b[8:]
			if v > maxStreamOffset || !pv.add(wireFrame{typ: typ, value: v}) {
				return false
			}
			pv.elicit = true
		case sfReset:
			if pv.hasReset || len(b) < 8 {
				return false
			}
			pv.hasReset, pv.proof = true, binary.BigEndian.Uint64(b)
			b = b[8:]
		case sfSyn, sfSynAck:
			if len(b) < synFrameLen-1 {
				return false
			}
			p := hsParams{
				cid:       binary.BigEndian.Uint64(b),
				maxData:   binary.BigEndian.Uint64(b[8:]),
				maxPacket: binary.BigEndian.Uint16(b[16:]),
				node:      binary.BigEndian.Uint64(b[18:]),
			}
			b = b[synFrameLen-1:]
			if typ == sfSyn {
				if pv.hasSyn {
					return false
				}
				pv.hasSyn, pv.syn = true, p
			} else {
				if pv.hasSA {
					return false
				}
				pv.hasSA, pv.synAck = true, p
			}
		case sfConfirm:
			if pv.hasConf || len(b) < confirmFrameLen-1 {
				return false
			}
			c := &pv.confirm
			c.client.cid = binary.BigEndian.Uint64(b)
			c.client.maxData = binary.BigEndian.Uint64(b[8:])
			c.client.maxPacket = binary.BigEndian.Uint16(b[16:])
			c.server.cid = 0
			c.server.maxData = binary.BigEndian.Uint64(b[18:])
			c.server.maxPacket = binary.BigEndian.Uint16(b[26:])
			c.rttMicros = binary.BigEndian.Uint32(b[28:])
			c.client.node = binary.BigEndian.Uint64(b[32:])
			b = b[confirmFrameLen-1:]
			pv.hasConf = true
			pv.elicit = true
		default:
			return false
		}
	}
	return true
}

func (pv *packetView) add(f wireFrame) bool {
	if pv.nframes == maxFramesPerPkt {
		return false
	}
	pv.frames[pv.nframes] = f
	pv.nframes++
	return true
}

// parseAck decodes an ACK frame's fields (after the type byte) into a and
// returns how many bytes it used, or 0 if malformed. Ranges beyond
// maxAckRanges are checked for form and otherwise ignored.
func parseAck(b []byte, a *ackFrame) int {
	var n, used int
	var largest, first, count uint64
	if largest, n = readVarint(b); n == 0 {
		return 0
	}
	used += n
	if a.delay, n = readVarint(b[used:]); n == 0 {
		return 0
	}
	used += n
	if count, n = readVarint(b[used:]); n == 0 {
		return 0
	}
	used += n
	if first, n = readVarint(b[used:]); n == 0 || first > largest {
		return 0
	}
	used += n
	a.ranges[0] = pnRange{lo: largest - first, hi: largest}
	a.n = 1
	smallest := largest - first
	for i := uint64(0); i < count; i++ {
		var gap, length uint64
		if gap, n = readVarint(b[used:]); n == 0 {
			return 0
		}
		used += n
		if length, n = readVarint(b[used:]); n == 0 {
			return 0
		}
		used += n
		if smallest < gap+2 {
			return 0
		}
		hi := smallest - gap - 2
		if length > hi {
			return 0
		}
		smallest = hi - length
		if a.n < maxAckRanges {
			a.ranges[a.n] = pnRange{lo: smallest, hi: hi}
			a.n++
		}
	}
	return used
}

// putPN writes the packet number that starts every body.
func putPN(b []byte, pn uint64) int {
	binary.BigEndian.PutUint64(b, pn)
	return pnLen
}

// putStreamHeader writes a STREAM frame header for n bytes at off; the
// caller copies the data after it.
func putStreamHeader(b []byte, off uint64, n int, fin bool) int {
	t := byte(sfStream)
	if fin {
		t |= sfFinBit
	}
	b[0] = t
	binary.BigEndian.PutUint64(b[1:], off)
	binary.BigEndian.PutUint16(b[9:], uint16(n))
	return streamFrameHdrLen
}

// putU64Frame writes a frame made of a type and one 64-bit value (MAX_DATA,
// DATA_BLOCKED, RESET).
func putU64Frame(b []byte, typ byte, v uint64) int {
	b[0] = typ
	binary.BigEndian.PutUint64(b[1:], v)
	return 9
}

// putHandshakeFrame writes a SYN or SYN-ACK frame.
func putHandshakeFrame(b []byte, typ byte, p hsParams) int {
	b[0] = typ
	binary.BigEndian.PutUint64(b[1:], p.cid)
	binary.BigEndian.PutUint64(b[9:], p.maxData)
	binary.BigEndian.PutUint16(b[17:], p.maxPacket)
	binary.BigEndian.PutUint64(b[19:], p.node)
	return synFrameLen
}

// putConfirmFrame writes the handshake confirmation.
func putConfirmFrame(b []byte, c *confirmFrame) int {
	b[0] = sfConfirm
	binary.BigEndian.PutUint64(b[1:], c.client.cid)
	binary.BigEndian.PutUint64(b[9:], c.client.maxData)
	binary.BigEndian.PutUint16(b[17:], c.client.maxPacket)
	binary.BigEndian.PutUint64(b[19:], c.server.maxData)
	binary.BigEndian.PutUint16(b[27:], c.server.maxPacket)
	binary.BigEndian.PutUint32(b[29:], c.rttMicros)
	binary.BigEndian.PutUint64(b[33:], c.client.node)
	return confirmFrameLen
}

// minAckLen is the size of an ACK frame reporting only the top range of rs.
func minAckLen(rs *rangeSet, delayMicros uint64) int {
	top := rs.last()
	return 1 + varintLen(top.hi-1) + varintLen(min(delayMicros, maxVarint)) + 1 + varintLen(top.hi-1-top.lo)
}

// putAckFrame writes an ACK frame for the received packet numbers in rs
// (ascending, half-open ranges), most recent first, within room bytes and
// maxAckRanges ranges. It returns 0 when rs is empty or nothing fits.
func putAckFrame(b []byte, room int, rs *rangeSet, delayMicros uint64) int {
	nr := len(rs.r)
	if nr == 0 {
		return 0
	}
	top := rs.r[nr-1]
	largest := top.hi - 1
	first := top.hi - 1 - top.lo
	if delayMicros > maxVarint {
		delayMicros = maxVarint
	}
	// Count the ranges that fit.
	size := 1 + varintLen(largest) + varintLen(delayMicros) + 1 + varintLen(first)
	if size > room {
		return 0
	}
	extra := 0
	prevLo := top.lo
	for i := nr - 2; i >= 0 && extra < maxAckRanges-1; i-- {
		r := rs.r[i]
		gap := prevLo - r.hi - 1
		l := r.hi - 1 - r.lo
		s := varintLen(gap) + varintLen(l)
		if size+s > room {
			break
		}
		size += s
		extra++
		prevLo = r.lo
	}
	// extra < 32 so the count fits in one byte, as assumed above.
	b[0] = sfAck
	n := 1
	n += putVarint(b[n:], largest)
	n += putVarint(b[n:], delayMicros)
	n += putVarint(b[n:], uint64(extra))
	n += putVarint(b[n:], first)
	prevLo = top.lo
	for i := nr - 2; i >= nr-1-extra; i-- {
		r := rs.r[i]
		n += putVarint(b[n:], prevLo-r.hi-1)
		n += putVarint(b[n:], r.hi-1-r.lo)
		prevLo = r.lo
	}
	return n
}
