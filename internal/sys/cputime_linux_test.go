package sys_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/myproto/myproto/internal/sys"
)

// TestThreadCPUTime checks that a thread's CPU time grows while it works
// and stands still while it sleeps.
func TestThreadCPUTime(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t0 := sys.ThreadCPUTime()
	for start := time.Now(); time.Since(start) < 20*time.Millisecond; {
	}
	t1 := sys.ThreadCPUTime()
	time.Sleep(50 * time.Millisecond)
	t2 := sys.ThreadCPUTime()
	if t0 <= 0 || t1-t0 < time.Millisecond || t1-t0 > 30*time.Millisecond {
		t.Errorf("20 ms of work took %v of thread CPU time (from %v)", t1-t0, t0)
	}
	if t2-t1 > 5*time.Millisecond {
		t.Errorf("50 ms of sleep took %v of thread CPU time", t2-t1)
	}
}
