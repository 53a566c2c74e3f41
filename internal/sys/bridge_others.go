//go:build !linux

package sys

// CreateBridge returns an error wrapping errors.ErrUnsupported: bridges are
// Linux's.
func CreateBridge(name string, ns *Netns) error { return errLinksUnsupported }

// SetLinkMaster returns an error wrapping errors.ErrUnsupported.
func SetLinkMaster(ns *Netns, link, master string) error { return errLinksUnsupported }

// SetBridgeLearning returns an error wrapping errors.ErrUnsupported.
func SetBridgeLearning(ns *Netns, name string, on bool) error { return errLinksUnsupported }

// SetBridgePortLearning returns an error wrapping errors.ErrUnsupported.
func SetBridgePortLearning(ns *Netns, port string, on bool) error { return errLinksUnsupported }
