package myproto

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log"
	"math"
	mrand "math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// Neighbour discovery: a stack claims its node name (and service names) on
// each interface it opens, answers solicits for them, announces them, and
// says goodbye when it closes the interface. SPEC.md §13 has the protocol.

const (
	defaultNameLifetime = 60 * time.Second
	// probeInterval and probeWait: a name is probed for twice, 50 ms apart,
	// and claimed 150 ms after the first probe if nobody answered.
	probeInterval = 50 * time.Millisecond
	probeWait     = 150 * time.Millisecond
	// Answers to solicits are rate-limited per interface, so a flood of
	// solicits costs a bounded number of frames.
	answerRate  = 100
	answerBurst = 20
	// defendInterval: a holder defends a name once in this long (RFC
	// 5227's DEFEND_INTERVAL); a second conflict within it gives the name
	// up, so two claimants never answer each other's announces forever.
	defendInterval = 10 * time.Second
	// crossingWindow: a conflict this soon after our defence may be the
	// other holder's defence, sent before ours reached it (two stations
	// that both claimed a name while partitioned, defending at once).
	// Yielding then, as RFC 5227 would, has both give the name up: the
	// lower MAC keeps it instead, and the higher yields.
	crossingWindow = time.Second
)

// A NameConflictError reports that another station on a link holds or claims
// one of this stack's names.
type NameConflictError struct {
	Name      string           // the name
	Interface string           // where the other station is
	Holder    net.HardwareAddr // the other station's MAC
	// Kept is true if this stack keeps the name on the interface (it held
	// it first and defends it), false if it gave it up (it was probing).
	Kept bool
}

// Error says which name, where, and who else has it.
func (e *NameConflictError) Error() string {
	what := "gave it up"
	if e.Kept {
		what = "kept it"
	}
	return fmt.Sprintf("myproto: name %q on %s is also claimed by %v; this stack %s", e.Name, e.Interface, e.Holder, what)
}

// names is what a stack answers for.
type names struct {
	list     []string // node name first, then services; canonical
	nodeID   uint64   // random per stack: a new one tells neighbours we restarted
	lifetime time.Duration
}

// stackNames works out the names from cfg. An explicitly configured bad name
// is an error; a host name that is no DNS label just leaves the stack without
// a node name (it can still look others up).
func stackNames(cfg *Config) (names, error) {
	n := names{lifetime: cfg.NameLifetime}
	if n.lifetime <= 0 {
		n.lifetime = defaultNameLifetime
	}
	n.lifetime = min(n.lifetime, time.Duration(math.MaxUint32)*time.Millisecond)
	var b [8]byte
	rand.Read(b[:])
	n.nodeID = binary.BigEndian.Uint64(b[:])
	node, explicit := cfg.Name, true
	if node == "" {
		node = os.Getenv("MYPROTO_NAME")
	}
	if node == "" {
		explicit = false
		if h, err := os.Hostname(); err == nil {
			node, _, _ = strings.Cut(h, ".")
		}
	}
	if node != "" {
		c, err := canonicalName(node)
		switch {
		case err == nil:
			n.list = append(n.list, c)
		case explicit:
			return names{}, err
		}
	}
	for _, svc := range cfg.Services {
		c, err := canonicalName(svc)
		if err != nil {
			return names{}, err
		}
		n.list = append(n.list, c)
	}
	return n, nil
}

// discovery is the discovery state of one endpoint.
type discovery struct {
	ep    *endpoint
	table *neighborTable

	answer rateLimiter

	mu       sync.Mutex
	names    map[string]nameState // names this stack claims on the interface
	timer    *time.Timer
	step     int // where the probe/announce schedule is
	closed   bool
	waiters  map[uint64]discWaiter // lookups by nonce
	watch    map[string]int        // lookups by watchKey, counted
	defended map[string]time.Time  // when each name was last defended
	// floodAnswered is when each of our names was last announced
	// instead of answered, because the answer budget was spent.
	floodAnswered map[string]time.Time

	// echo are the echo requests in flight from this interface (echo.go).
	echo echoWaiters

	// Reader goroutine only: the last reachability confirmation.
	lastConfirm   [6]byte
	lastConfirmAt time.Time
}

// newDiscovery makes the discovery of endpoint ep, which keeps what it
// learns in t (the interface's table, which outlives the endpoint).
func newDiscovery(ep *endpoint, t *neighborTable) *discovery {
	return &discovery{ep: ep, table: t, names: make(map[string]nameState),
		answer: rateLimiter{rate: answerRate, burst: answerBurst}}
}

type nameState uint8

const (
	nameTentative nameState = iota // probing
	nameClaimed                    // ours: answered and announced
	nameLost                       // another station has it
)

// A discWaiter is a lookup waiting for answers: to its nonce, or, since
// a flood of solicits can spend the budget for unicast answers, in an
// announce that names what it looks for (key, from watchKey).
type discWaiter struct {
	ch  chan discAnswer
	key string
}

// watchKey is what a lookup's waiter matches announces by: the name, or
// for a reverse lookup (name "") the target MAC, which no name can equal
// since names have no NUL.
func watchKey(name string, target [6]byte) string {
	if name != "" {
		return name
	}
	return "\x00" + string(target[:])
}

// discAnswer is an advertise that answered a lookup.
type discAnswer struct {
	ep  *endpoint
	mac [6]byte
	msg discMsg
}

// startDiscovery begins claiming names on ep, which this process holds
// host-wide now: when ep opens, or when another process on the host let
// them go. The schedule starts over, so new names are probed before they are
// claimed.
func (ep *endpoint) startDiscovery(owned []string) {
	d := ep.disc
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, n := range owned {
		d.names[n] = nameTentative
	}
	if len(owned) > 0 {
		d.step = 0
		d.scheduleLocked(0)
	}
}

// retryNames claims the stack's names that another process on the host
// held, should it have let them go (it closed, or died: the host agent
// tells), and starts claiming them on the link. A dying process's sockets
// close one by one, so its name may still be held when the news arrives:
// while names stay unclaimed, retryNames tries again, after 10 ms at first
// and then at most a second apart.
func (s *stack) retryNames() {
	s.mu.Lock()
	s.nameRetryDelay = 0
	s.mu.Unlock()
	s.claimAgain()
}

func (s *stack) claimAgain() {
	s.mu.Lock()
	if len(s.endpoints) == 0 {
		s.mu.Unlock()
		return
	}
	var fresh []string
	unclaimed := false
	for _, n := range s.names.list {
		if _, ok := s.claims[n]; ok {
			continue
		}
		if c, err := s.prov.reserveName(s.etherType, n); err == nil {
			s.claims[n] = c
			fresh = append(fresh, n)
		} else {
			unclaimed = true
		}
	}
	if unclaimed {
		s.nameRetryDelay = min(max(2*s.nameRetryDelay, 10*time.Millisecond), time.Second)
		if s.nameRetry == nil {
			s.nameRetry = time.AfterFunc(s.nameRetryDelay, s.claimAgain)
		} else {
			s.nameRetry.Reset(s.nameRetryDelay)
		}
	}
	eps := make([]*endpoint, 0, len(s.endpoints))
	for _, ep := range s.endpoints {
		eps = append(eps, ep)
	}
	s.mu.Unlock()
	if len(fresh) > 0 {
		for _, ep := range eps {
			ep.startDiscovery(fresh)
		}
	}
}

// sendGone tells every link the stack with node ID node died on this host.
func (s *stack) sendGone(node uint64) {
	for _, ep := range s.endpointsSnapshot() {
		if ep.udp != nil {
			continue // no other process speaks from this address
		}
		ep.disc.send(broadcastMAC, &discMsg{op: discGone, nodeID: node})
	}
}

// scheduleLocked runs the next step of the probe/announce schedule after
// delay: probe, probe, claim and announce, announce, announce, then a refresh
// every third of the lifetime, each with some jitter so that stations
// started together do not answer in step.
func (d *discovery) scheduleLocked(delay time.Duration) {
	if d.closed {
		return
	}
	if d.timer == nil {
		d.timer = time.AfterFunc(delay, d.tick)
	} else {
		d.timer.Reset(delay)
	}
}

func jitter(d time.Duration) time.Duration {
	return d + time.Duration(mrand.Int64N(int64(d)/4+1))
}

func (d *discovery) tick() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	step := d.step
	d.step++
	var probe, announce []string
	for n, st := range d.names {
		switch {
		case st == nameTentative && step < 2:
			probe = append(probe, n)
		case st == nameTentative: // step 2: nobody objected
			d.names[n] = nameClaimed
			announce = append(announce, n)
		case st == nameClaimed && step >= 2:
			announce = append(announce, n)
		}
	}
	switch {
	case step == 0:
		d.scheduleLocked(probeInterval)
	case step == 1:
		d.scheduleLocked(probeWait - probeInterval)
	case step < 4:
		d.scheduleLocked(jitter(time.Duration(step-1) * 100 * time.Millisecond))
	default:
		d.scheduleLocked(jitter(d.ep.s.names.lifetime / 3))
	}
	d.mu.Unlock()
	for _, n := range probe {
		d.send(broadcastMAC, &discMsg{op: discSolicit, flags: discFlagProbe, nonce: randNonce(), name: n})
	}
	for _, n := range announce {
		d.send(broadcastMAC, &discMsg{op: discAnnounce, name: n})
	}
}

// announceNow re-announces the claimed names at once (a changed MTU or MAC,
// or a defended name).
func (d *discovery) announceNow() {
	for _, n := range d.claimed() {
		d.send(broadcastMAC, &discMsg{op: discAnnounce, name: n})
	}
}

func (d *discovery) claimed() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for n, st := range d.names {
		if st == nameClaimed {
			out = append(out, n)
		}
	}
	return out
}

// stop says goodbye for the claimed names and stops the schedule; the link
// is still open.
func (d *discovery) stop() {
	names := d.claimed()
	d.mu.Lock()
	d.closed = true
	if d.timer != nil {
		d.timer.Stop()
	}
	d.mu.Unlock()
	for _, n := range names {
		d.send(broadcastMAC, &discMsg{op: discGoodbye, name: n})
	}
}

// send fills in our node ID, MTU and lifetime and sends m to dst.
func (d *discovery) send(dst [6]byte, m *discMsg) {
	ep := d.ep
	if m.op != discGone {
		m.nodeID = ep.s.names.nodeID
	}
	m.mtu = uint32(ep.mtu.Load())
	m.lifetime = uint32(ep.s.names.lifetime / time.Millisecond)
	if m.op == discGoodbye || m.op == discGone {
		m.lifetime = 0
	}
	var body [discFixedLen + maxNameLen]byte
	n := marshalDisc(body[:], m)
	ep.send(&header{dst: dst, typ: typeDiscovery, connID: m.nonce}, body[:n])
}

func randNonce() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

// discInput handles a discovery frame.
func (s *stack) discInput(ep *endpoint, h *header, body []byte) dropReason {
	if len(body) > 0 && isEchoOp(discOp(body[0])) {
		return s.echoInput(ep, h, body)
	}
	var m discMsg
	if h.srcPort != 0 || h.dstPort != 0 || !parseDisc(body, h.connID, &m) {
		return dropMalformed
	}
	if m.nodeID == s.names.nodeID || h.src == ep.hwaddr() {
		// Our own frame back through another interface on the same
		// segment, or another process on this host: never a neighbour.
		return dropNone
	}
	d := ep.disc
	now := time.Now()
	switch m.op {
	case discSolicit:
		d.onSolicit(h, &m, now)
	case discAdvertise, discAnnounce:
		d.onAdvertise(h, &m, now)
	case discGoodbye:
		d.table.remove(m.name, h.src)
	case discGone:
		s.verifyPeers(ep, h.src, h.src, func(node uint64) bool { return node == m.nodeID })
	}
	return dropNone
}

func (d *discovery) onSolicit(h *header, m *discMsg, now time.Time) {
	var answer []string
	d.mu.Lock()
	if m.name == "" {
		// A reverse lookup of this MAC, or of the broadcast address:
		// who is there (neighbors_query.go)?
		if m.target == d.ep.hwaddr() || m.target == broadcastMAC {
			for n, st := range d.names {
				if st == nameClaimed {
					answer = append(answer, n)
				}
			}
		}
	} else if st, ok := d.names[m.name]; ok {
		switch st {
		case nameClaimed:
			answer = append(answer, m.name)
		case nameTentative:
			// Two stations probing for one name at once: the lower node
			// ID goes on, the other gives up (RFC 4862 would make both).
			if m.flags&discFlagProbe != 0 && m.nodeID < d.ep.s.names.nodeID {
				d.names[m.name] = nameLost
				d.mu.Unlock()
				d.report(m.name, h.src, false)
				return
			}
		}
	}
	d.mu.Unlock()
	for _, n := range answer {
		if d.answer.allow(now) {
			d.send(h.src, &discMsg{op: discAdvertise, nonce: m.nonce, name: n})
			continue
		}
		// The budget is spent: a flood of solicits, forged from any
		// MAC, or many real lookups at once. Answering each asker would
		// let the flood decide who is answered; one broadcast announce
		// answers every asker on the segment at once (as mDNS answers by
		// multicast, RFC 6762 §6), and pending lookups take it
		// (onAdvertise). At most one per name per floodAnnounceEvery.
		if d.floodAnswer(n, now) {
			d.send(broadcastMAC, &discMsg{op: discAnnounce, name: n})
		}
	}
}

// floodAnnounceEvery is how often a name under a solicit flood is
// announced instead of answered: a few times in a lookup's half second.
const floodAnnounceEvery = 100 * time.Millisecond

// floodAnswer reports whether name may be announced now in place of the
// answers the budget no longer allows.
func (d *discovery) floodAnswer(name string, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if last, ok := d.floodAnswered[name]; ok && now.Sub(last) < floodAnnounceEvery {
		return false
	}
	if d.floodAnswered == nil {
		d.floodAnswered = make(map[string]time.Time)
	}
	d.floodAnswered[name] = now // names are ours: the map stays small
	return true
}

func (d *discovery) onAdvertise(h *header, m *discMsg, now time.Time) {
	ep := d.ep
	d.mu.Lock()
	st, ours := d.names[m.name]
	var ws []chan discAnswer
	if m.op == discAdvertise {
		if w, ok := d.waiters[m.nonce]; ok {
			ws = append(ws, w.ch)
		}
	} else if len(d.watch) > 0 && (d.watch[m.name] > 0 || d.watch[watchKey("", h.src)] > 0) {
		// An announce answers the lookups of its name, and the reverse
		// lookups of its sender, as a solicited advertise would: it is
		// as public as their solicits were, and the table takes it
		// anyway.
		for _, w := range d.waiters {
			if w.key == m.name || w.key == watchKey("", h.src) {
				ws = append(ws, w.ch)
			}
		}
	}
	switch {
	case ours && st == nameTentative:
		d.names[m.name] = nameLost
	case ours && st == nameClaimed && m.op == discAnnounce:
		// Someone claims what we hold without having probed (or after a
		// partition healed): defend it once per interval, else yield;
		// but for a defence crossing ours, where the lower MAC keeps it.
		last, defended := d.defended[m.name]
		switch mac := ep.hwaddr(); {
		case !defended || now.Sub(last) >= defendInterval:
			if d.defended == nil {
				d.defended = make(map[string]time.Time)
			}
			d.defended[m.name] = now
		case now.Sub(last) < crossingWindow && bytes.Compare(mac[:], h.src[:]) < 0:
			d.mu.Unlock()
			return // ours stands: the other side yields to it
		default:
			d.names[m.name] = nameLost
			st = nameLost
		}
	default:
		ours = false
	}
	d.mu.Unlock()
	if ours {
		if st == nameClaimed {
			d.send(broadcastMAC, &discMsg{op: discAnnounce, name: m.name})
		}
		d.report(m.name, h.src, st == nameClaimed)
		d.announceHint(h, m)
		return
	}
	old, existed := d.table.update(m, h.src, now, len(ws) > 0)
	if !existed {
		d.announceHint(h, m)
	}
	if existed && (old.nodeID != m.nodeID || old.mac != h.src) {
		// A new node ID (or MAC) for a known name: the neighbour may have
		// restarted, or moved, or someone says so falsely. Only the
		// connections can tell: they probe their peer.
		// The table may hold a forged node ID, so every connection to
		// the old MAC but the announcer's own probes. So does every
		// connection to the announcing MAC to another stack than the one
		// announced: the table may name a forger's MAC by now (it
		// claimed the name last), and the real neighbour's restart
		// must still reach the connections to it.
		ep.s.verifyPeers(ep, old.mac, h.src, func(node uint64) bool { return node != m.nodeID })
	}
	for _, w := range ws {
		select {
		case w <- discAnswer{ep: ep, mac: h.src, msg: *m}:
		default:
		}
	}
}

// report tells the application about a conflict over name with holder:
// Config.OnNameConflict, or else the standard logger, and the stack's
// event subscribers.
func (d *discovery) report(name string, holder [6]byte, kept bool) {
	e := &NameConflictError{Name: name, Interface: d.ep.name,
		Holder: net.HardwareAddr(append([]byte(nil), holder[:]...)), Kept: kept}
	if f := d.ep.s.cfg.OnNameConflict; f != nil {
		f(e)
	} else {
		log.Print(e)
	}
	d.ep.s.events.emit(Event{Type: EventNameConflict, Interface: e.Interface, Name: name,
		HardwareAddr: e.Holder, Kept: kept})
}

// announceHint makes the other stacks at an announcer's MAC probe, when
// the table cannot tell a restart: the name was not in it (the client
// dialled by MAC and never heard it, or forgot it) or is ours (both took
// the host name). A stack starting at h.src may be the restart of one we
// have connections to. A name the table knows goes the moved-name way
// instead, and a known name announced again by the same stack is no news:
// probing then, before the host has let go of a dying process's port,
// would go unanswered and hold back the probe that the host's gone notice
// asks for (a connection probes on hints once per verifyInterval).
func (d *discovery) announceHint(h *header, m *discMsg) {
	if m.op == discAnnounce {
		d.ep.s.verifyPeers(d.ep, h.src, h.src, func(node uint64) bool { return node != m.nodeID })
	}
}

// confirmFrom notes a valid packet from mac (reader goroutine only). The
// table is touched at most every 100 ms per sender run, so the data path
// pays nearly nothing.
func (d *discovery) confirmFrom(mac [6]byte, now time.Time) {
	if mac == d.lastConfirm && now.Sub(d.lastConfirmAt) < 100*time.Millisecond {
		return
	}
	d.lastConfirm, d.lastConfirmAt = mac, now
	d.table.confirm(mac, now)
}

// A peerStack is one stack at a peer's MAC, as a connection knows it from
// its handshake: connections to it live and die together.
type peerStack struct {
	ep   *endpoint
	mac  [6]byte
	node uint64
}

// verifyPeers makes the stacks on ep at MAC a or b that match selects
// probe, on a hint that they are gone: a discovery frame, which anyone can
// send. One connection to each such stack probes; a live peer answers and
// nothing happens, a dead one's successor (a restarted process on the
// port) or host agent answers with a stateless reset, which fails that
// connection and makes the others to the same stack probe
// (peerStackReset). So a hint costs one frame per peer stack, however many
// connections go to it: forged ones cost a bounded number of frames, and
// are rate-limited besides.
func (s *stack) verifyPeers(ep *endpoint, a, b [6]byte, match func(node uint64) bool) {
	if !s.verify.allow(time.Now()) {
		return
	}
	probed := make(map[peerStack]bool)
	s.conns.Range(func(_, v any) bool {
		c := v.(*Conn)
		if c.ep != ep || c.peer != a && c.peer != b {
			return true
		}
		ps := peerStack{ep, c.peer, c.peerNode()}
		if ps.node != 0 && match(ps.node) && !probed[ps] {
			probed[ps] = true
			c.verify()
		}
		return true
	})
}

// peerStackReset makes every connection to ps probe: one of them was just
// failed by a stateless reset, which only the peer's host can send, so
// the stack it knew is most likely gone. Once a second per stack at most:
// each of their resets would ask again.
func (s *stack) peerStackReset(ps peerStack) {
	now := time.Now()
	s.verifiedMu.Lock()
	if last, ok := s.verified[ps]; ok && now.Sub(last) < time.Second {
		s.verifiedMu.Unlock()
		return
	}
	if s.verified == nil || len(s.verified) >= 1024 {
		s.verified = make(map[peerStack]time.Time) // forgetting costs a second round at most
	}
	s.verified[ps] = now
	s.verifiedMu.Unlock()
	s.conns.Range(func(_, v any) bool {
		if c := v.(*Conn); c.ep == ps.ep && c.peer == ps.mac && c.peerNode() == ps.node {
			c.verify()
		}
		return true
	})
}

// resetConns fails the connections on ep with err and resets their peers.
func (s *stack) resetConns(ep *endpoint, err error) {
	s.conns.Range(func(_, v any) bool {
		if c := v.(*Conn); c.ep == ep {
			c.resetWith(err)
		}
		return true
	})
}

// failConns fails every connection match selects with err.
func (s *stack) failConns(match func(*Conn) bool, err error) {
	s.conns.Range(func(_, v any) bool {
		if c := v.(*Conn); match(c) {
			c.failWith(err)
		}
		return true
	})
}

// solicit sends a lookup's solicit on ep and registers its waiter.
func (d *discovery) solicit(dst [6]byte, m *discMsg, w chan discAnswer) {
	d.mu.Lock()
	if _, ok := d.waiters[m.nonce]; !ok {
		if d.waiters == nil {
			d.waiters = make(map[uint64]discWaiter)
			d.watch = make(map[string]int)
		}
		key := watchKey(m.name, m.target)
		d.waiters[m.nonce] = discWaiter{ch: w, key: key}
		d.watch[key]++
	}
	d.mu.Unlock()
	d.send(dst, m)
}

func (d *discovery) unwait(nonce uint64) {
	d.mu.Lock()
	if w, ok := d.waiters[nonce]; ok {
		delete(d.waiters, nonce)
		if d.watch[w.key]--; d.watch[w.key] <= 0 {
			delete(d.watch, w.key)
		}
	}
	d.mu.Unlock()
}
