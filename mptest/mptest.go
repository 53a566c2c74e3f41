// Package mptest runs myproto stacks on an in-memory Ethernet segment with
// seeded, deterministic impairments — loss, duplication, reordering,
// corruption, delay, jitter and a rate limit — so that programs built on
// myproto can be tested anywhere: no privileges, no network namespaces, no
// packet sockets. It is to myproto what nltest is to mdlayher/netlink.
//
// A Network is the segment; each Network.NewStack is a host on it with one
// interface, and returns an ordinary *myproto.Stack: its Dial, Listen,
// ListenPacket and Resolver behave as on a real link, names included.
//
//	n := mptest.NewNetwork(&mptest.Config{Seed: 1, Loss: 0.05})
//	srv, _ := n.NewStack(&myproto.Config{Name: "server"})
//	cli, _ := n.NewStack(&myproto.Config{Name: "client"})
//	ln, _ := srv.Listen("myproto", ":80")
//	c, _ := cli.Dial("myproto", "server:80")
package mptest

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/myproto/myproto"
	"github.com/myproto/myproto/internal/memlink"
	"github.com/myproto/myproto/internal/memstack"
)

// Config describes a Network. The zero value is a perfect link of MTU 1500.
type Config struct {
	// Seed seeds every impairment decision: the same seed and the same
	// traffic give the same losses.
	Seed int64
	// MTU is the interfaces' MTU, excluding the Ethernet header; 0 means
	// 1500.
	MTU int
	// Loss, Duplicate, Reorder and Corrupt are per-frame probabilities in
	// [0, 1]. A corrupted frame has a bit flipped, which myproto's CRC
	// catches: it counts as a loss.
	Loss, Duplicate, Reorder, Corrupt float64
	// Delay is the one-way latency of every frame; Jitter adds a random
	// [0, Jitter] to each, which reorders frames sent closer together.
	Delay, Jitter time.Duration
	// Rate limits the segment to this many bytes a second; 0 means
	// unlimited.
	Rate int64
}

func (c *Config) impairments() memlink.Impairments {
	return memlink.Impairments{
		Loss: c.Loss, Duplicate: c.Duplicate, Reorder: c.Reorder, Corrupt: c.Corrupt,
		Delay: c.Delay, Jitter: c.Jitter, Rate: c.Rate,
	}
}

// A Network is an in-memory Ethernet segment. Its methods are safe for
// concurrent use.
type Network struct {
	seg *memlink.Segment
	mtu int

	mu     sync.Mutex
	hosts  int
	stacks []*myproto.Stack
}

// NewNetwork returns an empty segment; nil cfg means a perfect link.
func NewNetwork(cfg *Config) *Network {
	if cfg == nil {
		cfg = &Config{}
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = memlink.DefaultMTU
	}
	return &Network{
		seg: memlink.NewSegment(memlink.Config{Seed: cfg.Seed, MTU: mtu, Impairments: cfg.impairments()}),
		mtu: mtu,
	}
}

// NewStack adds a host to the network and returns its stack, configured by
// cfg (nil: the defaults; give hosts names with Config.Name to dial them by
// name). The host has one interface, "mp0", with a locally administered MAC
// of its own, 02:00:5e:00:00:01 for the first host, :02 for the second and
// so on.
func (n *Network) NewStack(cfg *myproto.Config) (*myproto.Stack, error) {
	if memstack.New == nil {
		return nil, errors.New("mptest: package myproto did not initialise")
	}
	n.mu.Lock()
	n.hosts++
	i := n.hosts
	n.mu.Unlock()
	if i > 0xffff {
		return nil, errors.New("mptest: too many hosts")
	}
	mac := net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, byte(i >> 8), byte(i)}
	s, err := memstack.New(n.seg, "mp0", mac, n.mtu, cfg)
	if err != nil {
		return nil, fmt.Errorf("mptest: %w", err)
	}
	st := s.(*myproto.Stack)
	n.mu.Lock()
	n.stacks = append(n.stacks, st)
	n.mu.Unlock()
	return st, nil
}

// SetImpairments changes the impairments for frames sent from now on; the
// Seed and MTU of cfg are not used.
func (n *Network) SetImpairments(cfg Config) {
	n.seg.SetImpairments(cfg.impairments())
}

// Stats counts what the network did with the frames it carried.
type Stats struct {
	Sent, Delivered                        uint64 // frames written; frames put in a receiver's queue
	Lost, Duplicated, Reordered, Corrupted uint64 // by the impairments
	RateDrops, QueueDrops                  uint64 // tail drops at the rate limiter and at full receive queues
}

// Stats returns the network's counters.
func (n *Network) Stats() Stats {
	s := n.seg.Stats()
	return Stats{Sent: s.Sent, Delivered: s.Delivered, Lost: s.Lost, Duplicated: s.Duplicated,
		Reordered: s.Reordered, Corrupted: s.Corrupted, RateDrops: s.RateDrops, QueueDrops: s.QueueDrops}
}

// Close closes every stack of the network.
func (n *Network) Close() error {
	n.mu.Lock()
	stacks := n.stacks
	n.stacks = nil
	n.mu.Unlock()
	for _, s := range stacks {
		s.Close()
	}
	return nil
}
