package memlink

import (
	"fmt"
	"syscall"

	"golang.org/x/net/bpf"

	"github.com/myproto/myproto/internal/link"
)

// Packet types as SKF_AD_PKTTYPE reports them (PACKET_HOST and friends,
// packet(7)); a segment delivers only these three.
const (
	packetHost      = 0
	packetBroadcast = 1
	packetMulticast = 2
	numPacketTypes  = 3
)

// bpfMaxInsns is the kernel's BPF_MAXINSNS: longer programs fail with EINVAL.
const bpfMaxInsns = 4096

// filterVMs holds one compiled VM per packet type.
//
// x/net/bpf's VM knows no extension but the length, and the programs in
// internal/sys load the packet type. Because everything else such a program
// reads is the frame itself, a copy of the program per packet type, with the
// extension loads replaced by the values they would produce, behaves exactly
// as the kernel's filter does.
type filterVMs [numPacketTypes]*bpf.VM

// compileFilter builds the VMs for prog on the link with index ifindex.
func compileFilter(prog []bpf.RawInstruction, ifindex int) (*filterVMs, error) {
	if len(prog) > bpfMaxInsns {
		return nil, fmt.Errorf("program of %d instructions exceeds %d: %w", len(prog), bpfMaxInsns, syscall.EINVAL)
	}
	ins, ok := bpf.Disassemble(prog)
	if !ok {
		return nil, fmt.Errorf("program has an instruction the BPF VM cannot decode: %w", syscall.EINVAL)
	}
	var f filterVMs
	for t := range f {
		sub := make([]bpf.Instruction, len(ins))
		for i, in := range ins {
			e, ok := in.(bpf.LoadExtension)
			if !ok {
				sub[i] = in
				continue
			}
			switch e.Num {
			case bpf.ExtLen:
				sub[i] = e
			case bpf.ExtType:
				sub[i] = bpf.LoadConstant{Dst: bpf.RegA, Val: uint32(t)}
			case bpf.ExtProto:
				// skb->protocol of an untagged Ethernet frame is its
				// EtherType, in host order, as a 2-byte load gives it.
				sub[i] = bpf.LoadAbsolute{Off: link.EthernetHeaderLen - 2, Size: 2}
			case bpf.ExtInterfaceIndex:
				sub[i] = bpf.LoadConstant{Dst: bpf.RegA, Val: uint32(ifindex)}
			default:
				return nil, fmt.Errorf("instruction %d: BPF extension %d not emulated by memlink: %w", i, e.Num, syscall.EINVAL)
			}
		}
		vm, err := bpf.NewVM(sub)
		if err != nil {
			return nil, fmt.Errorf("%v: %w", err, syscall.EINVAL)
		}
		f[t] = vm
	}
	return &f, nil
}
