package myproto

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/testenv"
)

// envNoRawChild makes TestMain run noRawChild on the interface it names.
const envNoRawChild = "MYPROTO_NORAW_CHILD"

// noRawChild runs Listen, ListenPacket and Dial without CAP_NET_RAW and
// prints what each returned: op, net, whether it is a permission error,
// and the message.
func noRawChild(ifname string) {
	report := func(err error) {
		oe, ok := err.(*net.OpError)
		if !ok {
			fmt.Printf("%T|%v\n", err, err)
			return
		}
		fmt.Printf("%s|%s|%v|%v\n", oe.Op, oe.Net, errors.Is(err, os.ErrPermission) && errors.Is(err, syscall.EPERM), err)
	}
	_, err := Listen("myproto", ifname+":80")
	report(err)
	_, err = ListenPacket("myproto", ifname+":81")
	report(err)
	_, err = Dial("myproto", "[02:00:5e:10:00:01%"+ifname+"]:80")
	report(err)
	os.Exit(0)
}

// TestIntegrationNoCapNetRaw: without CAP_NET_RAW (a process in a user
// namespace of its own, which has no capability over the network
// namespace) Listen, ListenPacket and Dial fail with a *net.OpError of
// the caller's operation wrapping EPERM that says what to do.
func TestIntegrationNoCapNetRaw(t *testing.T) {
	watchdog(t)
	a, _ := testenv.NewLocalPair(t, 0)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envNoRawChild+"="+a.Name)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}},
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Skipf("cannot start a process in a user namespace of its own: %v %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{"listen", "listen", "dial"}
	if len(lines) != len(want) {
		t.Fatalf("child said:\n%s", out)
	}
	for i, l := range lines {
		f := strings.SplitN(l, "|", 4)
		if len(f) != 4 || f[0] != want[i] || f[1] != "myproto" || f[2] != "true" ||
			!strings.Contains(f[3], "CAP_NET_RAW") || !strings.Contains(f[3], "setcap") ||
			!strings.HasSuffix(f[3], "socket: operation not permitted") || strings.Contains(f[3], "sys:") {
			t.Errorf("%s: %s", want[i], l)
		}
		t.Log(l)
	}
}

// TestIntegrationAddressTreatment: an interface name that cannot carry
// myproto (lo) gives the same *net.AddrError from ResolveAddr, Listen and
// Dial, without a name lookup; so does a zone naming no interface. A
// broadcast or multicast MAC, the all-zero MAC and the interface's own
// (whose frames never come back) fail Dial at once, as does the interface
// itself as a host.
func TestIntegrationAddressTreatment(t *testing.T) {
	watchdog(t)
	a, _ := testenv.NewLocalPair(t, 0)
	s := newStack(Config{Name: "addr-test"}, packetProvider{})
	for _, address := range []string{"lo:80", "[02:00:5e:10:00:01%nosuch0]:80"} {
		_, rerr := ResolveAddr("myproto", address)
		_, lerr := s.listen(&ListenConfig{}, "myproto", address)
		_, derr := s.dial(t.Context(), &Dialer{}, "myproto", address)
		want, ok := rerr.(*net.AddrError)
		if !ok || want.Addr != address {
			t.Fatalf("ResolveAddr(%q) = %#v, want a *net.AddrError", address, rerr)
		}
		for _, tc := range []struct {
			op  string
			err error
		}{{"listen", lerr}, {"dial", derr}} {
			oe, ok := tc.err.(*net.OpError)
			var ae *net.AddrError
			if !ok || oe.Op != tc.op || !errors.As(tc.err, &ae) || *ae != *want {
				t.Errorf("%s %q: %v, want a *net.OpError wrapping %#v", tc.op, address, tc.err, want)
			}
		}
	}
	for _, mac := range []string{"ff:ff:ff:ff:ff:ff", "03:00:5e:10:00:01"} {
		address := "[" + mac + "%" + a.Name + "]:80"
		_, err := s.dial(t.Context(), &Dialer{}, "myproto", address)
		var ae *net.AddrError
		if !errors.As(err, &ae) || ae.Err != errGroupAddr || ae.Addr != address {
			t.Errorf("dial %s: %v, want %q", address, err, errGroupAddr)
		}
	}
	ln, err := s.listen(&ListenConfig{}, "myproto", a.Name+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*Addr).Port
	for _, tc := range []struct{ address, want string }{
		{fmt.Sprintf("[00:00:00:00:00:00%%%s]:%d", a.Name, port), errZeroMAC},
		{fmt.Sprintf("[%v%%%s]:%d", a.HardwareAddr, a.Name, port), errOwnMAC},
		{fmt.Sprintf("%s:%d", a.Name, port), errOwnMAC},
	} {
		start := time.Now()
		_, err := s.dial(t.Context(), &Dialer{}, "myproto", tc.address)
		var ae *net.AddrError
		if !errors.As(err, &ae) || ae.Err != tc.want || ae.Addr != tc.address || time.Since(start) > time.Second {
			t.Errorf("dial %s: %v after %v, want %q at once", tc.address, err, time.Since(start), tc.want)
		}
	}
}

// TestIntegrationListenConfigEtherType: ListenConfig.ListenPacket opens
// the stack of its Config's EtherType.
func TestIntegrationListenConfigEtherType(t *testing.T) {
	watchdog(t)
	a, _ := testenv.NewLocalPair(t, 0)
	cfg := &Config{EtherType: 0x88b7, Name: "lc-ethertype"}
	lc := &ListenConfig{Config: cfg}
	pc, err := lc.ListenPacket(t.Context(), "myproto", a.Name+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, ok := pc.(*PacketConn); !ok {
		t.Fatalf("%T, want *PacketConn", pc)
	}
	found := false
	for _, st := range LinkStats(cfg) {
		found = found || st.Interface == a.Name
	}
	if !found {
		t.Fatalf("the 0x88b7 stack is not on %s: %+v", a.Name, LinkStats(cfg))
	}
}
