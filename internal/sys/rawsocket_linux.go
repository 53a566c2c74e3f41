//go:build linux

package sys

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/myproto/myproto/internal/link"
)

// Helpers of the links on packet sockets that stay outside the runtime's
// poller (QuietLink, the send socket): opening and filtering the socket,
// multicast membership, statistics, and their errors.

// blockingSendTimeout bounds a blocked sendmmsg(2) on such a socket, so
// that a Close while the send buffer is full ends it.
const blockingSendTimeout = 100 * time.Millisecond

// openRawPacket opens a packet socket outside the runtime's poller, bound to
// cfg.EtherType on ifi with cfg.Filter attached first, as OpenPacket's is:
// PACKET_IGNORE_OUTGOING, cfg's buffer sizes, and SO_SNDTIMEO so that a
// blocked send ends for a Close.
func openRawPacket(ifi *net.Interface, cfg PacketConfig) (int, error) {
	rcvbuf, sndbuf := cfg.ReadBuffer, cfg.WriteBuffer
	if rcvbuf == 0 {
		rcvbuf = defaultSocketBuffer
	}
	if sndbuf == 0 {
		sndbuf = defaultSocketBuffer
	}
	// Protocol 0 receives nothing until bind(2) names the EtherType, by
	// when the filter is in place.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	fail := func(err error) (int, error) {
		unix.Close(fd)
		return -1, err
	}
	if cfg.Filter != nil {
		if err := attachFilter(fd, cfg.Filter); err != nil {
			return fail(err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fail(fmt.Errorf("PACKET_IGNORE_OUTGOING (Linux 4.20): %w", os.NewSyscallError("setsockopt", err)))
	}
	if err := setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, rcvbuf); err != nil {
		return fail(err)
	}
	if err := setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, sndbuf); err != nil {
		return fail(err)
	}
	tv := unix.NsecToTimeval(blockingSendTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return fail(os.NewSyscallError("setsockopt", err))
	}
	proto := htons(cfg.EtherType)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		return fail(os.NewSyscallError("bind", err))
	}
	return fd, nil
}

// htons converts a 16-bit value from host to network byte order, as
// sockaddr_ll's protocol wants it.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// attachFilter attaches prog to fd (SO_ATTACH_FILTER, socket(7)), replacing
// any program there atomically.
func attachFilter(fd int, prog []bpf.RawInstruction) error {
	if len(prog) == 0 {
		return errors.New("empty filter")
	}
	insns := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		insns[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	fp := unix.SockFprog{Len: uint16(len(insns)), Filter: &insns[0]}
	return os.NewSyscallError("setsockopt", unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp))
}

// setMembership adds (PACKET_ADD_MEMBERSHIP) or drops a multicast group of
// the interface index to packet socket fd.
func setMembership(fd, index, opt int, group net.HardwareAddr) error {
	if len(group) > 8 {
		return os.NewSyscallError("setsockopt", unix.EINVAL)
	}
	mreq := unix.PacketMreq{Ifindex: int32(index), Type: unix.PACKET_MR_MULTICAST, Alen: uint16(len(group))}
	copy(mreq.Address[:], group)
	return os.NewSyscallError("setsockopt", unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, opt, &mreq))
}

// addStats adds packet socket fd's PACKET_STATISTICS, which reset on every
// read, to st.
func addStats(fd int, st *link.Stats) error {
	ps, err := unix.GetsockoptTpacketStats(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return os.NewSyscallError("getsockopt", err)
	}
	st.Packets += uint64(ps.Packets)
	st.Drops += uint64(ps.Drops)
	return nil
}

// signalEventfd adds to the counter of eventfd efd, which ends a ppoll(2)
// waiting on it. The counter is host-endian; any non-zero value will do.
func signalEventfd(efd int) {
	one := [8]byte{0: 1}
	_, _ = unix.Write(efd, one[:])
}

// rawOpError is the opError of the links on raw descriptors: err as a
// *net.OpError naming the interface by hw, net.ErrClosed once closed is set,
// nil for a nil err.
func rawOpError(closed *atomic.Bool, hw net.HardwareAddr, op string, err error) error {
	if err == nil {
		return nil
	}
	if closed.Load() && !errors.Is(err, net.ErrClosed) {
		err = net.ErrClosed
	}
	return &net.OpError{Op: op, Net: "packet", Addr: &packet.Addr{HardwareAddr: hw}, Err: err}
}
