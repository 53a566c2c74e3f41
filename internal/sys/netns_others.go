//go:build !linux

package sys

import (
	"errors"
	"fmt"
	"os"
)

// A Netns is a handle to a network namespace, which only Linux has.
type Netns struct{}

var errNetnsUnsupported = fmt.Errorf("sys: network namespaces need Linux: %w", errors.ErrUnsupported)

// NewNetns returns an error wrapping errors.ErrUnsupported.
func NewNetns() (*Netns, error) { return nil, errNetnsUnsupported }

// CurrentNetns returns an error wrapping errors.ErrUnsupported.
func CurrentNetns() (*Netns, error) { return nil, errNetnsUnsupported }

// Do returns an error wrapping errors.ErrUnsupported without calling fn.
func (n *Netns) Do(fn func() error) error { return errNetnsUnsupported }

// Fd returns -1.
func (n *Netns) Fd() int { return -1 }

// Equal reports whether n and m are the same handle.
func (n *Netns) Equal(m *Netns) bool { return n == m }

// String returns "net:[?]".
func (n *Netns) String() string { return "net:[?]" }

// Close returns an error wrapping errors.ErrUnsupported.
func (n *Netns) Close() error { return errNetnsUnsupported }

// NetnsFromFile returns an error wrapping errors.ErrUnsupported.
func NetnsFromFile(f *os.File) (*Netns, error) { return nil, errNetnsUnsupported }
