//go:build !race

package myproto

const raceEnabled = false
