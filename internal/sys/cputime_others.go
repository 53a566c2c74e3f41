//go:build !linux

package sys

import "time"

// ThreadCPUTime returns 0: the stack measures its threads on Linux only.
func ThreadCPUTime() time.Duration { return 0 }
