package myproto

import (
	"bytes"
	"errors"
	"github.com/myproto/myproto/internal/testenv"
	"net"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustMAC(t testing.TB, s string) net.HardwareAddr {
	t.Helper()
	mac, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// ethernetInterfaceForTest returns an up or down interface of this host with a
// 6-byte hardware address, making a veth pair in the test's private network
// namespace when there is none: resolution of names and zones needs one.
func ethernetInterfaceForTest(t *testing.T) net.Interface {
	t.Helper()
	ifis, err := net.Interfaces()
	if err != nil {
		t.Skipf("cannot list interfaces: %v", err)
	}
	for _, ifi := range ifis {
		if len(ifi.HardwareAddr) == 6 && validZone(ifi.Name) {
			return ifi
		}
	}
	a, _ := testenv.NewLocalPair(t, 0)
	return *a
}

// loopbackForTest returns the name of the loopback interface, which every
// network namespace has.
func loopbackForTest(t *testing.T) string {
	t.Helper()
	ifis, err := net.Interfaces()
	if err != nil {
		t.Skipf("cannot list interfaces: %v", err)
	}
	for _, ifi := range ifis {
		if ifi.Flags&net.FlagLoopback != 0 && len(ifi.HardwareAddr) == 0 {
			return ifi.Name
		}
	}
	t.Fatal("no loopback interface")
	panic("unreachable")
}

func TestAddrNetwork(t *testing.T) {
	for _, a := range []*Addr{nil, {}, {HardwareAddr: mustMAC(t, "02:00:5e:10:00:01"), Port: 1}} {
		if got := a.Network(); got != "myproto" {
			t.Errorf("(%v).Network() = %q, want %q", a, got, "myproto")
		}
	}
}

func TestAddrString(t *testing.T) {
	mac := mustMAC(t, "02:00:5E:10:00:01")
	tests := []struct {
		addr *Addr
		want string
	}{
		{nil, "<nil>"},
		{&Addr{}, ":0"},
		{&Addr{Port: 80}, ":80"},
		{&Addr{Port: 65535}, ":65535"},
		{&Addr{Zone: "eth0", Port: 80}, "eth0:80"},
		{&Addr{HardwareAddr: mac, Port: 80}, "[02:00:5e:10:00:01]:80"},
		{&Addr{HardwareAddr: mac, Port: 80, Zone: "eth0"}, "[02:00:5e:10:00:01%eth0]:80"},
		{&Addr{HardwareAddr: mac}, "[02:00:5e:10:00:01]:0"},
		{&Addr{HardwareAddr: net.HardwareAddr{}, Port: 7}, ":7"},
		{&Addr{HardwareAddr: mustMAC(t, "ff:ff:ff:ff:ff:ff"), Port: 9}, "[ff:ff:ff:ff:ff:ff]:9"},
	}
	for _, tt := range tests {
		if got := tt.addr.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

func TestParseAddr(t *testing.T) {
	mac := mustMAC(t, "02:00:5e:10:00:01")
	type parts struct {
		MAC  net.HardwareAddr
		Zone string
		Host string
		Port uint16
	}
	good := []struct {
		in   string
		want parts
	}{
		{":80", parts{Port: 80}},
		{":0", parts{}},
		{":65535", parts{Port: 65535}},
		{":0080", parts{Port: 80}},
		{"[]:80", parts{Port: 80}},
		{"[02:00:5e:10:00:01]:80", parts{MAC: mac, Port: 80}},
		{"[02:00:5E:10:00:01]:80", parts{MAC: mac, Port: 80}},
		{"[02-00-5e-10-00-01]:80", parts{MAC: mac, Port: 80}},
		{"[0200.5e10.0001]:80", parts{MAC: mac, Port: 80}},
		{"02-00-5e-10-00-01:80", parts{MAC: mac, Port: 80}},
		{"[02:00:5e:10:00:01%eth0]:80", parts{MAC: mac, Zone: "eth0", Port: 80}},
		{"02-00-5e-10-00-01%eth0:80", parts{MAC: mac, Zone: "eth0", Port: 80}},
		{"[02:00:5e:10:00:01%veth-a.100]:1", parts{MAC: mac, Zone: "veth-a.100", Port: 1}},
		{"eth0:80", parts{Host: "eth0", Port: 80}},
		{"[eth0]:80", parts{Host: "eth0", Port: 80}},
		{"printer.example:631", parts{Host: "printer.example", Port: 631}},
	}
	for _, tt := range good {
		m, z, h, p, err := parseAddr(tt.in)
		if err != nil {
			t.Errorf("parseAddr(%q): %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, parts{m, z, h, p}); diff != "" {
			t.Errorf("parseAddr(%q) mismatch (-want +got):\n%s", tt.in, diff)
		}
	}

	bad := []struct {
		in, why string
	}{
		{"", "missing port in address"},
		{"eth0", "missing port in address"},
		{"[02:00:5e:10:00:01]", "missing port in address"},
		{"02:00:5e:10:00:01:80", "too many colons in address"},
		{"[02:00:5e:10:00:01:80", "missing ']' in address"},
		{":", errInvalidPort},
		{"eth0:", errInvalidPort},
		{":-1", errInvalidPort},
		{":+80", errInvalidPort},
		{":65536", errInvalidPort},
		{":99999999999999999999999", errInvalidPort},
		{":http", errInvalidPort},
		{":8_0", errInvalidPort},
		{":0x50", errInvalidPort},
		{"[02:00:5e:10:00:01]: 80", errInvalidPort},
		{"[02:00:5e:10:00]:80", errInvalidMAC},
		{"[02:00:5e:10:00:01:02:03]:80", errInvalidMAC},                                     // EUI-64
		{"02-00-5e-10-00-01-02-03:80", errInvalidMAC},                                       // EUI-64, no brackets
		{"[00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01]:80", errInvalidMAC}, // InfiniBand
		{"[zz:00:5e:10:00:01]:80", errInvalidMAC},
		{"[a:b]:80", errInvalidMAC},
		{"[eth0%eth1]:80", errInvalidMAC},
		{"[%eth0]:80", errZoneWithoutMAC},
		{"%eth0:80", errZoneWithoutMAC},
		{"[02:00:5e:10:00:01%]:80", errInvalidZone},
		{"[02:00:5e:10:00:01%0123456789abcdef]:80", errInvalidZone}, // 16 bytes
		{"[02:00:5e:10:00:01%a b]:80", errInvalidZone},
		{"[02:00:5e:10:00:01%a/b]:80", errInvalidZone},
		{"[02:00:5e:10:00:01%a:b]:80", errInvalidZone},
		{"[02:00:5e:10:00:01%a%b]:80", errInvalidZone},
		{"[02:00:5e:10:00:01%..]:80", errInvalidZone},
		{"a b:80", errInvalidHost},
		{"a/b:80", errInvalidHost},
		{"a\x00b:80", errInvalidHost},
		{"\xff:80", errInvalidHost},
		{string(bytes.Repeat([]byte("a"), maxHostLen+1)) + ":80", errInvalidHost},
	}
	for _, tt := range bad {
		_, _, _, _, err := parseAddr(tt.in)
		checkAddrError(t, "parseAddr", tt.in, err, tt.why)
	}
}

// checkAddrError fails unless err is a *net.AddrError for address with the
// given reason.
func checkAddrError(t *testing.T, fn, address string, err error, why string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s(%q) = nil error, want %q", fn, address, why)
		return
	}
	ae, ok := errors.AsType[*net.AddrError](err)
	if !ok {
		t.Errorf("%s(%q) error %v is %T, want *net.AddrError", fn, address, err, err)
		return
	}
	want := &net.AddrError{Err: why, Addr: address}
	if diff := cmp.Diff(want, ae); diff != "" {
		t.Errorf("%s(%q) error mismatch (-want +got):\n%s", fn, address, diff)
	}
}

func TestResolveAddr(t *testing.T) {
	mac := mustMAC(t, "02:00:5e:10:00:01")
	tests := []struct {
		network, address string
		want             *Addr
	}{
		{"myproto", ":80", &Addr{Port: 80}},
		{"", ":80", &Addr{Port: 80}},
		{"myproto", "[]:0", &Addr{}},
		{"myproto", "[02:00:5e:10:00:01]:80", &Addr{HardwareAddr: mac, Port: 80}},
		{"myproto", "[02-00-5E-10-00-01]:65535", &Addr{HardwareAddr: mac, Port: 65535}},
		{"myproto", "[ff:ff:ff:ff:ff:ff]:9", &Addr{HardwareAddr: mustMAC(t, "ff:ff:ff:ff:ff:ff"), Port: 9}},
	}
	for _, tt := range tests {
		got, err := ResolveAddr(tt.network, tt.address)
		if err != nil {
			t.Errorf("ResolveAddr(%q, %q): %v", tt.network, tt.address, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got, cmpIP); diff != "" {
			t.Errorf("ResolveAddr(%q, %q) mismatch (-want +got):\n%s", tt.network, tt.address, diff)
		}
	}
}

func TestResolveAddrInterface(t *testing.T) {
	ifi := ethernetInterfaceForTest(t)
	mac := mustMAC(t, "02:00:5e:10:00:01")
	tests := []struct {
		address string
		want    *Addr
	}{
		// An interface name resolves to its own address, with itself as zone.
		{ifi.Name + ":80", &Addr{HardwareAddr: ifi.HardwareAddr, Port: 80, Zone: ifi.Name}},
		{"[" + ifi.Name + "]:0", &Addr{HardwareAddr: ifi.HardwareAddr, Zone: ifi.Name}},
		// A zone keeps the given (remote) MAC and picks the interface.
		{"[02:00:5e:10:00:01%" + ifi.Name + "]:80", &Addr{HardwareAddr: mac, Port: 80, Zone: ifi.Name}},
	}
	for _, tt := range tests {
		got, err := ResolveAddr("myproto", tt.address)
		if err != nil {
			t.Errorf("ResolveAddr(%q): %v", tt.address, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got, cmpIP); diff != "" {
			t.Errorf("ResolveAddr(%q) mismatch (-want +got):\n%s", tt.address, diff)
		}
	}
}

func TestResolveAddrUnknownNetwork(t *testing.T) {
	for _, network := range []string{"tcp", "udp", "ip", "myproto4", "MYPROTO", "myproto "} {
		a, err := ResolveAddr(network, ":80")
		if a != nil {
			t.Errorf("ResolveAddr(%q) = %v, want nil", network, a)
		}
		var ue net.UnknownNetworkError
		if !errors.As(err, &ue) || string(ue) != network {
			t.Errorf("ResolveAddr(%q) error = %#v, want net.UnknownNetworkError(%q)", network, err, network)
		}
	}
}

func TestResolveAddrErrors(t *testing.T) {
	tests := []struct {
		address, why string
	}{
		{"", "missing port in address"},
		{"[02:00:5e:10:00:01]", "missing port in address"},
		{":65536", errInvalidPort},
		{":http", errInvalidPort},
		{"[02:00:5e:10:00:01:02:03]:80", errInvalidMAC},
		{"[%eth0]:80", errZoneWithoutMAC},
		{"[02:00:5e:10:00:01%nosuchif0]:80", errNoSuchInterface},
		{"printer.example:631", errInvalidName},
		{"under_score:80", errInvalidName},
	}
	for _, tt := range tests {
		a, err := ResolveAddr("myproto", tt.address)
		if a != nil {
			t.Errorf("ResolveAddr(%q) = %v, want nil", tt.address, a)
		}
		checkAddrError(t, "ResolveAddr", tt.address, err, tt.why)
	}
}

// TestResolveAddrNotEthernet checks that interfaces without a 6-byte hardware
// address are refused both as a host and as a zone: the stack cannot use them.
func TestResolveAddrNotEthernet(t *testing.T) {
	lo := loopbackForTest(t)
	for _, address := range []string{lo + ":80", "[02:00:5e:10:00:01%" + lo + "]:80"} {
		a, err := ResolveAddr("myproto", address)
		if a != nil {
			t.Errorf("ResolveAddr(%q) = %v, want nil", address, a)
		}
		checkAddrError(t, "ResolveAddr", address, err, errNotEthernet)
	}
}

// TestAddrRoundTrip checks that ResolveAddr takes back what String gives for
// every address with a hardware address.
func TestAddrRoundTrip(t *testing.T) {
	addrs := []*Addr{
		{HardwareAddr: mustMAC(t, "02:00:5e:10:00:01"), Port: 80},
		{HardwareAddr: mustMAC(t, "ff:ff:ff:ff:ff:ff")},
		{HardwareAddr: mustMAC(t, "01:00:5e:00:00:fb"), Port: 65535},
		{Port: 1},
	}
	if ifis, err := net.Interfaces(); err == nil {
		for _, ifi := range ifis {
			if len(ifi.HardwareAddr) == 6 {
				addrs = append(addrs,
					&Addr{HardwareAddr: mustMAC(t, "02:00:5e:10:00:01"), Port: 80, Zone: ifi.Name},
					&Addr{HardwareAddr: ifi.HardwareAddr, Port: 443, Zone: ifi.Name})
			}
		}
	}
	for _, a := range addrs {
		s := a.String()
		got, err := ResolveAddr(a.Network(), s)
		if err != nil {
			t.Errorf("ResolveAddr(%q): %v", s, err)
			continue
		}
		if diff := cmp.Diff(a, got, cmpIP); diff != "" {
			t.Errorf("ResolveAddr(%q) mismatch (-want +got):\n%s", s, diff)
		}
	}
}

func TestAddrClone(t *testing.T) {
	if (*Addr)(nil).clone() != nil {
		t.Error("nil.clone() != nil")
	}
	a := &Addr{HardwareAddr: mustMAC(t, "02:00:5e:10:00:01"), Port: 80, Zone: "eth0"}
	c := a.clone()
	if diff := cmp.Diff(a, c, cmpIP); diff != "" {
		t.Fatalf("clone mismatch (-want +got):\n%s", diff)
	}
	c.HardwareAddr[0] = 0xff
	c.Port = 81
	if a.HardwareAddr[0] != 0x02 || a.Port != 80 {
		t.Errorf("changing the clone changed the original: %v", a)
	}
	if c := (&Addr{Port: 1}).clone(); c.HardwareAddr != nil {
		t.Errorf("clone of a nil hardware address = %#v, want nil", c.HardwareAddr)
	}
}

func TestAddrGroup(t *testing.T) {
	tests := []struct {
		addr                 *Addr
		multicast, broadcast bool
	}{
		{nil, false, false},
		{&Addr{}, false, false},
		{&Addr{HardwareAddr: mustMAC(t, "02:00:5e:10:00:01")}, false, false},
		{&Addr{HardwareAddr: mustMAC(t, "00:00:00:00:00:00")}, false, false},
		{&Addr{HardwareAddr: mustMAC(t, "01:00:5e:00:00:fb")}, true, false},
		{&Addr{HardwareAddr: mustMAC(t, "33:33:00:00:00:01")}, true, false},
		{&Addr{HardwareAddr: mustMAC(t, "03:00:00:00:00:00")}, true, false},
		{&Addr{HardwareAddr: mustMAC(t, "ff:ff:ff:ff:ff:fe")}, true, false},
		{&Addr{HardwareAddr: mustMAC(t, "ff:ff:ff:ff:ff:ff")}, true, true},
		{&Addr{HardwareAddr: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}, true, false},
	}
	for _, tt := range tests {
		if got := tt.addr.isMulticast(); got != tt.multicast {
			t.Errorf("(%v).isMulticast() = %v, want %v", tt.addr, got, tt.multicast)
		}
		if got := tt.addr.isBroadcast(); got != tt.broadcast {
			t.Errorf("(%v).isBroadcast() = %v, want %v", tt.addr, got, tt.broadcast)
		}
	}
}

// FuzzParseAddr checks that parseAddr never panics, that its results keep the
// documented invariants, and that what it accepts prints in a form it parses
// back to the same parts.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{
		":80", "[]:0", "[02:00:5e:10:00:01]:80", "[02:00:5e:10:00:01%eth0]:80",
		"02-00-5e-10-00-01:80", "[0200.5e10.0001]:1", "eth0:80", "[eth0]:80",
		"[%eth0]:80", "[02:00:5e:10:00:01:02:03]:80", ":65536", ":http", "", "[",
		"]:1", "[a]b]:1", "a%b:1", "[02:00:5e:10:00:01%]:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mac, zone, host, port, err := parseAddr(s)
		if err != nil {
			ae, ok := errors.AsType[*net.AddrError](err)
			if !ok || ae.Addr != s || ae.Err == "" {
				t.Fatalf("parseAddr(%q) error = %#v, want *net.AddrError naming the input", s, err)
			}
			if mac != nil || zone != "" || host != "" || port != 0 {
				t.Fatalf("parseAddr(%q) failed but returned parts %v %q %q %d", s, mac, zone, host, port)
			}
			return
		}
		switch {
		case mac != nil && len(mac) != 6:
			t.Fatalf("parseAddr(%q) MAC %v is not 6 bytes", s, mac)
		case mac != nil && host != "":
			t.Fatalf("parseAddr(%q) gave both MAC %v and host %q", s, mac, host)
		case mac == nil && zone != "":
			t.Fatalf("parseAddr(%q) gave zone %q without a MAC", s, zone)
		}

		var again string
		if host != "" {
			again = net.JoinHostPort(host, strconv.Itoa(int(port)))
		} else {
			again = (&Addr{HardwareAddr: mac, Port: port, Zone: zone}).String()
		}
		mac2, zone2, host2, port2, err := parseAddr(again)
		if err != nil {
			t.Fatalf("parseAddr(%q) ok, but its string %q: %v", s, again, err)
		}
		if !bytes.Equal(mac, mac2) || zone != zone2 || host != host2 || port != port2 {
			t.Fatalf("parseAddr(%q) = %v %q %q %d, but parseAddr(%q) = %v %q %q %d",
				s, mac, zone, host, port, again, mac2, zone2, host2, port2)
		}
	})
}

// TestResolveAddrUnknownName checks that a valid name nobody answers for is
// a *net.DNSError that says so, as net.ResolveTCPAddr gives for DNS.
func TestResolveAddrUnknownName(t *testing.T) {
	for _, address := range []string{"nosuchhost0:80", "[NoSuchHost0]:80"} {
		_, err := ResolveAddr("myproto", address)
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound || de.Name != "nosuchhost0" {
			t.Errorf("ResolveAddr(%q): %#v, want a *net.DNSError with IsNotFound for nosuchhost0", address, err)
		}
	}
}
