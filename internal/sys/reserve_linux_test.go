//go:build linux

package sys

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// testPort returns a port unlikely to be held by anything but this test run:
// several test binaries may share the network namespace.
func testPort(t *testing.T, i int) uint16 {
	t.Helper()
	return uint16(40000 + (os.Getpid()*7+i)%20000)
}

func TestReservePort(t *testing.T) {
	const etherType = 0x88B5
	port := testPort(t, 0)

	if PortOwned(etherType, port) {
		t.Fatalf("port %d owned before anyone reserved it", port)
	}

	r, err := ReservePort(etherType, port)
	if err != nil {
		t.Fatalf("ReservePort: %v", err)
	}
	if !PortOwned(etherType, port) {
		t.Error("PortOwned = false while reserved")
	}

	_, err = ReservePort(etherType, port)
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second ReservePort: err = %v, want EADDRINUSE", err)
	}
	t.Logf("second ReservePort: %v", err)

	// The same port of another EtherType is a different name.
	other, err := ReservePort(etherType+1, port)
	if err != nil {
		t.Fatalf("ReservePort of another EtherType: %v", err)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}

	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
	if PortOwned(etherType, port) {
		t.Error("PortOwned = true after Close")
	}

	r, err = ReservePort(etherType, port)
	if err != nil {
		t.Fatalf("ReservePort after Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestPortOwnedDoesNotTakeName(t *testing.T) {
	const etherType = 0x88B5
	port := testPort(t, 1)
	for range 100 {
		if PortOwned(etherType, port) {
			t.Fatal("port owned")
		}
	}
	r, err := ReservePort(etherType, port)
	if err != nil {
		t.Fatalf("ReservePort after probing: %v", err)
	}
	r.Close()
}

// TestReservePortOtherProcess checks that a reservation is seen across
// processes and released when its holder dies, by re-running this test
// binary as the holder.
func TestReservePortOtherProcess(t *testing.T) {
	if os.Getenv("MYPROTO_SYS_RESERVE_CHILD") != "" {
		var etherType, port uint16
		fmt.Sscan(os.Getenv("MYPROTO_SYS_RESERVE_CHILD"), &etherType, &port)
		if _, err := ReservePort(etherType, port); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("reserved")
		var b [1]byte
		os.Stdin.Read(b[:]) // hold until the parent closes our stdin or kills us
		os.Exit(0)
	}

	const etherType = 0x88B5
	port := testPort(t, 2)
	cmd := exec.Command(os.Args[0], "-test.run=^TestReservePortOtherProcess$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("MYPROTO_SYS_RESERVE_CHILD=%d %d", etherType, port))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	var line string
	if _, err := fmt.Fscanln(stdout, &line); err != nil || line != "reserved" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child said %q, %v", line, err)
	}

	if !PortOwned(etherType, port) {
		t.Error("PortOwned = false while another process holds the port")
	}
	if _, err := ReservePort(etherType, port); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("ReservePort while another process holds the port: %v, want EADDRINUSE", err)
	}

	// A killed holder frees the port without running any code of its own.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if PortOwned(etherType, port) {
		t.Error("PortOwned = true after the holder died")
	}
	r, err := ReservePort(etherType, port)
	if err != nil {
		t.Fatalf("ReservePort after the holder died: %v", err)
	}
	r.Close()
}
