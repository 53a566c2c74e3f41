package myproto

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/myproto/myproto/internal/sys"
)

// The diagnostic channel: what netlink's sock_diag and rtnetlink are to
// the kernel's protocols, for myproto's user-space stacks. Each stack with
// an interface open serves the abstract Unix stream socket
//
//	@myproto/<ethertype>/diag/<pid>/<node ID>
//
// in its network namespace, where a tool finds it by listing
// /proc/net/unix. Requests and answers are JSON objects, one a line
// (SPEC.md §17): the process, its sockets, its neighbour tables, its
// interfaces' counters, and a subscription to its events. Only the stack's
// own user and root may connect (SO_PEERCRED); others get an error line and
// the connection is closed. An abstract socket is never reachable from
// another host or network namespace.

// diagPrefix is the start of the names of the diagnostic sockets of
// etherType's stacks.
func diagPrefix(etherType uint16) string {
	return fmt.Sprintf("myproto/%04x/diag/", etherType)
}

// diagName is the diagnostic socket of this process's stack.
func (s *stack) diagName() string {
	return fmt.Sprintf("%s%d/%016x", diagPrefix(s.etherType), os.Getpid(), s.names.nodeID)
}

const (
	// diagMaxConns bounds the connections a stack serves at once.
	diagMaxConns = 64
	// diagMaxLine bounds a request line.
	diagMaxLine = 4096
	// diagWriteTimeout bounds how long an answer or event may wait for a
	// reader that does not read.
	diagWriteTimeout = 5 * time.Second
)

// diagServer is a stack's diagnostic socket and the connections on it.
type diagServer struct {
	s  *stack
	ln net.Listener

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// startDiagLocked opens the diagnostic socket when the stack opens its
// first endpoint; s.mu is held. A stack that cannot (another process holds
// the name, which cannot happen but for a reused PID and node ID) works on
// without it.
func (s *stack) startDiagLocked() {
	if s.diag != nil {
		return
	}
	ln, err := s.prov.listenHost(s.diagName())
	if err != nil {
		return
	}
	d := &diagServer{s: s, ln: ln, conns: make(map[net.Conn]struct{})}
	s.diag = d
	s.goroutine(d.serve)
}

// stopDiagLocked closes it, and every connection on it, when the stack
// closes its last endpoint; s.mu is held.
func (s *stack) stopDiagLocked() {
	d := s.diag
	if d == nil {
		return
	}
	s.diag = nil
	d.mu.Lock()
	d.closed = true
	d.ln.Close()
	for c := range d.conns {
		c.Close()
	}
	d.mu.Unlock()
}

func (d *diagServer) serve() {
	for {
		c, err := d.ln.Accept()
		if err != nil {
			return
		}
		d.mu.Lock()
		if d.closed || len(d.conns) >= diagMaxConns {
			d.mu.Unlock()
			c.Close()
			continue
		}
		d.conns[c] = struct{}{}
		d.mu.Unlock()
		d.s.goroutine(func() {
			d.handle(c)
			c.Close()
			d.mu.Lock()
			delete(d.conns, c)
			d.mu.Unlock()
		})
	}
}

// diagAllowed reports whether a peer with user ID uid may use the
// diagnostic socket of a process running as own: the same user, or root.
func diagAllowed(uid, own int) bool { return uid == 0 || uid == own }

// errDiagPermission is the error line a refused peer reads.
const errDiagPermission = "permission denied: the diagnostic socket serves its own user and root only"

// handle serves one connection: requests until it closes, or a
// subscription.
func (d *diagServer) handle(c net.Conn) {
	enc := json.NewEncoder(c)
	write := func(v any) error {
		c.SetWriteDeadline(time.Now().Add(diagWriteTimeout))
		return enc.Encode(v)
	}
	if _, uid, err := sys.PeerCred(c); err != nil || !diagAllowed(uid, os.Geteuid()) {
		write(diagResponse{Error: errDiagPermission})
		return
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 512), diagMaxLine)
	for sc.Scan() {
		var req diagRequest
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			write(diagResponse{Error: "bad request: " + err.Error()})
			return
		}
		if req.Op == "subscribe" {
			d.subscribe(c, sc, &req, write)
			return
		}
		if err := write(d.s.diagAnswer(&req)); err != nil {
			return
		}
	}
}

// diagAnswer answers a request other than subscribe.
func (s *stack) diagAnswer(req *diagRequest) diagResponse {
	p := s.process()
	resp := diagResponse{Op: req.Op, Process: toWireProcess(&p)}
	switch req.Op {
	case "process":
	case "sockets":
		resp.Sockets = s.wireSockets(req.Info)
		if resp.Sockets == nil {
			resp.Sockets = []wireSocket{}
		}
	case "neighbors":
		resp.Neighbors = []wireNeighbor{}
		now := time.Now()
		for _, n := range s.neighbors() {
			resp.Neighbors = append(resp.Neighbors, toWireNeighbor(&n, now))
		}
	case "links":
		resp.Links = []wireStats{}
		for _, st := range s.stats() {
			resp.Links = append(resp.Links, toWireStats(&st))
		}
	default:
		resp.Error = fmt.Sprintf("unknown op %q", req.Op)
	}
	return resp
}

// subscribe streams the stack's events of the asked classes until the peer
// closes the connection or falls too far behind to write to.
func (d *diagServer) subscribe(c net.Conn, sc *bufio.Scanner, req *diagRequest, write func(any) error) {
	var classes eventClass
	for _, k := range req.Events {
		switch k {
		case "link":
			classes |= classLink
		case "stack":
			classes |= classStack
		default:
			write(diagResponse{Op: req.Op, Error: fmt.Sprintf("unknown event class %q", k)})
			return
		}
	}
	if len(req.Events) == 0 {
		classes = classAll
	}
	sub := d.s.subscribe(classes)
	defer d.s.unsubscribe(sub)
	p := d.s.process()
	if write(diagResponse{Op: req.Op, Process: toWireProcess(&p)}) != nil {
		return
	}
	if req.Dump && classes&classStack != 0 {
		now := time.Now()
		for _, ws := range d.s.wireSockets(false) {
			ev := wireEvent{Type: EventListen.String(), Time: now, Proto: ws.Proto, Local: ws.Local, Remote: ws.Remote}
			switch {
			case ws.State == "LISTEN" || ws.State == "UNCONN":
			case ws.State == "SYN-SENT" || ws.State == "CLOSED":
				continue
			default:
				ev.Type = EventConnEstablished.String()
			}
			if ws.Local != nil {
				ev.Interface = ws.Local.Zone
			}
			if write(diagResponse{Event: &ev}) != nil {
				return
			}
		}
	}
	// The peer sends nothing more; its closing ends the subscription.
	done := make(chan struct{})
	d.s.goroutine(func() {
		for sc.Scan() {
		}
		close(done)
	})
	for {
		ev, ok := sub.next(done)
		if !ok {
			return
		}
		w := toWireEvent(&ev)
		if write(diagResponse{Event: &w}) != nil {
			return
		}
	}
}

// process describes this process and its stack.
func (s *stack) process() Process {
	p := Process{PID: os.Getpid(), Command: command(), NodeID: s.names.nodeID}
	s.mu.Lock()
	for _, n := range s.names.list {
		if _, ok := s.claims[n]; ok {
			p.Names = append(p.Names, n)
		}
	}
	s.mu.Unlock()
	return p
}

// command is this process's command name, as ps and ss show it.
func command() string {
	// A program that re-executed itself through /proc/self/exe is "exe"
	// there; its name is more use.
	if b, err := os.ReadFile("/proc/self/comm"); err == nil && len(b) > 1 && string(b) != "exe\n" {
		return string(b[:len(b)-1])
	}
	return filepath.Base(os.Args[0])
}

// wireSockets lists the stack's sockets: listeners, datagram sockets and
// stream connections, with each connection's Info if info is set.
func (s *stack) wireSockets(info bool) []wireSocket {
	var out []wireSocket
	// The local address from the binding, under s.mu: the socket's own is
	// set once bind has returned, which may not be yet.
	type bound struct {
		b     *binding
		local *Addr
	}
	s.mu.Lock()
	bs := make([]bound, 0, len(s.ports)+len(s.dports))
	for _, m := range []map[uint16]*binding{s.ports, s.dports} {
		for _, b := range m {
			local := &Addr{Port: b.port}
			if len(b.eps) == 1 {
				local = b.eps[0].addr(b.port)
			}
			bs = append(bs, bound{b, local})
		}
	}
	s.mu.Unlock()
	for _, e := range bs {
		switch b := e.b; {
		case b.ln != nil:
			ln := b.ln
			ln.mu.Lock()
			q := len(ln.queue)
			ln.mu.Unlock()
			if isClosedChan(ln.closed) {
				continue
			}
			out = append(out, wireSocket{Proto: ln.proto(), State: "LISTEN", Local: toWireAddr(e.local), RecvQ: q, SendQ: ln.backlog})
		case b.pc != nil:
			pc := b.pc
			pc.mu.Lock()
			q := pc.qBytes
			pc.mu.Unlock()
			if isClosedChan(pc.closed) {
				continue
			}
			out = append(out, wireSocket{Proto: "datagram", State: "UNCONN", Local: toWireAddr(e.local), RecvQ: q})
		}
	}
	s.conns.Range(func(_, v any) bool {
		c := v.(*Conn)
		ci := c.Info()
		ws := wireSocket{Proto: c.proto(), State: ci.State, Local: toWireAddr(c.local), Remote: toWireAddr(c.remote),
			RecvQ: ci.RecvBuffered, SendQ: ci.SendBuffered}
		if info {
			w := toWireInfo(&ci)
			ws.Info = &w
		}
		out = append(out, ws)
		return true
	})
	slices.SortFunc(out, func(a, b wireSocket) int {
		if a.Local.Port != b.Local.Port {
			return int(a.Local.Port) - int(b.Local.Port)
		}
		return int(remotePort(a)) - int(remotePort(b))
	})
	return out
}

func remotePort(w wireSocket) uint16 {
	if w.Remote == nil {
		return 0
	}
	return w.Remote.Port
}

// readLine reads one JSON answer from r into v.
func readLine(r *bufio.Reader, v any) error {
	line, err := r.ReadBytes('\n')
	if err != nil {
		if err == io.EOF && len(line) == 0 {
			return io.ErrUnexpectedEOF
		}
		if err != io.EOF {
			return err
		}
	}
	return json.Unmarshal(line, v)
}
