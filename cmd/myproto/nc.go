package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/myproto/myproto"
)

// The nc of myproto: connect and listen carry standard input to a peer and
// what the peer sends to standard output, over a stream, or over datagrams
// with -u.

const ncUsage = `usage: myproto connect [-u] [-v] [-q] [-w secs] ADDR
       myproto listen [-k] [-u] [-v] [-q] [-w secs] ADDR

Copy standard input to a myproto peer and what it sends to standard output,
as nc does. connect dials ADDR; listen waits for one connection on ADDR
(with -k, for one after another).

A stream ends when both halves are done: at the end of standard input the
sending half is closed (the peer reads EOF) and the command goes on
reading until the peer closes its half, then makes sure the peer has
everything and exits 0. On a terminal that means ^D ends your half. Errors
exit 1 with a message ("myproto: connect nodeb:7: connection refused").

ADDR
  connect: [MAC%IFACE]:PORT, [MAC]:PORT (with one interface), or NAME:PORT,
           a neighbour found by name
  listen:  IFACE:PORT (one interface), :PORT or PORT (every interface),
           [MAC]:PORT

Flags:
  -k       listen: serve connections one after another; each ends at the
           peer's EOF, and once standard input is done later connections
           are half-closed at once
  -u       datagrams instead of a stream: each read from standard input
           (a line, from a terminal) is one datagram of at most the MTU
           less 24 bytes, and the datagrams that come go to standard output.
           listen answers the first sender (with -k, the latest)
  -w secs  connect: give up connecting after secs (default 20). With -u:
           once standard input is done, exit when nothing has come for
           secs (default: go on until interrupted)
  -l       listen, as nc -l: "myproto connect -l ADDR" is "myproto listen ADDR"
  -v       say what happens (listening, connected, from whom) on standard error
  -q       no progress meter. The meter (bytes, rate, time left) shows on
           standard error when it is a terminal and standard output is not
`

// ncOptions are the parsed command line of connect and listen.
type ncOptions struct {
	listen, keep, udp, verbose, quiet bool
	wait                              time.Duration
	addr                              string
}

// nc runs one connect or listen command.
type nc struct {
	ncOptions
	stdin          *os.File
	stdout, stderr io.Writer
	in             *stdinPump
	progress       bool
}

// ncCmd is the connect and listen commands; name says which.
func ncCmd(name string, args []string, stdout, stderr io.Writer) int {
	var o ncOptions
	fs := newFlags(name)
	fs.BoolVar(&o.listen, "l", name == "listen", "")
	fs.BoolVar(&o.keep, "k", false, "")
	fs.BoolVar(&o.udp, "u", false, "")
	fs.BoolVar(&o.verbose, "v", false, "")
	fs.BoolVar(&o.quiet, "q", false, "")
	wait := secondsFlag(fs, "w", 0, "")
	ops, code, ok := parseFlags(fs, ncUsage, args, stdout, stderr)
	if !ok {
		return code
	}
	o.wait = *wait
	if len(ops) != 1 {
		return usageError(stderr, ncUsage, "myproto %s: want one address, got %d arguments", name, len(ops))
	}
	if o.keep && !o.listen {
		return usageError(stderr, ncUsage, "myproto %s: -k is for listen", name)
	}
	o.addr = ops[0]
	if o.listen && isDigits(o.addr) {
		o.addr = ":" + o.addr // nc -l 7
	}
	n := &nc{ncOptions: o, stdin: os.Stdin, stdout: stdout, stderr: stderr}
	n.progress = !o.quiet && !o.udp && showProgress(stdout, stderr)
	what := "connect " + o.addr
	if o.listen {
		what = "listen " + o.addr
	}
	var err error
	switch {
	case o.udp && o.listen:
		err = n.listenDatagrams()
	case o.udp:
		err = n.connectDatagrams()
	case o.listen:
		err = n.listenStream()
	default:
		err = n.connectStream()
	}
	if err != nil {
		return fail(stderr, what, err)
	}
	return 0
}

func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

func (n *nc) verbosef(format string, args ...any) {
	if n.verbose {
		fmt.Fprintf(n.stderr, "myproto: "+format+"\n", args...)
	}
}

// streamChunk is how much standard input one read takes for a stream.
const streamChunk = 64 << 10

func (n *nc) connectStream() error {
	d := &myproto.Dialer{Timeout: n.wait}
	c, err := d.Dial("myproto", n.addr)
	if err != nil {
		return err
	}
	conn := c.(*myproto.Conn)
	n.verbosef("connected to %v from %v", conn.RemoteAddr(), conn.LocalAddr())
	n.in = pumpStdin(n.stdin, streamChunk)
	return n.session(conn, false)
}

func (n *nc) listenStream() error {
	ln, err := myproto.Listen("myproto", n.addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	n.verbosef("listening on %v", ln.Addr())
	n.in = pumpStdin(n.stdin, streamChunk)
	for {
		c, err := ln.AcceptMyproto()
		if err != nil {
			return err
		}
		n.verbosef("connection from %v", c.RemoteAddr())
		if !n.keep {
			// One connection, as nc: later ones are refused.
			ln.Close()
			return n.session(c, false)
		}
		if err := n.session(c, true); err != nil {
			fmt.Fprintf(n.stderr, "myproto: listen %s: %v: %s\n", n.addr, c.RemoteAddr(), errText(err))
		}
	}
}

// session copies standard input to c and c to standard output until both
// are done, or with untilPeerEOF until the peer's EOF, and then closes c
// and waits until the peer has acknowledged everything.
func (n *nc) session(c *myproto.Conn, untilPeerEOF bool) error {
	total := int64(-1)
	if !n.keep {
		total = inputSize(n.stdin)
	}
	prog := startProgress(n.progress, n.stderr, total)
	recv := make(chan error, 1)
	go func() { recv <- n.receive(c, prog) }()
	stop := make(chan struct{})
	send := make(chan error, 1)
	go func() { send <- n.send(c, stop, prog) }()

	var rerr, serr error
	select {
	case rerr = <-recv:
		if rerr != nil || untilPeerEOF {
			close(stop)
		}
		serr = <-send
	case serr = <-send:
		if serr != nil {
			c.Close() // unblocks the reader
		}
		rerr = <-recv
	}
	prog.finish()
	switch {
	case serr != nil:
		c.Close()
		return serr
	case rerr != nil:
		c.Close()
		return rerr
	}
	return closeAndWait(c)
}

// send copies standard input to c, and at its end closes c's sending half.
// It returns early, nil, when stop closes.
func (n *nc) send(c *myproto.Conn, stop <-chan struct{}, prog *progress) error {
	for {
		select {
		case b, ok := <-n.in.chunks:
			if !ok {
				if n.in.err != nil {
					return fmt.Errorf("reading standard input: %w", n.in.err)
				}
				return c.CloseWrite()
			}
			_, err := c.Write(b)
			n.in.recycle(b)
			if err != nil {
				return err
			}
			prog.addSent(len(b))
		case <-stop:
			return nil
		}
	}
}

// receive copies c to standard output until the peer's EOF.
func (n *nc) receive(c *myproto.Conn, prog *progress) error {
	buf := make([]byte, streamChunk)
	for {
		nr, err := c.Read(buf)
		if nr > 0 {
			if _, werr := n.stdout.Write(buf[:nr]); werr != nil {
				return fmt.Errorf("writing standard output: %w", werr)
			}
			prog.addRecv(nr)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// closeLimit bounds the wait for the peer to acknowledge the end of the
// stream: the connections' user timeout, and a little.
const closeLimit = 35 * time.Second

// closeAndWait closes c, whose both halves are done, and waits until the
// connection is over: the peer has acknowledged our data and FIN, and
// TIME-WAIT is past. Close alone would finish in the background, which
// dies with the process: the peer could miss the end of the stream.
func closeAndWait(c *myproto.Conn) error {
	c.Close()
	deadline := time.Now().Add(closeLimit)
	for {
		st := c.Info().State
		if st == "CLOSED" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the peer did not acknowledge the end of the stream within %v (state %s)", closeLimit, st)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// A stdinPump reads standard input in a goroutine of its own, so that a
// connection can end while a read is blocked and the next one (listen -k)
// gets what comes after.
type stdinPump struct {
	chunks chan []byte // closed at the end of input
	err    error       // the read error other than EOF; set before chunks closes
	free   chan []byte // buffers to read into
}

func pumpStdin(r io.Reader, size int) *stdinPump {
	p := &stdinPump{chunks: make(chan []byte), free: make(chan []byte, 4)}
	for range cap(p.free) {
		p.free <- make([]byte, size)
	}
	go func() {
		defer close(p.chunks)
		for {
			b := <-p.free
			nr, err := r.Read(b)
			if nr > 0 {
				p.chunks <- b[:nr]
			} else {
				p.free <- b
			}
			if err == io.EOF {
				return
			}
			if err != nil {
				p.err = err
				return
			}
		}
	}()
	return p
}

// recycle gives a chunk's buffer back once it has been sent.
func (p *stdinPump) recycle(b []byte) { p.free <- b[:cap(b)] }

// connectDatagrams is connect -u: datagrams to and from one address.
func (n *nc) connectDatagrams() error {
	to, err := myproto.ResolveAddr("myproto", n.addr)
	if err != nil {
		return err
	}
	pc, err := myproto.ListenPacket("myproto", to.Zone+":0")
	if err != nil {
		return err
	}
	defer pc.Close()
	n.verbosef("sending datagrams to %v from %v", to, pc.LocalAddr())
	n.in = pumpStdin(n.stdin, datagramSize(to.Zone))
	return n.datagrams(pc, to)
}

// listenDatagrams is listen -u: datagrams from whoever sends first (with
// -k, from anyone), answered to the last sender.
func (n *nc) listenDatagrams() error {
	pc, err := myproto.ListenPacket("myproto", n.addr)
	if err != nil {
		return err
	}
	defer pc.Close()
	n.verbosef("listening for datagrams on %v", pc.LocalAddr())
	n.in = pumpStdin(n.stdin, datagramSize(pc.LocalAddr().(*myproto.Addr).Zone))
	return n.datagrams(pc, nil)
}

// datagrams sends each chunk of standard input as a datagram to the peer
// (to, or the first sender when to is nil) and writes the datagrams the
// peer sends to standard output. Once standard input is done and -w is
// set, it returns when nothing has come for that long.
func (n *nc) datagrams(pc *myproto.PacketConn, to *myproto.Addr) error {
	var (
		mu        sync.Mutex
		peer      = to
		eof       bool
		peerKnown = make(chan struct{})
		done      = make(chan struct{})
		sendErr   = make(chan error, 1)
	)
	defer close(done)
	if peer != nil {
		close(peerKnown)
	}
	// armIdle starts the -w countdown; mu held.
	armIdle := func() {
		if eof && peer != nil && n.wait > 0 {
			pc.SetReadDeadline(time.Now().Add(n.wait))
		}
	}
	go func() {
		select {
		case <-peerKnown:
		case <-done:
			return
		}
		for {
			var b []byte
			var ok bool
			select {
			case b, ok = <-n.in.chunks:
			case <-done:
				return
			}
			if !ok {
				break
			}
			mu.Lock()
			p := peer
			mu.Unlock()
			_, err := pc.WriteTo(b, p)
			n.in.recycle(b)
			if err != nil {
				sendErr <- err
				pc.Close()
				return
			}
		}
		if n.in.err != nil {
			sendErr <- fmt.Errorf("reading standard input: %w", n.in.err)
			pc.Close()
			return
		}
		mu.Lock()
		eof = true
		armIdle()
		mu.Unlock()
	}()

	buf := make([]byte, 1<<16)
	for {
		nr, from, err := pc.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil // -w passed in silence
		}
		if err != nil {
			select {
			case err = <-sendErr:
			default:
			}
			return err
		}
		a := from.(*myproto.Addr)
		mu.Lock()
		switch {
		case peer == nil:
			peer = a
			close(peerKnown)
			n.verbosef("datagrams from %v", a)
		case to == nil && n.keep:
			peer = a
		case !sameStation(a, peer):
			mu.Unlock()
			continue
		}
		armIdle()
		mu.Unlock()
		if _, err := n.stdout.Write(buf[:nr]); err != nil {
			return fmt.Errorf("writing standard output: %w", err)
		}
	}
}

// sameStation reports whether a and b are one port on one station.
func sameStation(a, b *myproto.Addr) bool {
	return a.Port == b.Port && a.HardwareAddr.String() == b.HardwareAddr.String()
}

// datagramSize is the largest datagram on the interface zone (the smallest
// usable interface's with no zone): its MTU less myproto's 24-byte header.
func datagramSize(zone string) int {
	const header = 24
	mtu := 0
	ifis, _ := net.Interfaces()
	for _, ifi := range ifis {
		usable := ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagLoopback == 0 && len(ifi.HardwareAddr) == 6
		if (zone != "" && ifi.Name == zone) || (zone == "" && usable && (mtu == 0 || ifi.MTU < mtu)) {
			mtu = ifi.MTU
		}
	}
	if mtu <= header {
		mtu = 1500
	}
	return mtu - header
}
