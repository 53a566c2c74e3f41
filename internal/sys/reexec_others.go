//go:build !linux

package sys

import (
	"errors"
	"fmt"
)

// InPrivateNetns reports false: only Linux has network namespaces.
func InPrivateNetns() bool { return false }

// ReexecInPrivateNetns returns -1 and an error wrapping
// errors.ErrUnsupported: only Linux has network namespaces.
func ReexecInPrivateNetns(env ...string) (exitCode int, err error) {
	return -1, fmt.Errorf("sys: re-execute in a private network namespace: %w", errors.ErrUnsupported)
}
