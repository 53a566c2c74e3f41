package myproto

import (
	"context"
	"slices"
	"strings"
	"time"
)

// Who is there: a reverse-lookup solicit for the broadcast address, sent
// broadcast, which every stack on the link answers as a reverse lookup of
// its own MAC, one advertise per claimed name (SPEC.md §15). It is how a
// process that has just started, and so has an empty neighbour table, finds
// its neighbours without waiting for their announces.

// QueryNeighbors asks every station on the link for its names and returns
// the neighbour tables of the interfaces asked, which the answers fill in:
// the interface iface, or every usable one when iface is "". It waits for
// answers for the resolver's Timeout (500 ms unless set) or until ctx is
// done, whichever comes first, since there is no telling when every station
// has answered; it fails only if the interfaces cannot be opened.
//
// Each station answers at most 100 names a second per interface (burst
// 20), so a station with more names than that shows only some of them.
// Static entries (Hosts, HostsFile) are not included, nor are other
// processes on this host: like ARP, discovery finds other hosts.
func (r *Resolver) QueryNeighbors(ctx context.Context, iface string) ([]Neighbor, error) {
	s, err := r.stack()
	if err != nil {
		return nil, err
	}
	return s.queryNeighbors(ctx, r, iface)
}

func (s *stack) queryNeighbors(ctx context.Context, r *Resolver, iface string) ([]Neighbor, error) {
	eps, release, err := s.holdEndpoints(iface)
	if err != nil {
		return nil, err
	}
	defer release()
	// The waiter makes the answers solicited, so they enter the tables;
	// the tables, not the channel, are the result.
	w := make(chan discAnswer, 16)
	nonce := randNonce()
	for _, ep := range eps {
		ep.disc.solicit(broadcastMAC, &discMsg{op: discSolicit, nonce: nonce, target: broadcastMAC}, w)
	}
	defer func() {
		for _, ep := range eps {
			ep.disc.unwait(nonce)
		}
	}()
	t := time.NewTimer(r.timeout())
	defer t.Stop()
wait:
	for {
		select {
		case <-w:
		case <-t.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	now := time.Now()
	var out []Neighbor
	for _, ep := range eps {
		ns := ep.disc.table.snapshot(now)
		if ep.udp != nil {
			for i := range ns {
				ns[i].Addr, _ = ep.udp.AddrOf([6]byte(ns[i].HardwareAddr))
			}
		}
		out = append(out, ns...)
	}
	slices.SortFunc(out, func(a, b Neighbor) int {
		return strings.Compare(a.Interface+"/"+a.Name, b.Interface+"/"+b.Name)
	})
	return out, nil
}
