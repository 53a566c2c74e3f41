package stream

import "time"

// Socket options on a live connection: TCPConn.SetNoDelay, SetKeepAlive /
// SetKeepAlivePeriod, TCP_USER_TIMEOUT, SetReadBuffer and SetWriteBuffer.

// SetNoDelay turns Nagle's algorithm off (true) or on.
func (e *Engine) SetNoDelay(v bool) { e.cfg.NoDelay = v }

// SetKeepAlive sets the idle time before a keepalive PING; 0 or less is off.
func (e *Engine) SetKeepAlive(d time.Duration) { e.cfg.KeepAlive = max(d, 0) }

// LimitPacket lowers the largest packet body sent to limit (an interface
// MTU that shrank); data is re-chunked by offset, so retransmissions fit too.
func (e *Engine) LimitPacket(limit int) {
	if e.sendMax > 0 {
		e.sendMax = max(min(e.sendMax, limit), MinMaxPacket)
	}
}

// SetUserTimeout sets how long sent data may stay unacknowledged before the
// connection fails with ErrTimeout; 0 or less restores the default.
func (e *Engine) SetUserTimeout(d time.Duration) {
	if d <= 0 {
		d = defaultUserTimeout
	}
	e.cfg.UserTimeout = d
}

// SetSendBuffer changes how many unacknowledged and unsent bytes the
// connection holds (0 or less: the default, of which at most unsentMax
// unsent; see sendLimit). Shrinking below what is held only stops writes
// until acknowledgments make room.
func (e *Engine) SetSendBuffer(n int) {
	e.capUnsent = n <= 0 && !e.sized
	n = bufferSize(n)
	e.sbuf.limit = n
	e.cfg.SendBuffer = n
}

// SizeSendBuffer makes the send buffer hold up to its configured size from
// now on, sent or not: a message connection needs room for a whole
// message, up to that size.
func (e *Engine) SizeSendBuffer() {
	e.sized = true
	e.capUnsent = false
}

// SetRecvBuffer changes the largest receive window (0 or less: the
// default). Growing lets auto-tuning go further; shrinking stops granting
// credit beyond the new size, but what was already advertised cannot be
// taken back and stays accepted, as with TCP's window.
func (e *Engine) SetRecvBuffer(n int) {
	n = bufferSize(n)
	b := &e.rbuf
	b.maxRange = max(b.maxRange, recvMaxRanges(n))
	e.cfg.RecvBuffer = n
	e.rcvWindow = min(e.rcvWindow, uint64(n))
}

func bufferSize(n int) int {
	if n <= 0 {
		return DefaultBuffer
	}
	return min(n, maxStreamBuffer)
}
