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

	// maxPortRanges caps the port check. Each range costs three
	// instructions and a program may hold at most 4096 (BPF_MAXINSNS); past
	// the cap the program accepts every port and user space demultiplexes.
	maxPortRanges = 1000
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
	// Ports are the destination ports this process owns. Duplicates are
	// allowed and the order does not matter.
	Ports []uint16
	// AnyPortTypes are the frame types accepted whatever their destination
	// port, such as discovery and control frames.
	AnyPortTypes []uint8
	// AnyPortFlagged are frames accepted whatever their destination port
	// when their type matches and their flags (offset 16) have any of the
	// bits set: stream SYNs, which every process on a host must see so that
	// a dial to a port nobody owns is refused rather than left to time out.
	AnyPortFlagged []TypeFlags
}

// TypeFlags selects frames of a type with any of the flag bits set.
type TypeFlags struct {
	Type  uint8
	Flags uint16
}

// Filter returns a classic BPF program for a SOCK_RAW packet socket
// (packet(7)) that accepts exactly the frames cfg describes: the EtherType at
// offset 12 is cfg.EtherType, the version byte at offset 14 is cfg.Version,
// the destination MAC is cfg.HardwareAddr or has the group bit set, and the
// type byte at offset 15 is one of cfg.AnyPortTypes or the destination port
// at offset 22 is one of cfg.Ports. Frames too short to hold the destination
// port (24 bytes) are rejected, whatever their type.
//
// The program compares the destination MAC rather than reading the packet
// type through the SKF_AD_PKTTYPE extension so that it runs unchanged in
// bpf.NewVM, which implements no extension but the length: veth delivers
// unicast frames for other hosts as PACKET_OTHERHOST, so the check matters.
//
// The port check is one range test per run of consecutive ports. If cfg.Ports
// form more than 1000 runs, the program would come close to the kernel's
// limit of 4096 instructions, so it checks no port at all and accepts every
// port: the stack demultiplexes in user space anyway and drops frames for
// ports it does not own. With no ports and no AnyPortTypes the program
// rejects every frame.
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
	// port section so that no jump has to cross the port ranges.
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
	}

	// Loading the port first rejects frames too short to hold it, whichever
	// way they would be accepted.
	prog = append(prog, bpf.LoadAbsolute{Off: offDstPort, Size: 2})

	ranges := portRanges(cfg.Ports)
	if len(ranges) > maxPortRanges {
		prog = append(prog, bpf.RetConstant{Val: acceptLen})
		return bpf.Assemble(prog)
	}

	types := slices.Clone(cfg.AnyPortTypes)
	slices.Sort(types)
	types = slices.Compact(types)
	saved := len(ranges) > 0 && (len(types) > 0 || len(cfg.AnyPortFlagged) > 0)
	if saved {
		prog = append(prog, bpf.TAX{}) // keep the port for after the types
	}
	if len(types) > 0 {
		prog = append(prog, bpf.LoadAbsolute{Off: offType, Size: 1})
		// Every match jumps to the accept that follows the list; at most
		// 256 distinct types keep the longest jump at 255.
		for i, t := range types {
			j := bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(t), SkipTrue: uint8(len(types) - 1 - i)}
			if i == len(types)-1 {
				j.SkipFalse = 1
			}
			prog = append(prog, j)
		}
		prog = append(prog, bpf.RetConstant{Val: acceptLen})
	}
	for _, tf := range cfg.AnyPortFlagged {
		prog = append(prog,
			bpf.LoadAbsolute{Off: offType, Size: 1},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(tf.Type), SkipFalse: 3},
			bpf.LoadAbsolute{Off: offFlags, Size: 2},
			bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: uint32(tf.Flags), SkipFalse: 1},
			bpf.RetConstant{Val: acceptLen},
		)
	}
	if saved {
		prog = append(prog, bpf.TXA{})
	}

	// One short test per range, each with its own accept, so every jump
	// stays within the 8-bit offsets of classic BPF.
	for _, r := range ranges {
		if r.lo == r.hi {
			prog = append(prog,
				bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(r.lo), SkipFalse: 1},
				bpf.RetConstant{Val: acceptLen},
			)
			continue
		}
		prog = append(prog,
			bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: uint32(r.hi), SkipTrue: 2},
			bpf.JumpIf{Cond: bpf.JumpLessThan, Val: uint32(r.lo), SkipTrue: 1},
			bpf.RetConstant{Val: acceptLen},
		)
	}
	prog = append(prog, bpf.RetConstant{Val: 0})
	return bpf.Assemble(prog)
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
