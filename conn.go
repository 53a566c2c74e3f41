package myproto

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/myproto/myproto/internal/link"
	"github.com/myproto/myproto/internal/stream"
)

var _ net.Conn = &Conn{}

// txBatchLen is how many frames one flush sends with one sendmmsg(2).
const txBatchLen = 64

// A Conn is a myproto stream connection. It implements net.Conn, with the
// extras *net.TCPConn offers (CloseRead, CloseWrite, SetNoDelay, buffers,
// keepalive, linger) and Info, the TCP_INFO of myproto.
//
// Conn wraps a stream engine (internal/stream: pure protocol logic) with
// what the engine leaves out: a lock, a timer, the endpoint that moves its
// frames, blocking and deadlines.
type Conn struct {
	s             *stack
	ep            *endpoint
	b             *binding // the port; shared with the listener for accepted conns
	local, remote *Addr
	cid           uint64  // our connection ID: the demultiplexing key
	msg           bool    // a message connection (msgconn.go): its SYN says so
	peer          [6]byte // the peer's MAC
	src           [6]byte // ours when the connection began: its frames' source

	mu      sync.Mutex // guards e and the fields below it
	e       *stream.Engine
	timerAt time.Time     // what the stack's timer queue was last asked for
	linger  time.Duration // <0 background, 0 reset on Close, >0 bounded
	wrShut  bool          // CloseWrite or Close called
	done    bool          // finish ran
	keyed   bool          // in the stack's peers, by the peer's connection ID

	tslot timerSlot // the connection's place in the stack's timer queue

	sendMu   sync.Mutex  // keeps packets leaving in packet-number order
	flushReq atomic.Bool // a flush was asked for: whoever holds sendMu does it

	pending atomic.Bool // queued for the endpoint's post-batch flush
	rdrv    driver      // Read and Dial, when they drive the link
	wdrv    driver      // Write, when it drives the link

	readable chan struct{} // a token when Read may make progress
	writable chan struct{} // a token when Write may make progress
	estab    chan struct{} // closed once the handshake ends, either way
	estOnce  sync.Once
	closed   chan struct{} // closed by Close
	rdShut   atomic.Bool   // CloseRead called

	closeOnce sync.Once
	rd, wd    deadline
	// rmu and wmu let one Read and one Write in at a time, as the fd
	// mutex of Go's sockets does: the bytes of concurrent Writes never
	// interleave (Write takes the window a chunk at a time), and one
	// call per direction waits for the engine, which wakes one waiter.
	rmu, wmu sync.Mutex

	answerWaits int // Reads that waited with data unacknowledged; under mu
	held        int // e.Held() as the stack's rcvMem counts it; under mu
	// reading says a Read is in progress; readAt is when the last one
	// returned (ns since timerEpoch). See rcvMem.capFor.
	reading atomic.Bool
	readAt  atomic.Int64
}

// answerWaitsBeforeThread is how many Reads of a connection wait for an
// answer (in Go's poller) before the next ones wait on their own thread.
const answerWaitsBeforeThread = 2

// newConn makes the Conn around engine e (a client's, or a server's made
// from a SYN) for connection ID cid on binding b; msg marks a message
// connection. Every field is set here, before the Conn is published in
// the stack's table, so the receive path never sees one half made.
func newConn(s *stack, ep *endpoint, b *binding, cid uint64, remote *Addr, e *stream.Engine, msg bool) *Conn {
	c := &Conn{
		s:        s,
		e:        e,
		msg:      msg,
		ep:       ep,
		b:        b,
		cid:      cid,
		remote:   remote,
		local:    ep.addr(b.port),
		linger:   -1,
		readable: make(chan struct{}, 1),
		writable: make(chan struct{}, 1),
		estab:    make(chan struct{}),
		closed:   make(chan struct{}),
		rd:       makeDeadline(),
		wd:       makeDeadline(),
		tslot:    timerSlot{idx: -1},
		src:      ep.hwaddr(),
	}
	copy(c.peer[:], remote.HardwareAddr)
	return c
}

// input runs one received frame through the engine. It is called by the
// endpoint's reader, which flushes the connection after the whole batch so
// one ACK answers many frames.
func (c *Conn) input(ep *endpoint, h *header, body []byte) dropReason {
	if ep != c.ep || h.src != c.peer || h.srcPort != c.remote.Port || h.dstPort != c.local.Port {
		// Right ID, wrong sender: an off-path guess. Drop it silently.
		return dropNoSocket
	}
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return dropNoSocket
	}
	c.e.SetRecvCap(c.s.rmem.capFor(c, ep.rxNow))
	c.e.Receive(ep.rxNow, h.flags, body) // the batch's time (readBatch)
	c.mu.Unlock()
	if !c.pending.Swap(true) {
		ep.pending = append(ep.pending, c)
	}
	return dropNone
}

// flush sends whatever the engine has to send now, in batches, re-arms the
// timer, wakes blocked callers, and retires the connection once the engine
// is done with it. If another goroutine is flushing the connection, that
// one does it (see connTx).
func (c *Conn) flush() {
	q := c.ep.getConnTx()
	q.add(c)
	q.send()
	c.ep.putConnTx(q)
}

// wake hands tokens to blocked Read, Write and Dial calls that can now make
// progress. A token is a hint: the woken call re-checks under the lock. It
// reports whether a Read can.
func (c *Conn) wake() bool {
	c.mu.Lock()
	e := c.e
	if c.rdShut.Load() {
		c.discardLocked()
	}
	c.countHeldLocked()
	r := e.Readable() > 0 || e.EOF() || e.Err() != nil || c.done || c.rdShut.Load()
	w := e.Writable() > 0 || e.Err() != nil || c.done
	est := e.Established() || e.Err() != nil || c.done
	if !c.keyed && !c.done && e.PeerCID() != 0 {
		// Established: a stateless reset names the peer's ID.
		c.keyed = true
		c.s.peers.Store(peerKey{c.peer, e.PeerCID()}, c)
		c.s.connEvent(EventConnEstablished, c, nil)
	}
	c.mu.Unlock()
	// A call driving the link waits in the poller, not for these
	// tokens: it is kicked, but only where its wait is over. (A timer
	// that fired and sent nothing new would otherwise pull a Read out of
	// the poller only for it to go back.)
	if r {
		signal(c.readable)
		c.ep.kick(&c.rdrv)
	}
	if w {
		signal(c.writable)
		c.ep.kick(&c.wdrv)
	}
	if est {
		c.estOnce.Do(func() {
			close(c.estab)
			c.ep.kick(&c.rdrv)
		})
	}
	return r
}

// discardLocked consumes and throws away what was received after
// CloseRead, so the peer's window stays open, as Linux does after
// shutdown(SHUT_RD). It is a function of its own so that its scratch is not
// in wake's frame: wake runs on the application's goroutines, in every
// Read, Write and Accept that drives the link, and 4 KiB there made each
// new connection's goroutine grow its stack, walking every frame on it, a
// tenth of a connection-churning server's user time.
//
//go:noinline
func (c *Conn) discardLocked() {
	var scratch [4096]byte
	for c.e.Read(scratch[:]) > 0 {
	}
}

// waitDelivered waits, for at most d, until the engine has delivered
// everything written and the FIN (a lingering Close). The stack's read loop,
// or a call driving the link, takes the acknowledgments in meanwhile.
func (c *Conn) waitDelivered(d time.Duration) {
	deadline := time.Now().Add(d)
	for wait := 100 * time.Microsecond; time.Now().Before(deadline); wait = min(2*wait, 10*time.Millisecond) {
		c.mu.Lock()
		done := c.done || c.e.Delivered()
		c.mu.Unlock()
		if done {
			return
		}
		time.Sleep(min(wait, time.Until(deadline)))
	}
}

// ok reports whether c was made by Dial or Accept: the methods of a nil or
// zero Conn fail with EINVAL, as *net.TCPConn's do, rather than panic.
func (c *Conn) ok() bool { return c != nil && c.e != nil }

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// armTimerLocked points the connection's timer at the engine's next
// deadline. The stack's timer queue runs it (timers.go).
func (c *Conn) armTimerLocked() {
	at := c.e.NextTimer()
	if at.Equal(c.timerAt) {
		return
	}
	c.timerAt = at
	c.s.timers.set(c, at)
}

// onTimer runs the engine's timers that are due and collects what they
// send into q; the timer queue calls it, possibly when nothing is due (the
// deadline moved after the queue took the connection off its heap).
func (c *Conn) onTimer(q *connTx) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return
	}
	now := time.Now()
	if at := c.e.NextTimer(); !at.IsZero() && !now.Before(at) {
		c.e.OnTimer(now)
	}
	c.timerAt = time.Time{} // force re-arming
	c.mu.Unlock()
	q.add(c)
}

// failWith ends the connection with err at once, as when its interface went
// away: blocked calls return err.
func (c *Conn) failWith(err error) {
	c.mu.Lock()
	if !c.done {
		c.e.Fail(err)
	}
	c.mu.Unlock()
	c.flush()
	c.wake()
}

// resetWith ends the connection with err at once and resets the peer, as
// when our MAC changed: the peer would otherwise go on sending to the old
// one. The RESET leaves from the connection's own (old) address, which the
// peer knows.
func (c *Conn) resetWith(err error) {
	c.mu.Lock()
	if !c.done {
		c.e.Reset(err)
	}
	c.mu.Unlock()
	c.flush()
	c.wake()
}

// kill resets the connection and retires it at once, as its stack closes:
// blocked and later calls fail with net.ErrClosed.
func (c *Conn) kill() {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.stopDeadlines()
	})
	c.mu.Lock()
	if !c.done {
		c.e.Abort()
	}
	c.mu.Unlock()
	c.flush() // the RESET
	c.finish()
}

// verify makes the connection probe its peer, on a hint that the peer's
// stack is gone (see stack.verifyPeers).
func (c *Conn) verify() {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return
	}
	c.e.Verify(time.Now())
	c.mu.Unlock()
	c.flush()
}

// peerNode is the peer's stack, from the handshake; 0 before it ends.
func (c *Conn) peerNode() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.e.PeerNode()
}

// statelessReset handles a stateless reset for the connection: the engine
// checks that it echoes a packet number in flight.
func (c *Conn) statelessReset(ep *endpoint, h *header, pn uint64) dropReason {
	if ep != c.ep || h.srcPort != c.remote.Port || h.dstPort != c.local.Port {
		return dropNoSocket
	}
	c.mu.Lock()
	ok := !c.done && c.e.StatelessReset(time.Now(), pn)
	node := c.e.PeerNode()
	c.mu.Unlock()
	if !ok {
		return dropNoSocket
	}
	c.flush()
	c.s.peerStackReset(peerStack{c.ep, c.peer, node})
	return dropNone
}

// finish retires a connection the engine is done with: it leaves the
// demultiplexer, stops its timer and gives back its port.
func (c *Conn) finish() {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return
	}
	c.done = true
	c.s.rmem.held.Add(-int64(c.held))
	c.held = 0
	c.s.timers.set(c, time.Time{})
	keyed, pcid := c.keyed, c.e.PeerCID()
	failure := c.e.Err()
	c.mu.Unlock()
	if keyed {
		c.s.connEvent(EventConnClosed, c, streamErr(failure))
	}
	c.s.conns.Delete(c.cid)
	if keyed {
		c.s.peers.CompareAndDelete(peerKey{c.peer, pcid}, c)
	}
	c.s.release(c.b)
	c.estOnce.Do(func() { close(c.estab) })
	signal(c.readable)
	signal(c.writable)
}

// Read implements the net.Conn Read method. After the peer's FIN and all
// data before it, Read returns io.EOF; after a reset, what arrived in order
// first and then an error for which errors.Is(err, syscall.ECONNRESET) holds.
func (c *Conn) Read(b []byte) (int, error) {
	if !c.ok() {
		return 0, syscall.EINVAL
	}
	n, err := c.read(b)
	if err != nil && err != io.EOF {
		err = opError("read", c.local, c.remote, err)
	}
	return n, err
}

func (c *Conn) read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	// The receive budget (rcvmem.go) spares a connection being read.
	c.reading.Store(true)
	defer func() {
		c.readAt.Store(int64(time.Since(timerEpoch)))
		c.reading.Store(false)
	}()
	drove, lent, counted := false, false, false
	defer func() { c.ep.letGo(drove) }()
	for {
		if lent {
			// While we waited, in-order data may have gone straight
			// into b (ReadInto): it is read, whatever else happened.
			c.mu.Lock()
			n := c.e.TakeRead()
			c.mu.Unlock()
			lent = false
			if n > 0 && !c.rdShut.Load() {
				c.flush() // the window may have opened enough to say so
				return n, nil
			}
		}
		switch {
		case isClosedChan(c.closed):
			return 0, net.ErrClosed
		case len(b) == 0:
			return 0, nil // as Go's sockets: nothing to wait for, deadline or not
		case c.rd.expired():
			return 0, os.ErrDeadlineExceeded
		case c.rdShut.Load():
			return 0, io.EOF
		}
		c.mu.Lock()
		n := 0
		if len(b) > 0 {
			n = c.e.Read(b)
		}
		var err error
		switch {
		case n > 0 || len(b) == 0:
		case c.e.EOF():
			err = io.EOF
		case c.e.Err() != nil:
			err = streamErr(c.e.Err())
		case c.done:
			err = net.ErrClosed
		}
		answer := false
		if n == 0 && err == nil && len(b) > 0 {
			// Lend b to the engine for the wait: whoever handles our
			// frames copies them there, once, not through the ring.
			c.e.ReadInto(b)
			lent = true
			// What we sent is not acknowledged yet: we likely wait
			// for its answer. Once a connection has so waited a few
			// times, it is an exchange of requests and answers: wait
			// on our own thread (threadLink). Not before: a
			// connection that sends one request and closes gains
			// nothing, and a blocking system call in a busy process
			// costs a thread hand-off of the scheduler.
			if c.e.Unacked() > 0 {
				if !counted {
					counted = true
					c.answerWaits++
				}
				answer = c.answerWaits > answerWaitsBeforeThread
			}
		}
		c.mu.Unlock()
		if n > 0 {
			c.flush() // the window may have opened enough to say so
			return n, nil
		}
		if err != nil || len(b) == 0 {
			return 0, err
		}
		if c.drive(&c.rdrv, c.readable, &c.rd, &drove, answer) {
			continue
		}
		select {
		case <-c.readable:
		case <-c.rd.wait():
		case <-c.closed:
		}
	}
}

// Write implements the net.Conn Write method. It returns once all of b is in
// the send buffer; a slow peer makes it block, never the buffer grow.
func (c *Conn) Write(b []byte) (int, error) {
	if !c.ok() {
		return 0, syscall.EINVAL
	}
	n, err := c.write(b)
	if err != nil {
		err = opError("write", c.local, c.remote, err)
	}
	return n, err
}

func (c *Conn) write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	written := 0
	drove := false
	defer func() { c.ep.letGo(drove) }()
	for {
		switch {
		case isClosedChan(c.closed):
			return written, net.ErrClosed
		case c.wd.expired():
			return written, os.ErrDeadlineExceeded
		}
		c.mu.Lock()
		var err error
		n := 0
		switch {
		case c.e.Err() != nil:
			err = streamErr(c.e.Err())
		case c.wrShut:
			err = os.NewSyscallError("write", syscall.EPIPE)
		case c.done:
			err = net.ErrClosed
		default:
			n = c.e.Write(b[written:])
		}
		c.mu.Unlock()
		if err != nil {
			return written, err
		}
		written += n
		if n > 0 {
			c.flush()
			if len(b) > c.ep.maxPayload() {
				// A stream: take in the acknowledgments that
				// came meanwhile, which open the window for the
				// next round (endpoint.poll). A small write is
				// more likely a request, whose answer cannot be
				// here yet.
				c.ep.poll(&drove)
			}
		}
		if written == len(b) {
			return written, nil
		}
		if c.drive(&c.wdrv, c.writable, &c.wd, &drove, false) {
			continue
		}
		select {
		case <-c.writable:
		case <-c.wd.wait():
		case <-c.closed:
		}
	}
}

// Close implements the net.Conn Close method. Queued data is still sent and
// the connection closed with a FIN in the background (see SetLinger), unless
// received data was left unread: then the peer gets a reset, as from TCP.
// Blocked Read and Write calls return an error wrapping net.ErrClosed.
//
// The background is this process: a program that exits right after Close
// takes unsent data with it, where a kernel's TCP would send it on. Such a
// program sets SetLinger(sec > 0): Close then returns once the peer has
// acknowledged everything and the FIN, or after sec seconds, resetting the
// connection, as Linux's close(2) with SO_LINGER.
func (c *Conn) Close() error {
	if !c.ok() {
		return syscall.EINVAL
	}
	first := false
	c.closeOnce.Do(func() {
		first = true
		close(c.closed)
		c.stopDeadlines()
		c.kickDriver()
		c.ep.rx.disown(&c.rdrv)
		c.mu.Lock()
		c.wrShut = true
		linger := c.linger
		if linger == 0 {
			c.e.Abort()
		} else {
			c.e.Close()
		}
		c.mu.Unlock()
		c.flush()
		if linger > 0 {
			t := time.AfterFunc(linger, func() {
				c.mu.Lock()
				if !c.done {
					c.e.Abort()
				}
				c.mu.Unlock()
				c.flush()
			})
			c.waitDelivered(linger)
			t.Stop()
		}
	})
	if !first {
		return opError("close", c.local, c.remote, net.ErrClosed)
	}
	return nil
}

// CloseWrite shuts down the writing side: queued data is sent, then a FIN.
// The peer reads io.EOF after the data; this side can go on reading. Later
// writes fail with EPIPE. net/http and crypto/tls look for this method.
func (c *Conn) CloseWrite() error {
	if !c.ok() {
		return syscall.EINVAL
	}
	if isClosedChan(c.closed) {
		return opError("close", c.local, c.remote, net.ErrClosed)
	}
	c.mu.Lock()
	c.wrShut = true
	c.e.CloseWrite()
	c.mu.Unlock()
	c.flush()
	return nil
}

// CloseRead shuts down the reading side: Read returns io.EOF from now on and
// data that still arrives is discarded.
func (c *Conn) CloseRead() error {
	if !c.ok() {
		return syscall.EINVAL
	}
	if isClosedChan(c.closed) {
		return opError("close", c.local, c.remote, net.ErrClosed)
	}
	c.rdShut.Store(true)
	c.kickDriver()
	c.wake()  // discards what is buffered and wakes a blocked Read
	c.flush() // tells the peer its window opened
	return nil
}

// LocalAddr implements the net.Conn LocalAddr method.
func (c *Conn) LocalAddr() net.Addr {
	if !c.ok() {
		return nil
	}
	return c.local
}

// RemoteAddr implements the net.Conn RemoteAddr method.
func (c *Conn) RemoteAddr() net.Addr {
	if !c.ok() {
		return nil
	}
	return c.remote
}

// SetDeadline implements the net.Conn SetDeadline method.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.setCheck(); err != nil {
		return err
	}
	c.rd.set(t)
	c.wd.set(t)
	c.kickDriver()
	return nil
}

// SetReadDeadline implements the net.Conn SetReadDeadline method.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if err := c.setCheck(); err != nil {
		return err
	}
	c.rd.set(t)
	c.ep.kick(&c.rdrv)
	return nil
}

// SetWriteDeadline implements the net.Conn SetWriteDeadline method. A
// timeout leaves the connection intact; data already accepted is sent.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if err := c.setCheck(); err != nil {
		return err
	}
	c.wd.set(t)
	c.ep.kick(&c.wdrv)
	return nil
}

// stopDeadlines stops the deadline timers of a closed connection (see
// deadline.stop).
func (c *Conn) stopDeadlines() {
	c.rd.stop()
	c.wd.stop()
}

func (c *Conn) setCheck() error {
	if !c.ok() {
		return syscall.EINVAL
	}
	if isClosedChan(c.closed) {
		return opError("set", c.local, c.remote, net.ErrClosed)
	}
	return nil
}

// SetNoDelay controls whether small writes are sent at once (true, the
// default, as for Go's TCP) or coalesced while data is unacknowledged
// (Nagle's algorithm).
func (c *Conn) SetNoDelay(noDelay bool) error {
	return c.setOption(func(e *stream.Engine) { e.SetNoDelay(noDelay) })
}

// SetReadBuffer sets the receive buffer: the most received data held for
// the reader, and so the largest window advertised.
func (c *Conn) SetReadBuffer(bytes int) error {
	if bytes <= 0 {
		return opError("set", c.local, c.remote, os.NewSyscallError("setsockopt", syscall.EINVAL))
	}
	return c.setOption(func(e *stream.Engine) { e.SetRecvBuffer(bytes) })
}

// SetWriteBuffer sets the send buffer: the most data held unsent or
// unacknowledged before Write blocks. By default it is 4 MiB, of which at
// most 256 KiB unsent while the peer's window is open (as
// TCP_NOTSENT_LOWAT bounds it for Linux's TCP): more would only wait,
// cooling in the cache. A size set here lifts that bound: the buffer holds
// up to bytes, sent or not.
func (c *Conn) SetWriteBuffer(bytes int) error {
	if bytes <= 0 {
		return opError("set", c.local, c.remote, os.NewSyscallError("setsockopt", syscall.EINVAL))
	}
	return c.setOption(func(e *stream.Engine) { e.SetSendBuffer(bytes) })
}

// SetKeepAlive enables or disables keepalive probes on an idle connection;
// a peer that stops answering them fails the connection with ETIMEDOUT.
func (c *Conn) SetKeepAlive(keepalive bool) error {
	return c.setOption(func(e *stream.Engine) {
		if keepalive {
			e.SetKeepAlive(defaultKeepAlive)
		} else {
			e.SetKeepAlive(0)
		}
	})
}

// SetKeepAlivePeriod sets the idle time before keepalive probes, and
// enables them. As for *net.TCPConn (Go 1.23), 0 means the default of 15 s
// and a negative d leaves the period as it is.
func (c *Conn) SetKeepAlivePeriod(d time.Duration) error {
	switch {
	case !c.ok():
		return syscall.EINVAL
	case d < 0:
		return nil
	case d == 0:
		d = defaultKeepAlive
	}
	return c.setOption(func(e *stream.Engine) { e.SetKeepAlive(d) })
}

// SetUserTimeout sets how long sent data, or a keepalive probe, may go
// unacknowledged before the connection fails with ETIMEDOUT, as Linux's
// TCP_USER_TIMEOUT; d <= 0 restores the default of 30 s.
func (c *Conn) SetUserTimeout(d time.Duration) error {
	return c.setOption(func(e *stream.Engine) { e.SetUserTimeout(d) })
}

// SetLinger sets what Close does with unsent data, as for *net.TCPConn on
// Linux: sec < 0 (the default) sends it in the background; sec == 0
// discards it and resets the connection; sec > 0 makes Close wait until the
// peer has acknowledged it and the FIN, for at most sec seconds, after which
// the connection is reset.
func (c *Conn) SetLinger(sec int) error {
	if err := c.setCheck(); err != nil {
		return err
	}
	c.mu.Lock()
	if sec < 0 {
		c.linger = -1
	} else {
		c.linger = time.Duration(sec) * time.Second
	}
	c.mu.Unlock()
	return nil
}

func (c *Conn) setOption(f func(e *stream.Engine)) error {
	if err := c.setCheck(); err != nil {
		return err
	}
	c.mu.Lock()
	f(c.e)
	c.mu.Unlock()
	c.flush()
	return nil
}

// streamChunks lends buffer chunks to the engines of every connection in the
// process, so an idle or slow connection holds only the chunks its
// unacknowledged or unread bytes occupy.
var streamChunks chunkPool

// chunkPool is a stream.ChunkPool on a sync.Pool.
type chunkPool struct{ p sync.Pool }

func (p *chunkPool) Get() *stream.Chunk {
	if c, ok := p.p.Get().(*stream.Chunk); ok {
		return c
	}
	return new(stream.Chunk)
}

func (p *chunkPool) Put(c *stream.Chunk) { p.p.Put(c) }

// defaultKeepAlive is the idle period SetKeepAlive(true) uses, as Go's
// net.Dialer does.
const defaultKeepAlive = 15 * time.Second

// txBatch is a set of frame buffers for one sendmmsg(2).
type txBatch struct {
	ms [txBatchLen]link.Message
}

func (ep *endpoint) getBatch() *txBatch {
	fs := ep.frameSize()
	if tb, ok := ep.batchPool.Get().(*txBatch); ok && cap(tb.ms[0].Buf) >= fs {
		return tb
	}
	tb := new(txBatch)
	for i := range tb.ms {
		tb.ms[i].Buf = make([]byte, fs)
	}
	return tb
}

func (ep *endpoint) putBatch(tb *txBatch) { ep.batchPool.Put(tb) }

func (ep *endpoint) countOut(ms []link.Message) {
	var bytes uint64
	for i := range ms {
		bytes += uint64(ms[i].N)
	}
	ep.stats.framesOut.Add(uint64(len(ms)))
	ep.stats.bytesOut.Add(bytes)
}

// ConnInfo describes a connection's state, as TCP_INFO (tcp(7)) does for
// TCP: see (*Conn).Info.
type ConnInfo struct {
	// State is TCP's name for the connection state, such as "ESTABLISHED".
	State string
	// SRTT and RTTVar are the smoothed round-trip time and its variation
	// (RFC 9002); MinRTT and LatestRTT the smallest and the last sample.
	SRTT, RTTVar, MinRTT, LatestRTT time.Duration
	// PTO is the current probe timeout, backoff included.
	PTO time.Duration
	// Cwnd and Ssthresh are the congestion window and slow-start threshold
	// in bytes; BytesInFlight the bytes sent and not yet acknowledged or
	// declared lost.
	Cwnd, Ssthresh, BytesInFlight int
	// BytesSent counts stream bytes sent for the first time, BytesReceived
	// new stream bytes received.
	BytesSent, BytesReceived uint64
	// BytesRetransmitted counts stream bytes sent again.
	BytesRetransmitted uint64
	// PacketsSent and PacketsReceived count packets of any kind.
	PacketsSent, PacketsReceived uint64
	// PacketsRetransmitted counts packets carrying retransmitted data.
	PacketsRetransmitted uint64
	// PacketsLost counts packets declared lost; SpuriousLosses those of
	// them acknowledged afterwards.
	PacketsLost, SpuriousLosses uint64
	// ProbeTimeouts counts probe timer expiries.
	ProbeTimeouts uint64
	// SendWindow is how many more bytes the peer's flow control lets us
	// send; RecvWindow how many more we let the peer send.
	SendWindow uint64
	RecvWindow uint64
	// SendBuffered and RecvBuffered are the bytes held in the buffers.
	SendBuffered, RecvBuffered int
	// MemoryHeld is the bytes of buffer memory the connection holds.
	MemoryHeld int
	// PacketThreshold is the current reordering threshold for loss
	// detection, in packets.
	PacketThreshold uint64
}

// Info returns a snapshot of the connection's protocol state.
func (c *Conn) Info() ConnInfo {
	if !c.ok() {
		return ConnInfo{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return ConnInfo(c.e.Info(time.Now()))
}
