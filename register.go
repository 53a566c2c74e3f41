package myproto

import (
	"context"
	"net"

	"github.com/myproto/myproto/family"
)

// init registers myproto in the family registry, as a kernel protocol module
// calls sock_register, so family.Dial("myproto", ...) reaches this package.
func init() { family.Register(registered{}) }

// registered is myproto's family.Family.
type registered struct{}

func (registered) Name() string { return network }

func (registered) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	var d Dialer
	return d.DialContext(ctx, network, address)
}

func (registered) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	var lc ListenConfig
	return lc.Listen(ctx, network, address)
}

func (registered) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	var lc ListenConfig
	return lc.ListenPacket(ctx, network, address)
}
