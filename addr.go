package myproto

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Reasons carried in the Err field of the *net.AddrError values that address
// parsing and resolution return. They are short and lower-case, as package
// net's are.
const (
	errInvalidPort     = "invalid port"
	errInvalidMAC      = "invalid MAC address"
	errInvalidZone     = "invalid zone"
	errZoneWithoutMAC  = "zone requires a MAC address"
	errInvalidHost     = "invalid host name"
	errInvalidName     = "invalid node name (want a DNS label: letters, digits, hyphens)"
	errNoSuchInterface = "no such interface"
	errNotEthernet     = "not an Ethernet interface"
	errGroupAddr       = "broadcast or multicast hardware address: a connection needs one peer"
	errZeroMAC         = "all-zero hardware address: no station has it"
	errOwnMAC          = "the interface's own hardware address: frames sent to it do not come back to this host (for processes on one host, use the UDP bearer on a loopback address)"
	errInvalidIP       = "invalid IP address"
	errInvalidUDPPort  = "invalid UDP port"
)

// inAddress returns err, a *net.AddrError about part of address (an
// interface name), as one about the whole address, so that the same address
// gives the same error from ResolveAddr, Listen and Dial. Other errors pass
// unchanged.
func inAddress(err error, address string) error {
	if ae, ok := err.(*net.AddrError); ok {
		return &net.AddrError{Err: ae.Err, Addr: address}
	}
	return err
}

// hostInterface returns the interface of this host that host names, or
// nil if it names none (it is then a node name to look up); an interface
// that cannot carry myproto frames gives the *net.AddrError ResolveAddr
// gives for it.
func (s *stack) hostInterface(host, address string) (*net.Interface, error) {
	ifis, err := s.prov.interfaces()
	if err != nil {
		return nil, err
	}
	for i := range ifis {
		if ifis[i].Name != host {
			continue
		}
		if len(ifis[i].HardwareAddr) != 6 {
			return nil, &net.AddrError{Err: errNotEthernet, Addr: address}
		}
		return &ifis[i], nil
	}
	return nil, nil
}

// maxHostLen bounds a host name, as DNS bounds a full name; discovery names
// are meant to be host names.
const maxHostLen = 255

// maxZoneLen is the longest Linux interface name (IFNAMSIZ less the NUL).
const maxZoneLen = 15

// Addr is a myproto address: an interface's hardware address, a port and
// optionally a zone (interface name), as IPv6 link-local addresses carry one.
// On a UDP bearer (SPEC.md §18) a station is an IP address instead, and the
// zone names the bearer.
//
// On Listen the hardware address (or IP address) names the local side and
// may be empty for all interfaces; on Dial it names the remote side and the
// zone, if any, picks the outgoing interface or bearer.
type Addr struct {
	HardwareAddr net.HardwareAddr
	Port         uint16
	Zone         string // interface or bearer name, or empty

	// IP is a UDP bearer station's IP address. Addresses the stack makes
	// for such a station carry both it and the station's virtual MAC in
	// HardwareAddr; String shows the IP address.
	IP netip.Addr
	// UDPPort is the station's UDP port when it is not the bearer port all
	// hosts agree on (0).
	UDPPort uint16
}

var _ net.Addr = &Addr{}

// Network returns the address's network name, "myproto".
func (a *Addr) Network() string { return network }

// String returns the string form of the address: "[02:00:5e:10:00:01]:80",
// or "[02:00:5e:10:00:01%eth0]:80" with a zone. Without a hardware address it
// is "eth0:80" with a zone and ":80" without one. A UDP bearer station is
// "[192.0.2.7%udp]:80" or "[2001:db8::7%udp]:80", with "#PORT" after the IP
// address when its UDP port is not the bearer port ("[192.0.2.7#40000%udp]:80"),
// and without a zone "192.0.2.7:80" or "[2001:db8::7]:80". A nil *Addr is
// "<nil>". ResolveAddr gives back the same address for each form but
// "eth0:80", which it resolves to the interface's own hardware address, and
// "<nil>".
func (a *Addr) String() string {
	if a == nil {
		return "<nil>"
	}
	port := strconv.FormatUint(uint64(a.Port), 10)
	if a.IP.IsValid() {
		ip := a.IP.WithZone("").String()
		if a.Zone == "" && a.UDPPort == 0 && a.IP.Is4() {
			return ip + ":" + port
		}
		var b strings.Builder
		b.WriteByte('[')
		b.WriteString(ip)
		if a.UDPPort != 0 {
			b.WriteByte('#')
			b.WriteString(strconv.FormatUint(uint64(a.UDPPort), 10))
		}
		if a.Zone != "" {
			b.WriteByte('%')
			b.WriteString(a.Zone)
		}
		b.WriteString("]:")
		b.WriteString(port)
		return b.String()
	}
	if len(a.HardwareAddr) == 0 {
		// No brackets: a bare zone reads, and resolves, as an interface name.
		return a.Zone + ":" + port
	}
	var b strings.Builder
	b.Grow(len("[02:00:5e:10:00:01%]:65535") + len(a.Zone))
	b.WriteByte('[')
	b.WriteString(a.HardwareAddr.String())
	if a.Zone != "" {
		b.WriteByte('%')
		b.WriteString(a.Zone)
	}
	b.WriteString("]:")
	b.WriteString(port)
	return b.String()
}

// clone returns a copy of a that shares no memory with it, so that a caller
// may keep it while a is reused. clone of nil is nil.
func (a *Addr) clone() *Addr {
	if a == nil {
		return nil
	}
	c := *a
	c.HardwareAddr = slices.Clone(a.HardwareAddr)
	return &c
}

// isMulticast reports whether a's hardware address is a group address: the
// I/G bit, the least significant bit of the first byte, is set. The broadcast
// address is a multicast address too.
func (a *Addr) isMulticast() bool {
	return a != nil && len(a.HardwareAddr) > 0 && a.HardwareAddr[0]&1 == 1
}

// isBroadcast reports whether a's hardware address is the Ethernet broadcast
// address ff:ff:ff:ff:ff:ff.
func (a *Addr) isBroadcast() bool {
	if a == nil || len(a.HardwareAddr) != 6 {
		return false
	}
	for _, b := range a.HardwareAddr {
		if b != 0xff {
			return false
		}
	}
	return true
}

// ResolveAddr returns an address of a myproto end point.
//
// The network must be "myproto"; an empty network means "myproto", as it means
// "tcp" to net.ResolveTCPAddr. Any other network gives a
// net.UnknownNetworkError.
//
// The address has the form "host:port", following net.SplitHostPort. The port
// is a decimal number from 0 to 65535, where 0 asks for an ephemeral port;
// named services are not supported. The host is one of:
//
//   - empty, as in ":80", meaning any interface;
//   - a 6-byte Ethernet hardware address in any form net.ParseMAC accepts,
//     as in "[02:00:5e:10:00:01]:80" (the colon form needs the brackets),
//     optionally with a zone naming the interface it is reached through, as
//     in "[02:00:5e:10:00:01%eth0]:80";
//   - the name of an interface on this host, as in "eth0:80", which resolves to
//     that interface's hardware address with the name as the zone, or of a
//     UDP bearer of the default stack, as in "udp:80";
//   - an IP address, a station of a UDP bearer (SPEC.md §18), optionally
//     with "#PORT", its UDP port when it is not the bearer port, and a zone
//     naming the bearer: "192.0.2.7:80", "[2001:db8::7]:80",
//     "[192.0.2.7%udp]:80", "[192.0.2.7#40000%udp]:80". Its HardwareAddr is
//     left empty: the stack computes the station's virtual MAC.
//
// Zones name an interface of this host or a bearer of the default stack.
// Any other host is a node name, resolved by DefaultResolver (static
// entries, then neighbour discovery); an unknown one gives a *net.DNSError
// with IsNotFound set. Every malformed address gives a *net.AddrError whose
// Addr field is address.
func ResolveAddr(netw, address string) (*Addr, error) {
	switch netw {
	case "", network:
	default:
		return nil, net.UnknownNetworkError(netw)
	}
	pa, err := parseAddress(address)
	if err != nil {
		return nil, err
	}
	mac, zone, host, port := pa.mac, pa.zone, pa.host, pa.port
	if zone != "" {
		if why := zoneProblem(zone); why != "" {
			return nil, &net.AddrError{Err: why, Addr: address}
		}
	}
	if pa.ip.IsValid() {
		return &Addr{IP: pa.ip, UDPPort: pa.udpPort, Port: port, Zone: zone}, nil
	}
	if host == "" {
		return &Addr{HardwareAddr: mac, Port: port, Zone: zone}, nil
	}
	ifi, why := ethernetInterface(host)
	if why == errNoSuchInterface {
		if a := defaultBearerAddr(host); a != nil {
			a.Port = port
			return a, nil
		}
	}
	switch why {
	case "":
		return &Addr{HardwareAddr: ifi.HardwareAddr, Port: port, Zone: ifi.Name}, nil
	case errNoSuchInterface:
		// Not ours: the name belongs to a neighbour.
	default:
		return nil, &net.AddrError{Err: why, Addr: address}
	}
	a, err := DefaultResolver.LookupName(context.Background(), host)
	if err != nil {
		// Report the whole address, as for every other bad input.
		if ae, ok := errors.AsType[*net.AddrError](err); ok {
			return nil, &net.AddrError{Err: ae.Err, Addr: address}
		}
		return nil, err
	}
	a = a.clone()
	a.Port = port
	return a, nil
}

// zoneProblem says why zone names no interface of this host that can carry
// myproto, nor a bearer of the default stack, or returns "".
func zoneProblem(zone string) string {
	_, why := ethernetInterface(zone)
	if why == errNoSuchInterface && defaultBearerAddr(zone) != nil {
		return ""
	}
	return why
}

// ethernetInterface returns the interface on this host named name, or why it
// cannot carry myproto frames: it must have a 6-byte hardware address, which
// also rules out loopback (package net reports its all-zero address as none)
// as the stack does.
func ethernetInterface(name string) (*net.Interface, string) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, errNoSuchInterface
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, errNotEthernet
	}
	return ifi, ""
}

// addrParts are the parts of an address string.
type addrParts struct {
	mac     net.HardwareAddr
	ip      netip.Addr // a UDP bearer station
	udpPort uint16     // its UDP port, if given ("#PORT")
	zone    string
	host    string
	port    uint16
}

// parseAddress splits address into its parts without consulting the system:
// the IP forms of UDP bearer stations ("192.0.2.7:80", "[2001:db8::7]:80",
// "[192.0.2.7#40000%udp]:80"), then those of parseAddr. At most one of mac,
// ip and host is set; udpPort only with ip, zone only with mac or ip.
func parseAddress(address string) (addrParts, error) {
	fail := func(why string) (addrParts, error) {
		return addrParts{}, &net.AddrError{Err: why, Addr: address}
	}
	if h, p, err := net.SplitHostPort(address); err == nil {
		m, z, hasZone := strings.Cut(h, "%")
		ipStr, udpStr, hasUDP := strings.Cut(m, "#")
		ip, ipErr := netip.ParseAddr(ipStr)
		// "02:00:5e:10:00:01:02:03" is an EUI-64 as much as an IPv6
		// address: what net.ParseMAC takes is a MAC, as it always was here.
		_, macErr := net.ParseMAC(ipStr)
		switch {
		case ipErr == nil && macErr != nil:
			pa := addrParts{ip: ip.Unmap(), zone: z}
			var ok bool
			if pa.port, ok = parsePort(p); !ok {
				return fail(errInvalidPort)
			}
			if hasUDP {
				if pa.udpPort, ok = parsePort(udpStr); !ok || pa.udpPort == 0 {
					return fail(errInvalidUDPPort)
				}
			}
			if hasZone && !validZone(z) {
				return fail(errInvalidZone)
			}
			return pa, nil
		case hasUDP:
			return fail(errInvalidIP)
		}
	}
	mac, zone, host, port, err := parseAddr(address)
	if err != nil {
		return addrParts{}, err
	}
	return addrParts{mac: mac, zone: zone, host: host, port: port}, nil
}

// parseAddr splits address into its parts without consulting the system, so
// that the syntax can be tested and fuzzed on its own. At most one of mac and
// host is set; zone is set only with mac. A host is a name left for
// ResolveAddr to resolve. Errors are *net.AddrError with address as Addr.
func parseAddr(address string) (mac net.HardwareAddr, zone, host string, port uint16, err error) {
	fail := func(why string) (net.HardwareAddr, string, string, uint16, error) {
		return nil, "", "", 0, &net.AddrError{Err: why, Addr: address}
	}
	h, p, err := net.SplitHostPort(address)
	if err != nil {
		// Already a *net.AddrError naming address.
		return nil, "", "", 0, err
	}
	port, ok := parsePort(p)
	if !ok {
		return fail(errInvalidPort)
	}
	if h == "" {
		return nil, "", "", port, nil
	}
	// A '%' or a ':' (possible only in brackets) cannot be in a name, so the
	// host must be a hardware address; so must anything net.ParseMAC takes,
	// as a literal IP address wins over a host name of the same spelling.
	m, z, hasZone := strings.Cut(h, "%")
	mac, macErr := net.ParseMAC(m)
	if !hasZone && macErr != nil && !strings.Contains(h, ":") {
		if !validHost(h) {
			return fail(errInvalidHost)
		}
		return nil, "", h, port, nil
	}
	if hasZone && m == "" {
		return fail(errZoneWithoutMAC)
	}
	if macErr != nil || len(mac) != 6 {
		// net.ParseMAC also takes 8-byte EUI-64 and 20-byte InfiniBand
		// addresses, which no Ethernet frame carries.
		return fail(errInvalidMAC)
	}
	if hasZone && !validZone(z) {
		return fail(errInvalidZone)
	}
	return mac, z, "", port, nil
}

// parsePort parses a decimal port number. Unlike package net it takes no
// service names and no empty string, so every accepted port is spelled out.
func parsePort(s string) (uint16, bool) {
	if s == "" || len(s) > 16 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false // no signs, which strconv.ParseUint would reject anyway
		}
	}
	n, err := strconv.ParseUint(s, 10, 16)
	return uint16(n), err == nil
}

// validHost reports whether s can be a host or interface name: printable
// ASCII without the characters that delimit the parts of an address or a path.
func validHost(s string) bool {
	if len(s) == 0 || len(s) > maxHostLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c <= ' ' || c >= 0x7f:
			return false
		case c == '%' || c == ':' || c == '/' || c == '[' || c == ']':
			return false
		}
	}
	return true
}

// validZone reports whether s can name a Linux interface: 1 to 15 bytes, not
// "." or "..", and none of '/', ':' or white space, as the kernel's
// dev_valid_name requires, and, like a host name, printable ASCII without '%'
// so that it parses back unchanged.
func validZone(s string) bool {
	if len(s) > maxZoneLen || s == "." || s == ".." {
		return false
	}
	return validHost(s)
}
