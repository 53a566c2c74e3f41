package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"time"

	"github.com/myproto/myproto"
	"github.com/myproto/myproto/internal/sys"
)

// The demo's cable: the client's end, in the demo's own namespace, and the
// server's, in a second one.
const (
	clientLink = "mp0"
	serverLink = "mp1"
)

// serverStartTimeout bounds the wait for the server's address line.
const serverStartTimeout = 10 * time.Second

// demo runs the demo in a private network namespace, re-executing this
// program into one first, and returns the exit status.
func demo(stdout, stderr io.Writer) int {
	if !sys.InPrivateNetns() {
		code, err := sys.ReexecInPrivateNetns()
		switch {
		case code < 0:
			fmt.Fprintf(stderr, "myproto: cannot make a private network namespace for the demo: %v\n"+
				"Run it as root, or enable unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1 "+
				"user.max_user_namespaces=10000 (and kernel.apparmor_restrict_unprivileged_userns=0 where AppArmor has it).\n", err)
			return 1
		case err != nil:
			fmt.Fprintf(stderr, "myproto: %v\n", err)
		}
		return code
	}
	if err := runDemo(stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "myproto demo: %v\n", err)
		return 1
	}
	return 0
}

// runDemo builds the cable, starts the server at its far end and runs the
// client here.
func runDemo(stdout, stderr io.Writer) error {
	nsB, err := sys.NewNetns()
	if err != nil {
		return err
	}
	defer nsB.Close()
	if err := sys.CreateVeth(clientLink, serverLink, 0, nsB); err != nil {
		return err
	}
	// The pair goes away with the namespaces when the demo exits; deleting
	// it as well keeps a namespace that outlives the demo clean.
	defer sys.DeleteLink(nil, clientLink)

	// Both ends run on this host, so each gets its own node name.
	os.Setenv("MYPROTO_NAME", clientName)
	srv, err := startServer(nsB, stderr)
	if err != nil {
		return err
	}
	defer srv.stop()

	pc, err := myproto.ListenPacket("myproto", clientLink+":0")
	if err != nil {
		return err
	}
	defer pc.Close()
	to := &myproto.Addr{HardwareAddr: srv.echo.HardwareAddr, Port: srv.echo.Port, Zone: clientLink}

	fmt.Fprintf(stdout, "myproto demo: two hosts on one virtual cable (veth %s-%s), in private network namespaces\n\n", clientLink, serverLink)
	fmt.Fprintf(stdout, "  server      %v on %s, echoing datagrams; HTTPS on port %d (pid %d)\n", srv.echo, serverLink, httpsPort, srv.cmd.Process.Pid)
	fmt.Fprintf(stdout, "  client      %v on %s\n\n", pc.LocalAddr(), clientLink)
	if err := datagramDemo(stdout, pc, to); err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	if err := httpsDemo(stdout, srv.cert); err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	printLinkStats(stdout, clientLink)
	fmt.Fprintf(stdout, "\nDone: the namespaces and the veth pair go away with the demo.\n")
	return nil
}

// A server is the demo's server half: this program run as serverCmd in
// the second namespace.
type server struct {
	cmd   *exec.Cmd
	stdin io.Closer
	echo  *myproto.Addr // where it echoes datagrams
	cert  []byte        // its HTTPS certificate, PEM
}

// startServer starts the server in ns and reads the address it announces.
func startServer(ns *sys.Netns, stderr io.Writer) (*server, error) {
	cmd := &exec.Cmd{Path: "/proc/self/exe", Args: []string{os.Args[0], serverCmd}, Stderr: stderr,
		Env: append(os.Environ(), "MYPROTO_NAME="+serverName, envDemoServer+"=1")}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		stdin.Close()
		return nil, err
	}
	// os/exec forks from the calling thread, which Do has switched into
	// ns, so the server starts there.
	if err := ns.Do(cmd.Start); err != nil {
		stdin.Close()
		stdout.Close()
		return nil, fmt.Errorf("starting the server: %w", err)
	}
	s := &server{cmd: cmd, stdin: stdin}
	timer := time.AfterFunc(serverStartTimeout, func() { cmd.Process.Kill() })
	br := bufio.NewReader(stdout)
	line, err := br.ReadString('\n')
	if err == nil {
		s.echo, err = myproto.ResolveAddr("myproto", strings.TrimSpace(line))
	}
	for err == nil {
		line, err = br.ReadString('\n')
		s.cert = append(s.cert, line...)
		if strings.HasPrefix(line, "-----END") {
			break
		}
	}
	timer.Stop()
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("the server did not announce its address: %v", err)
	}
	return s, nil
}

// stop closes the server's standard input, which tells it to exit, and
// waits for it.
func (s *server) stop() {
	s.stdin.Close()
	timer := time.AfterFunc(5*time.Second, func() { s.cmd.Process.Kill() })
	defer timer.Stop()
	s.cmd.Wait()
}

// demoServer is the server half of the demo. It serves on serverLink until
// its standard input closes, which the demo does when it is done or dies,
// and first writes to standard output the address it echoes datagrams on.
// That address has no zone: the client reaches it through its own
// interface.
func demoServer(stdin io.Reader, stdout, stderr io.Writer) int {
	pc, err := listenEcho()
	if err != nil {
		fmt.Fprintf(stderr, "myproto %s: %v\n", serverCmd, err)
		return 1
	}
	defer pc.Close()
	ln, certPEM, err := serveHTTPS(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "myproto %s: %v\n", serverCmd, err)
		return 1
	}
	defer ln.Close()
	la := pc.LocalAddr().(*myproto.Addr)
	fmt.Fprintln(stdout, &myproto.Addr{HardwareAddr: la.HardwareAddr, Port: la.Port})
	// The certificate follows, so the client can verify the server.
	stdout.Write(certPEM)
	go echo(pc, stderr)
	io.Copy(io.Discard, stdin)
	return 0
}

// printLinkStats prints the stack's counters for the interface name.
func printLinkStats(w io.Writer, name string) {
	for _, st := range myproto.LinkStats(nil) {
		if st.Interface == name {
			fmt.Fprintf(w, "  %-11s %d frames out, %d in; dropped: %s\n", name, st.FramesOut, st.FramesIn, drops(st))
		}
	}
}

// drops lists st's nonzero drop counters, or says "none". It walks
// DropStats by reflection so that counters added later show up too.
func drops(st myproto.Stats) string {
	var parts []string
	if st.KernelDrops > 0 {
		parts = append(parts, fmt.Sprintf("%d by the kernel (socket buffer full)", st.KernelDrops))
	}
	v := reflect.ValueOf(st.Drops)
	for i := range v.NumField() {
		if n := v.Field(i).Uint(); n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, v.Type().Field(i).Name))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
