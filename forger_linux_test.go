package myproto

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/myproto/myproto/internal/sys"
	"github.com/myproto/myproto/internal/testenv"
)

// A forger is an attacker's raw packet socket on a host: it sends whatever
// frames a test crafts, from any source MAC, and reads the myproto frames on
// the wire, as anyone with CAP_NET_RAW on the segment can. It lives in the
// test tree only.
type forger struct {
	t   testing.TB
	c   *packet.Conn
	ifi *net.Interface
}

// newForger opens a forger on the interface ifname in ns (nil: the test's
// own namespace), closed in t's cleanup. It has no filter: it reads every
// myproto frame reaching the interface, unicast to other MACs included, but
// not the frames it sends itself.
func newForger(t testing.TB, ns *sys.Netns, ifname string) *forger {
	t.Helper()
	f := &forger{t: t}
	open := func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		c, err := packet.Listen(ifi, packet.Raw, DefaultEtherType, nil)
		if err != nil {
			return err
		}
		f.c, f.ifi = c, ifi
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		err = rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
		})
		return errors.Join(err, serr)
	}
	var err error
	if ns == nil {
		err = open()
	} else {
		err = ns.Do(open)
	}
	if f.c != nil {
		t.Cleanup(func() { f.c.Close() })
	}
	if err != nil {
		t.Fatalf("forger on %s: %v", ifname, err)
	}
	return f
}

// mac is the forger's own interface's MAC.
func (f *forger) mac() net.HardwareAddr { return f.ifi.HardwareAddr }

// send sends frame, a whole Ethernet frame, as it is.
func (f *forger) send(frame []byte) {
	f.t.Helper()
	if _, err := f.c.WriteTo(frame, &packet.Addr{HardwareAddr: net.HardwareAddr(frame[0:6])}); err != nil {
		f.t.Fatalf("forger: send: %v", err)
	}
}

// recv returns the next valid myproto frame to arrive before deadline.
func (f *forger) recv(deadline time.Time) (header, []byte, error) {
	buf := make([]byte, 1<<16)
	if err := f.c.SetReadDeadline(deadline); err != nil {
		return header{}, nil, err
	}
	for {
		n, _, err := f.c.ReadFrom(buf)
		if err != nil {
			return header{}, nil, err
		}
		h, body, reason := parseFrame(buf[:n], DefaultEtherType)
		if reason == dropNone {
			return h, append([]byte(nil), body...), nil
		}
	}
}

// node is what the forger learnt of a station from its discovery frames.
type node struct {
	mac    net.HardwareAddr
	nodeID uint64
	mtu    uint32
}

// sniffNode learns the node ID and MAC of the holder of name, as an
// attacker would: it solicits the name every 100 ms from its own MAC and
// reads the advertise that answers, or any announce of the name, until
// timeout.
func (f *forger) sniffNode(name string, timeout time.Duration) (node, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		nonce := rand.Uint64()
		f.send(discFrame(f.mac(), ethBroadcast, &discMsg{op: discSolicit, nonce: nonce, name: name}))
		wait := time.Now().Add(100 * time.Millisecond)
		if wait.After(deadline) {
			wait = deadline
		}
		for {
			h, body, err := f.recv(wait)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return node{}, err
			}
			var m discMsg
			if h.typ != typeDiscovery || !parseDisc(body, h.connID, &m) || m.name != name {
				continue
			}
			if m.op == discAnnounce || m.op == discAdvertise && m.nonce == nonce {
				return node{mac: net.HardwareAddr(h.src[:]), nodeID: m.nodeID, mtu: m.mtu}, nil
			}
		}
	}
	return node{}, errors.New("forger: nobody advertised " + name + " within " + timeout.String())
}

// ethBroadcast is the Ethernet broadcast address.
var ethBroadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// TestIntegrationForger checks the forger against real stacks: it learns a
// station's node ID from discovery, and frames it forges from a made-up MAC
// reach another forger intact and are taken up by a stack.
func TestIntegrationForger(t *testing.T) {
	watchdog(t)
	seg := testenv.NewSegment(t, 3, 1500)
	victim := startPeer(t, seg.Hosts[1].Netns, "MYPROTO_NAME=victim")
	victim.listen(t, seg.Hosts[1].Interface.Name+":0", "hold")
	witness := startPeer(t, seg.Hosts[2].Netns, "MYPROTO_NAME=witness")
	witness.listen(t, seg.Hosts[2].Interface.Name+":0", "hold")

	f := newForger(t, nil, seg.Hosts[0].Interface.Name)
	n, err := f.sniffNode("victim", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if n.mac.String() != seg.Hosts[1].Interface.HardwareAddr.String() || n.nodeID == 0 || n.mtu != 1500 {
		t.Errorf("sniffed %+v, want MAC %v, a node ID, MTU 1500", n, seg.Hosts[1].Interface.HardwareAddr)
	}

	rx := newForger(t, seg.Hosts[2].Netns, seg.Hosts[2].Interface.Name)
	fake := net.HardwareAddr{0x02, 0xfa, 0x4e, 0x00, 0x00, 0x01}
	m := discMsg{op: discAnnounce, nonce: 7, nodeID: 0x1234, mtu: 1500, lifetime: 60_000, name: "forged-name"}
	frame := discFrame(fake, ethBroadcast, &m)
	f.send(frame)
	deadline := time.Now().Add(5 * time.Second)
	for {
		h, body, err := rx.recv(deadline)
		if err != nil {
			t.Fatalf("the forged frame did not arrive: %v", err)
		}
		var got discMsg
		if h.src != [6]byte(fake) || !parseDisc(body, h.connID, &got) {
			continue // the stacks' own frames
		}
		if got != m {
			t.Errorf("received %+v, want %+v", got, m)
		}
		break
	}
	// The forger hears no echo of its own frames.
	for {
		h, _, err := f.recv(time.Now().Add(200 * time.Millisecond))
		if err != nil {
			break
		}
		if h.src == [6]byte(fake) {
			t.Fatal("the forger read its own frame")
		}
	}
	// A stack takes the announce for real (SPEC.md §15).
	if s := witness.must(t, "lookup forged-name 300ms"); !strings.HasPrefix(s, fake.String()+" ") {
		t.Errorf("witness looked up forged-name: %q, want %v", s, fake)
	}
}
