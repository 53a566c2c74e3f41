package myproto

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/link"
	"github.com/myproto/myproto/internal/sys"
)

// holdPort is the child process of TestIntegrationPortAcrossProcesses: it
// binds the address in spec, says so, and holds it until killed.
func holdPort(spec string) {
	c, err := ListenPacket("myproto", spec)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("ready", c.LocalAddr())
	io.Copy(io.Discard, os.Stdin) // until the parent kills us
	os.Exit(0)
}

// A child is a copy of this test binary running as one of the child
// processes TestMain dispatches on.
type child struct {
	cmd *exec.Cmd
	// ready is the rest of the child's "ready" line.
	ready string
	// in is the child's standard input, out its standard output after the
	// ready line, for children that take requests.
	in  io.Writer
	out *bufio.Reader
}

// startChild runs this test binary again with env added, as one of the
// child processes TestMain dispatches on, and returns once the child has
// written its "ready" line. The child lives until killed or until the test
// ends.
func startChild(t *testing.T, env string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env)
	stdin, _ := cmd.StdinPipe()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	r := bufio.NewReader(out)
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		t.Fatalf("child: %q %v", line, err)
	}
	return &child{cmd: cmd, ready: strings.TrimSpace(strings.TrimPrefix(line, "ready ")), in: stdin, out: r}
}

func TestIntegrationPortAcrossProcesses(t *testing.T) {
	watchdog(t)
	h := vethHosts(t, 1500)
	spec := h.aIf + ":4242"
	cmd := startChild(t, "MYPROTO_HOLD_PORT="+spec).cmd
	// The other process owns the port: this one can't have it.
	if _, err := h.a.listenPacket("myproto", spec); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("bind of a port another process owns: %v, want EADDRINUSE", err)
	}
	// A killed process's port is free again at once: the kernel closed its
	// reservation socket.
	cmd.Process.Kill()
	cmd.Wait()
	c, err := h.a.listenPacket("myproto", spec)
	if err != nil {
		t.Fatalf("port of a dead process: %v", err)
	}
	c.Close()
}

func TestIntegrationInjectedFrames(t *testing.T) {
	watchdog(t)
	h := vethHosts(t, 1500)
	a, err := h.a.listenPacket("myproto", h.aIf+":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	// A raw socket on b's side that sends whatever we craft.
	var raw, other *sys.PacketLink
	err = h.pair.NetnsB.Do(func() error {
		var err error
		if raw, err = sys.OpenPacket(h.pair.B, sys.PacketConfig{EtherType: DefaultEtherType}); err != nil {
			return err
		}
		other, err = sys.OpenPacket(h.pair.B, sys.PacketConfig{EtherType: DefaultEtherType + 1})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	defer other.Close()

	frame := func(mutate func(h *header, b []byte) []byte) []byte {
		b := make([]byte, 200)
		hd := header{typ: typeDatagram, srcPort: 9, dstPort: 7000, etherType: DefaultEtherType}
		copy(hd.dst[:], h.aMAC)
		copy(hd.src[:], h.bMAC)
		copy(b[offBody:], "injected")
		n := marshalFrame(b, &hd, len("injected"))
		if mutate == nil {
			return b[:n]
		}
		return mutate(&hd, b[:n])
	}
	reCRC := func(b []byte) []byte {
		binary.BigEndian.PutUint32(b[offCRC:], frameCRC(b))
		return b
	}
	cases := []struct {
		name   string
		frame  []byte
		passes bool // whether the kernel filter lets it through to the decoder
	}{
		{"bad crc", frame(func(_ *header, b []byte) []byte { b[len(b)-1] ^= 1; return b }), true},
		{"wrong version", frame(func(_ *header, b []byte) []byte { b[offVersion] = 2; return reCRC(b) }), false},
		{"foreign port", frame(func(_ *header, b []byte) []byte { binary.BigEndian.PutUint16(b[offDstPort:], 7001); return reCRC(b) }), false},
		{"foreign unicast", frame(func(_ *header, b []byte) []byte { b[5] ^= 0x40; return reCRC(b) }), false},
		{"truncated length", frame(func(_ *header, b []byte) []byte { binary.BigEndian.PutUint16(b[offLength:], uint16(len(b))); return b }), true},
		{"oversize length", frame(func(_ *header, b []byte) []byte { binary.BigEndian.PutUint16(b[offLength:], 0xffff); return b }), true},
		{"undersize length", frame(func(_ *header, b []byte) []byte { binary.BigEndian.PutUint16(b[offLength:], 3); return b }), true},
		{"short", frame(func(_ *header, b []byte) []byte { return b[:offBody-1] }), true},
		{"reserved", frame(func(_ *header, b []byte) []byte { b[offRsvd] = 1; return reCRC(b) }), true},
		// The filters pass the types the stack knows, each to its socket.
		{"unknown type", frame(func(_ *header, b []byte) []byte { b[offType] = 99; return reCRC(b) }), false},
	}
	before := a.eps[0].snapshot()
	passing := 0
	for _, c := range cases {
		if _, err := raw.WriteBatch([]link.Message{{Buf: c.frame, N: len(c.frame)}}); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if c.passes {
			passing++
		}
	}
	// Another EtherType, addressed to a and otherwise valid.
	o := frame(func(hd *header, b []byte) []byte {
		binary.BigEndian.PutUint16(b[12:], DefaultEtherType+1)
		return reCRC(b)
	})
	if _, err := other.WriteBatch([]link.Message{{Buf: o, N: len(o)}}); err != nil {
		t.Fatal(err)
	}
	good := frame(nil)
	if _, err := raw.WriteBatch([]link.Message{{Buf: good, N: len(good)}}); err != nil {
		t.Fatal(err)
	}
	got, from := readOne(t, a, 5*time.Second)
	if string(got) != "injected" || from.Port != 9 {
		t.Fatalf("first datagram read: %q from %v; want only the valid frame", got, from)
	}
	after := a.eps[0].snapshot()
	d := after.Drops
	b := before.Drops
	counted := map[string]uint64{
		"checksum": d.Checksum - b.Checksum,
		"length":   d.Length - b.Length,
		"short":    d.Short - b.Short,
		"reserved": d.Reserved - b.Reserved,
		"type":     d.Type - b.Type,
	}
	want := map[string]uint64{"checksum": 1, "length": 3, "short": 1, "reserved": 1, "type": 0}
	for k, v := range want {
		if counted[k] != v {
			t.Errorf("%s drops: %d, want %d (all counts %v)", k, counted[k], v, counted)
		}
	}
	// The kernel filter stopped the rest: only the decodable-but-bad frames
	// and the good one reached the socket.
	if n := after.KernelPackets - before.KernelPackets; n != uint64(passing+1) {
		t.Errorf("kernel passed %d frames, want %d", n, passing+1)
	}
}
