package stream

// Stream bytes live in fixed-size chunks shared by every connection through a
// pool, so an idle or slow connection holds only the chunks its unacknowledged
// or unread bytes occupy, never more than its configured buffer plus a chunk.
const chunkSize = 16 << 10

// A Chunk holds part of a connection's send or receive buffer.
type Chunk [chunkSize]byte

// A ChunkPool lends chunks to the connections' buffers (Config.Chunks) and
// takes them back once their bytes are acknowledged or read. Engines driven
// from different goroutines share one, so it must be safe for concurrent
// use; the root package's wraps a sync.Pool (this package takes no locks).
type ChunkPool interface {
	Get() *Chunk
	Put(*Chunk)
}

// heapChunks is the ChunkPool of a Config without one: chunks come from the
// heap and go back to the garbage collector.
type heapChunks struct{}

func (heapChunks) Get() *Chunk { return new(Chunk) }
func (heapChunks) Put(*Chunk)  {}

// chunkRing maps a sliding window of stream offsets onto chunks: offset o
// lives in slot (o/chunkSize) mod len(slots). The slots grow (fit) to cover
// the live offsets, so a window of w bytes needs at most w/chunkSize+1 of
// them and two live offsets never share a slot by accident; a connection
// that never sent or received data has none. Chunks are taken from the pool
// when first written and returned by release.
type chunkRing struct {
	slots []*Chunk
	pool  ChunkPool
	held  int // chunks currently taken from the pool
}

func newChunkRing(pool ChunkPool) chunkRing {
	return chunkRing{pool: pool}
}

// fit makes room for offsets [lo, hi), keeping the chunks of the live
// offsets [lo, live). The slots at least double when they grow, so a
// steady window stops growing them after a few writes.
func (r *chunkRing) fit(lo, live, hi uint64) {
	if hi <= lo {
		return
	}
	need := int((hi-1)/chunkSize - lo/chunkSize + 1)
	if need <= len(r.slots) {
		return
	}
	n := max(need, 2*len(r.slots), 4)
	slots := make([]*Chunk, n)
	if len(r.slots) > 0 {
		for k := lo / chunkSize; k*chunkSize < live; k++ {
			slots[k%uint64(n)] = r.slots[k%uint64(len(r.slots))]
		}
	}
	r.slots = slots
}

// shrink gives back the slots of a ring that holds no chunk.
func (r *chunkRing) shrink() {
	if r.held == 0 {
		r.slots = nil
	}
}

func (r *chunkRing) slot(off uint64) **Chunk {
	return &r.slots[(off/chunkSize)%uint64(len(r.slots))]
}

// write copies p to offset off, taking chunks from the pool as needed.
func (r *chunkRing) write(off uint64, p []byte) {
	for len(p) > 0 {
		s := r.slot(off)
		if *s == nil {
			*s = r.pool.Get()
			r.held++
		}
		n := copy((*s)[off%chunkSize:], p)
		p = p[n:]
		off += uint64(n)
	}
}

// read copies len(p) bytes from offset off into p; they must have been
// written and not released.
func (r *chunkRing) read(off uint64, p []byte) {
	for len(p) > 0 {
		n := copy(p, (*r.slot(off))[off%chunkSize:])
		p = p[n:]
		off += uint64(n)
	}
}

// releaseChunk returns the chunk holding off to the pool, if one is held.
func (r *chunkRing) releaseChunk(off uint64) {
	s := r.slot(off)
	if *s != nil {
		r.pool.Put(*s)
		*s = nil
		r.held--
	}
}

// advance releases the chunks that held offsets in [from, to) and now hold
// nothing live because everything below to is gone: every chunk that ends at
// or before to.
func (r *chunkRing) advance(from, to uint64) {
	for c := from / chunkSize; c < to/chunkSize; c++ {
		r.releaseChunk(c * chunkSize)
	}
}

// releaseAll returns every chunk to the pool.
func (r *chunkRing) releaseAll() {
	for i, c := range r.slots {
		if c != nil {
			r.pool.Put(c)
			r.slots[i] = nil
		}
	}
	r.held = 0
}

// sendBuffer holds the bytes the application wrote that the peer has not yet
// acknowledged: [una, end). Its size never exceeds limit.
type sendBuffer struct {
	ring  chunkRing
	una   uint64 // every byte below has been acknowledged
	end   uint64 // next byte the application writes
	limit int
}

func newSendBuffer(limit int, pool ChunkPool) sendBuffer {
	return sendBuffer{ring: newChunkRing(pool), limit: limit}
}

// free is the room left under limit, at most b.limit.
func (b *sendBuffer) free(limit int) int { return max(min(limit, b.limit)-int(b.end-b.una), 0) }

// write appends as much of p as fits under limit and returns how much it
// took.
func (b *sendBuffer) write(p []byte, limit int) int {
	n := min(len(p), b.free(limit))
	if n <= 0 {
		return 0
	}
	b.ring.fit(b.una, b.end, b.end+uint64(n))
	b.ring.write(b.end, p[:n])
	b.end += uint64(n)
	return n
}

// ackTo records that every byte below una has been acknowledged and frees
// the chunks that held them. When nothing remains, the last partial chunk
// goes back too, so an idle connection holds no chunk at all.
func (b *sendBuffer) ackTo(una uint64) {
	una = min(una, b.end)
	if una <= b.una {
		return
	}
	b.ring.advance(b.una, una)
	b.una = una
	if b.una == b.end {
		b.ring.releaseChunk(b.una)
	}
}

// recvBuffer reassembles received bytes: everything the reader has not read
// yet, at offsets [readOff, readOff+window), in order or not. have records
// which offsets at or above readOff have arrived.
type recvBuffer struct {
	ring     chunkRing
	readOff  uint64
	have     rangeSet
	maxRange int // bound on len(have.r), so the peer cannot make it grow without end
}

// newRecvBuffer returns a buffer for a window of at most limit bytes. The
// bound on disjoint pieces allows a hole every 2 KiB of window (one every
// packet and a half at MTU 1500) and at least 64: beyond that, a piece
// that would open yet another hole is dropped and comes again later.
func newRecvBuffer(limit int, pool ChunkPool) recvBuffer {
	return recvBuffer{ring: newChunkRing(pool), maxRange: recvMaxRanges(limit)}
}

func recvMaxRanges(limit int) int { return min(max(limit/2048, 64), 1<<16) }

// readable is how many bytes are ready in order.
func (b *recvBuffer) readable() int {
	if b.have.empty() || b.have.first().lo != b.readOff {
		return 0
	}
	return int(b.have.first().hi - b.readOff)
}

// contiguous is the offset up to which every byte has arrived.
func (b *recvBuffer) contiguous() uint64 {
	if b.have.empty() || b.have.first().lo != b.readOff {
		return b.readOff
	}
	return b.have.first().hi
}

// highest is one past the highest byte received.
func (b *recvBuffer) highest() uint64 {
	if b.have.empty() {
		return b.readOff
	}
	return b.have.last().hi
}

// buffered is how many received bytes are held, in order or not.
func (b *recvBuffer) buffered() int {
	n := 0
	for _, r := range b.have.r {
		n += int(r.hi - r.lo)
	}
	return n
}

// insert stores p at offset off, which the caller has already clipped to
// the window, and reports how many bytes were new. It refuses data that
// would split the set of ranges beyond maxRange.
func (b *recvBuffer) insert(off uint64, p []byte) (fresh int, ok bool) {
	lo, hi := off, off+uint64(len(p))
	if hi <= b.readOff {
		return 0, true
	}
	if lo < b.readOff {
		p = p[b.readOff-lo:]
		lo = b.readOff
	}
	if lo >= hi {
		return 0, true
	}
	if len(b.have.r) >= b.maxRange && b.have.wouldSplit(lo, hi) {
		return 0, false
	}
	b.ring.fit(b.readOff, b.highest(), max(hi, b.highest()))
	// Copy only the gaps: duplicates cost no copying and never overwrite.
	for cur := lo; cur < hi; {
		g := b.have.firstGap(cur, hi)
		if g.lo >= g.hi {
			break
		}
		b.ring.write(g.lo, p[g.lo-lo:g.hi-lo])
		fresh += int(g.hi - g.lo)
		cur = g.hi
	}
	b.have.add(lo, hi)
	return fresh, true
}

// read copies in-order bytes into p and frees what it consumed.
func (b *recvBuffer) read(p []byte) int {
	n := min(len(p), b.readable())
	if n == 0 {
		return 0
	}
	b.ring.read(b.readOff, p[:n])
	old := b.readOff
	b.readOff += uint64(n)
	b.have.removeBelow(b.readOff)
	b.ring.advance(old, b.readOff)
	if b.have.empty() {
		b.ring.releaseChunk(b.readOff)
	}
	return n
}

// consumeInOrder marks the next n bytes, which arrived in order and went
// straight to the reader (Engine.ReadInto), as read: they never enter the
// ring. Nothing may be buffered in [readOff, readOff+n).
func (b *recvBuffer) consumeInOrder(n int) {
	old := b.readOff
	b.readOff += uint64(n)
	b.have.removeBelow(b.readOff)
	if len(b.ring.slots) == 0 {
		return // no chunk was ever taken: nothing to release
	}
	b.ring.advance(old, b.readOff)
	if b.have.empty() {
		b.ring.releaseChunk(b.readOff)
	}
}

// dropUnordered discards everything past the in-order prefix, as after a
// reset: those bytes can never be read.
func (b *recvBuffer) dropUnordered() {
	c, h := b.contiguous(), b.highest()
	if h <= c {
		return
	}
	b.have.remove(c, h)
	// Chunks wholly past the prefix hold nothing readable any more.
	for ci := (c + chunkSize - 1) / chunkSize; ci*chunkSize < h; ci++ {
		b.ring.releaseChunk(ci * chunkSize)
	}
}

// release returns every chunk to the pool.
func (b *recvBuffer) release() {
	b.ring.releaseAll()
	b.have.clear()
}
