package testenv_test

import (
	"encoding/binary"
	"net"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/myproto/myproto/internal/testenv"
)

// segSocket opens an AF_PACKET socket for etherType on host h, bound to its
// interface, with a receive timeout of 2 s, closed in t's cleanup.
func segSocket(t *testing.T, h testenv.Host, etherType uint16) int {
	t.Helper()
	fd := -1
	open := func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(etherType)))
		if err != nil {
			return err
		}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2}); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(etherType), Ifindex: h.Interface.Index})
	}
	var err error
	if h.Netns == nil {
		err = open()
	} else {
		err = h.Netns.Do(open)
	}
	if fd >= 0 {
		t.Cleanup(func() { unix.Close(fd) })
	}
	if err != nil {
		t.Fatalf("packet socket on %s: %v", h.Interface.Name, err)
	}
	return fd
}

// TestIntegrationSegment puts three hosts on a segment and checks where
// their interfaces are, that broadcast reaches every other host, that
// unicast reaches the host it is for once the bridge has learnt its MAC, and
// that everything is gone after the test.
func TestIntegrationSegment(t *testing.T) {
	testenv.Watchdog(t, time.Minute)
	var host0 string
	t.Run("create", func(t *testing.T) {
		seg := testenv.NewSegment(t, 3, 1400)
		if len(seg.Hosts) != 3 {
			t.Fatalf("%d hosts, want 3", len(seg.Hosts))
		}
		host0 = seg.Hosts[0].Interface.Name
		var macs []string
		for i, h := range seg.Hosts {
			if (h.Netns == nil) != (i == 0) {
				t.Errorf("host %d: Netns %v", i, h.Netns)
			}
			ifi := h.Interface
			if ifi.MTU != 1400 || ifi.Flags&net.FlagUp == 0 || len(ifi.HardwareAddr) != 6 {
				t.Errorf("host %d: %s mtu %d flags %v mac %v", i, ifi.Name, ifi.MTU, ifi.Flags, ifi.HardwareAddr)
			}
			macs = append(macs, ifi.HardwareAddr.String())
			var names []string
			in := func() error { names = interfaceNames(t); return nil }
			if h.Netns == nil {
				in()
			} else if err := h.Netns.Do(in); err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(names, ifi.Name) {
				t.Errorf("host %d has %v, not its %s", i, names, ifi.Name)
			}
			if i > 0 && len(names) != 2 {
				t.Errorf("host %d has %v, want lo and %s", i, names, ifi.Name)
			}
		}
		slices.Sort(macs)
		if len(slices.Compact(macs)) != 3 {
			t.Errorf("MACs %v are not distinct", macs)
		}
		var inBridge []string
		if err := seg.NetnsBridge.Do(func() error { inBridge = interfaceNames(t); return nil }); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{seg.Bridge, seg.Hosts[0].Port, seg.Hosts[1].Port, seg.Hosts[2].Port} {
			if !slices.Contains(inBridge, name) {
				t.Errorf("bridge namespace has %v, not %s", inBridge, name)
			}
		}

		const etherType = 0x88b6 // not myproto's
		socks := make([]int, 3)
		for i, h := range seg.Hosts {
			socks[i] = segSocket(t, h, etherType)
		}
		send := func(from, seq int, dst net.HardwareAddr) {
			t.Helper()
			f := make([]byte, 60)
			copy(f, dst)
			copy(f[6:], seg.Hosts[from].Interface.HardwareAddr)
			binary.BigEndian.PutUint16(f[12:], etherType)
			binary.BigEndian.PutUint32(f[14:], uint32(seq))
			to := &unix.SockaddrLinklayer{Protocol: htons(etherType), Ifindex: seg.Hosts[from].Interface.Index, Halen: 6}
			copy(to.Addr[:], dst)
			if err := unix.Sendto(socks[from], f, 0, to); err != nil {
				t.Fatal(err)
			}
		}
		// recv returns the sequence numbers host i receives within 2 s,
		// until it has want of them, skipping its own outgoing frames.
		recv := func(i, want int) []uint32 {
			t.Helper()
			var got []uint32
			buf := make([]byte, 128)
			for len(got) < want {
				n, from, err := unix.Recvfrom(socks[i], buf, 0)
				if err != nil {
					t.Errorf("host %d: %v after %v", i, err, got)
					break
				}
				if from.(*unix.SockaddrLinklayer).Pkttype == unix.PACKET_OUTGOING || n < 18 {
					continue
				}
				got = append(got, binary.BigEndian.Uint32(buf[14:18]))
			}
			return got
		}
		broadcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		send(1, 1, broadcast)
		for _, i := range []int{0, 2} {
			if got := recv(i, 1); !slices.Equal(got, []uint32{1}) {
				t.Errorf("host %d received %v, want host 1's broadcast", i, got)
			}
		}
		// The bridge has learnt host 1's MAC: unicast to it goes to host
		// 1 alone. Host 0 sends, then host 2 broadcasts: had host 0's
		// frame been flooded to host 2, host 2 would see it first.
		send(0, 2, seg.Hosts[1].Interface.HardwareAddr)
		if got := recv(1, 1); !slices.Equal(got, []uint32{2}) {
			t.Errorf("host 1 received %v, want host 0's unicast", got)
		}
		send(2, 3, broadcast)
		if got := recv(1, 1); !slices.Equal(got, []uint32{3}) {
			t.Errorf("host 1 received %v, want host 2's broadcast", got)
		}
		send(0, 4, broadcast)
		if got := recv(2, 1); !slices.Equal(got, []uint32{4}) {
			t.Errorf("host 2 received %v, want host 0's broadcast only (no unicast for host 1)", got)
		}
	})
	if host0 == "" {
		return // skipped
	}
	if _, err := net.InterfaceByName(host0); err == nil {
		t.Errorf("%s still exists after cleanup", host0)
	}
}
