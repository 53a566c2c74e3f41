package myproto

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// The diagnostic protocol's messages (SPEC.md §17), as JSON. Names are
// snake case; times are microseconds, or RFC 3339 for points in time; MACs
// are net.HardwareAddr strings and node IDs 16 hex digits.

// diagRequest is one request line.
type diagRequest struct {
	// Op is "process", "sockets", "neighbors", "links" or "subscribe".
	Op string `json:"op"`
	// Info asks sockets for each connection's Conn.Info figures.
	Info bool `json:"info,omitempty"`
	// Events are the event classes a subscription wants: "link" (names,
	// neighbours, interfaces) and "stack" (the stack's own sockets,
	// connections and names); none means both.
	Events []string `json:"events,omitempty"`
	// Dump asks a subscription to begin with the stack's sockets as
	// events: a listen for each listener and datagram socket, a
	// conn-established for each connection past its handshake.
	Dump bool `json:"dump,omitempty"`
}

// diagResponse is one answer line, or one event of a subscription.
type diagResponse struct {
	Op        string         `json:"op,omitempty"`
	Error     string         `json:"error,omitempty"`
	Process   *wireProcess   `json:"process,omitempty"`
	Sockets   []wireSocket   `json:"sockets,omitempty"`
	Neighbors []wireNeighbor `json:"neighbors,omitempty"`
	Links     []wireStats    `json:"links,omitempty"`
	Event     *wireEvent     `json:"event,omitempty"`
}

// wireProcess is a Process.
type wireProcess struct {
	PID     int      `json:"pid"`
	Command string   `json:"command"`
	NodeID  string   `json:"node_id"`
	Names   []string `json:"names"`
}

func toWireProcess(p *Process) *wireProcess {
	names := p.Names
	if names == nil {
		names = []string{}
	}
	return &wireProcess{PID: p.PID, Command: p.Command, NodeID: nodeIDString(p.NodeID), Names: names}
}

func (w *wireProcess) process() Process {
	if w == nil {
		return Process{}
	}
	return Process{PID: w.PID, Command: w.Command, NodeID: parseNodeID(w.NodeID), Names: w.Names}
}

// wireAddr is an *Addr.
type wireAddr struct {
	MAC     string `json:"mac,omitempty"`
	IP      string `json:"ip,omitempty"`       // a UDP bearer station's
	UDPPort uint16 `json:"udp_port,omitempty"` // when not the bearer port
	Zone    string `json:"zone,omitempty"`
	Port    uint16 `json:"port"`
}

func toWireAddr(a *Addr) *wireAddr {
	if a == nil {
		return nil
	}
	w := &wireAddr{Zone: a.Zone, Port: a.Port, UDPPort: a.UDPPort}
	if len(a.HardwareAddr) > 0 {
		w.MAC = a.HardwareAddr.String()
	}
	if a.IP.IsValid() {
		w.IP = a.IP.String()
	}
	return w
}

func (w *wireAddr) addr() *Addr {
	if w == nil {
		return nil
	}
	a := &Addr{Zone: w.Zone, Port: w.Port, UDPPort: w.UDPPort}
	if w.MAC != "" {
		a.HardwareAddr, _ = net.ParseMAC(w.MAC)
	}
	if w.IP != "" {
		a.IP, _ = netip.ParseAddr(w.IP)
	}
	return a
}

// wireSocket is a SocketInfo without its process.
type wireSocket struct {
	Proto  string    `json:"proto"`
	State  string    `json:"state"`
	Local  *wireAddr `json:"local"`
	Remote *wireAddr `json:"remote,omitempty"`
	RecvQ  int       `json:"recv_q"`
	SendQ  int       `json:"send_q"`
	Info   *wireInfo `json:"info,omitempty"`
}

// wireInfo is a ConnInfo.
type wireInfo struct {
	State                string `json:"state"`
	SRTT                 int64  `json:"srtt_us"`
	RTTVar               int64  `json:"rttvar_us"`
	MinRTT               int64  `json:"min_rtt_us"`
	LatestRTT            int64  `json:"latest_rtt_us"`
	PTO                  int64  `json:"pto_us"`
	Cwnd                 int    `json:"cwnd"`
	Ssthresh             int    `json:"ssthresh"`
	BytesInFlight        int    `json:"bytes_in_flight"`
	BytesSent            uint64 `json:"bytes_sent"`
	BytesReceived        uint64 `json:"bytes_received"`
	BytesRetransmitted   uint64 `json:"bytes_retransmitted"`
	PacketsSent          uint64 `json:"packets_sent"`
	PacketsReceived      uint64 `json:"packets_received"`
	PacketsRetransmitted uint64 `json:"packets_retransmitted"`
	PacketsLost          uint64 `json:"packets_lost"`
	SpuriousLosses       uint64 `json:"spurious_losses"`
	ProbeTimeouts        uint64 `json:"probe_timeouts"`
	SendWindow           uint64 `json:"send_window"`
	RecvWindow           uint64 `json:"recv_window"`
	SendBuffered         int    `json:"send_buffered"`
	RecvBuffered         int    `json:"recv_buffered"`
	MemoryHeld           int    `json:"memory_held"`
	PacketThreshold      uint64 `json:"packet_threshold"`
}

func us(d time.Duration) int64 { return int64(d / time.Microsecond) }

func fromUS(v int64) time.Duration { return time.Duration(v) * time.Microsecond }

func toWireInfo(ci *ConnInfo) wireInfo {
	return wireInfo{
		State: ci.State, SRTT: us(ci.SRTT), RTTVar: us(ci.RTTVar), MinRTT: us(ci.MinRTT),
		LatestRTT: us(ci.LatestRTT), PTO: us(ci.PTO), Cwnd: ci.Cwnd, Ssthresh: ci.Ssthresh,
		BytesInFlight: ci.BytesInFlight, BytesSent: ci.BytesSent, BytesReceived: ci.BytesReceived,
		BytesRetransmitted: ci.BytesRetransmitted, PacketsSent: ci.PacketsSent,
		PacketsReceived: ci.PacketsReceived, PacketsRetransmitted: ci.PacketsRetransmitted,
		PacketsLost: ci.PacketsLost, SpuriousLosses: ci.SpuriousLosses, ProbeTimeouts: ci.ProbeTimeouts,
		SendWindow: ci.SendWindow, RecvWindow: ci.RecvWindow, SendBuffered: ci.SendBuffered,
		RecvBuffered: ci.RecvBuffered, MemoryHeld: ci.MemoryHeld, PacketThreshold: ci.PacketThreshold,
	}
}

func (w *wireInfo) info() ConnInfo {
	return ConnInfo{
		State: w.State, SRTT: fromUS(w.SRTT), RTTVar: fromUS(w.RTTVar), MinRTT: fromUS(w.MinRTT),
		LatestRTT: fromUS(w.LatestRTT), PTO: fromUS(w.PTO), Cwnd: w.Cwnd, Ssthresh: w.Ssthresh,
		BytesInFlight: w.BytesInFlight, BytesSent: w.BytesSent, BytesReceived: w.BytesReceived,
		BytesRetransmitted: w.BytesRetransmitted, PacketsSent: w.PacketsSent,
		PacketsReceived: w.PacketsReceived, PacketsRetransmitted: w.PacketsRetransmitted,
		PacketsLost: w.PacketsLost, SpuriousLosses: w.SpuriousLosses, ProbeTimeouts: w.ProbeTimeouts,
		SendWindow: w.SendWindow, RecvWindow: w.RecvWindow, SendBuffered: w.SendBuffered,
		RecvBuffered: w.RecvBuffered, MemoryHeld: w.MemoryHeld, PacketThreshold: w.PacketThreshold,
	}
}

// wireNeighbor is a Neighbor; times are relative to when it was sent.
type wireNeighbor struct {
	Interface string `json:"dev"`
	Name      string `json:"name"`
	MAC       string `json:"lladdr"`
	Addr      string `json:"addr,omitempty"` // a UDP bearer neighbour's IP:port
	MTU       int    `json:"mtu"`
	NodeID    string `json:"node_id"`
	State     string `json:"state"`
	Expires   int64  `json:"expires_us"`
	Confirmed int64  `json:"confirmed_us_ago"`
}

func toWireNeighbor(n *Neighbor, now time.Time) wireNeighbor {
	w := wireNeighbor{Interface: n.Interface, Name: n.Name, MAC: n.HardwareAddr.String(), MTU: n.MTU,
		NodeID: nodeIDString(n.NodeID), State: n.State, Expires: us(n.Expires.Sub(now)), Confirmed: us(now.Sub(n.Confirmed))}
	if n.Addr.IsValid() {
		w.Addr = n.Addr.String()
	}
	return w
}

func (w *wireNeighbor) neighbor(now time.Time) Neighbor {
	mac, _ := net.ParseMAC(w.MAC)
	ap, _ := netip.ParseAddrPort(w.Addr)
	return Neighbor{Interface: w.Interface, Name: w.Name, HardwareAddr: mac, Addr: ap, MTU: w.MTU,
		NodeID: parseNodeID(w.NodeID), State: w.State, Expires: now.Add(fromUS(w.Expires)),
		Confirmed: now.Add(-fromUS(w.Confirmed))}
}

func nodeIDString(id uint64) string { return fmt.Sprintf("%016x", id) }

func parseNodeID(s string) uint64 {
	v, _ := strconv.ParseUint(s, 16, 64)
	return v
}

// wireStats is a Stats.
type wireStats struct {
	Interface     string         `json:"dev"`
	FramesIn      uint64         `json:"frames_in"`
	BytesIn       uint64         `json:"bytes_in"`
	FramesOut     uint64         `json:"frames_out"`
	BytesOut      uint64         `json:"bytes_out"`
	KernelPackets uint64         `json:"kernel_packets"`
	KernelDrops   uint64         `json:"kernel_drops"`
	ControlPkts   uint64         `json:"control_packets"`
	ControlDrops  uint64         `json:"control_drops"`
	Drops         wireDropsStats `json:"drops"`
}

type wireDropsStats struct {
	Short     uint64 `json:"short"`
	EtherType uint64 `json:"ethertype"`
	Version   uint64 `json:"version"`
	Type      uint64 `json:"type"`
	Length    uint64 `json:"length"`
	Checksum  uint64 `json:"checksum"`
	Reserved  uint64 `json:"reserved"`
	NoSocket  uint64 `json:"no_socket"`
	NotForUs  uint64 `json:"not_for_us"`
	QueueFull uint64 `json:"queue_full"`
	Malformed uint64 `json:"malformed"`
}

func toWireStats(st *Stats) wireStats {
	return wireStats{Interface: st.Interface, FramesIn: st.FramesIn, BytesIn: st.BytesIn,
		FramesOut: st.FramesOut, BytesOut: st.BytesOut, KernelPackets: st.KernelPackets,
		KernelDrops: st.KernelDrops, ControlPkts: st.ControlPackets, ControlDrops: st.ControlDrops,
		Drops: wireDropsStats(st.Drops)}
}

func (w *wireStats) stats() Stats {
	return Stats{Interface: w.Interface, FramesIn: w.FramesIn, BytesIn: w.BytesIn,
		FramesOut: w.FramesOut, BytesOut: w.BytesOut, KernelPackets: w.KernelPackets,
		KernelDrops: w.KernelDrops, ControlPackets: w.ControlPkts, ControlDrops: w.ControlDrops,
		Drops: DropStats(w.Drops)}
}

// wireEvent is an Event without its process.
type wireEvent struct {
	Type      string    `json:"type"`
	Time      time.Time `json:"time"`
	Interface string    `json:"dev,omitempty"`
	Name      string    `json:"name,omitempty"`
	MAC       string    `json:"lladdr,omitempty"`
	NodeID    string    `json:"node_id,omitempty"`
	State     string    `json:"state,omitempty"`
	MTU       int       `json:"mtu,omitempty"`
	Proto     string    `json:"proto,omitempty"`
	Local     *wireAddr `json:"local,omitempty"`
	Remote    *wireAddr `json:"remote,omitempty"`
	Kept      bool      `json:"kept,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Lost      uint64    `json:"lost,omitempty"`
}

func toWireEvent(e *Event) wireEvent {
	w := wireEvent{Type: e.Type.String(), Time: e.Time, Interface: e.Interface, Name: e.Name,
		State: e.State, MTU: e.MTU, Proto: e.Proto, Local: toWireAddr(e.Local), Remote: toWireAddr(e.Remote),
		Kept: e.Kept, Reason: e.Reason, Lost: e.Lost}
	if len(e.HardwareAddr) > 0 {
		w.MAC = e.HardwareAddr.String()
	}
	if e.NodeID != 0 {
		w.NodeID = nodeIDString(e.NodeID)
	}
	return w
}

// event returns the Event; ok is false for a type this version does not
// know, which a reader skips.
func (w *wireEvent) event() (Event, bool) {
	t, ok := parseEventType(w.Type)
	if !ok {
		return Event{}, false
	}
	e := Event{Type: t, Time: w.Time, Interface: w.Interface, Name: w.Name, State: w.State, MTU: w.MTU,
		Proto: w.Proto, Local: w.Local.addr(), Remote: w.Remote.addr(), Kept: w.Kept, Reason: w.Reason, Lost: w.Lost}
	if w.MAC != "" {
		e.HardwareAddr, _ = net.ParseMAC(w.MAC)
	}
	e.NodeID = parseNodeID(w.NodeID)
	return e, true
}
