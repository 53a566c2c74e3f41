package myproto

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"
)

// A Resolver looks up node names: static entries first (like /etc/hosts),
// then the neighbour tables, then neighbour discovery on the link. The zero
// value is ready to use.
type Resolver struct {
	// Config is the stack configuration; nil means defaults.
	Config *Config
	// Stack, if set, is the stack to look names up with; Config is then
	// unused.
	Stack *Stack
	// Timeout bounds how long a lookup solicits the link before it
	// reports the name not found; 0 means 500 ms. A context deadline may
	// cut it shorter.
	Timeout time.Duration
	// Hosts are static entries: names (case-insensitive) to MACs.
	Hosts map[string]net.HardwareAddr
	// HostsFile, if set, names a file of static entries, read at each
	// lookup: lines of a MAC followed by names, '#' starting a comment.
	HostsFile string
}

// DefaultResolver is the resolver ResolveAddr, Dial and Dialers without a
// Resolver use.
var DefaultResolver = &Resolver{}

const (
	defaultLookupTimeout = 500 * time.Millisecond
	// lookupRetry is the gap between a lookup's solicits: unresolved names
	// are retried fast, so an unknown name fails quickly.
	lookupRetry = 100 * time.Millisecond
)

// LookupName returns the address (port 0) of the neighbour named name. The
// zone is the interface it was found on, or empty for a static entry. An
// unknown name gives a *net.DNSError with IsNotFound set; a cancelled or
// expired ctx gives a *net.DNSError wrapping ctx's error.
func (r *Resolver) LookupName(ctx context.Context, name string) (*Addr, error) {
	s, err := r.stack()
	if err != nil {
		return nil, err
	}
	return s.lookupName(ctx, r, name, "")
}

// LookupAddr returns the names of the neighbour with the given MAC, sorted,
// asking it directly if no table knows it. Errors are as for LookupName.
func (r *Resolver) LookupAddr(ctx context.Context, mac net.HardwareAddr) ([]string, error) {
	s, err := r.stack()
	if err != nil {
		return nil, err
	}
	return s.lookupAddr(ctx, r, mac)
}

// stack is the stack r looks names up with.
func (r *Resolver) stack() (*stack, error) {
	if r == nil {
		return defaultStack(nil)
	}
	return stackFor(r.Stack, r.Config)
}

func (r *Resolver) timeout() time.Duration {
	if r == nil || r.Timeout <= 0 {
		return defaultLookupTimeout
	}
	return r.Timeout
}

// static returns name's static entry, if any.
func (r *Resolver) static(name string) (net.HardwareAddr, bool, error) {
	if r == nil {
		return nil, false, nil
	}
	for n, mac := range r.Hosts {
		if strings.EqualFold(n, name) && len(mac) == 6 {
			return mac, true, nil
		}
	}
	if r.HostsFile == "" {
		return nil, false, nil
	}
	entries, err := readHostsFile(r.HostsFile)
	if err != nil {
		return nil, false, err
	}
	for _, e := range entries {
		if slices.Contains(e.names, name) {
			return e.mac, true, nil
		}
	}
	return nil, false, nil
}

// staticNames returns the static names of mac.
func (r *Resolver) staticNames(mac net.HardwareAddr) ([]string, error) {
	if r == nil {
		return nil, nil
	}
	var names []string
	for n, m := range r.Hosts {
		if string(m) == string(mac) {
			names = append(names, strings.ToLower(n))
		}
	}
	if r.HostsFile != "" {
		entries, err := readHostsFile(r.HostsFile)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if string(e.mac) == string(mac) {
				names = append(names, e.names...)
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

type hostsEntry struct {
	mac   net.HardwareAddr
	names []string
}

// readHostsFile parses a hosts file; lines that do not parse are skipped,
// as the C library does with /etc/hosts.
func readHostsFile(path string) ([]hostsEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []hostsEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		mac, err := net.ParseMAC(fields[0])
		if err != nil || len(mac) != 6 {
			continue
		}
		e := hostsEntry{mac: mac}
		for _, n := range fields[1:] {
			if c, err := canonicalName(n); err == nil {
				e.names = append(e.names, c)
			}
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// notFound is the error for a name nobody answers for.
func notFound(name string) error {
	return &net.DNSError{Err: "no such host on the link", Name: name, IsNotFound: true}
}

// lookupFailed wraps a context's error as package net does.
func lookupFailed(name string, err error) error {
	return &net.DNSError{Err: err.Error(), Name: name, IsTimeout: errors.Is(err, context.DeadlineExceeded), UnwrapErr: err}
}

// lookupName resolves name on the interface zone ("" for all usable ones).
func (s *stack) lookupName(ctx context.Context, r *Resolver, name, zone string) (*Addr, error) {
	canon, err := canonicalName(name)
	if err != nil {
		return nil, err
	}
	mac, ok, err := r.static(canon)
	if err != nil {
		return nil, &net.DNSError{Err: err.Error(), Name: name}
	}
	if ok {
		return &Addr{HardwareAddr: mac, Zone: zone}, nil
	}
	eps, release, err := s.holdEndpoints(zone)
	if err != nil {
		return nil, err
	}
	defer release()
	// The tables first.
	now := time.Now()
	for _, ep := range eps {
		if n, ok := ep.disc.table.lookup(canon, now); ok {
			return ep.peerAddr(n.mac, 0), nil
		}
	}
	// Then the link.
	as, err := s.solicit(ctx, r, eps, canon, [6]byte{}, broadcastMAC, 0)
	if err != nil {
		return nil, err
	}
	a := as[0]
	return a.ep.peerAddr(a.mac, 0), nil
}

// lookupAddr finds the names of mac.
func (s *stack) lookupAddr(ctx context.Context, r *Resolver, mac net.HardwareAddr) ([]string, error) {
	if len(mac) != 6 {
		return nil, &net.AddrError{Err: "not a 6-byte MAC", Addr: mac.String()}
	}
	names, err := r.staticNames(mac)
	if err != nil {
		return nil, &net.DNSError{Err: err.Error(), Name: mac.String()}
	}
	if len(names) > 0 {
		return names, nil
	}
	eps, release, err := s.holdEndpoints("")
	if err != nil {
		return nil, err
	}
	defer release()
	var m [6]byte
	copy(m[:], mac)
	now := time.Now()
	for _, ep := range eps {
		if names := ep.disc.table.namesOf(m, now); len(names) > 0 {
			return names, nil
		}
	}
	// One advertise comes back per name: collect them until they stop.
	as, err := s.solicit(ctx, r, eps, "", m, m, reverseQuiet)
	if err != nil {
		return nil, err
	}
	names = names[:0]
	for _, a := range as {
		names = append(names, a.msg.name)
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// reverseQuiet is how long a reverse lookup waits after an answer for the
// station's other names.
const reverseQuiet = 50 * time.Millisecond

// solicit asks the link on every endpoint, a few times, until an advertise
// answers, ctx ends or the resolver's timeout passes. With quiet > 0 it then
// goes on collecting answers until none has come for that long.
func (s *stack) solicit(ctx context.Context, r *Resolver, eps []*endpoint, name string, target, dst [6]byte, quiet time.Duration) ([]discAnswer, error) {
	what := name
	if what == "" {
		what = net.HardwareAddr(target[:]).String()
	}
	w := make(chan discAnswer, 16)
	nonce := randNonce()
	defer func() {
		for _, ep := range eps {
			ep.disc.unwait(nonce)
		}
	}()
	give := time.NewTimer(r.timeout())
	defer give.Stop()
	retry := time.NewTicker(lookupRetry)
	defer retry.Stop()
	for {
		for _, ep := range eps {
			ep.disc.solicit(dst, &discMsg{op: discSolicit, nonce: nonce, name: name, target: target}, w)
		}
		select {
		case a := <-w:
			return collect(ctx, w, a, quiet), nil
		case <-ctx.Done():
			return nil, lookupFailed(what, ctx.Err())
		case <-give.C:
			return nil, notFound(what)
		case <-retry.C:
		}
	}
}

// collect gathers the answers that follow first until quiet passes without
// one (or ctx ends).
func collect(ctx context.Context, w <-chan discAnswer, first discAnswer, quiet time.Duration) []discAnswer {
	as := []discAnswer{first}
	if quiet <= 0 {
		return as
	}
	t := time.NewTimer(quiet)
	defer t.Stop()
	for {
		select {
		case a := <-w:
			as = append(as, a)
			t.Reset(quiet)
		case <-t.C:
			return as
		case <-ctx.Done():
			return as
		}
	}
}

// holdEndpoints opens (or shares), for a lookup, the endpoints on the
// interface zone, or on every usable interface when zone is "".
func (s *stack) holdEndpoints(zone string) ([]*endpoint, func(), error) {
	ifis, err := s.selectInterfaces(nil, zone)
	if err != nil {
		return nil, nil, err
	}
	b := &binding{}
	s.mu.Lock()
	var denied error
	for i := range ifis {
		ep, err := s.acquireEndpoint(&ifis[i])
		if err != nil && zone == "" && errors.Is(err, os.ErrPermission) {
			// Without CAP_NET_RAW a lookup everywhere still works on
			// the UDP bearers.
			denied = err
			continue
		}
		if err != nil {
			closing := s.releaseLocked(b)
			s.mu.Unlock()
			for _, ep := range closing {
				ep.close()
			}
			return nil, nil, err
		}
		b.eps = append(b.eps, ep)
	}
	if len(b.eps) == 0 && denied != nil {
		s.mu.Unlock()
		return nil, nil, denied
	}
	eps := slices.Clone(b.eps)
	s.mu.Unlock()
	return eps, func() {
		s.mu.Lock()
		closing := s.releaseLocked(b)
		s.mu.Unlock()
		for _, ep := range closing {
			ep.close()
		}
	}, nil
}

// Neighbors returns the neighbour tables of the stack for cfg's EtherType:
// every live entry on every interface the stack has used.
func Neighbors(cfg *Config) []Neighbor {
	s, err := defaultStack(cfg)
	if err != nil {
		return nil
	}
	return s.neighbors()
}

func (s *stack) neighbors() []Neighbor {
	s.mu.Lock()
	tables := make([]*neighborTable, 0, len(s.tables))
	var where []func([6]byte) netip.AddrPort // each table's UDP addresses, if a UDP bearer's
	for idx, t := range s.tables {
		tables = append(tables, t)
		where = append(where, s.udpAddrOf(idx))
	}
	s.mu.Unlock()
	now := time.Now()
	var out []Neighbor
	for i, t := range tables {
		ns := t.snapshot(now)
		if f := where[i]; f != nil {
			for j := range ns {
				ns[j].Addr = f([6]byte(ns[j].HardwareAddr))
			}
		}
		out = append(out, ns...)
	}
	slices.SortFunc(out, func(a, b Neighbor) int {
		return strings.Compare(a.Interface+"/"+a.Name, b.Interface+"/"+b.Name)
	})
	return out
}
