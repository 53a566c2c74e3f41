package sys

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"

	"golang.org/x/net/bpf"
)

// Offsets within a whole Ethernet frame that the filter reads. They mirror
// the frame layout in the root package's wire.go, which cannot be imported
// from here.
const (
	offDstMAC    = 0
	offEtherType = 12
	offVersion   = 14 // first byte of the myproto header
	offType      = 15
	offFlags     = 16
	offDstPort   = 22
)

const (
	// acceptLen is what the program returns to accept a frame: the number of
	// bytes the kernel keeps, larger than any frame, including jumbo ones.
	acceptLen = 0x40000

	// maxInsns is one less than the kernel's BPF_MAXINSNS (4096). A program
	// whose port ranges would exceed it checks fewer ports and accepts more:
	// see Filter.
	maxInsns = 4095
)

// FilterConfig describes the frames a Filter program accepts.
type FilterConfig struct {
	// EtherType is the frames' EtherType. It must not be zero.
	EtherType uint16
	// Version is the myproto header version the frames must carry.
	Version uint8
	// HardwareAddr is the interface's own MAC address. Unicast frames to
	// any other address are rejected; group (multicast and broadcast)
	// frames are accepted whatever their address, because the interface's
	// multicast list already decides which of those arrive.
	HardwareAddr net.HardwareAddr
	// Rules decide the fate of the frames that pass the checks above. They
	// are tried in order; the first that matches a frame's type and flags
	// decides, and a frame no rule matches is rejected.
	Rules []Rule
}

// A Rule accepts or rejects frames by type, flags and destination port.
type Rule struct {
	// Types are the frame types (the header byte at offset 15) the rule
	// applies to; nil means every type.
	Types []uint8
	// FlagsAny, if not zero, restricts the rule to frames whose flags
	// (offset 16) have at least one of these bits set.
	FlagsAny uint16
	// Ports are the destination ports the rule singles out. Frames to one
	// of them are accepted if InPorts is true; frames to any other port are
	// accepted if OtherPorts is true. Duplicates are allowed and the order
	// does not matter.
	Ports      []uint16
	InPorts    bool
	OtherPorts bool
}

// Filter returns a classic BPF program for a SOCK_RAW packet socket
// (packet(7)) that accepts exactly the frames cfg describes: the EtherType at
// offset 12 is cfg.EtherType, the version byte at offset 14 is cfg.Version,
// the destination MAC is cfg.HardwareAddr or has the group bit set, the frame
// is long enough to hold the destination port (24 bytes), and the first rule
// that matches its type and flags accepts its destination port.
//
// The program compares the destination MAC rather than reading the packet
// type through the SKF_AD_PKTTYPE extension so that it runs unchanged in
// bpf.NewVM, which implements no extension but the length: veth delivers
// unicast frames for other hosts as PACKET_OTHERHOST, so the check matters.
//
// A rule's port check is one range test (three instructions) per run of
// consecutive ports. If the rules' ranges together would take the program
// past the kernel's limit of 4096 instructions, the rules with the most
// ranges give up their port check and accept every port: the stack checks
// ports in user space anyway, so a filter may pass too much but must never
// drop what the stack wants.
//
// Attach the program before bind(2) (PacketConfig.Filter) and replace it
// atomically with SetFilter as the set of owned ports changes.
func Filter(cfg FilterConfig) ([]bpf.RawInstruction, error) {
	if cfg.EtherType == 0 {
		return nil, errors.New("sys: filter: EtherType must not be zero")
	}
	if len(cfg.HardwareAddr) != 6 {
		return nil, fmt.Errorf("sys: filter: hardware address %v is not a 6-byte MAC", cfg.HardwareAddr)
	}
	mac := cfg.HardwareAddr

	// The header section. Its rejections share one return, placed before the
	// rules so that no jump has to cross them.
	const (
		reject = 10 // index of the shared reject
		body   = 11 // index of the first instruction past it
	)
	prog := []bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: offEtherType, Size: 2},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(cfg.EtherType), SkipFalse: reject - 2},
		/* 2 */ bpf.LoadAbsolute{Off: offVersion, Size: 1},
		/* 3 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(cfg.Version), SkipFalse: reject - 4},
		// Our own unicast address, compared as a word and a half-word.
		/* 4 */ bpf.LoadAbsolute{Off: offDstMAC + 2, Size: 4},
		/* 5 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(mac[2:6]), SkipFalse: 8 - 6},
		/* 6 */ bpf.LoadAbsolute{Off: offDstMAC, Size: 2},
		/* 7 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(binary.BigEndian.Uint16(mac[0:2])), SkipTrue: body - 8},
		// Or any group address: the I/G bit of the first byte (broadcast
		// included).
		/* 8 */ bpf.LoadAbsolute{Off: offDstMAC, Size: 1},
		/* 9 */ bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x01, SkipTrue: body - 10},
		/* 10 */ bpf.RetConstant{Val: 0},
		// Loading the port first rejects frames too short to hold it,
		// whichever rule would decide; X keeps it for the rules.
		/* 11 */ bpf.LoadAbsolute{Off: offDstPort, Size: 2},
		/* 12 */ bpf.TAX{},
	}

	rules := slices.Clone(cfg.Rules)
	ranges := make([][]portRange, len(rules))
	for i, r := range rules {
		if r.InPorts != r.OtherPorts {
			ranges[i] = portRanges(r.Ports)
		}
	}
	// Give up port checks, largest first, until the program fits.
	for size(prog, rules, ranges) > maxInsns {
		big := 0
		for i := range ranges {
			if len(ranges[i]) > len(ranges[big]) {
				big = i
			}
		}
		if len(ranges[big]) == 0 {
			return nil, errors.New("sys: filter: too many rules")
		}
		ranges[big] = nil
		rules[big].InPorts, rules[big].OtherPorts = true, true
	}
	for i, r := range rules {
		prog = append(prog, ruleInsns(r, ranges[i])...)
	}
	prog = append(prog, bpf.RetConstant{Val: 0})
	return bpf.Assemble(prog)
}

// size is how many instructions the program will have.
func size(head []bpf.Instruction, rules []Rule, ranges [][]portRange) int {
	n := len(head) + 1
	for i, r := range rules {
		n += len(ruleInsns(r, ranges[i]))
	}
	return n
}

// ruleInsns compiles one rule. It ends in returns on every path that
// matches; a mismatch of type or flags jumps to the instruction after it.
func ruleInsns(r Rule, ranges []portRange) []bpf.Instruction {
	verdict := func(accept bool) bpf.Instruction {
		if accept {
			return bpf.RetConstant{Val: acceptLen}
		}
		return bpf.RetConstant{Val: 0}
	}
	// The decision, with the port in X.
	var decide []bpf.Instruction
	if r.InPorts == r.OtherPorts || len(ranges) == 0 {
		decide = []bpf.Instruction{verdict(r.OtherPorts)}
	} else {
		decide = append(decide, bpf.TXA{})
		for _, pr := range ranges {
			// Each range has its own return, so every jump stays short.
			decide = append(decide,
				bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: uint32(pr.hi), SkipTrue: 2},
				bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: uint32(pr.lo), SkipFalse: 1},
				verdict(r.InPorts),
			)
		}
		decide = append(decide, verdict(r.OtherPorts))
	}

	// A mismatch of type or flags falls into an unconditional jump past the
	// rule, whose 32-bit offset reaches over any number of port ranges;
	// skips are where those jumps are, filled in last.
	var match []bpf.Instruction
	var skips []int
	types := slices.Clone(r.Types)
	slices.Sort(types)
	types = slices.Compact(types)
	if len(types) == 256 {
		types = nil // every type: nothing to compare
	}
	if len(types) > 0 {
		match = append(match, bpf.LoadAbsolute{Off: offType, Size: 1})
		for i, t := range types {
			// A match skips the remaining comparisons and the jump out.
			match = append(match, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(t), SkipTrue: uint8(len(types) - i)})
		}
		skips = append(skips, len(match))
		match = append(match, bpf.Jump{})
	}
	if r.FlagsAny != 0 {
		match = append(match,
			bpf.LoadAbsolute{Off: offFlags, Size: 2},
			bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: uint32(r.FlagsAny), SkipTrue: 1},
		)
		skips = append(skips, len(match))
		match = append(match, bpf.Jump{})
	}
	out := append(match, decide...)
	for _, at := range skips {
		out[at] = bpf.Jump{Skip: uint32(len(out) - at - 1)}
	}
	return out
}

// A portRange is the closed interval of ports [lo, hi].
type portRange struct{ lo, hi uint16 }

// portRanges returns ports as sorted, disjoint, non-adjacent ranges.
func portRanges(ports []uint16) []portRange {
	if len(ports) == 0 {
		return nil
	}
	sorted := slices.Clone(ports)
	slices.Sort(sorted)
	var rs []portRange
	cur := portRange{sorted[0], sorted[0]}
	for _, p := range sorted[1:] {
		// Duplicate or adjacent; cur.hi+1 wraps only when cur.hi is 65535,
		// and then p <= cur.hi already holds.
		if p <= cur.hi || p == cur.hi+1 {
			cur.hi = max(cur.hi, p)
			continue
		}
		rs = append(rs, cur)
		cur = portRange{p, p}
	}
	return append(rs, cur)
}
