package myproto

import (
	"errors"
	"net"
	"time"

	"golang.org/x/net/bpf"

	"github.com/myproto/myproto/internal/link"
	"github.com/myproto/myproto/internal/stream"
)

// The control path. Each endpoint reads two packet sockets: the data socket
// (stream and datagram frames to our ports) and the control socket, which
// the kernel filter gives only discovery frames and SYNs (and, for the host
// agent, probes to ports no process holds). A SYN flood or a discovery flood
// thus lands in the control socket's small buffer, where the kernel drops
// what the control loop cannot take, while data keeps flowing; and the
// control loop spends at most a bounded share of a CPU, so a flood cannot
// starve the data path either. Its answers (SYN-ACKs, refusals, resets) go
// out in batches through the control socket.

const (
	// controlReadBuffer sizes the control socket's receive buffer: some
	// thousand SYNs of a burst of dials, and no more.
	controlReadBuffer = 1 << 20
	// controlWriteBuffer sizes its send buffer, for the answers.
	controlWriteBuffer = 4 << 20
	// controlShare is the share of one CPU the control loop may use while
	// it is flooded, system calls included; beyond it, it sleeps and the
	// kernel drops.
	controlShare = 0.5
	// controlBurst is the CPU time it may use at once before the share
	// applies.
	controlBurst = 5 * time.Millisecond
	// controlFrameMax is the most that one frame's handling counts
	// toward the share: a SYN's answer costs some microseconds, and a
	// batch that took longer was mostly waiting for a CPU (see
	// controlLoop).
	controlFrameMax = 50 * time.Microsecond
)

// openControl opens the control socket on ifi with the filter ctl. Where
// the provider can, it opens it as a sys.QuietLink: registered with Go's
// poller only while the control loop waits for a frame. A socket always in
// the poller has the kernel wake the poller's thread for each frame queued
// while its reader sleeps, and for each sent frame that frees buffer space;
// the control loop sleeps on purpose while a flood keeps its socket full,
// and those wake-ups cost about as much CPU as its work (a flooded listener
// answered 34–36k SYNs a second so, against 66–84k without them).
func (s *stack) openControl(ifi *net.Interface, ctl []bpf.RawInstruction) (link.Link, error) {
	// The control socket's buffer is small on purpose: a flood of SYNs or
	// discovery frames overflows it, and the kernel drops them there,
	// never on the data socket.
	if cp, ok := s.prov.(controlProvider); ok {
		return cp.openControl(ifi, s.etherType, ctl, controlReadBuffer, controlWriteBuffer)
	}
	return s.prov.open(ifi, s.etherType, ctl, controlReadBuffer, controlWriteBuffer)
}

// controlLoop reads the control socket until it closes. It keeps to
// controlShare of a CPU: it times its work by the wall clock, from a batch
// read (or, when the last batch was full and the socket is likely not
// empty, from the read's start) to the answers sent, the kernel's work in
// the system calls included, and sleeps whenever it has worked more than
// controlShare of the time that passed, or more than controlBurst at once.
// A flood then fills the control socket and the kernel drops the rest
// there.
//
// It waits for frames in Go's poller, holding no thread. It used to run
// locked to a thread of its own, waiting in a blocking read and timed by
// that thread's CPU clock; but a goroutine blocked in a system call keeps
// its P, which the runtime's sysmon takes back after 20 µs whenever the
// other Ps are busy, and each time it does sysmon keeps waking every 20 µs
// instead of backing off. A server answering a SYN every 200 µs (perf
// --crr) spent a fifth of its samples in sysmon; in the poller it accepted
// 5.2–5.5k connections a second instead of 4.3–4.6k. The wall clock
// counts time the loop was preempted as work, so under contention it
// sleeps sooner than its CPU share says, a flood's answers giving way; a
// batch counts at most controlFrameMax a frame, so that one SYN handled
// while the process waited long for a CPU does not put the loop to sleep.
func (ep *endpoint) controlLoop() {
	ms := make([]link.Message, rxBatch)
	size := 0
	budget := controlBurst // work the loop may still do at once
	last := time.Now()
	full := false // the last batch filled ms
	for {
		if fs := ep.frameSize(); fs > size {
			size = fs
			for i := range ms {
				ms[i].Buf = make([]byte, size)
			}
		}
		start := time.Now()
		n, err := ep.ctl.ReadBatch(ms)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if !full {
			start = time.Now() // the read may have waited
		}
		for i := range n {
			ep.controlInput(ms[i].Buf[:ms[i].N])
		}
		ep.ctlOut.flush()
		full = n == len(ms)
		now := time.Now()
		work := min(now.Sub(start), time.Duration(n+1)*controlFrameMax)
		budget = min(controlBurst, budget+time.Duration(float64(now.Sub(last))*controlShare)) - work
		last = now
		if budget < 0 {
			// Over the share: let the kernel drop for a while.
			time.Sleep(time.Duration(float64(-budget) / controlShare))
		}
	}
}

// controlInput decodes one frame from the control socket and handles it.
func (ep *endpoint) controlInput(frame []byte) {
	ep.stats.framesIn.Add(1)
	ep.stats.bytesIn.Add(uint64(len(frame)))
	h, body, reason := parseFrame(frame, ep.s.etherType)
	if reason == dropNone && h.dst[0]&1 == 0 && h.dst != ep.hwaddr() {
		reason = dropNotForUs
	}
	if reason == dropNone {
		switch h.typ {
		case typeDiscovery:
			reason = ep.s.discInput(ep, &h, body)
		case typeStream:
			reason = ep.s.controlStream(ep, &h, body)
		case typeDatagram:
			// A UDP bearer's multicast group passes broadcast datagrams
			// here; a packet socket's control filter never does.
			reason = ep.s.demux(ep, &h, body)
		default:
			reason = dropNoSocket
		}
	}
	if reason != dropNone {
		ep.stats.drops[reason].Add(1)
	}
}

// controlStream handles a SYN, or a probe the host agent receives for a
// port no process holds.
func (s *stack) controlStream(ep *endpoint, h *header, body []byte) dropReason {
	if h.dst[0]&1 != 0 {
		// Streams are unicast. Answering a SYN or probe sent to a group
		// would have every stack on the segment reflect one forged frame
		// at its claimed sender, as TCP ignores a SYN to a broadcast
		// address.
		return dropNotForUs
	}
	b := s.lookup(h.dstPort)
	agent, _ := s.hostRef.Load().isAgent()
	switch {
	case h.flags&stream.FlagSYN != 0 && b != nil && b.ln != nil && (b.ifindex == 0 || b.ifindex == ep.index):
		return b.ln.inputSYN(ep, h, body)
	case h.flags&stream.FlagSYN != 0 && b != nil:
		// Ours, but nobody listens: a client port, a datagram socket's,
		// or a listener on another interface.
		if s.allowRefusal(ep, h.src) {
			s.refuseSYN(ep, h, body)
		}
	case h.flags&stream.FlagSYN != 0 && ep.udp != nil:
		// A UDP bearer's address is this process's alone: nobody else
		// will answer.
		if s.allowRefusal(ep, h.src) {
			s.refuseSYN(ep, h, body)
		}
	case h.flags&stream.FlagSYN != 0 && agent && s.allowRefusal(ep, h.src) && s.unowned(h.dstPort):
		s.refuseSYN(ep, h, body)
	case h.flags&stream.FlagProbe != 0 && b == nil && agent && s.refuse.allow(time.Now()) && s.unowned(h.dstPort):
		// A probe on a connection whose process is gone.
		ep.statelessReset(h, body, &ep.ctlOut)
	}
	return dropNoSocket
}

// unowned reports whether no process on the host holds port: one that died
// lately held it (the agent knows its ports), or the kernel says nobody
// does (the reservation is the truth, the members' reports may lag). The
// caller rate-limits the answers first, so a flood costs at most that many
// questions.
func (s *stack) unowned(port uint16) bool {
	return s.hostRef.Load().freed(port, time.Now()) || !s.prov.owned(s.etherType, port)
}

// allowRefusal reports whether a SYN from src that nobody listens for may
// be refused now. A station in ep's neighbour table has refuseRate
// refusals a second of its own; any other MAC takes from the stack's
// refuseRate in all. SYNs forged from made-up MACs, as a flood's are, thus
// spend only the latter, and a neighbour dialing a closed port during the
// flood is still refused at once rather than left to time out. The shared
// limit stays low because the answer to a made-up MAC is a frame a switch
// floods to every port: a kernel's TCP sends none there, as ARP finds no
// such host.
func (s *stack) allowRefusal(ep *endpoint, src [6]byte) bool {
	now := time.Now()
	if known, ok := ep.disc.table.allowRefusal(src, now); known {
		return ok
	}
	return s.refuse.allow(now)
}

// refuseSYN answers a SYN to a port nobody listens on with a RST, so the
// dialer fails at once with ECONNREFUSED instead of timing out.
func (s *stack) refuseSYN(ep *endpoint, h *header, body []byte) {
	out := &ep.ctlOut
	n, dst, ok := stream.RefuseSYN(body, out.body())
	if ok {
		out.commit(&header{dst: h.src, typ: typeStream, srcPort: h.dstPort, dstPort: h.srcPort, connID: dst}, n)
	}
}

// statelessReset answers a packet for a connection that does not exist
// here (SPEC.md §10.4) with a frame echoing its connection ID and packet
// number: only the connection's peer knows both, so it can tell the reset
// from a forgery. The caller has rate-limited it. out is nil on the data
// path, which sends it alone.
func (ep *endpoint) statelessReset(h *header, body []byte, out *ctlBatch) {
	if len(body) < stream.PNLen {
		return
	}
	rh := &header{dst: h.src, typ: typeStream, flags: stream.FlagReset, srcPort: h.dstPort, dstPort: h.srcPort, connID: h.connID}
	if out == nil {
		ep.send(rh, body[:stream.PNLen])
		return
	}
	copy(out.body(), body[:stream.PNLen])
	out.commit(rh, stream.PNLen)
}

// ctlBatch collects frames to send with one WriteBatch: the control loop's
// answers to a batch of SYNs go out together.
type ctlBatch struct {
	ep *endpoint
	tb *txBatch
	n  int
}

// body returns the buffer for the next frame's body.
func (b *ctlBatch) body() []byte {
	if b.tb == nil {
		b.tb = b.ep.getBatch()
	}
	buf := b.tb.ms[b.n].Buf
	return buf[offBody:min(len(buf), b.ep.frameSize())]
}

// commit completes the frame whose body of n bytes is in body(), with h's
// addressing, and sends the batch once it is full.
func (b *ctlBatch) commit(h *header, n int) {
	h.src = b.ep.hwaddr()
	h.etherType = b.ep.s.etherType
	m := &b.tb.ms[b.n]
	m.N = marshalFrame(m.Buf, h, n)
	b.n++
	if b.n == len(b.tb.ms) {
		b.flush()
	}
}

// flush sends what was committed.
func (b *ctlBatch) flush() {
	if b.n == 0 {
		return
	}
	if _, err := b.ep.ctl.WriteBatch(b.tb.ms[:b.n]); err == nil {
		b.ep.countOut(b.tb.ms[:b.n])
	}
	b.n = 0
}
