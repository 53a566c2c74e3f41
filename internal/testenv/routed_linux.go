package testenv

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/myproto/myproto/internal/sys"
)

// NewRouted returns a Routed topology whose links have the given MTU (0
// leaves the kernel's 1500), everything up and routed. It is removed in t's
// cleanup. NewRouted skips t when Available reports false.
func NewRouted(t testing.TB, mtu int) *Routed {
	t.Helper()
	skipUnavailable(t)
	r := &Routed{A: newNetns(t), R: newNetns(t), B: newNetns(t), RA: "ra", RB: "rb"}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	v6 := true
	for _, ns := range []*sys.Netns{r.A, r.R, r.B} {
		must(sys.SetLinkUp(ns, "lo", true))
		// No duplicate address detection: the addresses are usable at
		// once, and nobody else is on these links.
		for _, k := range []string{"net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"} {
			if sys.SetSysctl(ns, k, "0") != nil {
				v6 = false
			}
		}
	}
	must(r.R.Do(func() error { return sys.CreateVeth(r.RA, "eth0", mtu, r.A) }))
	must(r.R.Do(func() error { return sys.CreateVeth(r.RB, "eth0", mtu, r.B) }))
	must(sys.SetSysctl(r.R, "net.ipv4.ip_forward", "1"))
	if v6 && sys.SetSysctl(r.R, "net.ipv6.conf.all.forwarding", "1") != nil {
		v6 = false
	}
	type side struct {
		host       *sys.Netns
		rif        string
		net4, net6 string
		ip4, ip6   *netip.Addr
		hostIf     **net.Interface
	}
	for i, s := range []side{
		{r.A, r.RA, "10.1.1", "fd00:1:", &r.A4, &r.A6, &r.AIf},
		{r.B, r.RB, "10.1.2", "fd00:2:", &r.B4, &r.B6, &r.BIf},
	} {
		gw4 := netip.MustParseAddr(s.net4 + ".1")
		*s.ip4 = netip.MustParseAddr(s.net4 + ".2")
		must(sys.AddAddress(r.R, s.rif, netip.PrefixFrom(gw4, 24)))
		must(sys.AddAddress(s.host, "eth0", netip.PrefixFrom(*s.ip4, 24)))
		must(sys.AddRoute(s.host, "eth0", netip.MustParsePrefix("0.0.0.0/0"), gw4))
		if v6 {
			gw6 := netip.MustParseAddr(s.net6 + ":1")
			ip6 := netip.MustParseAddr(s.net6 + ":2")
			err := sys.AddAddress(r.R, s.rif, netip.PrefixFrom(gw6, 64))
			if err == nil {
				err = sys.AddAddress(s.host, "eth0", netip.PrefixFrom(ip6, 64))
			}
			if err == nil {
				err = sys.AddRoute(s.host, "eth0", netip.MustParsePrefix("::/0"), gw6)
			}
			if err != nil {
				t.Logf("testenv: no IPv6 on side %d: %v", i, err)
				v6 = false
			} else {
				*s.ip6 = ip6
			}
		}
		*s.hostIf = ready(t, s.host, "eth0")
	}
	if !v6 {
		r.A6, r.B6 = netip.Addr{}, netip.Addr{}
	}
	return r
}

// Loss makes the router drop percent % of the UDP datagrams it forwards,
// either way, at random: an nftables table whose forward chain holds
//
//	meta l4proto udp numgen random mod 100 < percent drop
//
// Calling it again replaces the share, 0 removing the rule; the table goes
// in t's cleanup. Loss skips t when the nft binary is missing.
func (r *Routed) Loss(t testing.TB, percent int) {
	t.Helper()
	if percent < 0 || percent > 100 {
		t.Fatalf("testenv: Loss percent %d not in [0, 100]", percent)
	}
	if _, err := sys.Tool("nft"); err != nil {
		t.Skip("testenv: Loss needs the nft binary: apt-get install nftables")
	}
	const table = "myproto_loss"
	script := fmt.Sprintf("table inet %s\ndelete table inet %s\n", table, table)
	if percent > 0 {
		rule := fmt.Sprintf("meta l4proto udp numgen random mod 100 < %d drop", percent)
		if percent == 100 {
			rule = "meta l4proto udp drop"
		}
		script += fmt.Sprintf("table inet %s {\n\tchain forward {\n"+
			"\t\ttype filter hook forward priority 0; policy accept;\n\t\t%s\n\t}\n}\n", table, rule)
	}
	if err := nft(r.R, script); err != nil {
		t.Fatalf("testenv: Loss %d%%: %v", percent, err)
	}
	t.Cleanup(func() {
		nft(r.R, fmt.Sprintf("table inet %s\ndelete table inet %s\n", table, table))
	})
}
