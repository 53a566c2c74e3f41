// Command myproto shows myproto at work.
//
// Usage:
//
//	myproto [demo]
//	myproto perf -s [ADDR] | -c ADDR [options]
//	myproto help
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

const usage = `usage: myproto [command]

Commands:
  demo   build two private hosts joined by a virtual cable (veth mp0/mp1,
         in network namespaces of their own) and talk myproto across it
         (the default)
  perf   measure myproto between two hosts, as iperf3 does (myproto perf -h)
  help   print this help

Nothing on this machine changes: the demo needs no root, and what it
builds goes away with it.
`

// serverCmd is the hidden command the demo runs its server half with,
// inside the second namespace.
const serverCmd = "demo-server"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the command line args and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := "demo"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	if cmd == "perf" {
		return perf(args, stdout, stderr)
	}
	if len(args) > 0 {
		return badUsage(stderr, "myproto %s takes no arguments", cmd)
	}
	switch cmd {
	case "demo":
		return demo(stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case serverCmd:
		// Only the demo starts it, in a namespace of its own; elsewhere
		// it is no command.
		if sys.InPrivateNetns() {
			return demoServer(os.Stdin, stdout, stderr)
		}
	}
	return badUsage(stderr, "unknown command %q", cmd)
}

// badUsage reports a command-line mistake and returns the exit status for
// one.
func badUsage(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "myproto: "+format+"\n\n%s", append(args, usage)...)
	return 2
}
