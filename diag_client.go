package myproto

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/myproto/myproto/internal/sys"
)

// The diagnostic channel's client side: what ss, ip -s link and ip monitor
// ask of the kernel, asked of every myproto stack on this host (network
// namespace) through their diagnostic sockets (diag.go, SPEC.md §17).
// None of it opens a packet socket, so none of it needs CAP_NET_RAW —
// except Subscribe, which watches the link itself.

// A Process is a process on this host with a myproto stack open, as the
// diagnostic channel describes it.
type Process struct {
	// PID is its process ID, Command its command name (comm).
	PID     int
	Command string
	// NodeID is its stack's node ID.
	NodeID uint64
	// Names are the names it answers for on the link: on each host one
	// process holds each name.
	Names []string
}

// SocketInfo describes one myproto socket of some process on the host, as
// ss(8) describes a TCP or UDP socket.
type SocketInfo struct {
	// Process is the process that owns it.
	Process Process
	// Proto is "stream" (Listener, Conn), "message" (MsgListener, MsgConn)
	// or "datagram" (PacketConn).
	Proto string
	// State is "LISTEN" for a listener, "UNCONN" for a datagram socket,
	// and TCP's name of the state for a connection ("ESTABLISHED",
	// "FIN-WAIT-1", ...).
	State string
	// Local and Remote are its addresses; Remote is nil but for
	// connections.
	Local, Remote *Addr
	// RecvQ and SendQ are, for a connection, the bytes in its receive and
	// send buffers; for a listener, the connections waiting for Accept and
	// the backlog, as ss shows them; for a datagram socket, the bytes
	// (truesize) of the datagrams waiting for ReadFrom, and 0.
	RecvQ, SendQ int
	// Info is a connection's Conn.Info; nil for other sockets.
	Info *ConnInfo
}

// ProcessStats are the interface counters of one process's stack.
type ProcessStats struct {
	Process Process
	Stats   []Stats
}

// ProcessNeighbors are the neighbour tables of one process's stack.
type ProcessNeighbors struct {
	Process   Process
	Neighbors []Neighbor
}

// diagTimeout bounds each stack's answer when the context has no deadline.
const diagTimeout = 5 * time.Second

// A diagTarget is a stack's diagnostic socket found on the host.
type diagTarget struct {
	name string
	pid  int
	node uint64
}

// diagTargets lists the stacks of etherType on the host.
func diagTargets(etherType uint16) ([]diagTarget, error) {
	names, err := sys.AbstractListeners(diagPrefix(etherType))
	if err != nil {
		return nil, err
	}
	var out []diagTarget
	for _, n := range names {
		rest := strings.TrimPrefix(n, diagPrefix(etherType))
		p, id, ok := strings.Cut(rest, "/")
		pid, err := strconv.Atoi(p)
		if !ok || err != nil {
			continue
		}
		out = append(out, diagTarget{name: n, pid: pid, node: parseNodeID(id)})
	}
	slices.SortFunc(out, func(a, b diagTarget) int { return a.pid - b.pid })
	return out, nil
}

// A DiagError reports a stack on the host that did not answer a
// diagnostic request: it refused (another user's process: errors.Is(err,
// os.ErrPermission) holds), or it failed or went away while asked.
type DiagError struct {
	// PID is the process's ID, from its socket's name.
	PID int
	Err error
}

// Error says which process failed and how.
func (e *DiagError) Error() string { return fmt.Sprintf("myproto: process %d: %v", e.PID, e.Err) }

// Unwrap returns Err, for errors.Is and errors.As.
func (e *DiagError) Unwrap() error { return e.Err }

// errRefused is what a stack that refused the caller says.
var errRefused = fmt.Errorf("%w: the diagnostic socket serves its own user and root only", os.ErrPermission)

// diagConn is a connection to one stack's diagnostic socket.
type diagConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialDiag(ctx context.Context, t diagTarget) (*diagConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", "@"+t.name)
	if err != nil {
		return nil, err
	}
	return &diagConn{c: c, r: bufio.NewReader(c)}, nil
}

// do sends req and reads the answer.
func (dc *diagConn) do(req *diagRequest) (diagResponse, error) {
	var resp diagResponse
	b, _ := json.Marshal(req)
	_, werr := dc.c.Write(append(b, '\n'))
	// A stack that refuses says so at once and closes, which can fail the
	// write: its answer is still there to read.
	if err := readLine(dc.r, &resp); err != nil {
		if werr != nil {
			return resp, werr
		}
		return resp, err
	}
	switch {
	case resp.Error == errDiagPermission:
		return resp, errRefused
	case resp.Error != "":
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}

// askAll sends req to every stack of etherType on the host and returns the
// answers of those that gave one; err joins a *DiagError for each that did
// not. A stack that goes away while asked is left out silently.
func askAll(ctx context.Context, etherType uint16, req *diagRequest) ([]diagResponse, error) {
	targets, err := diagTargets(etherType)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, diagTimeout)
		defer cancel()
	}
	var out []diagResponse
	var errs []error
	for _, t := range targets {
		resp, err := ask(ctx, t, req)
		switch {
		case err == nil:
			out = append(out, resp)
		case errors.Is(err, os.ErrNotExist), errors.Is(err, errGone):
			// It closed its last socket since the listing.
		default:
			errs = append(errs, &DiagError{PID: t.pid, Err: err})
		}
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
	}
	return out, errors.Join(errs...)
}

// errGone stands for a stack that closed its socket since it was listed:
// connecting to a name nobody holds is refused.
var errGone = errors.New("gone")

var errConnRefused = syscall.ECONNREFUSED

func ask(ctx context.Context, t diagTarget, req *diagRequest) (diagResponse, error) {
	dc, err := dialDiag(ctx, t)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, errConnRefused) {
			return diagResponse{}, errGone
		}
		return diagResponse{}, err
	}
	defer dc.c.Close()
	stop := context.AfterFunc(ctx, func() { dc.c.SetDeadline(time.Now()) })
	defer stop()
	return dc.do(req)
}

// Processes returns the processes on this host (network namespace) with a
// myproto stack of cfg's EtherType open: a socket, or a lookup under way.
// Processes of other users are left out unless the caller is root; err
// then holds a *DiagError for each (errors.Is(err, os.ErrPermission)).
// A nil cfg means the defaults; only its EtherType matters.
func Processes(ctx context.Context, cfg *Config) ([]Process, error) {
	resps, err := askAll(ctx, cfg.etherType(), &diagRequest{Op: "process"})
	var out []Process
	for _, r := range resps {
		out = append(out, r.Process.process())
	}
	return out, err
}

// Sockets returns every myproto socket of cfg's EtherType on this host
// (network namespace), of every process, as ss(8) lists TCP and UDP
// sockets: listeners, datagram sockets and stream connections (those
// closing included), with each connection's Conn.Info. It asks each
// process's stack through its diagnostic socket; processes of other users
// are left out, as for Processes, unless the caller is root.
func Sockets(ctx context.Context, cfg *Config) ([]SocketInfo, error) {
	resps, err := askAll(ctx, cfg.etherType(), &diagRequest{Op: "sockets", Info: true})
	var out []SocketInfo
	for _, r := range resps {
		p := r.Process.process()
		for _, w := range r.Sockets {
			si := SocketInfo{Process: p, Proto: w.Proto, State: w.State, Local: w.Local.addr(),
				Remote: w.Remote.addr(), RecvQ: w.RecvQ, SendQ: w.SendQ}
			if w.Info != nil {
				ci := w.Info.info()
				si.Info = &ci
			}
			out = append(out, si)
		}
	}
	return out, err
}

// HostStats returns the interface counters (LinkStats) of every process's
// stack of cfg's EtherType on this host, as ip -s link shows the kernel's.
// Each process counts what its own packet sockets saw: every process gets
// its own copy of each frame the kernel filters pass to it. Processes of
// other users are left out, as for Processes, unless the caller is root.
func HostStats(ctx context.Context, cfg *Config) ([]ProcessStats, error) {
	resps, err := askAll(ctx, cfg.etherType(), &diagRequest{Op: "links"})
	var out []ProcessStats
	for _, r := range resps {
		ps := ProcessStats{Process: r.Process.process()}
		for _, w := range r.Links {
			ps.Stats = append(ps.Stats, w.stats())
		}
		out = append(out, ps)
	}
	return out, err
}

// HostNeighbors returns the neighbour tables (Neighbors) of every
// process's stack of cfg's EtherType on this host. Processes of other users
// are left out, as for Processes, unless the caller is root.
func HostNeighbors(ctx context.Context, cfg *Config) ([]ProcessNeighbors, error) {
	resps, err := askAll(ctx, cfg.etherType(), &diagRequest{Op: "neighbors"})
	now := time.Now()
	var out []ProcessNeighbors
	for _, r := range resps {
		pn := ProcessNeighbors{Process: r.Process.process()}
		for _, w := range r.Neighbors {
			pn.Neighbors = append(pn.Neighbors, w.neighbor(now))
		}
		out = append(out, pn)
	}
	return out, err
}

// subscribePoll is how often Subscribe looks for stacks that started.
const subscribePoll = 200 * time.Millisecond

// Subscribe reports what happens to myproto on this host, as ip monitor
// does for the kernel's protocols: names appearing on the link, leaving
// and conflicting, neighbours going STALE or REACHABLE, interfaces going
// down or up or changing MTU, and every process's listeners and datagram
// sockets opening and closing and connections established and ended. The
// events come on the returned channel, which is closed when ctx is done.
//
// To watch the link, Subscribe opens this process's stack for cfg's
// EtherType on every usable interface for as long as ctx lasts (so it needs
// CAP_NET_RAW, as Listen does), and reports the names, neighbours and
// interfaces as that stack sees them; every other stack on the host sees
// the same link. The sockets, connections and name conflicts are each
// process's own: Subscribe subscribes to every stack on the host through
// its diagnostic socket (SPEC.md §17), and to those that start later within
// 200 ms: for those, their sockets and connections opened before Subscribe
// found them come first, as EventListen and EventConnEstablished. Processes
// of other users are left out unless the caller is root.
//
// Events are not queued without bound: a reader that falls behind gets an
// EventLost saying how many it missed.
func Subscribe(ctx context.Context, cfg *Config) (<-chan Event, error) {
	s, err := defaultStack(cfg)
	if err != nil {
		return nil, err
	}
	_, release, err := s.holdEndpoints("")
	if err != nil {
		return nil, err
	}
	m := &merger{out: make(chan Event, eventQueue), remotes: make(map[string]net.Conn)}
	// The stacks there now are followed from now on; those that start
	// later from their start: their sockets so far come as events first.
	if ts, err := diagTargets(s.etherType); err == nil {
		m.before = make(map[string]bool)
		for _, t := range ts {
			m.before[t.name] = true
		}
	}
	own := s.subscribe(classAll)
	self := s.process()
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		for {
			ev, ok := own.next(ctx.Done())
			if !ok {
				return
			}
			ev.Process = self
			m.send(ev)
		}
	}()
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(subscribePoll)
		defer t.Stop()
		for {
			m.follow(ctx, s)
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		<-ctx.Done()
		s.unsubscribe(own)
		release()
		m.mu.Lock()
		m.done = true
		for _, c := range m.remotes {
			if c != nil {
				c.Close()
			}
		}
		m.mu.Unlock()
		m.wg.Wait()
		close(m.out)
	}()
	return m.out, nil
}

// merger merges the events of this process's stack and of the others.
type merger struct {
	out  chan Event
	wg   sync.WaitGroup
	mu   sync.Mutex
	lost uint64
	done bool
	// remotes are the other stacks subscribed to, by socket name.
	remotes map[string]net.Conn
	// before are the stacks that were there when the subscription began.
	before map[string]bool
}

// send hands ev to the reader, or counts it lost.
func (m *merger) send(ev Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lost > 0 {
		select {
		case m.out <- Event{Type: EventLost, Time: time.Now(), Lost: m.lost}:
			m.lost = 0
		default:
			m.lost++
			return
		}
	}
	select {
	case m.out <- ev:
	default:
		m.lost++
	}
}

// follow subscribes to the stacks on the host it does not follow yet.
func (m *merger) follow(ctx context.Context, s *stack) {
	targets, err := diagTargets(s.etherType)
	if err != nil {
		return
	}
	ownName := s.diagName()
	for _, t := range targets {
		m.mu.Lock()
		_, known := m.remotes[t.name]
		if known || m.done || t.name == ownName {
			m.mu.Unlock()
			continue
		}
		m.remotes[t.name] = nil // being dialed
		m.wg.Add(1)
		m.mu.Unlock()
		go func() {
			defer m.wg.Done()
			m.followOne(ctx, t)
			// Forget it after a while: a socket name is never reused
			// (PID and node ID), so this only stops the retries of one
			// that refused or failed.
			if ctx.Err() == nil {
				time.AfterFunc(10*time.Second, func() {
					m.mu.Lock()
					delete(m.remotes, t.name)
					m.mu.Unlock()
				})
			}
		}()
	}
}

// followOne relays one stack's own events until it goes away or ctx ends.
func (m *merger) followOne(ctx context.Context, t diagTarget) {
	dctx, cancel := context.WithTimeout(ctx, diagTimeout)
	dc, err := dialDiag(dctx, t)
	cancel()
	if err != nil {
		return
	}
	m.mu.Lock()
	if m.done {
		m.mu.Unlock()
		dc.c.Close()
		return
	}
	m.remotes[t.name] = dc.c
	m.mu.Unlock()
	defer dc.c.Close()
	dc.c.SetDeadline(time.Now().Add(diagTimeout))
	m.mu.Lock()
	dump := !m.before[t.name]
	m.mu.Unlock()
	resp, err := dc.do(&diagRequest{Op: "subscribe", Events: []string{"stack"}, Dump: dump})
	if err != nil {
		return
	}
	dc.c.SetDeadline(time.Time{})
	p := resp.Process.process()
	for {
		var r diagResponse
		if err := readLine(dc.r, &r); err != nil || r.Event == nil {
			return
		}
		if ev, ok := r.Event.event(); ok {
			ev.Process = p
			m.send(ev)
		}
	}
}
