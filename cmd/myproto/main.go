// Command myproto is the protocol's toolbox: nc, ping and ip neigh for
// myproto, and a demo.
//
// Usage:
//
//	myproto connect [-u] [-v] [-q] [-w secs] ADDR
//	myproto listen [-k] [-u] [-v] [-q] [-w secs] ADDR
//	myproto ping [-c count] [-i interval] [-W timeout] [-w deadline] [-s size] [-q] [-J] NAME|MAC
//	myproto neigh [show [dev IFACE] | lookup NAME|MAC | flush] [-w secs] [-J]
//	myproto ss [-l | -a] [-t | -u] [-i] [-p] [-J]
//	myproto stat [IFACE] [-J]
//	myproto monitor [-t] [-J]
//	myproto [demo]
//	myproto perf -s [ADDR] | -c ADDR [options]
//	myproto help | --version
//
// connect and listen are nc: standard input to the peer, the peer to
// standard output, a half-close at the end of input. ping sends discovery
// echo requests and prints round-trip times. neigh shows the neighbours
// that answer on the link and looks names up. ss, stat and monitor ask
// every process's stack on the host through its diagnostic socket, as ss,
// ip -s link and ip monitor ask the kernel. Each subcommand prints its
// flags with --help.
//
// demo, the default, builds two private "hosts" joined by a virtual cable
// (network namespaces and a veth pair, mp0 and mp1), runs an echo server on
// one and a client on the other, and reports what it measures: round-trip
// latency, throughput and the link's counters. Everything it creates lives
// in namespaces of its own and goes away when it exits; nothing on the host
// changes.
//
// # Privileges
//
// connect, listen, ping, neigh and monitor open packet sockets: they need
// CAP_NET_RAW (root, or setcap cap_net_raw+ep on the binary), and say so
// when they do not have it. ss and stat need no privilege, but show other
// users' processes only to root.
//
// As root demo needs CAP_SYS_ADMIN; as any other user, unprivileged user
// namespaces (kernel.unprivileged_userns_clone=1 where that sysctl exists,
// user.max_user_namespaces > 0, and kernel.apparmor_restrict_unprivileged_userns=0
// where AppArmor has it). Without them it says so and exits with status 1.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/myproto/myproto/internal/sys"
)

const usage = `usage: myproto <command> [flags] [arguments]

Commands:
  connect  connect to ADDR and copy standard input to it and it to standard
           output, like nc (-u for datagrams)
  listen   accept a connection on ADDR and do the same, like nc -l
  ping     send echo requests to a neighbour and print round-trip times,
           like ping
  neigh    show the neighbours on the link, or look a name up, like ip neigh
  ss       list every process's myproto sockets, like ss
  stat     print every process's interface counters, like ip -s link
  monitor  print names, neighbours, links, sockets and connections as they
           change, like ip monitor
  perf     measure myproto between two hosts, as iperf3 does
           (myproto perf -h)
  demo     build two private hosts joined by a virtual cable (veth mp0/mp1,
           in network namespaces of their own) and talk myproto across it
           (the default)
  help     print this help

Run "myproto <command> --help" for a command's flags; --version prints the
version.

Addresses: [MAC%IFACE]:PORT, NAME:PORT (a neighbour found by name), and to
listen IFACE:PORT or :PORT. Nothing on this machine changes: the demo needs
no root, and what it builds goes away with it.
`

// serverCmd is the hidden command the demo runs its server half with,
// inside the second namespace.
const serverCmd = "demo-server"

// envDemoServer marks the process the demo starts as serverCmd: a private
// namespace alone is not enough, since tests run every command in one.
const envDemoServer = "MYPROTO_DEMO_SERVER"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the command line args and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := "demo"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "perf":
		return perf(args, stdout, stderr)
	case "connect", "listen":
		return ncCmd(cmd, args, stdout, stderr)
	case "ping":
		return pingCmd(args, stdout, stderr)
	case "neigh", "neighbor", "neighbour":
		return neighCmd(args, stdout, stderr)
	case "ss":
		return ssCmd(args, stdout, stderr)
	case "stat", "stats":
		return statCmd(args, stdout, stderr)
	case "monitor":
		return monitorCmd(args, stdout, stderr)
	case "demo":
		switch {
		case len(args) == 1 && isHelp(args[0]):
			fmt.Fprint(stdout, usage)
			return 0
		case len(args) > 0:
			return badUsage(stderr, "myproto demo takes no arguments")
		}
		return demo(stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, version())
		return 0
	case serverCmd:
		// Only the demo starts it, in a namespace of its own; elsewhere
		// it is no command.
		if sys.InPrivateNetns() && os.Getenv(envDemoServer) == "1" {
			return demoServer(os.Stdin, stdout, stderr)
		}
	}
	return badUsage(stderr, "unknown command %q", cmd)
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

// badUsage reports a command-line mistake and returns the exit status for
// one.
func badUsage(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "myproto: "+format+"\n\n%s", append(args, usage)...)
	return 2
}
