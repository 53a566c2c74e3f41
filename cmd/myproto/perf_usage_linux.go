package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/myproto/myproto"
)

// What perf measures of its own process, cheaply, around a test: CPU time
// and context switches from getrusage(2), system calls from a perf event
// counting the raw_syscalls:sys_enter tracepoint (perf_event_open(2)), and
// frames from the stack's counters or the interfaces'.

// A usageSnap is one snapshot of the process's counters.
type usageSnap struct {
	t             time.Time
	user, sys     time.Duration
	ctxSwitches   uint64
	syscalls      int64 // -1: not counted
	mpIn, mpOut   uint64
	devIn, devOut uint64
}

// A meter takes usage snapshots.
type meter struct {
	sc *syscallCounter // nil when system calls cannot be counted
	// why says why system calls are not counted.
	why string
}

// newMeter starts counting system calls, if it can.
func newMeter() *meter {
	sc, err := openSyscallCounter()
	if err != nil {
		return &meter{why: err.Error()}
	}
	return &meter{sc: sc}
}

// take returns a snapshot.
func (m *meter) take() usageSnap {
	u := usageSnap{t: time.Now(), syscalls: -1}
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		u.user = time.Duration(ru.Utime.Nano())
		u.sys = time.Duration(ru.Stime.Nano())
		u.ctxSwitches = uint64(ru.Nvcsw + ru.Nivcsw)
	}
	if m.sc != nil {
		u.syscalls = m.sc.read()
	}
	for _, st := range myproto.LinkStats(nil) {
		u.mpIn += st.FramesIn
		u.mpOut += st.FramesOut
	}
	u.devIn, u.devOut = netdevPackets()
	return u
}

// netdevPackets sums the packets received and sent by every interface but
// loopback in this network namespace, from /proc/net/dev. For kernel TCP
// over veth these are GSO chunks of up to 64 KB, not wire frames.
func netdevPackets() (in, out uint64) {
	b, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) == "lo" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 10 {
			continue
		}
		rx, _ := strconv.ParseUint(f[1], 10, 64)
		tx, _ := strconv.ParseUint(f[9], 10, 64)
		in += rx
		out += tx
	}
	return in, out
}

// A syscallCounter counts the process's system calls: one perf event per
// thread on the raw_syscalls:sys_enter tracepoint, inherited by the
// threads each one creates later.
type syscallCounter struct {
	fds []int
}

// tracepointID returns the id of the raw_syscalls:sys_enter tracepoint.
func tracepointID() (uint64, error) {
	var errs []string
	for _, dir := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		b, err := os.ReadFile(dir + "/events/raw_syscalls/sys_enter/id")
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		return strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64)
	}
	return 0, fmt.Errorf("no raw_syscalls:sys_enter tracepoint (is tracefs mounted? mount -t tracefs nodev /sys/kernel/tracing): %s",
		strings.Join(errs, "; "))
}

func openSyscallCounter() (*syscallCounter, error) {
	id, err := tracepointID()
	if err != nil {
		return nil, err
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	attr := unix.PerfEventAttr{
		Type:   unix.PERF_TYPE_TRACEPOINT,
		Size:   uint32(unsafe.Sizeof(unix.PerfEventAttr{})),
		Config: id,
		Bits:   unix.PerfBitInherit,
	}
	sc := &syscallCounter{}
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		fd, err := unix.PerfEventOpen(&attr, tid, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
		if err == unix.ESRCH {
			continue // the thread exited
		}
		if err != nil {
			sc.close()
			return nil, fmt.Errorf("perf_event_open (needs CAP_PERFMON or kernel.perf_event_paranoid <= 1): %w", err)
		}
		sc.fds = append(sc.fds, fd)
	}
	return sc, nil
}

// read returns the system calls counted so far.
func (sc *syscallCounter) read() int64 {
	var total int64
	var buf [8]byte
	for _, fd := range sc.fds {
		if n, err := unix.Read(fd, buf[:]); err == nil && n == 8 {
			total += int64(*(*uint64)(unsafe.Pointer(&buf[0])))
		}
	}
	return total
}

func (sc *syscallCounter) close() {
	for _, fd := range sc.fds {
		unix.Close(fd)
	}
}

// tcpStats returns the retransmitted segments, congestion window and
// smoothed RTT of a kernel TCP connection (TCP_INFO, tcp(7)).
func tcpStats(c *net.TCPConn) (retrans uint64, cwnd int, srtt time.Duration, ok bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, 0, false
	}
	var info *unix.TCPInfo
	rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if err != nil || info == nil {
		return 0, 0, 0, false
	}
	return uint64(info.Total_retrans), int(info.Snd_cwnd) * int(info.Snd_mss), time.Duration(info.Rtt) * time.Microsecond, true
}
