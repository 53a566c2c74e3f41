//go:build race

package myproto

// raceEnabled: the race detector is on, which makes sync.Pool drop items at
// random and inflates memory, so allocation and RSS checks relax.
const raceEnabled = true
