package sys

import (
	"time"

	"golang.org/x/sys/unix"
)

// ThreadCPUTime returns the CPU time the calling thread has used, user and
// system (CLOCK_THREAD_CPUTIME_ID, clock_gettime(2)): time spent waiting
// does not count, time in system calls does, and so does the softirq work
// they do on the way. The caller must be locked to its thread
// (runtime.LockOSThread) for two readings to be comparable. It returns 0
// if the clock cannot be read.
func ThreadCPUTime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
