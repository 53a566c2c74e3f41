package stream

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"sync/atomic"
	"time"
)

// SYN cookies (SPEC.md §5). The server's connection ID is a MAC over what
// identifies the handshake, so a listener answers SYNs without keeping any
// state and a SYN flood costs it no memory:
//
//	cookie = HMAC-SHA256(K_e, client MAC ‖ client port ‖ server port ‖ client CID ‖ e)[0:8]
//	         with its lowest bit replaced by e mod 2
//
// where e = ⌊unix time / cookieEpoch⌋ and K_e = HMAC-SHA256(secret, "myproto
// cookie key" ‖ e) is that epoch's key. The low bit tells the verifier which
// of the current and previous epoch to check, so a cookie stays valid for
// one to two epochs and then every key it could match is gone. 63 bits of
// MAC remain against guessing.
const cookieEpoch = 60 * time.Second

// HandshakeParams is what a server needs to build a connection's state: the
// client's parameters from its handshake confirmation, and the parameters the
// stateless SYN-ACK advertised for the server, echoed by the client.
type HandshakeParams struct {
	peerCID        uint64        // the client's connection ID: where our packets go
	peerMaxData    uint64        // the client's initial Max Data
	peerMaxPacket  int           // the largest body the client accepts
	localMaxData   uint64        // the Max Data our SYN-ACK advertised
	localMaxPacket int           // the max packet our SYN-ACK advertised
	rtt            time.Duration // the client's RTT estimate from SYN to SYN-ACK; 0 if none
	peerNode       uint64        // the client's stack
	cookie         uint64        // the server's connection ID, a cookie ...
	epoch          int64         // ... of this epoch
}

// Cookie returns the server's connection ID, the cookie the confirmation
// carried, and the epoch it belongs to: it stays valid until the end of
// epoch+1, and a server must not make a second connection from it
// (SPEC.md §5.3).
func (p HandshakeParams) Cookie() (id uint64, epoch int64) { return p.cookie, p.epoch }

// A CookieJar answers SYNs statelessly and recognises the first packet of a
// connection whose SYN it answered. It is safe for concurrent use.
type CookieJar struct {
	secret [32]byte
	local  hsParams // max data, max packet and node advertised in SYN-ACKs
	keys   atomic.Pointer[cookieKeys]
}

// cookieKeys are the HMAC pads of the keys of one epoch and the one before.
type cookieKeys struct {
	epoch     int64
	cur, prev hmacKey
}

// hmacKey is an HMAC-SHA256 key expanded into its inner and outer pads, so
// a MAC costs two SHA-256 calls on stack buffers and no allocation.
type hmacKey struct{ ipad, opad [64]byte }

func newHMACKey(key []byte) hmacKey {
	var k hmacKey
	if len(key) > 64 {
		s := sha256.Sum256(key)
		key = s[:]
	}
	copy(k.ipad[:], key)
	copy(k.opad[:], key)
	for i := range k.ipad {
		k.ipad[i] ^= 0x36
		k.opad[i] ^= 0x5c
	}
	return k
}

// mac computes HMAC-SHA256(key, msg) for a msg of at most 64 bytes.
func (k *hmacKey) mac(msg []byte) [32]byte {
	var in [128]byte
	copy(in[:64], k.ipad[:])
	n := copy(in[64:], msg)
	inner := sha256.Sum256(in[:64+n])
	var out [96]byte
	copy(out[:64], k.opad[:])
	copy(out[64:], inner[:])
	return sha256.Sum256(out[:])
}

// NewCookieJar returns a jar keyed by secret, or by 32 random bytes when
// secret is nil. The optional cfg is the listener's engine configuration,
// whose receive window and max packet the SYN-ACKs advertise; without it the
// defaults are advertised. (The server engine takes the advertised values
// back from the client's confirmation, so the two can never disagree.)
func NewCookieJar(secret []byte, cfg ...Config) *CookieJar {
	j := &CookieJar{}
	if secret == nil {
		if _, err := rand.Read(j.secret[:]); err != nil {
			panic("myproto: no randomness for SYN cookies: " + err.Error())
		}
	} else {
		s := sha256.Sum256(secret)
		j.secret = s
	}
	var c Config
	if len(cfg) > 0 {
		c = cfg[0]
	}
	c = c.withDefaults()
	j.local = hsParams{maxData: uint64(c.initialWindow()), maxPacket: uint16(c.MaxPacket), node: c.NodeID}
	return j
}

// epochKeys returns the keys for the epoch containing now, deriving them
// when the epoch has moved on. Concurrent callers may both derive them; the
// result is the same.
func (j *CookieJar) epochKeys(now time.Time) *cookieKeys {
	e := now.Unix() / int64(cookieEpoch/time.Second)
	if k := j.keys.Load(); k != nil && k.epoch == e {
		return k
	}
	k := &cookieKeys{epoch: e, cur: j.epochKey(e), prev: j.epochKey(e - 1)}
	j.keys.Store(k)
	return k
}

func (j *CookieJar) epochKey(e int64) hmacKey {
	master := newHMACKey(j.secret[:])
	var msg [26]byte
	copy(msg[:], "myproto cookie key")
	binary.BigEndian.PutUint64(msg[18:], uint64(e))
	k := master.mac(msg[:])
	return newHMACKey(k[:])
}

// cookie computes the connection ID for a handshake in epoch e with key k.
func cookie(k *hmacKey, e int64, peerMAC [6]byte, srcPort, dstPort uint16, clientCID uint64) uint64 {
	var msg [6 + 2 + 2 + 8 + 8]byte
	copy(msg[:6], peerMAC[:])
	binary.BigEndian.PutUint16(msg[6:], srcPort)
	binary.BigEndian.PutUint16(msg[8:], dstPort)
	binary.BigEndian.PutUint64(msg[10:], clientCID)
	binary.BigEndian.PutUint64(msg[18:], uint64(e))
	sum := k.mac(msg[:])
	c := binary.BigEndian.Uint64(sum[:8])&^1 | uint64(e)&1
	if c == 0 {
		c = 2 // connection ID 0 means "no connection"; keep the parity bit
	}
	return c
}

// RespondSYN answers the SYN in body, received from peerMAC's srcPort on
// our dstPort, with a SYN-ACK built into out (which needs room for
// synAckLen bytes). It returns the body's length and the connection ID to
// send it to (the client's); ok is false when body is not a valid SYN. The
// jar keeps no state.
func (j *CookieJar) RespondSYN(now time.Time, peerMAC [6]byte, srcPort, dstPort uint16, body []byte, out []byte) (n int, dstCID uint64, ok bool) {
	var pv packetView
	if !parsePacket(body, &pv) || !pv.hasSyn || !validClientParams(pv.syn) || len(out) < synAckLen {
		return 0, 0, false
	}
	keys := j.epochKeys(now)
	c := cookie(&keys.cur, keys.epoch, peerMAC, srcPort, dstPort, pv.syn.cid)
	p := j.local
	p.cid = c
	n = putPN(out, initialPN(c))
	n += putHandshakeFrame(out[n:], sfSynAck, p)
	n += putSingleAck(out[n:], pv.pn)
	return n, pv.syn.cid, true
}

// synAckLen bounds a SYN-ACK body: packet number, SYN-ACK frame, and an ACK
// of one packet number (type, largest ≤ 8, delay, count, first range).
const synAckLen = pnLen + synFrameLen + 1 + 8 + 1 + 1 + 1

// putSingleAck writes an ACK frame acknowledging exactly pn, with no delay.
func putSingleAck(b []byte, pn uint64) int {
	b[0] = sfAck
	n := 1 + putVarint(b[1:], pn&maxVarint)
	b[n], b[n+1], b[n+2] = 0, 0, 0 // delay, range count, first range
	return n + 3
}

func validClientParams(p hsParams) bool {
	return p.cid != 0 && int(p.maxPacket) >= MinMaxPacket && p.maxData <= maxStreamOffset
}

// Accept checks whether body, received from peerMAC's srcPort on our dstPort
// and addressed to connID, which no connection owns, carries a handshake
// confirmation for a cookie this jar issued within the last one to two
// epochs. If so it returns what NewServer needs.
func (j *CookieJar) Accept(now time.Time, peerMAC [6]byte, srcPort, dstPort uint16, connID uint64, body []byte) (params HandshakeParams, ok bool) {
	var pv packetView
	if connID == 0 || !parsePacket(body, &pv) || !pv.hasConf || !validClientParams(pv.confirm.client) {
		return params, false
	}
	keys := j.epochKeys(now)
	k, e := &keys.cur, keys.epoch
	if uint64(e)&1 != connID&1 {
		k, e = &keys.prev, e-1
	}
	if cookie(k, e, peerMAC, srcPort, dstPort, pv.confirm.client.cid) != connID {
		return params, false
	}
	c := &pv.confirm
	return HandshakeParams{
		cookie:         connID,
		epoch:          e,
		peerCID:        c.client.cid,
		peerMaxData:    c.client.maxData,
		peerMaxPacket:  int(c.client.maxPacket),
		localMaxData:   c.server.maxData,
		localMaxPacket: int(c.server.maxPacket),
		rtt:            time.Duration(c.rttMicros) * time.Microsecond,
		peerNode:       c.client.node,
	}, true
}

// RefuseSYN builds into out the RST that answers a SYN sent to a port
// nobody owns; its proof is the SYN's packet number, which the client checks
// before it fails with ErrRefused. ok is false when body is not a SYN.
func RefuseSYN(body []byte, out []byte) (n int, dstCID uint64, ok bool) {
	var pv packetView
	if !parsePacket(body, &pv) || !pv.hasSyn || pv.syn.cid == 0 || len(out) < pnLen+resetFrameLen {
		return 0, 0, false
	}
	n = putPN(out, 0)
	n += putU64Frame(out[n:], sfReset, pv.pn)
	return n, pv.syn.cid, true
}

// initialPN is the first packet number an endpoint with the given
// connection ID uses: a 61-bit value mixed from it (splitmix64), so the
// numbers of packets to an end are not predictable without the connection
// ID of packets to the other. A receiver accepts numbers within 2^24 of the
// largest it has, so a blind attacker who knows only one ID hits with a
// chance of 2^-36 per guess; 29 bits (4-byte varints in ACK frames, which
// now take 8) let a sweep of 16 guesses cover them all. 2^61 numbers remain
// below the varints' 2^62. The stateless server's SYN-ACK uses
// initialPN(cookie) and its engine continues from there.
func initialPN(cid uint64) uint64 {
	z := cid + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return z >> 3
}
