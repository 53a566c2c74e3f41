//go:build !linux

package testenv

import (
	"net"
	"os"
	"testing"

	"github.com/myproto/myproto/internal/sys"
)

const unsupported = "network namespaces and veth pairs need Linux"

// Main runs m in place: only Linux has network namespaces. Available then
// reports false.
func Main(m *testing.M) {
	env.mainCalled = true
	env.reason = unsupported
	os.Exit(m.Run())
}

// Available reports false: links can be created only on Linux.
func Available() (ok bool, reason string) { return false, unsupported }

// NewPair skips t: veth pairs need Linux.
func NewPair(t testing.TB, mtu int) *Pair {
	t.Helper()
	t.Skip("testenv: " + unsupported)
	return nil
}

// NewLocalPair skips t: veth pairs need Linux.
func NewLocalPair(t testing.TB, mtu int) (a, b *net.Interface) {
	t.Helper()
	t.Skip("testenv: " + unsupported)
	return nil, nil
}

// SetLinkUp skips t: it needs Linux.
func SetLinkUp(t testing.TB, ns *sys.Netns, name string, up bool) {
	t.Helper()
	t.Skip("testenv: " + unsupported)
}

// SetMTU skips t: it needs Linux.
func SetMTU(t testing.TB, ns *sys.Netns, name string, mtu int) {
	t.Helper()
	t.Skip("testenv: " + unsupported)
}

// DropShare skips t: nftables is Linux's.
func DropShare(t testing.TB, ns *sys.Netns, ifname string, etherType uint16, percent int) {
	t.Helper()
	t.Skip("testenv: " + unsupported)
}

// Nft skips t: nftables is Linux's.
func Nft(t testing.TB, ns *sys.Netns, args ...string) string {
	t.Helper()
	t.Skip("testenv: " + unsupported)
	return ""
}

// InUserNamespace reports false: user namespaces are Linux's.
func InUserNamespace() bool { return false }
