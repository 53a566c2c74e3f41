package myproto

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/sys"
)

// TestConnRecvMemoryBudget: connections whose application does not read
// hold no more, together, than the stack's receive budget and a small share
// each; a connection whose application reads still moves its data meanwhile;
// and once the others are read, every byte arrives intact and the count
// goes back to zero.
func TestConnRecvMemoryBudget(t *testing.T) {
	onBothLinks(t, func(t *testing.T, h *testHosts) {
		watchdog(t)
		const (
			nconns = 64
			each   = 256 << 10 // a new connection's whole window
			budget = 4 << 20
			legit  = 1 << 20
		)
		h.b.rmem.budget = budget
		ln := listenB(t, h, nil)
		pattern := func(i, n int) []byte {
			b := make([]byte, n)
			for j := range b {
				b[j] = byte(i + j*7 + j>>9)
			}
			return b
		}
		var servers []*Conn
		var wg sync.WaitGroup
		for i := range nconns {
			c, s := streamPair(t, h, ln)
			defer c.Close()
			defer s.Close()
			servers = append(servers, s)
			wg.Go(func() {
				if _, err := c.Write(pattern(i, each)); err != nil {
					t.Errorf("conn %d: write: %v", i, err)
				}
			})
		}
		wg.Wait()
		// Until what the stack holds settles.
		held := func() int64 { return h.b.rmem.held.Load() }
		last, since := held(), time.Now()
		for time.Since(since) < 300*time.Millisecond {
			time.Sleep(20 * time.Millisecond)
			if n := held(); n != last {
				last, since = n, time.Now()
			}
		}
		bound := int64(budget + nconns*minRecvShare + 64*9000)
		t.Logf("%d connections × %d KiB unread: the stack holds %.2f MiB (budget %d MiB, bound %.2f MiB, %d MiB without one)",
			nconns, each>>10, float64(last)/(1<<20), budget>>20, float64(bound)/(1<<20), nconns*each>>20)
		if last > bound || last < budget {
			t.Errorf("the stack holds %d bytes; want %d to %d", last, budget, bound)
		}

		// A connection whose application reads goes on, if slowly.
		c, s := streamPair(t, h, ln)
		defer c.Close()
		defer s.Close()
		go io.Copy(s, s)
		start := time.Now()
		go c.Write(pattern(99, legit))
		got := make([]byte, legit)
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, pattern(99, legit)) {
			t.Fatalf("echo under the budget: %v, intact %v", err, bytes.Equal(got, pattern(99, legit)))
		}
		t.Logf("meanwhile, %d KiB echoed through a connection that reads in %v", legit>>10, time.Since(start).Round(time.Millisecond))

		// The others are read: everything arrives.
		start = time.Now()
		for i, s := range servers {
			wg.Go(func() {
				b := make([]byte, each)
				if _, err := io.ReadFull(s, b); err != nil || !bytes.Equal(b, pattern(i, each)) {
					t.Errorf("conn %d: %v, intact %v", i, err, bytes.Equal(b, pattern(i, each)))
				}
			})
		}
		wg.Wait()
		t.Logf("then all %d read, intact, in %v", nconns, time.Since(start).Round(time.Millisecond))
		if n := held(); n > int64(nconns*minRecvShare) {
			t.Errorf("after every byte was read, the stack holds %d bytes", n)
		}
		for _, s := range servers {
			s.Close()
		}
		s.Close()
		deadline := time.Now().Add(5 * time.Second)
		for held() != 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := held(); n != 0 {
			t.Errorf("after the connections closed, the stack counts %d bytes held", n)
		}
	})
}

// TestRecvBudget: Config.ReceiveMemory sets the budget; by default it is
// a sixteenth of what the process may use, never under 64 MiB.
func TestRecvBudget(t *testing.T) {
	if got := recvBudget(&Config{ReceiveMemory: 5 << 20}); got != 5<<20 {
		t.Errorf("with ReceiveMemory 5 MiB, the budget is %d", got)
	}
	got, limit := recvBudget(&Config{}), int64(sys.MemoryLimit())
	t.Logf("default budget %d MiB of a %d MiB limit", got>>20, limit>>20)
	if got < 64<<20 || got != max(64<<20, limit/16) {
		t.Errorf("default budget %d, want max(64 MiB, %d/16)", got, limit)
	}
}
