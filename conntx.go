package myproto

import (
	"time"

	"github.com/myproto/myproto/internal/stream"
)

// A connTx gathers what several connections on one endpoint have to send
// into one sendmmsg(2): the receive loop answers a batch of frames for many
// connections (keepalive PINGs, FINs) with one system call instead of one
// each, and so does the timer queue for timers that fall due together.
//
// A connection's frames must leave in packet-number order, so a connTx
// holds the connection's sendMu from building its frames until they are
// sent. It only ever tries that lock: a connection another goroutine is
// flushing is left to that goroutine, which sees the request (flushReq) and
// flushes once more before it lets go. So the receive loop never waits for
// a connection's work.
type connTx struct {
	ep    *endpoint
	tb    *txBatch
	n     int      // frames in tb
	conns []txConn // connections collected, their sendMu held
}

// txConn is a connection in a connTx.
type txConn struct {
	c        *Conn
	finished bool // the engine is done: retire the connection once sent
}

// getConnTx returns a connTx for ep, from its pool.
func (ep *endpoint) getConnTx() *connTx {
	q, ok := ep.connTxPool.Get().(*connTx)
	if !ok {
		q = &connTx{ep: ep}
	}
	return q
}

func (ep *endpoint) putConnTx(q *connTx) { ep.connTxPool.Put(q) }

// add collects what c has to send now, unless another goroutine is at it.
func (q *connTx) add(c *Conn) {
	c.flushReq.Store(true)
	if !c.sendMu.TryLock() {
		return // the holder flushes again for us: see release
	}
	if q.tb == nil || cap(q.tb.ms[0].Buf) < q.ep.frameSize() {
		if q.tb != nil {
			q.ep.putBatch(q.tb)
		}
		q.tb = q.ep.getBatch()
	}
	c.flushReq.Store(false)
	fin := false
	c.mu.Lock()
	if !c.done {
		now := time.Now()
		size := q.ep.frameSize()
		for {
			if q.n == len(q.tb.ms) {
				// Full: the rest goes once this batch is out (see send).
				c.flushReq.Store(true)
				break
			}
			m := &q.tb.ms[q.n]
			buf := m.Buf[:cap(m.Buf)]
			bl, flags, dst := c.e.NextPacket(now, buf[offBody:size])
			if bl == 0 {
				break
			}
			if c.msg && flags&stream.FlagSYN != 0 {
				flags |= flagMessage
			}
			h := header{dst: c.peer, src: c.src, etherType: c.s.etherType, typ: typeStream,
				flags: flags, srcPort: c.local.Port, dstPort: c.remote.Port, connID: dst}
			m.N = marshalFrame(buf, &h, bl)
			q.n++
		}
		c.armTimerLocked()
		fin = c.e.Done()
	}
	c.mu.Unlock()
	q.conns = append(q.conns, txConn{c, fin})
}

// send sends what was collected and lets go of the connections: it wakes
// their blocked callers, retires those whose engine is done, and collects
// again from any asked to flush meanwhile, until nothing is left.
func (q *connTx) send() {
	done := 0
	for {
		if q.n > 0 {
			if _, err := q.ep.l.WriteBatch(q.tb.ms[:q.n]); err == nil {
				q.ep.countOut(q.tb.ms[:q.n])
			}
			q.n = 0
		}
		if done == len(q.conns) {
			break
		}
		// Releasing may collect again (appending): those frames go out
		// at the top of the next round, before their release.
		for end := len(q.conns); done < end; done++ {
			q.release(q.conns[done])
			q.conns[done] = txConn{}
		}
	}
	q.conns = q.conns[:0]
}

// release lets go of a connection whose frames are sent.
func (q *connTx) release(t txConn) {
	c := t.c
	if t.finished {
		c.finish()
	}
	c.sendMu.Unlock()
	if c.wake() && q == &q.ep.rxTx {
		q.ep.rx.woken(&c.rdrv) // the batch's answers: see yieldAfter
	}
	if c.flushReq.Load() {
		q.add(c)
	}
}
