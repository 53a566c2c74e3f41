package stream

import "errors"

// Errors a connection fails with, as Err reports them. They stand for the
// errnos TCP reports in their place; the conn layer maps them to those, so
// this package needs no syscall.
var (
	// ErrRefused: a refusal (RST) answered our SYN: nobody listens on the
	// port (ECONNREFUSED).
	ErrRefused = errors.New("stream: connection refused")
	// ErrReset: the peer reset the connection (ECONNRESET).
	ErrReset = errors.New("stream: connection reset by peer")
	// ErrTimeout: the handshake timeout, the user timeout or keepalive ran
	// out (ETIMEDOUT).
	ErrTimeout = errors.New("stream: connection timed out")
)
