//go:build race

package memlink_test

const raceEnabled = true
