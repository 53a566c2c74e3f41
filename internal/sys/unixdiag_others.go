//go:build !linux

package sys

import (
	"errors"
	"fmt"
	"net"
)

// AbstractListeners lists listening abstract Unix sockets. Abstract sockets
// exist only on Linux; here it returns an error wrapping
// errors.ErrUnsupported.
func AbstractListeners(prefix string) ([]string, error) {
	return nil, fmt.Errorf("sys: abstract Unix sockets: %w", errors.ErrUnsupported)
}

// PeerCred returns the peer's credentials of a Unix socket connection. Here
// it returns an error wrapping errors.ErrUnsupported.
func PeerCred(c net.Conn) (pid, uid int, err error) {
	return 0, 0, fmt.Errorf("sys: peer credentials: %w", errors.ErrUnsupported)
}
