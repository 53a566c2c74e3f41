package myproto

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/myproto/myproto/internal/link"
)

// Who reads an endpoint's link.
//
// Each endpoint has a read loop (readLoop) that reads the link in batches and
// hands every frame to its socket. A Read that finds nothing to read, or a
// Write that finds the send buffer full, would then wait for the read loop to
// wake it: a hand-off between goroutines per batch, which on a small machine
// costs a futex wake and often a context switch (DESIGN.md, "The data
// path"). Where the link can cut a wait short (SetReadDeadline), such a call
// drives the link itself instead: it takes the receive lock, reads one batch,
// runs every frame of it through the stack exactly as the read loop would,
// and looks again at its own connection. So the goroutine the poller wakes
// for a frame is the one that wants it.
//
// The read loop stands aside, asleep, while a call drives and for a grace
// period after the last one returned: a Read returns, the application
// handles the data and calls Read again, and the link waits for it
// meanwhile. Whoever waits for frames that only the read loop would handle
// (a Dial, an Accept, a datagram read) ends that at once (needReader). A
// call that wants the link while the read loop reads cuts the read loop's
// wait short with a read deadline in the past, as Close, a new deadline or
// a wake-up of a connection do for a driving call.
//
// Where the driving call waits matters too. In the poller, the kernel's
// wake-up of the thread is not a synchronous one on every link, and the
// answer to a request then costs a wake-up of the other CPU each way; a
// Read waiting for the answer to what its connection sent waits on its own
// thread instead (threadLink). And an Accept that keeps taking the link
// before the Read whose frames it hands over leaves it to that Read (see
// yieldAfter).

// driveGrace is how long the read loop stays aside after the last driving
// call returned.
const driveGrace = time.Millisecond

// rxState is an endpoint's receive side.
type rxState struct {
	// dl is the link, when it can cut a read short; nil: only the read
	// loop reads.
	dl deadlineLink
	// pl is the link, when it can also be read without waiting (poll);
	// nil when it cannot or dl is nil.
	pl pollLink
	// tl is the link, when it can also wait on the reading thread (a
	// Read waiting for an answer); nil when it cannot or dl is nil.
	tl threadLink
	// threadWaits counts the reads that waited on the caller's thread.
	threadWaits atomic.Uint64

	// The link's owner (see yieldAfter): woke is the waiting Read the
	// batch brought data for, under mu; streak counts the batches of an
	// Accept in a row that brought data for streakOf, under mu; ownerAt
	// is when the owner last drove (ns since timerEpoch).
	woke     *driver
	streakOf *driver
	streak   int
	owner    atomic.Pointer[driver]
	ownerAt  atomic.Int64
	// grants counts the times an Accept made a Read the owner: unlike
	// owner, which the next Accept clears once the owner has been quiet
	// for driveGrace, it shows that a yield happened at all.
	grants atomic.Uint64

	mu   sync.Mutex     // held to read the link and handle what came
	ms   []link.Message // the batch's buffers, under mu
	size int            // the frame size they were made for

	active  atomic.Int32           // calls that drove and have not returned yet
	waiters atomic.Int32           // calls waiting to drive
	loopIn  atomic.Bool            // the read loop holds mu and reads
	driver  atomic.Pointer[driver] // whose call waits in ReadBatch
	needed  atomic.Bool            // the read loop is asked to read
	lastGo  atomic.Int64           // when the last driving call returned (ns since timerEpoch)

	free  chan struct{} // a token when the read loop let go with callers waiting
	wake  chan struct{} // a token to make the read loop look again
	grace *time.Timer   // wakes the read loop driveGrace after a call let go
	// graceArmed says grace will fire. A call letting go arms it only
	// if it is not: moving a runtime timer wakes an idle thread of the
	// scheduler (wakeNetPoller), and a Read or Write per transaction
	// would do so each time. Firing early costs one look (aside).
	graceArmed atomic.Bool
}

// deadlineLink is a link whose ReadBatch can be cut short by a read deadline,
// failing with an error that wraps os.ErrDeadlineExceeded.
type deadlineLink interface {
	link.Link
	SetReadDeadline(t time.Time) error
}

// pollLink is a deadlineLink that can also be read without waiting:
// TryReadBatch returns 0 when no frame is queued.
type pollLink interface {
	deadlineLink
	TryReadBatch(ms []link.Message) (int, error)
}

// threadLink is a deadlineLink that can also wait for frames on the calling
// thread, in a blocking system call, rather than in the runtime's poller:
// the kernel's wake-up then lets the scheduler run the reader where the
// frame's sender ran (sys.QuietLink.ReadBatchOnThread). That suits a Read
// waiting for the answer to what its connection sent, and would put the
// two ends of a stream on one CPU.
type threadLink interface {
	deadlineLink
	ReadBatchOnThread(ms []link.Message) (int, error)
}

// aLongTimeAgo is a read deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

func (rx *rxState) init(l link.Link) {
	rx.dl, _ = l.(deadlineLink)
	rx.pl, _ = l.(pollLink)
	rx.tl, _ = l.(threadLink)
	rx.free = make(chan struct{}, 1)
	rx.wake = make(chan struct{}, 1)
	if rx.dl != nil {
		rx.grace = time.AfterFunc(time.Hour, func() {
			rx.graceArmed.Store(false)
			signal(rx.wake)
		})
		rx.grace.Stop()
	}
}

// needReader makes sure someone reads the link soon: a call about to wait
// for frames that only the read loop would handle (a handshake's, a
// datagram's) ends its standing aside.
func (ep *endpoint) needReader() {
	if ep.rx.dl != nil {
		ep.rx.lastGo.Store(0) // the grace period ends
		ep.rx.needed.Store(true)
		signal(ep.rx.wake)
	}
}

// needReaders is needReader for every endpoint of the stack.
func (s *stack) needReaders() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ep := range s.endpoints {
		ep.needReader()
	}
}

// aside reports whether the read loop should stand aside now.
func (rx *rxState) aside() bool {
	if rx.active.Load() > 0 {
		return true
	}
	left := driveGrace - time.Duration(int64(time.Since(timerEpoch))-rx.lastGo.Load())
	if left > 0 {
		rx.graceArmed.Store(true)
		rx.grace.Reset(left)
		return true
	}
	return false
}

// readLoop reads frames in batches until the link closes, standing aside
// while calls drive it.
func (ep *endpoint) readLoop() {
	defer close(ep.done)
	rx := &ep.rx
	for {
		if rx.dl != nil && !rx.needed.Swap(false) && rx.aside() {
			<-rx.wake
			continue
		}
		rx.mu.Lock()
		rx.loopIn.Store(true)
		err := ep.readBatch(false, false)
		rx.loopIn.Store(false)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Cut short for a caller (or a driver's deadline left
			// behind): the read loop's reads have none. It stands
			// aside for the grace period, for the caller to drive.
			_ = rx.dl.SetReadDeadline(time.Time{})
			if rx.waiters.Load() > 0 {
				rx.lastGo.Store(int64(time.Since(timerEpoch)))
			}
			err = nil
		}
		rx.mu.Unlock()
		if rx.waiters.Load() > 0 {
			signal(rx.free)
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient failure (an interface going down, say): don't spin.
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// readBatch reads one batch from the link and handles it: every frame to its
// socket, then the answers of the whole batch; onThread waits on the calling
// thread where the link can (threadLink). The caller holds rx.mu.
func (ep *endpoint) readBatch(driver, onThread bool) error {
	rx := &ep.rx
	rx.sizeBuffers(ep.frameSize())
	var (
		n   int
		err error
	)
	if onThread && rx.tl != nil {
		rx.threadWaits.Add(1)
		n, err = rx.tl.ReadBatchOnThread(rx.ms)
	} else {
		n, err = ep.l.ReadBatch(rx.ms)
	}
	if driver {
		rx.driver.Store(nil)
	}
	if err != nil {
		return err
	}
	ep.handleBatch(n)
	return nil
}

// sizeBuffers makes the batch's buffers hold frames of size fs; the MTU can
// grow with link events. (A link may point Buf at memory of its own: the
// size is kept apart.) The caller holds rx.mu.
func (rx *rxState) sizeBuffers(fs int) {
	if fs > rx.size {
		rx.size = fs
		rx.ms = make([]link.Message, rxBatch)
		for i := range rx.ms {
			rx.ms[i].Buf = make([]byte, fs)
		}
	}
}

// poll reads and handles what the link holds, without waiting, unless
// another goroutine reads it. A Write whose send buffer never fills never
// waits, so never drives the link: the acknowledgments that free its
// buffer would all come through the read loop, a second busy goroutine that
// the poller wakes for each of them and that competes with the writer for
// the connection's lock and for the CPU. So Write polls once it has sent,
// and the read loop stands aside for it (*session, as for a driving call).
func (ep *endpoint) poll(session *bool) {
	rx := &ep.rx
	if rx.pl == nil {
		return
	}
	if !*session {
		*session = true
		rx.active.Add(1)
	}
	if !rx.mu.TryLock() {
		// The read loop, which stands aside after its batch, or a
		// driving call, which handles our frames too.
		return
	}
	rx.sizeBuffers(ep.frameSize())
	if n, err := rx.pl.TryReadBatch(rx.ms); err == nil && n > 0 {
		ep.handleBatch(n)
	}
	rx.mu.Unlock()
}

// handleBatch handles the first n frames of the batch just read: every frame
// to its socket, then the answers of the whole batch. The caller holds rx.mu.
func (ep *endpoint) handleBatch(n int) {
	rx := &ep.rx
	rx.woke = nil
	// One clock read for the batch, not one per frame.
	ep.rxNow = time.Now()
	for i := range n {
		ep.input(rx.ms[i].Buf[:rx.ms[i].N])
	}
	if ep.heard {
		// Reachability is confirmed once a batch, for its last
		// sender: one clock read, not one per frame.
		ep.disc.confirmFrom(ep.heardFrom, ep.rxNow)
		ep.heard = false
	}
	// The answers of the whole batch go out together, and a connection
	// busy elsewhere is left to whoever is at it: the reader never waits
	// for a connection.
	for i, c := range ep.pending {
		c.pending.Store(false)
		ep.rxTx.add(c)
		ep.pending[i] = nil
	}
	ep.pending = ep.pending[:0]
	ep.rxTx.send()
}

// A driver names a call that may drive an endpoint's link (a Read, Write
// or Dial of a connection, an Accept), so that a kick reaches the right one.
type driver struct {
	// waiting says the call waits for another to read the link for it.
	waiting atomic.Bool
	// accept marks an Accept's, which leaves the link to its owner.
	accept bool
}

// Handing the link over. An Accept that drives an endpoint's link while a
// connection's Read waits for it hands every frame of that connection over
// to the Read (a wake-up) and takes the link again before the Read can. So
// once the Accept's batches brought data for the same waiting Read, and
// nothing for the Accept, yieldAfter times in a row, that Read becomes the
// link's owner: while the owner drove within the grace period an Accept
// waits (for its connections, the read loop letting go, a deadline, Close)
// rather than drive. A connection's calls never wait for the owner: the
// cost of a missed frame falls on the Accept only, as a new connection
// waiting up to the grace period once the owner stops reading.
const yieldAfter = 3

// woken notes, during a batch, that it brought data for the Read d.
func (rx *rxState) woken(d *driver) {
	if d.waiting.Load() {
		rx.woke = d
	}
}

// yieldsTo reports whether an Accept should leave the link to its owner.
func (rx *rxState) yieldsTo() bool {
	o := rx.owner.Load()
	if o == nil {
		return false
	}
	if time.Duration(int64(time.Since(timerEpoch))-rx.ownerAt.Load()) < driveGrace {
		return true
	}
	rx.owner.CompareAndSwap(o, nil) // gone quiet
	return false
}

// noteAccept counts, after a batch an Accept read, how often in a row it
// brought data for the same waiting Read and nothing for the Accept (mine:
// something for it), and makes that Read the owner at yieldAfter. The
// caller holds mu.
func (rx *rxState) noteAccept(mine bool) {
	switch w := rx.woke; {
	case w == nil || mine:
		rx.streakOf, rx.streak = nil, 0
	case w == rx.streakOf:
		rx.streak++
	default:
		rx.streakOf, rx.streak = w, 1
	}
	if rx.streak >= yieldAfter {
		rx.owner.Store(rx.streakOf)
		rx.ownerAt.Store(int64(time.Since(timerEpoch)))
		rx.grants.Add(1)
		rx.streakOf, rx.streak = nil, 0
	}
}

// disown ends d's ownership of the link, as its connection closes.
func (rx *rxState) disown(d *driver) { rx.owner.CompareAndSwap(d, nil) }

// drive is what a call of c (who: c.rdrv or c.wdrv) does instead of waiting
// for ready (a token channel of c) while the link can be driven
// (endpoint.drive); answer says it waits for the answer to what c sent.
func (c *Conn) drive(who *driver, ready <-chan struct{}, d *deadline, session *bool, answer bool) bool {
	return c.ep.drive(who, c.closed, ready, d, session, answer)
}

// drive is what a call does instead of waiting for ready (a token channel
// of who's, or a channel closed once) while the link can be driven: it reads
// and handles one batch itself if nobody else reads the link; or else, if
// the read loop reads it, cuts that short, and waits for ready, the read
// loop letting go (rx.free), d's deadline or closed. It reports false,
// having done nothing, where the link cannot be driven or failed: the caller
// waits as before. *session says the call drove; it must then call letGo as
// it returns. answer says the call waits for the answer to something its
// connection sent: it then waits on its own thread (threadLink).
func (ep *endpoint) drive(who *driver, closed, ready <-chan struct{}, d *deadline, session *bool, answer bool) bool {
	rx := &ep.rx
	if rx.dl == nil {
		return false
	}
	accept := who.accept
	// Counted before trying, so that a driver letting go meanwhile
	// hands the link over (see letGo).
	rx.waiters.Add(1)
	if accept && rx.yieldsTo() || !rx.mu.TryLock() {
		// Another call drives (and handles our frames too), or the
		// read loop reads. While we wait we do not count as driving: if
		// the other call leaves, the read loop takes over.
		if *session {
			*session = false
			ep.letGo(true)
		}
		if rx.loopIn.Load() {
			_ = rx.dl.SetReadDeadline(aLongTimeAgo)
		}
		who.waiting.Store(true)
		select {
		case <-ready:
		case <-rx.free:
		case <-d.wait():
		case <-closed:
		}
		who.waiting.Store(false)
		rx.waiters.Add(-1)
		return true
	}
	rx.waiters.Add(-1)
	if !*session {
		*session = true
		rx.active.Add(1)
	}
	// The wait lasts until frames come, d's deadline, or a kick
	// (kick) for Close, a new deadline or a wake-up: a kick looks at
	// driver, so driver is set before the last look at what would end
	// the wait.
	err := rx.dl.SetReadDeadline(d.when())
	if err == nil {
		rx.driver.Store(who)
		select {
		case <-ready: // a hint, taken: the caller looks again
			rx.driver.Store(nil)
		case <-closed:
			rx.driver.Store(nil)
		case <-d.wait():
			rx.driver.Store(nil)
		default:
			err = ep.readBatch(true, answer)
			if accept {
				rx.noteAccept(len(ready) > 0)
			} else if rx.owner.Load() == who {
				rx.ownerAt.Store(int64(time.Since(timerEpoch)))
			}
		}
	}
	rx.mu.Unlock()
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	// Closed or failing: leave the link to the read loop.
	return false
}

// letGo ends the driving of a call that drove (session), as it returns:
// unless a call drives again within the grace period, the read loop takes
// the link over.
func (ep *endpoint) letGo(session bool) {
	if !session {
		return
	}
	rx := &ep.rx
	rx.lastGo.Store(int64(time.Since(timerEpoch)))
	if rx.active.Add(-1) == 0 && !rx.graceArmed.Swap(true) {
		rx.grace.Reset(driveGrace)
	}
}

// kickDriver cuts short the wait in the poller of a call of c driving the
// link, so that it looks again at c (closed, a new deadline).
func (c *Conn) kickDriver() {
	c.ep.kick(&c.rdrv)
	c.ep.kick(&c.wdrv)
}

// kick cuts short the wait in the poller of who, if who drives the link.
func (ep *endpoint) kick(who *driver) {
	if rx := &ep.rx; rx.dl != nil && rx.driver.Load() == who {
		_ = rx.dl.SetReadDeadline(aLongTimeAgo)
	}
}
