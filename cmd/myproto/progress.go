package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"sync/atomic"
	"time"
)

// A progress meter shows a transfer on a terminal as pv and curl do: bytes
// each way, the rate, and the time left when the size is known, on one line
// of standard error rewritten in place, and a summary line at the end.
// Nothing is shown unless standard error is a terminal and standard output
// is not (where received data would mix with it), so pipes and scripts see
// only the data.
type progress struct {
	w     io.Writer
	total int64 // bytes to send, or -1 when not known
	start time.Time

	sent, recv atomic.Int64

	stop chan struct{}
	done chan struct{}
}

// progressInterval is how often the line is redrawn.
const progressInterval = 500 * time.Millisecond

// showProgress reports whether a transfer between these files should show
// progress on stderr.
func showProgress(stdout, stderr io.Writer) bool {
	e, ok := stderr.(*os.File)
	if !ok || !isTerminal(e) {
		return false
	}
	o, ok := stdout.(*os.File)
	return !ok || !isTerminal(o)
}

// inputSize returns the size of stdin when it is a regular file, else -1.
func inputSize(stdin *os.File) int64 {
	if fi, err := stdin.Stat(); err == nil && fi.Mode().IsRegular() {
		if off, err := stdin.Seek(0, io.SeekCurrent); err == nil {
			return fi.Size() - off
		}
		return fi.Size()
	}
	return -1
}

// startProgress starts a meter drawing on w, or returns nil when on is
// false; a nil *progress counts nothing and draws nothing.
func startProgress(on bool, w io.Writer, total int64) *progress {
	if !on {
		return nil
	}
	p := &progress{w: w, total: total, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *progress) run() {
	defer close(p.done)
	t := time.NewTicker(progressInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			// \r and erase to the end of the line (ECMA-48 EL).
			fmt.Fprintf(p.w, "\r%s\x1b[K", formatProgress(p.sent.Load(), p.recv.Load(), p.total, time.Since(p.start), false))
		case <-p.stop:
			return
		}
	}
}

// addSent and addRecv count bytes.
func (p *progress) addSent(n int) {
	if p != nil {
		p.sent.Add(int64(n))
	}
}

func (p *progress) addRecv(n int) {
	if p != nil {
		p.recv.Add(int64(n))
	}
}

// finish stops the meter and leaves the summary on its line.
func (p *progress) finish() {
	if p == nil {
		return
	}
	close(p.stop)
	<-p.done
	fmt.Fprintf(p.w, "\r%s\x1b[K\n", formatProgress(p.sent.Load(), p.recv.Load(), p.total, time.Since(p.start), true))
}

// formatProgress is the meter's line: "sent 8.0 MiB of 16.0 MiB (50%),
// received 0 B, 95.1 MiB/s, ETA 0:01", or at the end "sent 16.0 MiB,
// received 0 B in 0.2s, 95.1 MiB/s". The rate counts both directions.
func formatProgress(sent, recv, total int64, elapsed time.Duration, final bool) string {
	var rate float64
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(sent+recv) / s
	}
	line := "sent " + formatBytes(sent)
	if total >= 0 && !final {
		pct := 100.0
		if total > 0 {
			pct = 100 * float64(sent) / float64(total)
		}
		line += fmt.Sprintf(" of %s (%.0f%%)", formatBytes(total), pct)
	}
	line += ", received " + formatBytes(recv)
	if final {
		return fmt.Sprintf("%s in %v, %s/s", line, elapsed.Round(time.Millisecond), formatBytes(int64(rate)))
	}
	line += ", " + formatBytes(int64(rate)) + "/s"
	if total >= 0 && sent < total {
		if sendRate := float64(sent) / elapsed.Seconds(); sendRate > 0 {
			line += ", ETA " + formatETA(float64(total-sent)/sendRate)
		}
	}
	return line
}

// formatBytes gives n in binary units: "512 B", "1.5 KiB", "16.0 MiB".
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[i])
}

// formatETA gives secs as h:mm:ss or m:ss, rounded up to the second, and
// anything from 100 hours as "--:--:--".
func formatETA(secs float64) string {
	if secs >= 100*3600 {
		return "--:--:--"
	}
	s := int64(math.Ceil(secs))
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
