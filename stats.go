package myproto

// Stats are the counters of one interface of the stack, for tools and
// debugging.
type Stats struct {
	// Interface is the interface's name.
	Interface string
	// FramesIn and BytesIn count frames read from the packet socket,
	// FramesOut and BytesOut frames written; bytes include headers.
	FramesIn, BytesIn, FramesOut, BytesOut uint64
	// KernelPackets and KernelDrops are the kernel's PACKET_STATISTICS
	// (packet(7)): frames that passed the filter, and those dropped because
	// the socket buffer was full. Such drops look exactly like loss.
	KernelPackets, KernelDrops uint64
	// ControlPackets and ControlDrops are the same for the control socket,
	// which takes SYNs and discovery frames: drops there are a flood of
	// them being shed, at no cost to the data (see control.go).
	ControlPackets, ControlDrops uint64
	// Drops counts frames discarded in user space, by reason.
	Drops DropStats
}

// DropStats counts received frames the stack discarded, by reason.
type DropStats struct {
	Short     uint64 // shorter than the headers
	EtherType uint64 // another EtherType
	Version   uint64 // another protocol version
	Type      uint64 // unknown frame type
	Length    uint64 // Length field out of range
	Checksum  uint64 // CRC32C mismatch: corrupted in flight
	Reserved  uint64 // reserved header bits set
	NoSocket  uint64 // no socket here owns the port or connection
	NotForUs  uint64 // unicast to another station, or a group not joined
	QueueFull uint64 // the socket's receive buffer was full
	Malformed uint64 // a discovery message that does not parse
}

// LinkStats returns the counters of every interface the stack for cfg's
// EtherType has open, in interface index order.
func LinkStats(cfg *Config) []Stats {
	s, err := defaultStack(cfg)
	if err != nil {
		return nil
	}
	return s.stats()
}

func (s *stack) stats() []Stats {
	var out []Stats
	for _, ep := range s.endpointsSnapshot() {
		out = append(out, ep.snapshot())
	}
	return out
}

func (ep *endpoint) snapshot() Stats {
	st := Stats{
		Interface: ep.name,
		FramesIn:  ep.stats.framesIn.Load(),
		BytesIn:   ep.stats.bytesIn.Load(),
		FramesOut: ep.stats.framesOut.Load(),
		BytesOut:  ep.stats.bytesOut.Load(),
	}
	if ks, err := ep.l.Stats(); err == nil {
		st.KernelPackets, st.KernelDrops = ks.Packets, ks.Drops
	}
	if ks, err := ep.ctl.Stats(); err == nil {
		st.ControlPackets, st.ControlDrops = ks.Packets, ks.Drops
	}
	d := &ep.stats.drops
	st.Drops = DropStats{
		Short:     d[dropShort].Load(),
		EtherType: d[dropEtherType].Load(),
		Version:   d[dropVersion].Load(),
		Type:      d[dropType].Load(),
		Length:    d[dropLength].Load(),
		Checksum:  d[dropChecksum].Load(),
		Reserved:  d[dropReserved].Load(),
		NoSocket:  d[dropNoSocket].Load(),
		NotForUs:  d[dropNotForUs].Load(),
		QueueFull: d[dropQueueFull].Load(),
		Malformed: d[dropMalformed].Load(),
	}
	return st
}
