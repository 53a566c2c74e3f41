package myproto

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"

	"github.com/myproto/myproto/internal/link"
)

// frameTypes are the valid frame types, every one of which must round-trip.
var frameTypes = []frameType{typeDatagram, typeStream, typeDiscovery, typeControl}

// testHeader returns a header with every field set to something
// distinguishable, so that a field swapped or dropped by the codec shows.
func testHeader(typ frameType) header {
	return header{
		dst:       [6]byte{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01},
		src:       [6]byte{0x02, 0x00, 0x5e, 0x10, 0x00, 0x02},
		etherType: DefaultEtherType,
		typ:       typ,
		flags:     0xa5c3,
		srcPort:   0x1234,
		dstPort:   0xfedc,
		connID:    0x0123456789abcdef,
	}
}

// testBody returns n bytes that are not all alike.
func testBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

// buildFrame marshals h with body into a new buffer of exactly the frame's
// size and returns the frame; h gets its length set.
func buildFrame(h *header, body []byte) []byte {
	b := make([]byte, offBody+len(body))
	copy(b[offBody:], body)
	n := marshalFrame(b, h, len(body))
	return b[:n]
}

var cmpHeader = cmp.AllowUnexported(header{})

func TestWireRoundTrip(t *testing.T) {
	for _, typ := range frameTypes {
		for _, n := range []int{0, 1, 22, 100, 1500 - headerLen, 9000 - headerLen} {
			t.Run(strconv.Itoa(int(typ))+"/"+strconv.Itoa(n), func(t *testing.T) {
				want := testHeader(typ)
				body := testBody(n)
				frame := buildFrame(&want, body)
				if len(frame) != link.EthernetHeaderLen+headerLen+n {
					t.Fatalf("frame is %d bytes, want %d", len(frame), link.EthernetHeaderLen+headerLen+n)
				}
				if want.length != uint16(headerLen+n) {
					t.Errorf("marshalFrame set length %d, want %d", want.length, headerLen+n)
				}
				got, gotBody, reason := parseFrame(frame, DefaultEtherType)
				if reason != dropNone {
					t.Fatalf("parseFrame dropped the frame: reason %d", reason)
				}
				if diff := cmp.Diff(want, got, cmpHeader); diff != "" {
					t.Errorf("header mismatch (-want +got):\n%s", diff)
				}
				if !bytes.Equal(gotBody, body) {
					t.Errorf("body mismatch: got %d bytes, want %d", len(gotBody), len(body))
				}
			})
		}
	}
}

// TestWireLayout pins the wire format byte by byte, so that a change to the
// codec that both sides would agree on still shows.
func TestWireLayout(t *testing.T) {
	h := testHeader(typeStream)
	frame := buildFrame(&h, []byte{0xaa, 0xbb})
	want := []byte{
		0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, // destination
		0x02, 0x00, 0x5e, 0x10, 0x00, 0x02, // source
		0x88, 0xb5, // EtherType
		wireVersion, byte(typeStream),
		0xa5, 0xc3, // flags
		0x00, 26, // length: header and body
		0x12, 0x34, // source port
		0xfe, 0xdc, // destination port
		0x00, 0x00, // reserved
		0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, // connection ID
		0, 0, 0, 0, // CRC, checked below
		0xaa, 0xbb,
	}
	if len(frame) != len(want) {
		t.Fatalf("frame is %d bytes, want %d", len(frame), len(want))
	}
	// The CRC32C of everything but the CRC field, computed independently.
	crcInput := append(append([]byte(nil), frame[:offCRC]...), frame[offBody:]...)
	binary.BigEndian.PutUint32(want[offCRC:], crc32cReference(crcInput))
	if !bytes.Equal(frame, want) {
		t.Errorf("frame\n got % x\nwant % x", frame, want)
	}
}

// crc32cReference is a bitwise CRC32C (reflected polynomial 0x82F63B78),
// independent of package hash/crc32.
func crc32cReference(b []byte) uint32 {
	crc := ^uint32(0)
	for _, c := range b {
		crc ^= uint32(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0x82f63b78
			} else {
				crc >>= 1
			}
		}
	}
	return ^crc
}

func TestWireCRC32CReference(t *testing.T) {
	// The check value of CRC-32C (RFC 3720, appendix B.4 and the CRC catalogue).
	if got := crc32cReference([]byte("123456789")); got != 0xe3069283 {
		t.Fatalf("crc32cReference check value = %#08x, want 0xe3069283", got)
	}
}

// TestWireMarshalStaysInBounds checks that marshalFrame leaves the body alone
// and writes nothing past the frame in an MTU-sized buffer, and that it
// overwrites stale version and reserved bytes from a reused buffer.
func TestWireMarshalStaysInBounds(t *testing.T) {
	b := bytes.Repeat([]byte{0xee}, 1514)
	body := testBody(50)
	copy(b[offBody:], body)
	h := testHeader(typeDatagram)
	n := marshalFrame(b, &h, len(body))
	if n != offBody+len(body) {
		t.Fatalf("marshalFrame = %d, want %d", n, offBody+len(body))
	}
	if !bytes.Equal(b[offBody:n], body) {
		t.Error("marshalFrame changed the body")
	}
	for i, c := range b[n:] {
		if c != 0xee {
			t.Fatalf("marshalFrame wrote byte %d past the frame", n+i)
		}
	}
	if b[offVersion] != wireVersion || b[offRsvd] != 0 || b[offRsvd+1] != 0 {
		t.Errorf("version % x, reserved % x: want %d, 00 00", b[offVersion], b[offRsvd:offRsvd+2], wireVersion)
	}
	if _, _, reason := parseFrame(b[:n], DefaultEtherType); reason != dropNone {
		t.Errorf("parseFrame dropped the frame: reason %d", reason)
	}
}

// TestWireDrop crafts a frame for each reason parseFrame drops one.
func TestWireDrop(t *testing.T) {
	h := testHeader(typeDatagram)
	good := buildFrame(&h, testBody(40))

	// with returns a copy of good changed by f, its CRC left stale.
	with := func(f func(b []byte) []byte) []byte {
		return f(bytes.Clone(good))
	}
	// resealed also recomputes the CRC, so the change is the only fault.
	resealed := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		binary.BigEndian.PutUint32(b[offCRC:], frameCRC(b))
		return b
	}
	setLength := func(n uint16) func(b []byte) {
		return func(b []byte) { binary.BigEndian.PutUint16(b[offLength:], n) }
	}

	tests := []struct {
		name  string
		frame []byte
		want  dropReason
	}{
		{"empty", nil, dropShort},
		{"one byte", good[:1], dropShort},
		{"Ethernet header only", good[:link.EthernetHeaderLen], dropShort},
		{"one byte short of a header", good[:offBody-1], dropShort},
		{"other EtherType", resealed(func(b []byte) { b[12], b[13] = 0x08, 0x00 }), dropEtherType},
		{"VLAN tag", resealed(func(b []byte) { b[12], b[13] = 0x81, 0x00 }), dropEtherType},
		{"version 0", resealed(func(b []byte) { b[offVersion] = 0 }), dropVersion},
		{"version 2", resealed(func(b []byte) { b[offVersion] = 2 }), dropVersion},
		{"version 255", resealed(func(b []byte) { b[offVersion] = 255 }), dropVersion},
		{"type 0", resealed(func(b []byte) { b[offType] = 0 }), dropType},
		{"typeMax", resealed(func(b []byte) { b[offType] = byte(typeMax) }), dropType},
		{"type 255", resealed(func(b []byte) { b[offType] = 255 }), dropType},
		{"length 0", resealed(setLength(0)), dropLength},
		{"length 23", resealed(setLength(headerLen - 1)), dropLength},
		{"length one past the frame", resealed(setLength(uint16(len(good) - link.EthernetHeaderLen + 1))), dropLength},
		{"length 65535", resealed(setLength(0xffff)), dropLength},
		{"truncated body", good[:len(good)-1], dropLength},
		{"truncated to the header", good[:offBody], dropLength},
		{"CRC off by one bit", with(func(b []byte) []byte { b[offCRC+3] ^= 1; return b }), dropChecksum},
		{"CRC zero", with(func(b []byte) []byte { clear(b[offCRC : offCRC+4]); return b }), dropChecksum},
		{"body changed", with(func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b }), dropChecksum},
		{"destination changed", with(func(b []byte) []byte { b[5]++; return b }), dropChecksum},
		{"shorter length, stale CRC", with(func(b []byte) []byte { setLength(headerLen)(b); return b }), dropChecksum},
		{"reserved high bit", resealed(func(b []byte) { b[offRsvd] = 0x80 }), dropReserved},
		{"reserved low bit", resealed(func(b []byte) { b[offRsvd+1] = 0x01 }), dropReserved},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, body, reason := parseFrame(tt.frame, DefaultEtherType)
			if reason != tt.want {
				t.Errorf("reason %d, want %d", reason, tt.want)
			}
			if body != nil {
				t.Errorf("dropped frame has a %d-byte body", len(body))
			}
		})
	}

	// Every reserved bit on its own.
	for bit := range 16 {
		b := resealed(func(b []byte) {
			binary.BigEndian.PutUint16(b[offRsvd:], 1<<bit)
		})
		if _, _, reason := parseFrame(b, DefaultEtherType); reason != dropReserved {
			t.Errorf("reserved bit %d: reason %d, want %d", bit, reason, dropReserved)
		}
	}

	// parseFrame checks the EtherType it is given, not the default.
	if _, _, reason := parseFrame(good, 0x88b6); reason != dropEtherType {
		t.Errorf("EtherType 0x88b6 expected: reason %d, want %d", reason, dropEtherType)
	}
	h2 := testHeader(typeDatagram)
	h2.etherType = 0x88b6
	if _, _, reason := parseFrame(buildFrame(&h2, nil), 0x88b6); reason != dropNone {
		t.Errorf("configured EtherType 0x88b6: reason %d, want %d", reason, dropNone)
	}
}

// TestWireEverySingleByteChange changes each byte the CRC covers, in turn, to
// each of its 255 other values: every one of those frames must be dropped,
// by the CRC unless a field check catches it first.
func TestWireEverySingleByteChange(t *testing.T) {
	for _, n := range []int{0, 40} {
		h := testHeader(typeStream)
		good := buildFrame(&h, testBody(n))
		b := bytes.Clone(good)
		for i := range b {
			for x := 1; x < 256; x++ {
				b[i] = good[i] ^ byte(x)
				_, _, reason := parseFrame(b, DefaultEtherType)
				switch {
				case reason == dropNone:
					t.Fatalf("body %d: byte %d changed from %#02x to %#02x: frame accepted", n, i, good[i], b[i])
				case i == offLength || i == offLength+1:
					// A longer Length runs past the frame; a shorter one moves
					// the CRC's range, and the CRC catches it.
				case i == 12 || i == 13 || i == offVersion || i == offType:
					// Checked before the CRC, each with its own reason (a type
					// changed into another valid one falls to the CRC).
				case reason != dropChecksum:
					t.Fatalf("body %d: byte %d changed from %#02x to %#02x: reason %d, want %d",
						n, i, good[i], b[i], reason, dropChecksum)
				}
			}
			b[i] = good[i]
		}
	}
}

// TestWirePadding checks that Ethernet padding, as real NICs add to reach the
// 60-byte minimum, is accepted and stripped, whatever it holds.
func TestWirePadding(t *testing.T) {
	const minFrame = 60 // without the FCS
	for _, n := range []int{0, 5, minFrame - offBody - 1} {
		for _, pad := range []byte{0x00, 0xff} {
			h := testHeader(typeDatagram)
			body := testBody(n)
			frame := buildFrame(&h, body)
			padded := append(bytes.Clone(frame), bytes.Repeat([]byte{pad}, minFrame-len(frame))...)
			if len(padded) != minFrame {
				t.Fatalf("padded frame is %d bytes", len(padded))
			}
			got, gotBody, reason := parseFrame(padded, DefaultEtherType)
			if reason != dropNone {
				t.Fatalf("body %d, padding %#02x: reason %d", n, pad, reason)
			}
			if diff := cmp.Diff(h, got, cmpHeader); diff != "" {
				t.Errorf("body %d, padding %#02x: header mismatch (-want +got):\n%s", n, pad, diff)
			}
			if !bytes.Equal(gotBody, body) {
				t.Errorf("body %d, padding %#02x: body % x, want % x", n, pad, gotBody, body)
			}
		}
	}

	// Bytes after Length are never looked at, so changing them changes nothing.
	h := testHeader(typeDatagram)
	frame := append(buildFrame(&h, testBody(3)), make([]byte, 19)...)
	for i := offBody + 3; i < len(frame); i++ {
		frame[i] = 0x5a
		if _, _, reason := parseFrame(frame, DefaultEtherType); reason != dropNone {
			t.Fatalf("padding byte %d changed: reason %d", i, reason)
		}
	}
}

// TestWireBodyAliases checks that the body parseFrame returns is the frame's
// own storage, not a copy: the receive path depends on that to stay free of
// allocations, and callers must copy what they keep.
func TestWireBodyAliases(t *testing.T) {
	h := testHeader(typeDatagram)
	frame := buildFrame(&h, testBody(10))
	_, body, reason := parseFrame(frame, DefaultEtherType)
	if reason != dropNone {
		t.Fatalf("reason %d", reason)
	}
	if len(body) != 10 || unsafe.SliceData(body) != &frame[offBody] {
		t.Fatalf("body does not alias frame[%d:]", offBody)
	}
	body[0] ^= 0xff
	if frame[offBody] != body[0] {
		t.Error("writing the body did not write the frame")
	}

	// An empty body is empty, not nil.
	h = testHeader(typeControl)
	_, body, reason = parseFrame(buildFrame(&h, nil), DefaultEtherType)
	if reason != dropNone || body == nil || len(body) != 0 {
		t.Errorf("empty body: %v (nil %t), reason %d", body, body == nil, reason)
	}
}

// TestWireNoAllocs pins the codec's zero allocations per frame, which the hot
// path depends on (see the benchmarks for the cost).
func TestWireNoAllocs(t *testing.T) {
	h := testHeader(typeStream)
	b := make([]byte, 1514)
	n := marshalFrame(b, &h, 1500-headerLen)
	if a := testing.AllocsPerRun(100, func() { marshalFrame(b, &h, 1500-headerLen) }); a != 0 {
		t.Errorf("marshalFrame: %v allocations per frame, want 0", a)
	}
	if a := testing.AllocsPerRun(100, func() { parseFrame(b[:n], DefaultEtherType) }); a != 0 {
		t.Errorf("parseFrame: %v allocations per frame, want 0", a)
	}
}

// FuzzParseFrame checks two properties in one target, so that one -fuzz
// pattern runs both:
//
//   - whatever data holds, parseFrame does not panic, drops it for a reason it
//     can give, or accepts it, in which case marshalling the decoded header
//     and body gives data back byte for byte up to Length;
//   - a frame marshalled from arbitrary header fields and body (data again)
//     parses back to them, with or without padding, and no change to one
//     covered byte, at a position chosen by flip, is accepted.
func FuzzParseFrame(f *testing.F) {
	for _, typ := range frameTypes {
		for _, n := range []int{0, 1, 60} {
			h := testHeader(typ)
			f.Add(buildFrame(&h, testBody(n)), uint8(typ), h.flags, h.srcPort, h.dstPort, h.connID, uint64(0x02005e100001), uint64(0x02005e100002), uint16(n))
		}
	}
	h := testHeader(typeDatagram)
	padded := append(buildFrame(&h, testBody(2)), make([]byte, 20)...)
	f.Add(padded, uint8(0), uint16(0), uint16(0), uint16(0), uint64(0), uint64(0), uint64(0), uint16(0))
	f.Add([]byte{}, uint8(255), uint16(0xffff), uint16(0xffff), uint16(0xffff), ^uint64(0), ^uint64(0), ^uint64(0), uint16(0xffff))
	f.Add(make([]byte, offBody), uint8(1), uint16(0), uint16(0), uint16(0), uint64(0), uint64(0), uint64(0), uint16(12))

	f.Fuzz(func(t *testing.T, data []byte, typ uint8, flags, srcPort, dstPort uint16, connID, dst, src uint64, flip uint16) {
		// (a) arbitrary bytes in.
		h, body, reason := parseFrame(data, DefaultEtherType)
		if reason < dropNone || reason > dropReserved {
			t.Fatalf("parseFrame gave reason %d, which is for the stack to give", reason)
		}
		if reason == dropNone {
			n := link.EthernetHeaderLen + int(h.length)
			// An empty slice at the end of an array has no defined address
			// (Go does not point past the end), so aliasing is checked
			// only for a non-empty body.
			if len(body) != int(h.length)-headerLen || len(body) > 0 && unsafe.SliceData(body) != unsafe.SliceData(data[offBody:]) {
				t.Fatalf("body is %d bytes not aliasing data[%d:], length %d", len(body), offBody, h.length)
			}
			b := make([]byte, n)
			copy(b[offBody:], body)
			h2 := h
			if m := marshalFrame(b, &h2, len(body)); m != n {
				t.Fatalf("re-marshalled frame is %d bytes, want %d", m, n)
			}
			if !bytes.Equal(b, data[:n]) {
				t.Fatalf("re-marshalled frame differs:\n got % x\nwant % x", b, data[:n])
			}
			if h2 != h {
				t.Fatalf("re-marshalled header %+v, parsed %+v", h2, h)
			}
		} else if body != nil {
			t.Fatalf("dropped frame (reason %d) has a body", reason)
		}

		// (b) arbitrary fields and body round-trip.
		body = data
		if limit := 0xffff - headerLen; len(body) > limit {
			body = body[:limit]
		}
		want := header{
			etherType: DefaultEtherType,
			typ:       frameType(1 + typ%uint8(typeMax-1)),
			flags:     flags,
			srcPort:   srcPort,
			dstPort:   dstPort,
			connID:    connID,
		}
		putMAC(want.dst[:], dst)
		putMAC(want.src[:], src)
		frame := buildFrame(&want, body)
		for _, in := range [][]byte{frame, append(bytes.Clone(frame), 0, 0, 0)} {
			got, gotBody, reason := parseFrame(in, DefaultEtherType)
			if reason != dropNone {
				t.Fatalf("marshalled frame dropped: reason %d", reason)
			}
			if got != want {
				t.Fatalf("header %+v, want %+v", got, want)
			}
			if !bytes.Equal(gotBody, body) {
				t.Fatalf("body mismatch")
			}
		}
		// A single changed byte anywhere but Length (whose change moves the
		// CRC's range, so detection is only probable there) is always caught.
		i := int(flip) % len(frame)
		if i == offLength || i == offLength+1 {
			return
		}
		frame[i] ^= byte(flip>>8) | 1
		if _, _, reason := parseFrame(frame, DefaultEtherType); reason == dropNone {
			t.Fatalf("frame with byte %d changed accepted", i)
		}
	})
}

// putMAC stores the low 48 bits of v in b, big-endian.
func putMAC(b []byte, v uint64) {
	var x [8]byte
	binary.BigEndian.PutUint64(x[:], v)
	copy(b, x[2:])
}

func BenchmarkMarshalFrame(b *testing.B) {
	for _, mtu := range []int{1500, 9000} {
		b.Run(strconv.Itoa(mtu), func(b *testing.B) {
			buf := make([]byte, link.EthernetHeaderLen+mtu)
			copy(buf[offBody:], testBody(mtu-headerLen))
			h := testHeader(typeStream)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				marshalFrame(buf, &h, mtu-headerLen)
			}
		})
	}
}

func BenchmarkParseFrame(b *testing.B) {
	for _, mtu := range []int{1500, 9000} {
		b.Run(strconv.Itoa(mtu), func(b *testing.B) {
			h := testHeader(typeStream)
			frame := buildFrame(&h, testBody(mtu-headerLen))
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, reason := parseFrame(frame, DefaultEtherType); reason != dropNone {
					b.Fatalf("reason %d", reason)
				}
			}
		})
	}
}
