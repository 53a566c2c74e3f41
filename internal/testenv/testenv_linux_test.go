package testenv_test

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"

	"github.com/myproto/myproto/internal/sys"
	"github.com/myproto/myproto/internal/testenv"
)

// hostInterfaces lists the interfaces of the namespace testenv.Main started
// in. As root it enters that namespace (the parent process's); in a user
// namespace that is out of reach, but sysfs, mounted in the host's
// namespace, still lists the host's interfaces.
func hostInterfaces(t *testing.T) []string {
	t.Helper()
	if f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", os.Getppid())); err == nil {
		ns, err := sys.NetnsFromFile(f)
		f.Close()
		if err == nil {
			defer ns.Close()
			var names []string
			err := ns.Do(func() error { names = interfaceNames(t); return nil })
			if err == nil {
				return names
			}
			t.Logf("entering the host namespace: %v; reading /sys/class/net instead", err)
		}
	}
	entries, err := os.ReadDir("/sys/class/net")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestIntegrationNetnsSockets(t *testing.T) {
	testenv.Watchdog(t, time.Minute)
	p := testenv.NewPair(t, 0)
	// A netlink socket made inside NetnsB.Do stays there: used from here,
	// it lists NetnsB's links.
	var c *rtnetlink.Conn
	if err := p.NetnsB.Do(func() (err error) { c, err = rtnetlink.Dial(nil); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	links, err := c.Link.List()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attributes.Name)
	}
	slices.Sort(names)
	if want := []string{"lo", p.B.Name}; !slices.Equal(names, want) {
		t.Errorf("socket from NetnsB.Do lists %v, want %v", names, want)
	}
	if own := interfaceNames(t); slices.Contains(own, p.B.Name) {
		t.Errorf("own namespace lists %v", own)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// markerType is the EtherType of the frames throughDrop sends after each
// burst; no test drops it.
const markerType = 0x88b7

// throughDrop sends n frames of etherType from p.A to p.B and returns the
// share that reached a packet socket on p.B. It sends in bursts, each
// followed by a marker frame it waits for, so no queue on the way overflows
// however slow the machine: only the drop rule loses frames.
func throughDrop(t *testing.T, p *testenv.Pair, etherType uint16, n int) float64 {
	t.Helper()
	// Sockets bound to one EtherType, as myproto's are: an ETH_P_ALL socket
	// is a tap, which sees frames before the ingress hook drops them.
	rx := packetSocket(t, p.NetnsB, p.B.Index, etherType)
	marks := packetSocket(t, p.NetnsB, p.B.Index, markerType)
	if err := unix.SetsockoptTimeval(marks, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 10}); err != nil {
		t.Fatal(err)
	}
	// Protocol 0: a socket that sends and receives nothing.
	tx, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("sending socket: %v", err)
	}
	defer unix.Close(tx)

	send := func(et uint16, seq uint32) {
		f := make([]byte, 60)
		copy(f[0:6], p.B.HardwareAddr)
		copy(f[6:12], p.A.HardwareAddr)
		binary.BigEndian.PutUint16(f[12:14], et)
		binary.BigEndian.PutUint32(f[14:18], seq)
		to := &unix.SockaddrLinklayer{Protocol: htons(et), Ifindex: p.A.Index, Halen: 6}
		copy(to.Addr[:], p.B.HardwareAddr)
		if err := unix.Sendto(tx, f, 0, to); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	const burst = 20
	got := 0
	buf := make([]byte, 2048)
	for sent := 0; sent < n; {
		k := min(burst, n-sent)
		for i := range k {
			send(etherType, uint32(sent+i))
		}
		sent += k
		send(markerType, uint32(sent))
		for {
			m, _, err := unix.Recvfrom(marks, buf, 0)
			if err != nil {
				t.Fatalf("waiting for marker %d: %v", sent, err)
			}
			if m >= 18 && binary.BigEndian.Uint32(buf[14:18]) == uint32(sent) {
				break
			}
		}
		// The kernel hands a frame to every socket before the next frame,
		// so the burst is normally queued on rx by now.
		for {
			_, _, err := unix.Recvfrom(rx, buf, unix.MSG_DONTWAIT)
			if err != nil {
				break
			}
			got++
		}
	}
	// Should the sender have moved between CPUs, a frame may still be on
	// another CPU's backlog: wait a little for stragglers.
	if err := unix.SetsockoptTimeval(rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50_000}); err != nil {
		t.Fatal(err)
	}
	for {
		if _, _, err := unix.Recvfrom(rx, buf, 0); err != nil {
			break
		}
		got++
	}
	return float64(got) / float64(n)
}

// packetSocket opens an AF_PACKET socket in ns for etherType, bound to
// ifindex, closed in t's cleanup.
func packetSocket(t *testing.T, ns *sys.Netns, ifindex int, etherType uint16) int {
	t.Helper()
	fd := -1
	err := ns.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(etherType)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(etherType), Ifindex: ifindex})
	})
	if fd >= 0 {
		t.Cleanup(func() { unix.Close(fd) })
	}
	if err != nil {
		t.Fatalf("packet socket for 0x%04x: %v", etherType, err)
	}
	return fd
}

func TestIntegrationDropShare(t *testing.T) {
	testenv.Watchdog(t, 2*time.Minute)
	p := testenv.NewPair(t, 0)
	const n = 2000
	t.Run("drop30", func(t *testing.T) {
		testenv.DropShare(t, p.NetnsB, p.B.Name, 0x88b5, 30)
		rules := testenv.Nft(t, p.NetnsB, "list", "ruleset")
		t.Logf("ruleset in NetnsB:\n%s", rules)
		for _, want := range []string{"table netdev", `device "` + p.B.Name + `"`, "meta protocol 0x88b5 numgen random mod 100 < 30 drop"} {
			if !strings.Contains(rules, want) {
				t.Errorf("ruleset lacks %q", want)
			}
		}
		if own := testenv.Nft(t, nil, "list", "ruleset"); strings.Contains(own, "myproto") {
			t.Errorf("rule installed in the wrong namespace:\n%s", own)
		}
		if share := throughDrop(t, p, 0x88b5, n); share < 0.6 || share > 0.8 {
			t.Errorf("%.3f of frames passed a 30%% drop rule", share)
		}
		if share := throughDrop(t, p, 0x88b6, n); share != 1 {
			t.Errorf("%.3f of another EtherType's frames passed", share)
		}

		// Again replaces the share; 0 removes the rule.
		testenv.DropShare(t, p.NetnsB, p.B.Name, 0x88b5, 100)
		if rules := testenv.Nft(t, p.NetnsB, "list", "ruleset"); strings.Count(rules, "meta protocol") != 1 || strings.Contains(rules, "numgen") {
			t.Errorf("after a second DropShare, ruleset:\n%s", rules)
		}
		if share := throughDrop(t, p, 0x88b5, 200); share != 0 {
			t.Errorf("%.3f of frames passed a 100%% drop rule", share)
		}
		testenv.DropShare(t, p.NetnsB, p.B.Name, 0x88b5, 0)
		if rules := testenv.Nft(t, p.NetnsB, "list", "ruleset"); strings.Contains(rules, "myproto") {
			t.Errorf("DropShare 0 left:\n%s", rules)
		}
		testenv.DropShare(t, p.NetnsB, p.B.Name, 0x88b5, 50)
	})
	if rules := testenv.Nft(t, p.NetnsB, "list", "ruleset"); strings.Contains(rules, "myproto") {
		t.Errorf("cleanup left:\n%s", rules)
	}
	if share := throughDrop(t, p, 0x88b5, 200); share != 1 {
		t.Errorf("%.3f of frames passed after cleanup", share)
	}
}

// TestNewRouted: A reaches B across the router over IPv4 (and IPv6), and
// Loss drops a share of the forwarded datagrams.
func TestNewRouted(t *testing.T) {
	r := testenv.NewRouted(t, 0)
	for _, ips := range [][2]netip.Addr{{r.A4, r.B4}, {r.A6, r.B6}} {
		if !ips[0].IsValid() {
			t.Log("no IPv6")
			continue
		}
		var srv *net.UDPConn
		if err := r.B.Do(func() (err error) {
			srv, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ips[1], 0)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		var cli *net.UDPConn
		if err := r.A.Do(func() (err error) {
			cli, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ips[0], 0)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		send := func(n int) int {
			for range n {
				if _, err := cli.WriteTo([]byte("x"), srv.LocalAddr()); err != nil {
					t.Fatal(err)
				}
			}
			got := 0
			buf := make([]byte, 10)
			for {
				srv.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				_, from, err := srv.ReadFromUDPAddrPort(buf)
				if err != nil {
					return got
				}
				if from.Addr() != ips[0] {
					t.Fatalf("from %v, want %v", from, ips[0])
				}
				got++
			}
		}
		if got := send(100); got != 100 {
			t.Fatalf("%v to %v: %d of 100 arrived", ips[0], ips[1], got)
		}
		r.Loss(t, 50)
		got := 0
		for range 10 {
			got += send(100) // in rounds, so that no socket buffer overflows
		}
		if got < 350 || got > 650 {
			t.Errorf("50%% loss: %d of 1000 arrived", got)
		}
		r.Loss(t, 0)
	}
}
