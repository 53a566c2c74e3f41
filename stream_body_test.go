package myproto

import "encoding/binary"

// Stream bodies for tests that forge or inspect packets on the link. They
// follow SPEC.md §3 and do not use internal/stream's codec, which that
// package keeps to itself; a forged packet the engine understands checks the
// specification and the engine at once.

// Stream frame types (SPEC.md §3).
const (
	sfPadding     = 0x00
	sfPing        = 0x01
	sfAck         = 0x02
	sfStream      = 0x08 // 0x09 with FIN
	sfMaxData     = 0x10
	sfDataBlocked = 0x11
	sfReset       = 0x12
	sfSyn         = 0x20
	sfSynAck      = 0x21
	sfConfirm     = 0x22
)

// appendPN starts a body: its packet number.
func appendPN(b []byte, pn uint64) []byte { return binary.BigEndian.AppendUint64(b, pn) }

// appendStreamFrame appends a STREAM frame carrying data at offset off.
func appendStreamFrame(b []byte, off uint64, data []byte, fin bool) []byte {
	t := byte(sfStream)
	if fin {
		t |= 1
	}
	b = binary.BigEndian.AppendUint64(append(b, t), off)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

// appendU64Frame appends a frame made of its type and one 64-bit value:
// MAX_DATA, DATA_BLOCKED or RESET.
func appendU64Frame(b []byte, typ byte, v uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, typ), v)
}

// appendAckFrame appends an ACK frame acknowledging the packet numbers
// [lo, hi], with no delay.
func appendAckFrame(b []byte, lo, hi uint64) []byte {
	b = appendVarint(append(b, sfAck), hi) // Largest
	b = appendVarint(b, 0)                 // Delay
	b = appendVarint(b, 0)                 // Range Count
	return appendVarint(b, hi-lo)          // First Range
}

// appendVarint appends v (< 2^62) as a QUIC variable-length integer.
func appendVarint(b []byte, v uint64) []byte {
	switch {
	case v < 1<<6:
		return append(b, byte(v))
	case v < 1<<14:
		return binary.BigEndian.AppendUint16(b, uint16(v)|0x4000)
	case v < 1<<30:
		return binary.BigEndian.AppendUint32(b, uint32(v)|0x80000000)
	default:
		return binary.BigEndian.AppendUint64(b, v|0xc000000000000000)
	}
}

// readVarint decodes a variable-length integer; n is 0 if b is too short.
func readVarint(b []byte) (v uint64, n int) {
	if len(b) == 0 {
		return 0, 0
	}
	n = 1 << (b[0] >> 6)
	if len(b) < n {
		return 0, 0
	}
	v = uint64(b[0] & 0x3f)
	for _, c := range b[1:n] {
		v = v<<8 | uint64(c)
	}
	return v, n
}

// hasFrame reports whether the stream body parses (by the frame layouts of
// SPEC.md §3) and holds a frame of type typ.
func hasFrame(body []byte, typ byte) bool {
	if len(body) < 9 {
		return false
	}
	found := false
	for b := body[8:]; len(b) > 0; {
		t := b[0]
		b = b[1:]
		n := 0
		switch t {
		case sfPadding, sfPing:
		case sfAck:
			// Largest, Delay, Range Count, First Range, then Count pairs.
			var count uint64
			for i := uint64(0); i < 4+2*count; i++ {
				v, k := readVarint(b[n:])
				if k == 0 {
					return false
				}
				if i == 2 {
					count = v
				}
				n += k
			}
		case sfStream, sfStream | 1:
			if len(b) < 10 {
				return false
			}
			n = 10 + int(binary.BigEndian.Uint16(b[8:]))
		case sfMaxData, sfDataBlocked, sfReset:
			n = 8
		case sfSyn, sfSynAck:
			n = 18
		case sfConfirm:
			n = 32
		default:
			return false
		}
		if n > len(b) {
			return false
		}
		b = b[n:]
		found = found || t == typ
	}
	return found
}
