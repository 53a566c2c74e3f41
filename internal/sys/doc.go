// Package sys holds the operating-system side of myproto: the packet-socket
// link (an AF_PACKET socket per interface, packet(7)), the classic BPF
// programs that decide which frames reach it, and host-wide port reservation.
//
// *PacketLink implements link.Link. It opens, binds and filters its socket
// with github.com/mdlayher/packet and moves frames with recvmmsg(2) and
// sendmmsg(2) called directly on the socket, batching every system call,
// because on a custom EtherType the kernel offers no segmentation offload and
// the per-frame cost dominates. *QuietLink is the stack's own link (its data
// and control sockets), on a socket kept out of Go's poller: it wakes the
// poller only while a read waits, through an epoll instance of its own,
// sends on a second socket outside the poller, and can receive through a
// TPACKET_V2 ring mapped into the process.
//
// Filter builds the BPF program a PacketLink attaches before bind(2);
// ReservePort and PortOwned share port ownership among the processes of one
// network namespace.
//
// Everything but Filter is Linux-only, and PacketLink needs Linux 4.20 or
// later (PACKET_IGNORE_OUTGOING); on other systems the constructors
// return an error wrapping errors.ErrUnsupported.
//
// # Privileges
//
// OpenPacket and OpenQuiet need CAP_NET_RAW in the user
// namespace that owns the network namespace: run as root, grant the binary
// the capability (setcap cap_net_raw+ep), or run in a user namespace of your
// own. Without it they fail with an error wrapping syscall.EPERM. Raising the socket
// buffers past net.core.rmem_max and wmem_max also needs CAP_NET_ADMIN;
// without it the buffers are quietly capped by those sysctls.
//
// ReservePort and PortOwned need no privilege.
package sys
