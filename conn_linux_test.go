package myproto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"
	"time"
)

// servePeer is the child process of TestIntegrationConnPeerKilled: it
// listens on spec, accepts one connection, sends one byte and waits to be
// killed, never closing anything.
func servePeer(spec string) {
	ln, err := Listen("myproto", spec)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("ready", ln.Addr())
	c, err := ln.Accept()
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	c.Write([]byte("x"))
	io.Copy(io.Discard, os.Stdin) // until the parent kills us
	os.Exit(0)
}

// TestIntegrationConnPeerKilled kills the process at the other end of a
// connection: nothing tells this side, as when a host loses power, so a
// blocked Read must fail by itself within the user timeout (through
// keepalive when idle, through unacknowledged data when writing).
func TestIntegrationConnPeerKilled(t *testing.T) {
	watchdog(t)
	h := vethHosts(t, 1500)
	const userTimeout = time.Second
	for _, tc := range []struct {
		name  string
		d     Dialer
		write bool
	}{
		{"idle", Dialer{KeepAlive: 200 * time.Millisecond, UserTimeout: userTimeout}, false},
		{"writing", Dialer{KeepAlive: -1, UserTimeout: userTimeout}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The child listens on a's interface, in this namespace; this
			// process dials it through host b, on the far end of the pair.
			peer := startChild(t, "MYPROTO_STREAM_PEER="+h.aIf+":0")
			a, err := ResolveAddr("myproto", peer.ready)
			if err != nil {
				t.Fatal(err)
			}
			a.Zone = h.bIf
			c, err := h.b.dial(context.Background(), &tc.d, "myproto", a.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}

			ch := readErr(c)
			peer.cmd.Process.Kill()
			peer.cmd.Wait()
			killed := time.Now()
			if tc.write {
				if _, err := c.Write([]byte("anyone there?")); err != nil {
					t.Fatal(err)
				}
			}
			err = waitErr(t, "Read", ch)
			d := time.Since(killed)
			t.Logf("Read failed %v after the kill: %v", d.Round(time.Millisecond), err)
			wantOpError(t, err, "read", syscall.ETIMEDOUT)
			if !errors.Is(err, syscall.ETIMEDOUT) || d > userTimeout+500*time.Millisecond {
				t.Fatalf("Read failed after %v, want within the user timeout of %v", d, userTimeout)
			}
			if tc.write && d < userTimeout {
				t.Fatalf("gave up on unacknowledged data after %v, before the user timeout of %v", d, userTimeout)
			}
		})
	}
}
