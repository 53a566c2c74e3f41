//go:build !linux

package sys

import (
	"errors"
	"fmt"
	"time"
)

// errLinkWatchUnsupported is what WatchLinks returns here: link
// notifications come from rtnetlink (rtnetlink(7)), which only Linux has.
var errLinkWatchUnsupported = fmt.Errorf("sys: watching links needs Linux: %w", errors.ErrUnsupported)

// A LinkWatcher receives link notifications. On this system it cannot be
// created.
type LinkWatcher struct{}

// WatchLinks returns an error wrapping errors.ErrUnsupported.
func WatchLinks(ns *Netns) (*LinkWatcher, error) { return nil, errLinkWatchUnsupported }

// Next returns an error wrapping errors.ErrUnsupported.
func (w *LinkWatcher) Next() (LinkEvent, error) { return LinkEvent{}, errLinkWatchUnsupported }

// SetReadDeadline returns an error wrapping errors.ErrUnsupported.
func (w *LinkWatcher) SetReadDeadline(t time.Time) error { return errLinkWatchUnsupported }

// Close returns an error wrapping errors.ErrUnsupported.
func (w *LinkWatcher) Close() error { return errLinkWatchUnsupported }
