package sys

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"slices"
	"testing"

	"golang.org/x/net/bpf"
)

const (
	testEtherType = 0x88B5
	testVersion   = 1
	// Frame types as the root package numbers them.
	typeDatagram  = 1
	typeStream    = 2
	typeDiscovery = 3
	typeControl   = 4
)

var (
	ourMAC     = net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01}
	peerMAC    = net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x02}
	broadcast  = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	multicast  = net.HardwareAddr{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}
	ipv6Mcast  = net.HardwareAddr{0x33, 0x33, 0x00, 0x00, 0x00, 0x01}
	highDiffer = net.HardwareAddr{0x06, 0x00, 0x5e, 0x10, 0x00, 0x01} // differs in the first half-word only
)

// testFrame describes a frame for the filter tests.
type testFrame struct {
	dst       net.HardwareAddr
	etherType uint16
	version   uint8
	typ       uint8
	flags     uint16
	dstPort   uint16
	size      int // 0 means a whole header plus a short body
}

// bytes encodes f, truncated or padded to f.size.
func (f testFrame) bytes() []byte {
	b := make([]byte, 14+24+16)
	copy(b[0:6], f.dst)
	copy(b[6:12], peerMAC)
	binary.BigEndian.PutUint16(b[12:], f.etherType)
	b[14] = f.version
	b[15] = f.typ
	binary.BigEndian.PutUint16(b[16:], f.flags)
	binary.BigEndian.PutUint16(b[18:], 24+16)
	binary.BigEndian.PutUint16(b[20:], 5000) // source port
	binary.BigEndian.PutUint16(b[22:], f.dstPort)
	if f.size > 0 {
		if f.size <= len(b) {
			return b[:f.size]
		}
		return append(b, make([]byte, f.size-len(b))...)
	}
	return b
}

// good returns a frame every config in these tests accepts, to be varied.
func good(port uint16) testFrame {
	return testFrame{dst: ourMAC, etherType: testEtherType, version: testVersion, typ: typeStream, dstPort: port}
}

// newVM assembles cfg and loads the program into a bpf.VM, checking the
// kernel's instruction limit on the way.
func newVM(t *testing.T, cfg FilterConfig) (*bpf.VM, []bpf.RawInstruction) {
	t.Helper()
	raw, err := Filter(cfg)
	if err != nil {
		t.Fatalf("Filter: %v", err)
	}
	if len(raw) >= 4096 {
		t.Fatalf("program has %d instructions, the kernel accepts fewer than 4096", len(raw))
	}
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatalf("program does not disassemble: %v", prog)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatalf("NewVM: %v", err)
	}
	return vm, raw
}

// accepts runs frame through vm and reports whether it was accepted, failing
// the test if the verdict is neither reject nor the full snap length.
func accepts(t *testing.T, vm *bpf.VM, frame []byte) bool {
	t.Helper()
	n, err := vm.Run(frame)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	switch n {
	case 0:
		return false
	case acceptLen:
		return true
	}
	t.Fatalf("Run returned %d, want 0 or %#x", n, acceptLen)
	return false
}

// Flags as the root package numbers them for stream frames.
const (
	flagSYN   = 0x0001
	flagReset = 0x0002
	flagProbe = 0x0004
)

// dataRules and controlRules are the stack's two sockets' rules: data frames
// to owned ports on one socket, SYNs and discovery on the other.
func dataRules(own []uint16) []Rule {
	return []Rule{
		{Types: []uint8{typeStream}, FlagsAny: flagSYN},
		{Types: []uint8{typeStream, typeDatagram}, Ports: own, InPorts: true},
	}
}

func TestFilter(t *testing.T) {
	cfg := FilterConfig{
		EtherType:    testEtherType,
		Version:      testVersion,
		HardwareAddr: ourMAC,
		// 80-82 coalesce; 443 stays alone; 0 and 65535 are the edges.
		Rules: append(dataRules([]uint16{82, 80, 443, 81, 80, 0, 65535, 8000, 8001}),
			Rule{Types: []uint8{typeDiscovery, typeControl}, OtherPorts: true}),
	}
	vm, _ := newVM(t, cfg)

	with := func(f testFrame, edit func(*testFrame)) []byte {
		edit(&f)
		return f.bytes()
	}
	tests := []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"owned port", good(80).bytes(), true},
		{"range middle", good(81).bytes(), true},
		{"range top", good(82).bytes(), true},
		{"below range", good(79).bytes(), false},
		{"above range", good(83).bytes(), false},
		{"single port", good(443).bytes(), true},
		{"below single port", good(442).bytes(), false},
		{"above single port", good(444).bytes(), false},
		{"port 0", good(0).bytes(), true},
		{"port 1", good(1).bytes(), false},
		{"port 65535", good(65535).bytes(), true},
		{"port 65534", good(65534).bytes(), false},
		{"pair low", good(8000).bytes(), true},
		{"pair high", good(8001).bytes(), true},
		{"unowned port", good(5000).bytes(), false},
		{"SYN to an owned port", with(good(80), func(f *testFrame) { f.flags = flagSYN }), false},
		{"SYN with other bits", with(good(80), func(f *testFrame) { f.flags = flagSYN | flagProbe }), false},
		{"probe to an owned port", with(good(80), func(f *testFrame) { f.flags = flagProbe }), true},
		{"datagram", with(good(443), func(f *testFrame) { f.typ = typeDatagram }), true},
		{"datagram with the SYN bit", with(good(443), func(f *testFrame) { f.typ = typeDatagram; f.flags = flagSYN }), true},
		{"datagram unowned port", with(good(444), func(f *testFrame) { f.typ = typeDatagram }), false},
		{"other EtherType", with(good(80), func(f *testFrame) { f.etherType = 0x0800 }), false},
		{"neighbouring EtherType", with(good(80), func(f *testFrame) { f.etherType = testEtherType + 1 }), false},
		{"other version", with(good(80), func(f *testFrame) { f.version = testVersion + 1 }), false},
		{"version zero", with(good(80), func(f *testFrame) { f.version = 0 }), false},
		{"foreign unicast", with(good(80), func(f *testFrame) { f.dst = peerMAC }), false},
		{"foreign unicast, first half-word differs", with(good(80), func(f *testFrame) { f.dst = highDiffer }), false},
		{"broadcast owned port", with(good(80), func(f *testFrame) { f.dst = broadcast }), true},
		{"broadcast unowned port", with(good(5000), func(f *testFrame) { f.dst = broadcast }), false},
		{"multicast owned port", with(good(80), func(f *testFrame) { f.dst = multicast }), true},
		{"IPv6-style multicast owned port", with(good(80), func(f *testFrame) { f.dst = ipv6Mcast }), true},
		{"discovery foreign port", with(good(5000), func(f *testFrame) { f.typ = typeDiscovery }), true},
		{"discovery broadcast", with(good(0), func(f *testFrame) { f.typ = typeDiscovery; f.dst = broadcast }), true},
		{"control foreign port", with(good(5000), func(f *testFrame) { f.typ = typeControl }), true},
		{"discovery to foreign unicast", with(good(5000), func(f *testFrame) { f.typ = typeDiscovery; f.dst = peerMAC }), false},
		{"discovery other version", with(good(5000), func(f *testFrame) { f.typ = typeDiscovery; f.version = 2 }), false},
		{"type 5 foreign port", with(good(5000), func(f *testFrame) { f.typ = 5 }), false},
		{"type 5 owned port", with(good(80), func(f *testFrame) { f.typ = 5 }), false},
		{"minimum length with owned port", with(good(80), func(f *testFrame) { f.size = 24 }), true},
		{"jumbo", with(good(80), func(f *testFrame) { f.size = 9014 }), true},
		{"empty", []byte{}, false},
		{"Ethernet header only", with(good(80), func(f *testFrame) { f.size = 14 }), false},
		{"version only", with(good(80), func(f *testFrame) { f.size = 15 }), false},
		{"discovery truncated after type", with(good(80), func(f *testFrame) { f.typ = typeDiscovery; f.size = 16 }), false},
		{"discovery truncated in port", with(good(80), func(f *testFrame) { f.typ = typeDiscovery; f.size = 23 }), false},
		{"truncated in port", with(good(80), func(f *testFrame) { f.size = 23 }), false},
		{"truncated in MAC", with(good(80), func(f *testFrame) { f.size = 4 }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := accepts(t, vm, tt.frame); got != tt.want {
				t.Errorf("accepted = %v, want %v (frame % x)", got, tt.want, tt.frame)
			}
		})
	}
}

func TestFilterNoRules(t *testing.T) {
	vm, _ := newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC})
	for _, f := range []testFrame{good(0), good(80), good(65535)} {
		for _, typ := range []uint8{typeDatagram, typeStream, typeDiscovery, typeControl} {
			for _, dst := range []net.HardwareAddr{ourMAC, broadcast} {
				f.typ, f.dst = typ, dst
				if accepts(t, vm, f.bytes()) {
					t.Errorf("program with no rules accepted %+v", f)
				}
			}
		}
	}
}

// TestFilterControl checks the rules of a host agent's control socket: SYNs
// and probes to ports nobody else owns, SYNs to its own ports, discovery.
func TestFilterControl(t *testing.T) {
	own := []uint16{80, 49152}
	others := []uint16{443, 8000, 8001}
	vm, _ := newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC,
		Rules: []Rule{
			{Types: []uint8{typeDiscovery}, OtherPorts: true},
			{Types: []uint8{typeStream}, FlagsAny: flagSYN, Ports: others, OtherPorts: true},
			{Types: []uint8{typeStream}, FlagsAny: flagProbe, Ports: append(others, own...), OtherPorts: true},
		}})
	f := func(port, flags uint16) []byte {
		fr := good(port)
		fr.flags = flags
		return fr.bytes()
	}
	for _, tt := range []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"SYN to own port", f(80, flagSYN), true},
		{"SYN to nobody's port", f(9, flagSYN), true},
		{"SYN to another process's port", f(443, flagSYN), false},
		{"SYN to another process's range", f(8001, flagSYN), false},
		{"SYN+probe to another process's port", f(443, flagSYN|flagProbe), false},
		{"probe to nobody's port", f(9, flagProbe), true},
		{"probe to own port", f(80, flagProbe), false},
		{"probe to another process's port", f(8000, flagProbe), false},
		{"data to nobody's port", f(9, 0), false},
		{"reset flag to nobody's port", f(9, flagReset), false},
		{"data to own port", f(80, 0), false},
		{"discovery", with(good(0), typeDiscovery), true},
		{"datagram to nobody's port", with(good(9), typeDatagram), false},
	} {
		if got := accepts(t, vm, tt.frame); got != tt.want {
			t.Errorf("%s: accepted = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func with(f testFrame, typ uint8) []byte {
	f.typ = typ
	return f.bytes()
}

// TestFilterModel runs random rule sets on random frames and compares every
// verdict with a direct reading of the rules.
func TestFilterModel(t *testing.T) {
	seed := uint64(rand.Int64())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	for range 200 {
		var rules []Rule
		for range rng.IntN(5) {
			r := Rule{InPorts: rng.IntN(2) == 0, OtherPorts: rng.IntN(2) == 0}
			for range rng.IntN(3) {
				r.Types = append(r.Types, uint8(1+rng.IntN(5)))
			}
			if rng.IntN(2) == 0 {
				r.FlagsAny = uint16(1 << rng.IntN(3))
			}
			for range rng.IntN(40) {
				r.Ports = append(r.Ports, uint16(rng.IntN(200)))
			}
			rules = append(rules, r)
		}
		vm, _ := newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC, Rules: rules})
		for range 300 {
			fr := good(uint16(rng.IntN(210)))
			fr.typ = uint8(1 + rng.IntN(6))
			fr.flags = uint16(rng.IntN(8))
			if got, want := accepts(t, vm, fr.bytes()), modelVerdict(rules, fr); got != want {
				t.Fatalf("seed %d: rules %+v, frame type %d flags %#x port %d: accepted = %v, want %v",
					seed, rules, fr.typ, fr.flags, fr.dstPort, got, want)
			}
		}
	}
}

func modelVerdict(rules []Rule, f testFrame) bool {
	for _, r := range rules {
		if r.Types != nil && !slices.Contains(r.Types, f.typ) {
			continue
		}
		if r.FlagsAny != 0 && f.flags&r.FlagsAny == 0 {
			continue
		}
		if slices.Contains(r.Ports, f.dstPort) {
			return r.InPorts
		}
		return r.OtherPorts
	}
	return false
}

func TestFilterAllTypes(t *testing.T) {
	types := make([]uint8, 256)
	for i := range types {
		types[i] = uint8(255 - i)
	}
	few := types[:255] // every type but 0: the longest comparison list
	for _, ts := range [][]uint8{types, few} {
		vm, _ := newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC,
			Rules: []Rule{{Types: ts, OtherPorts: true}}})
		for typ := range 256 {
			f := good(5000)
			f.typ = uint8(typ)
			if got, want := accepts(t, vm, f.bytes()), slices.Contains(ts, uint8(typ)); got != want {
				t.Errorf("%d types: type %d accepted = %v, want %v", len(ts), typ, got, want)
			}
		}
	}
}

func TestFilterCoalescesPorts(t *testing.T) {
	every := make([]uint16, 0, 65536)
	for p := range 65536 {
		every = append(every, uint16(65535-p))
	}
	vm, raw := newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC,
		Rules: []Rule{{Ports: every, InPorts: true}}})
	if len(raw) > 20 {
		t.Errorf("every port in one range took %d instructions", len(raw))
	}
	for _, p := range []uint16{0, 1, 80, 32768, 65534, 65535} {
		if !accepts(t, vm, good(p).bytes()) {
			t.Errorf("port %d rejected", p)
		}
	}

	got := portRanges([]uint16{5, 3, 4, 4, 10, 12, 11, 65535, 0, 65534})
	want := []portRange{{0, 0}, {3, 5}, {10, 12}, {65534, 65535}}
	if !slices.Equal(got, want) {
		t.Errorf("portRanges = %v, want %v", got, want)
	}
}

func TestFilterRandomPorts(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		owned := make(map[uint16]bool)
		var ports []uint16
		for range rng.IntN(300) {
			// Clustered so that some runs coalesce.
			p := uint16(rng.IntN(2000))
			owned[p] = true
			ports = append(ports, p)
		}
		in := rng.IntN(2) == 0
		vm, _ := newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC,
			Rules: []Rule{{Ports: ports, InPorts: in, OtherPorts: !in}}})
		for p := range 2100 {
			if got, want := accepts(t, vm, good(uint16(p)).bytes()), owned[uint16(p)] == in; got != want {
				t.Fatalf("ports %v: port %d accepted = %v, want %v", ports, p, got, want)
			}
		}
	}
}

func TestFilterLargestPrograms(t *testing.T) {
	// 1300 ranges fit (three instructions each); checked exactly.
	var atCap []uint16
	for i := range 1300 {
		atCap = append(atCap, uint16(2*i+1))
	}
	vm, raw := newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC,
		Rules: []Rule{{Types: []uint8{typeDiscovery}, OtherPorts: true}, {Ports: atCap, InPorts: true}}})
	t.Logf("1300 ranges: %d instructions", len(raw))
	for p := range 2*1300 + 2 {
		want := p%2 == 1 && p < 2*1300
		if got := accepts(t, vm, good(uint16(p)).bytes()); got != want {
			t.Fatalf("port %d accepted = %v, want %v", p, got, want)
		}
	}

	// 5000 scattered ports are far past the limit: the rule gives up on
	// ports and accepts them all, while a smaller rule keeps its check and
	// everything else is still checked.
	var scattered []uint16
	for i := range 5000 {
		scattered = append(scattered, uint16(i*13))
	}
	vm, raw = newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC,
		Rules: []Rule{
			{Types: []uint8{typeDatagram}, Ports: []uint16{7}, InPorts: true},
			{Types: []uint8{typeStream}, Ports: scattered, OtherPorts: true},
		}})
	t.Logf("5000 scattered ports: %d instructions", len(raw))
	for _, p := range []uint16{0, 1, 13, 14, 40000, 65535} {
		if !accepts(t, vm, good(p).bytes()) {
			t.Errorf("past the limit, port %d rejected", p)
		}
	}
	if accepts(t, vm, with(good(8), typeDatagram)) || !accepts(t, vm, with(good(7), typeDatagram)) {
		t.Error("the small rule lost its port check")
	}
	f := good(13)
	f.dst = peerMAC
	if accepts(t, vm, f.bytes()) {
		t.Error("past the limit, foreign unicast accepted")
	}
	f = good(13)
	f.etherType = 0x0800
	if accepts(t, vm, f.bytes()) {
		t.Error("past the limit, other EtherType accepted")
	}
	f = good(13)
	f.size = 23
	if accepts(t, vm, f.bytes()) {
		t.Error("past the limit, truncated frame accepted")
	}
}

func TestFilterInvalidConfig(t *testing.T) {
	for _, cfg := range []FilterConfig{
		{Version: testVersion, HardwareAddr: ourMAC},
		{EtherType: testEtherType},
		{EtherType: testEtherType, HardwareAddr: net.HardwareAddr{1, 2, 3, 4, 5, 6, 7, 8}},
	} {
		if _, err := Filter(cfg); err == nil {
			t.Errorf("Filter(%+v) succeeded, want an error", cfg)
		}
	}
}

func TestFilterDoesNotChangeRules(t *testing.T) {
	var scattered []uint16
	for i := range 5000 {
		scattered = append(scattered, uint16(i*13))
	}
	rules := []Rule{{Ports: scattered, InPorts: true}}
	if _, err := Filter(FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC, Rules: rules}); err != nil {
		t.Fatal(err)
	}
	if rules[0].OtherPorts {
		t.Error("Filter changed the caller's rules")
	}
}
