package myproto

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Message connections: SOCK_SEQPACKET, TIPC's main mode and SCTP's. A
// message connection is a stream connection (the same handshake, loss
// recovery, flow and congestion control) whose SYN carries the MESSAGE flag
// and whose byte stream is a sequence of messages, each a QUIC varint
// length and that many bytes (SPEC.md §19). Each Write is one message, and
// each Read delivers one message whole.
//
// Messages share the stream port space, as TIPC's socket types share its
// service addresses: a listener takes a port for one kind, and a SYN of the
// other kind is refused as if nobody listened, so no stream client ever
// talks to a message server by mistake, nor the reverse.

// flagMessage, in a SYN's header flags, asks for a message connection.
const flagMessage = 0x0008

var (
	_ net.Conn     = &MsgConn{}
	_ net.Listener = &MsgListener{}
)

// ErrTruncated is what MsgConn.Read wraps when a message was longer than
// the buffer: Read filled the buffer and discarded the rest of the message,
// as recv(2) does on a SOCK_SEQPACKET socket and flags with MSG_TRUNC.
// ReadMsg reports the message's length instead.
var ErrTruncated = errors.New("message truncated: longer than the buffer")

// A MsgConn is a myproto message connection: reliable and ordered like a
// Conn, but it keeps message boundaries, as SOCK_SEQPACKET does. Each Write
// sends one message, of any length from 0 bytes to what the send buffer
// holds; each Read returns one message whole, however many frames carried
// it. Writes from several goroutines never interleave their messages, nor
// Reads share one.
//
// A Read into a buffer shorter than the message fills the buffer, discards
// the rest and fails with an error wrapping ErrTruncated; ReadMsg returns
// the message's full length instead. An empty message reads as 0 bytes and
// no error. The end of the peer's messages (its CloseWrite or Close) reads
// as io.EOF.
//
// MsgConn implements net.Conn; deadlines, half-close, keepalive, the user
// timeout and Info are a Conn's.
type MsgConn struct {
	c *Conn

	rmu sync.Mutex // one reader at a time; guards what follows
	// The message being read: its length prefix as far as it came
	// (hdr[:hdrN]), its size once known (else -1), and the bytes of it a
	// Read consumed but could not return (a deadline cut it short).
	hdr   [8]byte
	hdrN  int
	size  int
	stash []byte
	// skip is how much of a truncated message is still to be discarded.
	skip int

	wmu sync.Mutex // one writer at a time: messages never interleave
}

// A MsgListener is a myproto message listener. It implements net.Listener;
// Accept returns *MsgConn values.
type MsgListener struct {
	ln *Listener
}

// DialMsg connects to the address on the named network, which must be
// "myproto", and returns a message connection. The address forms are Dial's.
// A port where a stream listener, or nobody, listens refuses the connection
// (ECONNREFUSED).
func DialMsg(network, address string) (*MsgConn, error) {
	var d Dialer
	return d.DialMsg(context.Background(), network, address)
}

// DialMsg connects to the address on the named network using ctx, as
// DialContext does, and returns a message connection.
func (d *Dialer) DialMsg(ctx context.Context, network, address string) (*MsgConn, error) {
	dm := *d
	dm.msg = true
	c, err := dm.dial(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return newMsgConn(c), nil
}

// DialMsg connects to the address, as DialMsg does, through s.
func (s *Stack) DialMsg(ctx context.Context, network, address string) (*MsgConn, error) {
	d := Dialer{Stack: s}
	return d.DialMsg(ctx, network, address)
}

// ListenMsg announces on the local address and returns a message listener.
// The address forms are Listen's; the port is taken in the stream port
// space.
func ListenMsg(network, address string) (*MsgListener, error) {
	var lc ListenConfig
	return lc.ListenMsg(context.Background(), network, address)
}

// ListenMsg announces on the local address, as ListenMsg does, with lc's
// options. ctx is not used after ListenMsg returns.
func (lc *ListenConfig) ListenMsg(ctx context.Context, network, address string) (*MsgListener, error) {
	if err := ctx.Err(); err != nil {
		return nil, opError("listen", nil, nil, err)
	}
	lm := *lc
	lm.msg = true
	ln, err := lm.listen(network, address)
	if err != nil {
		return nil, err
	}
	return &MsgListener{ln: ln}, nil
}

// ListenMsg announces on the local address, as ListenMsg does, through s.
func (s *Stack) ListenMsg(network, address string) (*MsgListener, error) {
	lc := ListenConfig{Stack: s}
	return lc.ListenMsg(context.Background(), network, address)
}

func newMsgConn(c *Conn) *MsgConn {
	c.mu.Lock()
	c.e.SizeSendBuffer() // a message is written whole
	c.mu.Unlock()
	return &MsgConn{c: c, size: -1}
}

// Accept implements the net.Listener Accept method: it returns the next
// connection, a *MsgConn.
func (l *MsgListener) Accept() (net.Conn, error) {
	c, err := l.AcceptMsg()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// AcceptMsg accepts the next connection.
func (l *MsgListener) AcceptMsg() (*MsgConn, error) {
	c, err := l.ln.AcceptMyproto()
	if err != nil {
		return nil, err
	}
	return newMsgConn(c), nil
}

// Close implements the net.Listener Close method, as Listener.Close.
func (l *MsgListener) Close() error { return l.ln.Close() }

// Addr implements the net.Listener Addr method.
func (l *MsgListener) Addr() net.Addr { return l.ln.Addr() }

// SetDeadline sets the deadline for Accept; the zero time means none.
func (l *MsgListener) SetDeadline(t time.Time) error { return l.ln.SetDeadline(t) }

// Read implements the net.Conn Read method: it reads the next message into
// b. A message longer than b fills it; the rest is discarded and the error
// wraps ErrTruncated, with n == len(b).
func (c *MsgConn) Read(b []byte) (int, error) {
	n, size, err := c.readMsg(b)
	switch {
	case err == io.EOF:
		return 0, err
	case err != nil:
		return n, opError("read", c.c.local, c.c.remote, err)
	case size > n:
		return n, opError("read", c.c.local, c.c.remote, ErrTruncated)
	}
	return n, nil
}

// ReadMsg reads the next message into b and returns how many bytes it
// copied and the message's length: size > n means the message was
// truncated, the rest of it discarded.
func (c *MsgConn) ReadMsg(b []byte) (n, size int, err error) {
	n, size, err = c.readMsg(b)
	if err != nil && err != io.EOF {
		err = opError("read", c.c.local, c.c.remote, err)
	}
	return n, size, err
}

func (c *MsgConn) readMsg(b []byte) (n, size int, err error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	// What is left of a truncated message.
	if err := c.discard(); err != nil {
		return 0, 0, err
	}
	if c.size < 0 {
		if err := c.readHeader(); err != nil {
			return 0, 0, err
		}
	}
	size = c.size
	want := min(size, len(b))
	n = copy(b[:want], c.stash)
	if n < len(c.stash) {
		// A shorter buffer than the interrupted Read's: truncated.
		c.skip = size - len(c.stash)
		c.endMessage()
		c.discard() // else on the next Read
		return n, size, nil
	}
	got := len(c.stash) // consumed from the stream so far
	for n < want {
		k, err := c.c.read(b[n:want])
		n += k
		got += k
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			// Keep what came, for the next Read.
			c.stash = append(c.stash[:0], b[:n]...)
			return 0, 0, err
		}
	}
	c.skip = size - got
	c.endMessage()
	// A truncated message is the caller's already: if the rest cannot be
	// discarded now (a deadline), the next Read does it.
	c.discard()
	return n, size, nil
}

// endMessage forgets the message read.
func (c *MsgConn) endMessage() {
	c.hdrN, c.size, c.stash = 0, -1, nil
}

// readHeader reads the next message's length: a QUIC varint.
func (c *MsgConn) readHeader() error {
	for {
		need := 1
		if c.hdrN > 0 {
			need = 1 << (c.hdr[0] >> 6)
		}
		if c.hdrN == need {
			break
		}
		k, err := c.c.read(c.hdr[c.hdrN:need])
		c.hdrN += k
		if err != nil {
			if err == io.EOF && c.hdrN > 0 {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	v := uint64(c.hdr[0] & 0x3f)
	for _, x := range c.hdr[1:c.hdrN] {
		v = v<<8 | uint64(x)
	}
	if v > maxMessage {
		// Nothing this stack writes: the peer is broken. Without a
		// length to trust, the stream cannot be read on.
		c.c.SetLinger(0)
		c.c.Close()
		return os.NewSyscallError("read", syscall.EMSGSIZE)
	}
	c.size = int(v)
	return nil
}

// maxMessage bounds the message length a reader accepts: the most any send
// buffer holds (1 GiB), and so the longest message a writer can send.
const maxMessage = 1 << 30

// discard reads and throws away the rest of a truncated message.
func (c *MsgConn) discard() error {
	if c.skip == 0 {
		return nil
	}
	var scratch [16 << 10]byte
	for c.skip > 0 {
		k, err := c.c.read(scratch[:min(c.skip, len(scratch))])
		c.skip -= k
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// Write implements the net.Conn Write method: it sends b as one message,
// all of it or, on an error, none of it. It waits until the send buffer has
// room for the whole message; one longer than the send buffer can hold (4
// MiB by default, SetWriteBuffer) fails with EMSGSIZE.
func (c *MsgConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeMsg(b); err != nil {
		return 0, opError("write", c.c.local, c.c.remote, err)
	}
	return len(b), nil
}

func (c *MsgConn) writeMsg(b []byte) error {
	var hdr [8]byte
	hn := putMsgLen(hdr[:], uint64(len(b)))
	need := hn + len(b)
	cc := c.c
	for {
		switch {
		case isClosedChan(cc.closed):
			return net.ErrClosed
		case cc.wd.expired():
			return os.ErrDeadlineExceeded
		}
		cc.mu.Lock()
		var err error
		sent := false
		switch e := cc.e; {
		case e.Err() != nil:
			err = streamErr(e.Err())
		case cc.wrShut:
			err = os.NewSyscallError("write", syscall.EPIPE)
		case cc.done:
			err = net.ErrClosed
		case need > e.Config().SendBuffer:
			err = os.NewSyscallError("write", syscall.EMSGSIZE)
		case e.Writable() >= need:
			if e.Write(hdr[:hn]) != hn || e.Write(b) != len(b) {
				panic("myproto: the send buffer took part of a message it had room for")
			}
			sent = true
		}
		cc.mu.Unlock()
		if err != nil {
			return err
		}
		if sent {
			cc.flush()
			return nil
		}
		select {
		case <-cc.writable:
		case <-cc.wd.wait():
		case <-cc.closed:
		}
	}
}

// putMsgLen writes v as a QUIC varint (SPEC.md §1) and returns its length.
func putMsgLen(b []byte, v uint64) int {
	switch {
	case v < 1<<6:
		b[0] = byte(v)
		return 1
	case v < 1<<14:
		b[0], b[1] = 0x40|byte(v>>8), byte(v)
		return 2
	case v < 1<<30:
		b[0], b[1], b[2], b[3] = 0x80|byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
		return 4
	}
	for i := 7; i > 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	b[0] = 0xc0 | byte(v)
	return 8
}

// MaxMessage is the longest message Write can send now: what the send
// buffer holds, less the length prefix.
func (c *MsgConn) MaxMessage() int {
	c.c.mu.Lock()
	n := c.c.e.Config().SendBuffer
	c.c.mu.Unlock()
	var hdr [8]byte
	return n - putMsgLen(hdr[:], uint64(n))
}

// Close implements the net.Conn Close method, as Conn.Close: messages
// written are still sent, then the connection ends.
func (c *MsgConn) Close() error { return c.c.Close() }

// CloseWrite shuts down the writing side after the messages written: the
// peer reads io.EOF after the last of them.
func (c *MsgConn) CloseWrite() error { return c.c.CloseWrite() }

// CloseRead shuts down the reading side, as Conn.CloseRead.
func (c *MsgConn) CloseRead() error { return c.c.CloseRead() }

// LocalAddr implements the net.Conn LocalAddr method.
func (c *MsgConn) LocalAddr() net.Addr { return c.c.LocalAddr() }

// RemoteAddr implements the net.Conn RemoteAddr method.
func (c *MsgConn) RemoteAddr() net.Addr { return c.c.RemoteAddr() }

// SetDeadline implements the net.Conn SetDeadline method. A Read that times
// out in the middle of a message keeps what it received of it for the next
// Read; a Write that times out sent none of its message.
func (c *MsgConn) SetDeadline(t time.Time) error { return c.c.SetDeadline(t) }

// SetReadDeadline implements the net.Conn SetReadDeadline method.
func (c *MsgConn) SetReadDeadline(t time.Time) error { return c.c.SetReadDeadline(t) }

// SetWriteDeadline implements the net.Conn SetWriteDeadline method.
func (c *MsgConn) SetWriteDeadline(t time.Time) error { return c.c.SetWriteDeadline(t) }

// SetReadBuffer sets the receive buffer, as Conn.SetReadBuffer: messages
// longer than it still arrive, Read copying them out as they come.
func (c *MsgConn) SetReadBuffer(bytes int) error { return c.c.SetReadBuffer(bytes) }

// SetWriteBuffer sets the send buffer, as Conn.SetWriteBuffer, and so the
// longest message Write accepts (MaxMessage).
func (c *MsgConn) SetWriteBuffer(bytes int) error { return c.c.SetWriteBuffer(bytes) }

// SetNoDelay controls Nagle's algorithm, as Conn.SetNoDelay.
func (c *MsgConn) SetNoDelay(noDelay bool) error { return c.c.SetNoDelay(noDelay) }

// SetKeepAlive enables or disables keepalive probes, as Conn.SetKeepAlive.
func (c *MsgConn) SetKeepAlive(keepalive bool) error { return c.c.SetKeepAlive(keepalive) }

// SetKeepAlivePeriod sets the keepalive period, as Conn.SetKeepAlivePeriod.
func (c *MsgConn) SetKeepAlivePeriod(d time.Duration) error { return c.c.SetKeepAlivePeriod(d) }

// SetUserTimeout sets the user timeout, as Conn.SetUserTimeout.
func (c *MsgConn) SetUserTimeout(d time.Duration) error { return c.c.SetUserTimeout(d) }

// SetLinger sets what Close does with unsent messages, as Conn.SetLinger.
func (c *MsgConn) SetLinger(sec int) error { return c.c.SetLinger(sec) }

// Info returns a snapshot of the connection's protocol state, as
// Conn.Info.
func (c *MsgConn) Info() ConnInfo { return c.c.Info() }

// proto is the connection's kind, for diagnostics and events.
func (c *Conn) proto() string {
	if c.msg {
		return "message"
	}
	return "stream"
}

// proto is the listener's kind, for diagnostics and events.
func (ln *Listener) proto() string {
	if ln.msg {
		return "message"
	}
	return "stream"
}
