package sys

import (
	"fmt"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// CreateBridge creates a bridge (an Ethernet switch in the kernel, as ip
// link add NAME type bridge makes) named name in ns (nil: the calling
// thread's namespace) and brings it up. Its ports are the links SetLinkMaster
// enslaves to it. The kernel's defaults apply: no spanning tree, so a port
// forwards as soon as it is up; source MACs are learnt (and aged out after
// 300 s); frames for unknown unicast MACs, broadcast and multicast are
// flooded to every other port. A taken name gives an error wrapping
// syscall.EEXIST; on failure nothing is left behind.
//
// Like CreateVeth, it needs CAP_NET_ADMIN in the user namespace that owns
// ns.
func CreateBridge(name string, ns *Netns) error {
	if err := createBridge(name, ns); err != nil {
		return fmt.Errorf("sys: create bridge %s: %w", name, err)
	}
	return nil
}

func createBridge(name string, ns *Netns) error {
	err := withConn(ns, func(c *rtnetlink.Conn) error {
		return c.Link.New(&rtnetlink.LinkMessage{
			Family: unix.AF_UNSPEC,
			Attributes: &rtnetlink.LinkAttributes{
				Name: name,
				Info: &rtnetlink.LinkInfo{Kind: "bridge"},
			},
		})
	})
	if err != nil {
		return err
	}
	// A port enslaved to a bridge that is down stays disabled, so the
	// bridge comes up first.
	if err := setLinkUp(ns, name, true); err != nil {
		deleteLink(ns, name)
		return err
	}
	return nil
}

// SetLinkMaster makes the interface link in ns (nil: the calling thread's
// namespace) a port of the bridge master there, as ip link set dev LINK
// master MASTER does; an empty master frees it (nomaster). An unknown name
// gives an error wrapping syscall.ENODEV.
func SetLinkMaster(ns *Netns, link, master string) error {
	if err := setLinkMaster(ns, link, master); err != nil {
		if master == "" {
			return fmt.Errorf("sys: set %s nomaster: %w", link, err)
		}
		return fmt.Errorf("sys: set %s master %s: %w", link, master, err)
	}
	return nil
}

func setLinkMaster(ns *Netns, link, master string) error {
	return withConn(ns, func(c *rtnetlink.Conn) error {
		lm, err := linkByName(c, link)
		if err != nil {
			return err
		}
		var index uint32 // 0 frees the link
		if master != "" {
			mm, err := linkByName(c, master)
			if err != nil {
				return err
			}
			index = mm.Index
		}
		return c.Link.Set(&rtnetlink.LinkMessage{
			Family:     unix.AF_UNSPEC,
			Type:       lm.Type,
			Index:      lm.Index,
			Attributes: &rtnetlink.LinkAttributes{Master: &index},
		})
	})
}

// SetBridgeLearning turns MAC learning of the bridge name in ns on or off,
// as ip link set NAME type bridge ageing_time does (0 when off). A bridge
// that learns nothing floods every frame to every port, as a hub: a frame
// with a forged source MAC then takes no traffic away from the station
// that owns the address.
func SetBridgeLearning(ns *Netns, name string, on bool) error {
	ageing := uint32(0)
	if on {
		ageing = 300 * 100 // the kernel's default, in centiseconds
	}
	err := withLink(ns, name, func(c *rtnetlink.Conn, lm rtnetlink.LinkMessage) error {
		return c.Link.Set(&rtnetlink.LinkMessage{
			Family: unix.AF_UNSPEC,
			Type:   lm.Type,
			Index:  lm.Index,
			Attributes: &rtnetlink.LinkAttributes{
				Info: &rtnetlink.LinkInfo{Kind: "bridge", Data: &bridgeData{ageing: ageing}},
			},
		})
	})
	if err != nil {
		return fmt.Errorf("sys: set bridge %s learning %v: %w", name, on, err)
	}
	return nil
}

// bridgeData is the bridge attribute SetBridgeLearning sets
// (IFLA_BR_AGEING_TIME), as an rtnetlink.LinkDriver.
type bridgeData struct{ ageing uint32 }

func (b *bridgeData) New() rtnetlink.LinkDriver { return &bridgeData{} }
func (b *bridgeData) Kind() string              { return "bridge" }
func (b *bridgeData) Encode(ae *netlink.AttributeEncoder) error {
	ae.Uint32(unix.IFLA_BR_AGEING_TIME, b.ageing)
	return nil
}
func (b *bridgeData) Decode(*netlink.AttributeDecoder) error { return nil }

// SetBridgePortLearning turns source-MAC learning on the bridge port port
// in ns on or off, as bridge link set dev PORT learning off does
// (IFLA_BRPORT_LEARNING). Frames arriving on a port that does not learn are
// still forwarded as usual, but their source MACs are never entered in the
// bridge's table, as on a switch port with port security: a station there
// that forges source MACs by the million neither fills the table nor draws
// other stations' traffic.
func SetBridgePortLearning(ns *Netns, port string, on bool) error {
	err := withLink(ns, port, func(c *rtnetlink.Conn, lm rtnetlink.LinkMessage) error {
		kind := ""
		if lm.Attributes != nil && lm.Attributes.Info != nil {
			kind = lm.Attributes.Info.Kind // the port's own kind: veth
		}
		return c.Link.Set(&rtnetlink.LinkMessage{
			Family: unix.AF_UNSPEC,
			Type:   lm.Type,
			Index:  lm.Index,
			Attributes: &rtnetlink.LinkAttributes{
				Info: &rtnetlink.LinkInfo{Kind: kind, SlaveKind: "bridge", SlaveData: &bridgePortData{learning: on}},
			},
		})
	})
	if err != nil {
		return fmt.Errorf("sys: set bridge port %s learning %v: %w", port, on, err)
	}
	return nil
}

// bridgePortData is the bridge port attribute SetBridgePortLearning sets,
// as an rtnetlink slave LinkDriver.
type bridgePortData struct{ learning bool }

func (b *bridgePortData) New() rtnetlink.LinkDriver { return &bridgePortData{} }
func (b *bridgePortData) Kind() string              { return "bridge" }
func (b *bridgePortData) Slave()                    {}
func (b *bridgePortData) Encode(ae *netlink.AttributeEncoder) error {
	v := uint8(0)
	if b.learning {
		v = 1
	}
	ae.Uint8(unix.IFLA_BRPORT_LEARNING, v)
	return nil
}
func (b *bridgePortData) Decode(*netlink.AttributeDecoder) error { return nil }
