package stream

import (
	"bytes"
	"sync"
	"testing"
)

// testChunks lends chunks to the tests' engines from a sync.Pool, as the
// root package's pool does, so that allocation counts and memory are those
// of real connections.
var testChunks = &syncChunks{}

type syncChunks struct{ p sync.Pool }

func (s *syncChunks) Get() *Chunk {
	if c, ok := s.p.Get().(*Chunk); ok {
		return c
	}
	return new(Chunk)
}

func (s *syncChunks) Put(c *Chunk) { s.p.Put(c) }

// pooled returns cfg taking its chunks from testChunks unless it names a
// pool of its own.
func pooled(cfg Config) Config {
	if cfg.Chunks == nil {
		cfg.Chunks = testChunks
	}
	return cfg
}

// TestChunksDefault: a Config without a pool takes chunks from the heap and
// moves data all the same.
func TestChunksDefault(t *testing.T) {
	if c := (Config{}).withDefaults(); c.Chunks != (heapChunks{}) {
		t.Fatalf("default pool %T", c.Chunks)
	}
	cfg := Config{NoDelay: true, Chunks: heapChunks{}}
	p := newTestPair(t, cfg, cfg)
	data := bytes.Repeat([]byte("0123456789"), 10_000)
	if n := p.c.Write(data); n != len(data) {
		t.Fatalf("wrote %d of %d", n, len(data))
	}
	p.flush()
	if got := readAll(p.s); !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, want %d intact", len(got), len(data))
	}
	p.tick(maxAckDelay)
	if c, s := p.c.Info(p.now).MemoryHeld, p.s.Info(p.now).MemoryHeld; c != 0 || s != 0 {
		t.Errorf("idle connection holds %d and %d bytes of buffers", c, s)
	}
}
