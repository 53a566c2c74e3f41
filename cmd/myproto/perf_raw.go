package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/net/bpf"

	"github.com/myproto/myproto"
	"github.com/myproto/myproto/internal/link"
	"github.com/myproto/myproto/internal/sys"
)

// The raw tests measure what the link allows without myproto: frames of
// myproto's EtherType whose version byte is rawMarker, which no myproto
// stack accepts (its filter wants its own version), so they cost the
// stacks on either end nothing. The frame's payload carries a sequence
// number at rawSeqOff.
const (
	rawMarker   = 0xff
	rawSeqOff   = link.EthernetHeaderLen + 2
	rawPingSize = 60 // the smallest Ethernet frame, without its FCS
	// rawQuiet is how long the ring must stay silent after the client is
	// done before the receiver stops: the last block is retired within
	// the ring's 1 ms timeout.
	rawQuiet = 50 * time.Millisecond
	// rawPingTimeout is how long the raw ping-pong waits for an echo.
	rawPingTimeout = 2 * time.Second
)

// rawFigures are a raw flood's results.
type rawFigures struct {
	// FrameBytes is the size of each frame, Ethernet header included;
	// rates count the payload, FrameBytes-14, as the MTU does.
	FrameBytes          int     `json:"frame_bytes"`
	FramesSent          uint64  `json:"frames_sent"`
	SendSeconds         float64 `json:"send_seconds"`
	SendBitsPerSecond   float64 `json:"send_bits_per_second"`
	SendFramesPerSecond float64 `json:"send_frames_per_second"`
	Backoffs            uint64  `json:"backoffs"`
	FramesReceived      uint64  `json:"frames_received"`
	ReceiveSeconds      float64 `json:"receive_seconds"`
	BitsPerSecond       float64 `json:"bits_per_second"`
	FramesPerSecond     float64 `json:"frames_per_second"`
	Lost                int64   `json:"lost"`
	RingDrops           uint64  `json:"ring_drops"`
	FreezeQueue         uint64  `json:"freeze_queue"`
}

// rawSummary combines the client's flood and the server's ring.
func rawSummary(run *clientRun, srv *perfSide) *rawFigures {
	payload := int64(run.frameBytes - link.EthernetHeaderLen)
	return &rawFigures{
		FrameBytes:          run.frameBytes,
		FramesSent:          run.frames,
		SendSeconds:         run.seconds,
		SendBitsPerSecond:   rate(int64(run.frames)*payload*8, run.seconds),
		SendFramesPerSecond: rate(int64(run.frames), run.seconds),
		Backoffs:            run.backoffs,
		FramesReceived:      srv.Frames,
		ReceiveSeconds:      srv.Seconds,
		BitsPerSecond:       rate(srv.Bytes*8, srv.Seconds),
		FramesPerSecond:     rate(int64(srv.Frames), srv.Seconds),
		Lost:                int64(run.frames) - int64(srv.Frames),
		RingDrops:           srv.Drops,
		FreezeQueue:         srv.FreezeQueue,
	}
}

// rawFilter returns a BPF program accepting raw test frames for mac.
func rawFilter(mac net.HardwareAddr) ([]bpf.RawInstruction, error) {
	if len(mac) != 6 {
		return nil, fmt.Errorf("hardware address %v is not a 6-byte MAC", mac)
	}
	const reject = 9
	return bpf.Assemble([]bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: 12, Size: 2},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: myproto.DefaultEtherType, SkipTrue: reject - 2},
		/* 2 */ bpf.LoadAbsolute{Off: link.EthernetHeaderLen, Size: 1},
		/* 3 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: rawMarker, SkipTrue: reject - 4},
		/* 4 */ bpf.LoadAbsolute{Off: 2, Size: 4},
		/* 5 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: binary.BigEndian.Uint32(mac[2:]), SkipTrue: reject - 6},
		/* 6 */ bpf.LoadAbsolute{Off: 0, Size: 2},
		/* 7 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(binary.BigEndian.Uint16(mac)), SkipTrue: reject - 8},
		/* 8 */ bpf.RetConstant{Val: 0x40000},
		/* 9 */ bpf.RetConstant{Val: 0},
	})
}

// rawFrame returns a raw test frame of n bytes from src to dst.
func rawFrame(dst, src net.HardwareAddr, n int) []byte {
	f := make([]byte, n)
	copy(f, dst)
	copy(f[6:], src)
	binary.BigEndian.PutUint16(f[12:], myproto.DefaultEtherType)
	f[link.EthernetHeaderLen] = rawMarker
	for i := rawSeqOff + 8; i < n; i++ {
		f[i] = byte(i)
	}
	return f
}

// rawInterface returns the interface named zone and a filter for it.
func rawInterface(zone string) (*net.Interface, []bpf.RawInstruction, error) {
	ifi, err := net.InterfaceByName(zone)
	if err != nil {
		return nil, nil, err
	}
	filter, err := rawFilter(ifi.HardwareAddr)
	return ifi, filter, err
}

// rawReceiver opens a ring on the interface zone and returns the function
// that counts what arrives in it until the client is done and the ring has
// been quiet for rawQuiet.
func (t *serverTest) rawReceiver(zone string) (func() perfSide, error) {
	ifi, filter, err := rawInterface(zone)
	if err != nil {
		return nil, err
	}
	r, err := sys.OpenRing(ifi, sys.RingConfig{EtherType: myproto.DefaultEtherType, Filter: filter})
	if err != nil {
		return nil, err
	}
	t.stop = func() { r.SetReadDeadline(time.Now().Add(rawQuiet)) }
	return func() perfSide {
		defer r.Close()
		var side perfSide
		var first, last time.Time
		count := func(f []byte) {
			side.Frames++
			side.Bytes += int64(len(f) - link.EthernetHeaderLen)
		}
		for {
			if _, err := r.ReadFunc(count); err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					side.Error = err.Error()
				}
				break
			}
			last = time.Now()
			if first.IsZero() {
				first = last
			}
			if t.stopping.Load() {
				r.SetReadDeadline(last.Add(rawQuiet))
			}
		}
		side.Seconds = last.Sub(first).Seconds()
		if st, err := r.Stats(); err == nil {
			side.Drops, side.FreezeQueue = st.Drops, st.FreezeQueue
		}
		return side
	}, nil
}

// rawEcho opens a packet socket on the interface zone, registered with
// Go's poller, and returns the function that echoes raw frames until the
// client is done.
func (t *serverTest) rawEcho(zone string) (func() perfSide, error) {
	ifi, filter, err := rawInterface(zone)
	if err != nil {
		return nil, err
	}
	l, err := sys.OpenPacket(ifi, sys.PacketConfig{EtherType: myproto.DefaultEtherType, Filter: filter})
	if err != nil {
		return nil, err
	}
	t.stop = func() { l.Close() }
	return func() perfSide {
		var side perfSide
		ms := make([]link.Message, 64)
		for i := range ms {
			ms[i].Buf = make([]byte, 128)
		}
		for {
			n, err := l.ReadBatch(ms)
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					side.Error = err.Error()
				}
				return side
			}
			for _, m := range ms[:n] {
				var tmp [6]byte
				copy(tmp[:], m.Buf[:6])
				copy(m.Buf[:6], m.Buf[6:12])
				copy(m.Buf[6:12], tmp[:])
			}
			if _, err := l.WriteBatch(ms[:n]); err != nil {
				if !errors.Is(err, net.ErrClosed) {
					side.Error = err.Error()
				}
				return side
			}
			side.Frames += uint64(n)
		}
	}, nil
}

// rawPeer returns the interface the control connection ctl runs on, a
// filter for it, and the server's MAC from its hello.
func rawPeer(ctl net.Conn, hello perfHello) (*net.Interface, []bpf.RawInstruction, net.HardwareAddr, error) {
	la, ok := ctl.LocalAddr().(*myproto.Addr)
	if !ok {
		return nil, nil, nil, errors.New("raw tests need a myproto control connection")
	}
	dst, err := net.ParseMAC(hello.MAC)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("the server's MAC: %w", err)
	}
	ifi, filter, err := rawInterface(la.Zone)
	return ifi, filter, dst, err
}

// rawFlood sends MTU-sized raw frames to the server's ring, 64 per
// sendmmsg(2), for the duration or the count.
func (c *perfClient) rawFlood(ctl net.Conn, hello perfHello, rep *perfReport) (*clientRun, error) {
	run := &clientRun{}
	ifi, _, dst, err := rawPeer(ctl, hello)
	if err != nil {
		return run, err
	}
	s, err := sys.OpenSender(ifi)
	if err != nil {
		return run, err
	}
	defer s.Close()
	run.frameBytes = ifi.MTU + link.EthernetHeaderLen
	ms := make([]link.Message, 64)
	for i := range ms {
		ms[i] = link.Message{Buf: rawFrame(dst, ifi.HardwareAddr, run.frameBytes), N: run.frameBytes}
	}
	fmt.Fprintf(c.out, "[ ID] Interval            Frames     Rate          Bitrate\n")
	a := c.m.take()
	start := a.t
	ivStart, ivFrames := start, uint64(0)
	payload := int64(run.frameBytes - link.EthernetHeaderLen)
	line := func(now time.Time) {
		n := run.frames - ivFrames
		secs := now.Sub(ivStart).Seconds()
		in := perfInterval{Start: ivStart.Sub(start).Seconds(), End: now.Sub(start).Seconds(), Count: int64(n),
			PerSecond: rate(int64(n), secs), Bytes: int64(n) * payload, BitsPerSecond: rate(int64(n)*payload*8, secs)}
		rep.Intervals = append(rep.Intervals, in)
		fmt.Fprintf(c.out, "[  1] %6.2f-%-6.2f sec  %-9d  %-12s  %s\n", in.Start, in.End, in.Count,
			formatRate(in.PerSecond), formatBits(in.BitsPerSecond))
		ivStart, ivFrames = now, run.frames
	}
	var now time.Time
	for {
		now = time.Now()
		if c.o.count > 0 && int64(run.frames) >= c.o.count || c.o.count <= 0 && now.Sub(start) >= c.o.duration {
			break
		}
		if c.o.interval > 0 && now.Sub(ivStart) >= c.o.interval {
			line(now)
		}
		batch := ms
		if c.o.count > 0 {
			batch = ms[:min(int64(len(ms)), c.o.count-int64(run.frames))]
		}
		for i := range batch {
			binary.BigEndian.PutUint64(batch[i].Buf[rawSeqOff:], run.frames+uint64(i))
		}
		n, err := s.WriteBatch(batch)
		run.frames += uint64(n)
		if err != nil {
			return run, err
		}
	}
	if c.o.interval > 0 && now.Sub(ivStart) >= c.o.interval/10 {
		line(now)
	}
	b := c.m.take()
	run.seconds = now.Sub(start).Seconds()
	run.backoffs = s.Backoffs()
	run.cpu = c.m.figures(a, b, framesRaw)
	run.cpu.FramesOut = run.frames
	run.cpu.perFrame()
	run.done.Frames = run.frames
	return run, nil
}

// rawRR ping-pongs minimum-size raw frames with the server's echo, both
// ends waiting in Go's poller.
func (c *perfClient) rawRR(ctl net.Conn, hello perfHello, rep *perfReport) (*clientRun, error) {
	run := &clientRun{}
	ifi, filter, dst, err := rawPeer(ctl, hello)
	if err != nil {
		return run, err
	}
	l, err := sys.OpenPacket(ifi, sys.PacketConfig{EtherType: myproto.DefaultEtherType, Filter: filter})
	if err != nil {
		return run, err
	}
	defer l.Close()
	out := []link.Message{{Buf: rawFrame(dst, ifi.HardwareAddr, rawPingSize), N: rawPingSize}}
	in := []link.Message{{Buf: make([]byte, 128)}}
	// ReadBatch has no deadline: a lost frame would block it for good,
	// so a watchdog closes the link when no echo comes.
	var seq uint64
	watchdog := time.AfterFunc(rawPingTimeout, func() { l.Close() })
	defer watchdog.Stop()
	rt := func() error {
		seq++
		binary.BigEndian.PutUint64(out[0].Buf[rawSeqOff:], seq)
		watchdog.Reset(rawPingTimeout)
		if _, err := l.WriteBatch(out); err != nil {
			return err
		}
		for {
			if _, err := l.ReadBatch(in); err != nil {
				if errors.Is(err, net.ErrClosed) {
					return fmt.Errorf("no echo of raw frame %d within %v", seq, rawPingTimeout)
				}
				return err
			}
			if in[0].N >= rawSeqOff+8 && binary.BigEndian.Uint64(in[0].Buf[rawSeqOff:]) == seq {
				return nil
			}
		}
	}
	for range rrWarmup {
		if err := rt(); err != nil {
			return run, err
		}
	}
	err = c.roundTrips(rep, run, rt)
	run.cpu.FramesFrom = framesRaw
	run.cpu.FramesIn, run.cpu.FramesOut = uint64(len(run.rtts)), uint64(len(run.rtts))
	run.cpu.perFrame()
	return run, err
}
