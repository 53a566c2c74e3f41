package myproto

import (
	"errors"
	"syscall"
	"testing"

	"github.com/myproto/myproto/internal/stream"
)

// TestStreamErr pins the mapping of the engine's failures to TCP's errnos,
// through the *net.OpError the conn layer wraps them in.
func TestStreamErr(t *testing.T) {
	for _, tc := range []struct {
		in, want error
	}{
		{stream.ErrRefused, syscall.ECONNREFUSED},
		{stream.ErrReset, syscall.ECONNRESET},
		{stream.ErrTimeout, syscall.ETIMEDOUT},
		{syscall.ENETDOWN, syscall.ENETDOWN}, // the stack's own pass unchanged
		{syscall.ECONNRESET, syscall.ECONNRESET},
		{nil, nil},
	} {
		got := streamErr(tc.in)
		if got != tc.want {
			t.Errorf("streamErr(%v) = %v, want %v", tc.in, got, tc.want)
		}
		if tc.want != nil && !errors.Is(opError("read", nil, nil, got), tc.want) {
			t.Errorf("errors.Is(opError(streamErr(%v)), %v) is false", tc.in, tc.want)
		}
	}
}
