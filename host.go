package myproto

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The host agent. Every packet socket on an interface gets its own copy of
// each frame, and each process answers only for its own ports and
// connections; yet some frames are for no live process: a SYN to a port
// nobody holds, a probe on a connection whose process died. One stack per
// host (network namespace) and EtherType answers for those: the host agent,
// elected by holding the abstract Unix stream socket
// @myproto/<ethertype>/agent. Every other stack with an interface open is a
// member: it stays connected to the agent, and each tells the other its node
// ID and ports, so that
//
//   - the agent's control socket passes SYNs and probes only to ports no
//     other process holds: a flood aimed at one process costs the others
//     nothing;
//   - a member whose connection closes without a goodbye has died (the
//     kernel closed its socket): the agent tells the link (a gone notice,
//     discovery op 7), peers probe their connections to it at once, and the
//     agent answers the probes with stateless resets;
//   - when the agent itself dies, the members see their connection close,
//     one of them takes over and sends the gone notice for it.
//
// The messages are lines of text. Both sides send "hello NODE PID" first and
// "ports P,P,..." (all their ports) whenever those change; a member sends
// "bye" before it leaves, the agent "left NODE" when a member left or died
// (so members retry names it held) and "bye" before it leaves. None of it is
// trusted for more than a hint: a gone notice only makes peers probe, and a
// live connection answers its probe.

// agentName is the abstract socket the agent of an EtherType holds.
func agentName(etherType uint16) string {
	return fmt.Sprintf("myproto/%04x/agent", etherType)
}

// deadPortTTL is how long the agent treats a dead process's ports as free
// whatever the kernel says. A killed process's sockets close one after
// another, and each packet socket waits for an RCU grace period as it goes:
// its port reservations can outlive the news of its death by tens of
// milliseconds, while its peers' probes are already arriving.
const deadPortTTL = time.Second

// host is a stack's part in its host's agent election: member or agent.
type host struct {
	s *stack

	mu      sync.Mutex
	stopped bool
	ln      net.Listener         // while agent
	members map[*member]struct{} // while agent
	others  []uint16             // while agent: the members' ports, sorted
	dead    map[uint16]time.Time // while agent: ports of processes that died, and when
	conn    net.Conn             // while member: to the agent
	agent   member               // while member: the agent, as it said
}

// member is one side of an agent connection, as the other sees it.
type member struct {
	c     net.Conn
	node  uint64
	ports []uint16
	bye   bool
}

// readLine reads one message, notes what it says of m, and returns it.
func (m *member) readLine(r *bufio.Reader) (verb, arg string, err error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", "", err
	}
	verb, arg, _ = strings.Cut(strings.TrimSpace(line), " ")
	switch verb {
	case "hello":
		node, _, _ := strings.Cut(arg, " ")
		m.node, _ = strconv.ParseUint(node, 16, 64)
	case "ports":
		m.ports = m.ports[:0]
		for _, f := range strings.Split(arg, ",") {
			if p, err := strconv.ParseUint(f, 10, 16); err == nil {
				m.ports = append(m.ports, uint16(p))
			}
		}
	case "bye":
		m.bye = true
	}
	return verb, arg, nil
}

// startHostLocked joins the host's agent election; s.mu is held.
func (s *stack) startHostLocked() {
	if s.host != nil {
		return
	}
	h := &host{s: s}
	s.host = h
	s.hostRef.Store(h)
	s.goroutine(h.run)
}

// stopHostLocked leaves it, saying goodbye; s.mu is held. It does not wait
// for the host goroutine, which may itself be waiting for s.mu.
func (s *stack) stopHostLocked() {
	h := s.host
	if h == nil {
		return
	}
	s.host = nil
	s.hostRef.Store(nil)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	if h.conn != nil {
		h.conn.Write([]byte("bye\n"))
		h.conn.Close()
	}
	if h.ln != nil {
		h.ln.Close()
		for m := range h.members {
			m.c.Write([]byte("bye\n"))
			m.c.Close()
		}
	}
}

// isAgent reports whether this stack is its host's agent, and the ports
// other processes hold if so.
func (h *host) isAgent() (bool, []uint16) {
	if h == nil {
		return false, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ln != nil && !h.stopped, h.others
}

// freed reports whether port belonged to a process that died lately and no
// live member has claimed it since: then it is free, whatever its lingering
// reservation says.
func (h *host) freed(port uint16, now time.Time) bool {
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	at, ok := h.dead[port]
	if !ok {
		return false
	}
	if now.Sub(at) > deadPortTTL {
		delete(h.dead, port)
		return false
	}
	_, live := slices.BinarySearch(h.others, port)
	return !live
}

func (h *host) run() {
	var last member // the agent we were connected to, as it said
	for {
		h.mu.Lock()
		stopped := h.stopped
		h.mu.Unlock()
		if stopped {
			return
		}
		ln, err := h.s.prov.listenHost(agentName(h.s.etherType))
		if err == nil {
			if last.bye {
				last = member{} // it left in good order: nothing to tell
			}
			h.serve(ln, &last)
			return
		}
		c, err := h.s.prov.dialHost(agentName(h.s.etherType))
		if err != nil {
			// The agent is just going; whoever binds first takes over.
			time.Sleep(time.Duration(500+rand.IntN(1500)) * time.Microsecond)
			continue
		}
		// A connection to an agent that was dying as we dialed ends before
		// it says hello: then the news is still about the last one.
		if agent := h.member(c); agent.node != 0 {
			last = agent
		}
		h.s.retryNames()
	}
}

// member is a member's life: hello and ports to the agent, then its
// messages until the connection closes. It returns the agent as it
// described itself.
func (h *host) member(c net.Conn) member {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		c.Close()
		return member{}
	}
	h.conn = c
	h.agent = member{}
	fmt.Fprintf(c, "hello %x %d\n", h.s.names.nodeID, os.Getpid())
	h.mu.Unlock()
	h.s.republish() // tells the agent our ports

	var agent member
	r := bufio.NewReader(c)
	for {
		verb, _, err := agent.readLine(r)
		if err != nil {
			break
		}
		if verb == "left" {
			h.s.retryNames()
		}
	}
	h.mu.Lock()
	h.conn = nil
	h.mu.Unlock()
	c.Close()
	return agent
}

// tellPorts tells the other side of each agent connection this stack's
// ports (publish calls it whenever they change). The agent uses a member's
// ports to keep its filter from passing that member's SYNs, and the ports of
// one that died to answer for them at once; a member keeps the agent's for
// when it dies. Ownership is checked before anyone answers for a port, so a
// late update costs a few frames at most.
func (h *host) tellPorts(ports []uint16) {
	if h == nil {
		return
	}
	var b strings.Builder
	b.WriteString("ports ")
	for i, p := range ports {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(p)))
	}
	b.WriteByte('\n')
	msg := []byte(b.String())
	h.mu.Lock()
	defer h.mu.Unlock()
	// A stuck peer must not hold up this stack.
	deadline := time.Now().Add(100 * time.Millisecond)
	if h.conn != nil {
		h.conn.SetWriteDeadline(deadline)
		h.conn.Write(msg)
	}
	for m := range h.members {
		m.c.SetWriteDeadline(deadline)
		m.c.Write(msg)
	}
}

// serve is the agent's life: it accepts members until the stack leaves.
// prev is the agent before it, which died if it said no goodbye.
func (h *host) serve(ln net.Listener, prev *member) {
	now := time.Now()
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		ln.Close()
		return
	}
	h.ln = ln
	h.members = make(map[*member]struct{})
	h.dead = make(map[uint16]time.Time)
	for _, p := range prev.ports {
		h.dead[p] = now
	}
	h.mu.Unlock()
	// The filter first: the notice makes peers probe at once, and the
	// probes must reach us.
	h.s.republish()
	if prev.node != 0 {
		h.s.sendGone(prev.node)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		h.s.goroutine(func() { h.serveMember(c) })
	}
}

func (h *host) serveMember(c net.Conn) {
	m := &member{c: c}
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		c.Close()
		return
	}
	h.members[m] = struct{}{}
	fmt.Fprintf(c, "hello %x %d\n", h.s.names.nodeID, os.Getpid())
	h.mu.Unlock()
	h.s.republish() // tells the new member our ports

	var cur member // the connection's own copy, m's under h.mu
	r := bufio.NewReader(c)
	for {
		verb, _, err := cur.readLine(r)
		if err != nil {
			break
		}
		h.mu.Lock()
		m.node, m.ports, m.bye = cur.node, slices.Clone(cur.ports), cur.bye
		h.unionLocked()
		h.mu.Unlock()
		if verb == "ports" {
			h.s.republish()
		}
	}
	c.Close()
	now := time.Now()
	h.mu.Lock()
	delete(h.members, m)
	h.unionLocked()
	if !m.bye {
		for _, p := range m.ports {
			h.dead[p] = now
		}
	}
	stopped := h.stopped
	var rest []net.Conn
	for o := range h.members {
		rest = append(rest, o.c)
	}
	h.mu.Unlock()
	if stopped {
		return
	}
	h.s.republish()
	if !m.bye && m.node != 0 {
		// The kernel closed a dead member's socket: tell its peers.
		h.s.sendGone(m.node)
	}
	// The other members may take over the names it held.
	for _, o := range rest {
		fmt.Fprintf(o, "left %x\n", m.node)
	}
	h.s.retryNames()
}

// unionLocked recomputes the ports the members hold; h.mu is held.
func (h *host) unionLocked() {
	var all []uint16
	for m := range h.members {
		all = append(all, m.ports...)
	}
	slices.Sort(all)
	h.others = slices.Compact(all)
}
