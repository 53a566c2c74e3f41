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

func TestFilter(t *testing.T) {
	cfg := FilterConfig{
		EtherType:    testEtherType,
		Version:      testVersion,
		HardwareAddr: ourMAC,
		// 80-82 coalesce; 443 stays alone; 0 and 65535 are the edges.
		Ports:        []uint16{82, 80, 443, 81, 80, 0, 65535, 8000, 8001},
		AnyPortTypes: []uint8{typeDiscovery, typeControl},
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
		{"datagram", with(good(443), func(f *testFrame) { f.typ = typeDatagram }), true},
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

func TestFilterNothingOwned(t *testing.T) {
	vm, _ := newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC})
	for _, f := range []testFrame{good(0), good(80), good(65535)} {
		for _, typ := range []uint8{typeDatagram, typeStream, typeDiscovery, typeControl} {
			for _, dst := range []net.HardwareAddr{ourMAC, broadcast} {
				f.typ, f.dst = typ, dst
				if accepts(t, vm, f.bytes()) {
					t.Errorf("program with no ports and no types accepted %+v", f)
				}
			}
		}
	}
}

func TestFilterTypesOnly(t *testing.T) {
	vm, _ := newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC,
		AnyPortTypes: []uint8{typeDiscovery, typeDiscovery}})
	f := good(80)
	if accepts(t, vm, f.bytes()) {
		t.Error("stream frame accepted with no ports owned")
	}
	f.typ = typeDiscovery
	if !accepts(t, vm, f.bytes()) {
		t.Error("discovery frame rejected")
	}
}

func TestFilterAllTypes(t *testing.T) {
	// 256 distinct types make the longest jump exactly 255.
	types := make([]uint8, 256)
	for i := range types {
		types[i] = uint8(255 - i)
	}
	vm, _ := newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC,
		Ports: []uint16{80}, AnyPortTypes: types})
	for typ := range 256 {
		f := good(5000)
		f.typ = uint8(typ)
		if !accepts(t, vm, f.bytes()) {
			t.Errorf("type %d rejected", typ)
		}
	}
}

func TestFilterCoalescesPorts(t *testing.T) {
	every := make([]uint16, 0, 65536)
	for p := range 65536 {
		every = append(every, uint16(65535-p))
	}
	vm, raw := newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC, Ports: every})
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
		vm, _ := newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC, Ports: ports})
		for p := range 2100 {
			if got, want := accepts(t, vm, good(uint16(p)).bytes()), owned[uint16(p)]; got != want {
				t.Fatalf("ports %v: port %d accepted = %v, want %v", ports, p, got, want)
			}
		}
	}
}

func TestFilterLargestPrograms(t *testing.T) {
	allTypes := make([]uint8, 256)
	for i := range allTypes {
		allTypes[i] = uint8(i)
	}

	// Exactly the cap: every other port, so nothing coalesces.
	var atCap []uint16
	for i := range maxPortRanges {
		atCap = append(atCap, uint16(2*i+1))
	}
	vm, raw := newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC,
		Ports: atCap, AnyPortTypes: []uint8{typeDiscovery}})
	t.Logf("%d ranges: %d instructions", maxPortRanges, len(raw))
	for p := range 2*maxPortRanges + 2 {
		want := p%2 == 1 && p < 2*maxPortRanges
		if got := accepts(t, vm, good(uint16(p)).bytes()); got != want {
			t.Fatalf("port %d accepted = %v, want %v", p, got, want)
		}
	}

	// The cap in two-port ranges, which cost three instructions each.
	var pairs []uint16
	for i := range maxPortRanges {
		pairs = append(pairs, uint16(3*i), uint16(3*i+1))
	}
	vm, raw = newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC,
		Ports: pairs, AnyPortTypes: []uint8{typeDiscovery}})
	t.Logf("%d two-port ranges: %d instructions", maxPortRanges, len(raw))
	for p := range 3*maxPortRanges + 3 {
		want := p%3 != 2 && p < 3*maxPortRanges
		if got := accepts(t, vm, good(uint16(p)).bytes()); got != want {
			t.Fatalf("port %d accepted = %v, want %v", p, got, want)
		}
	}

	// The same with every type: the largest program Filter builds.
	vm, raw = newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC,
		Ports: pairs, AnyPortTypes: allTypes})
	t.Logf("%d two-port ranges and 256 types: %d instructions", maxPortRanges, len(raw))
	if !accepts(t, vm, good(2).bytes()) {
		t.Error("with every type, an unowned port was rejected")
	}

	// 5000 scattered ports are far past the cap: the program gives up on
	// ports and accepts them all, but still checks everything else.
	var scattered []uint16
	for i := range 5000 {
		scattered = append(scattered, uint16(i*13))
	}
	vm, raw = newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC, Ports: scattered})
	t.Logf("5000 scattered ports: %d instructions", len(raw))
	for _, p := range []uint16{0, 1, 13, 14, 40000, 65535} {
		if !accepts(t, vm, good(p).bytes()) {
			t.Errorf("past the cap, port %d rejected", p)
		}
	}
	f := good(13)
	f.dst = peerMAC
	if accepts(t, vm, f.bytes()) {
		t.Error("past the cap, foreign unicast accepted")
	}
	f = good(13)
	f.etherType = 0x0800
	if accepts(t, vm, f.bytes()) {
		t.Error("past the cap, other EtherType accepted")
	}
	f = good(13)
	f.size = 23
	if accepts(t, vm, f.bytes()) {
		t.Error("past the cap, truncated frame accepted")
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

func TestFilterFlaggedAnyPort(t *testing.T) {
	const syn = 0x0001
	vm, _ := newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC,
		Ports: []uint16{80}, AnyPortTypes: []uint8{typeDiscovery},
		AnyPortFlagged: []TypeFlags{{Type: typeStream, Flags: syn}}})
	withFlags := func(f testFrame, flags uint16) []byte {
		b := f.bytes()
		binary.BigEndian.PutUint16(b[16:], flags)
		return b
	}
	for _, tt := range []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"SYN to a foreign port", withFlags(good(81), syn), true},
		{"SYN with other flags too", withFlags(good(81), syn|0x8000), true},
		{"stream without SYN to a foreign port", withFlags(good(81), 0), false},
		{"other flag to a foreign port", withFlags(good(81), 0x0002), false},
		{"datagram with the SYN bit to a foreign port", withFlags(testFrame{dst: ourMAC, etherType: testEtherType, version: testVersion, typ: typeDatagram, dstPort: 81}, syn), false},
		{"stream without SYN to an owned port", withFlags(good(80), 0), true},
		{"discovery to a foreign port", withFlags(testFrame{dst: ourMAC, etherType: testEtherType, version: testVersion, typ: typeDiscovery, dstPort: 81}, 0), true},
		{"SYN to a foreign MAC", withFlags(testFrame{dst: peerMAC, etherType: testEtherType, version: testVersion, typ: typeStream, dstPort: 81}, syn), false},
		{"SYN truncated before the port", withFlags(good(81), syn)[:20], false},
	} {
		if got := accepts(t, vm, tt.frame); got != tt.want {
			t.Errorf("%s: accepted = %v, want %v", tt.name, got, tt.want)
		}
	}
	// No ports at all: flagged frames still pass.
	vm, _ = newVM(t, FilterConfig{EtherType: testEtherType, Version: testVersion, HardwareAddr: ourMAC,
		AnyPortFlagged: []TypeFlags{{Type: typeStream, Flags: syn}}})
	if !accepts(t, vm, withFlags(good(9), syn)) || accepts(t, vm, withFlags(good(9), 0)) {
		t.Errorf("flagged-only program: wrong verdicts")
	}
}
