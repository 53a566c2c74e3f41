//go:build !linux

package main

import "os"

// isTerminal reports false: myproto runs on Linux only, and elsewhere the
// tools fail before they would show progress.
func isTerminal(f *os.File) bool { return false }
