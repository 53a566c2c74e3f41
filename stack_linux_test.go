package myproto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/myproto/myproto/internal/testenv"
)

// TestIntegrationStacksSideBySide: two Stacks of one process, on two
// EtherTypes, talk across a veth pair at the same time, each to its own
// kind; closing them leaves no goroutine and frees their ports at once.
func TestIntegrationStacksSideBySide(t *testing.T) {
	watchdog(t)
	p := testenv.NewPair(t, 1500)
	ignore := goleak.IgnoreCurrent()
	type pair struct{ a, b *Stack }
	var pairs []pair
	for _, et := range []uint16{0x88b5, 0x88b6} {
		a, err := openStack(&Config{EtherType: et, Name: "side-a"}, packetProvider{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := openStack(&Config{EtherType: et, Name: "side-b"}, packetProvider{ns: p.NetnsB})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.close(); b.close() })
		pairs = append(pairs, pair{&Stack{a}, &Stack{b}})
	}
	done := make(chan error, len(pairs))
	for _, pr := range pairs {
		et := pr.a.s.etherType
		ln, err := pr.b.Listen("myproto", p.B.Name+":7")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := ln.Accept()
			if err != nil {
				done <- err
				return
			}
			_, err = io.Copy(c, c)
			c.Close()
			done <- err
		}()
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := pr.a.DialContext(ctx, "myproto", fmt.Sprintf("[%v%%%s]:7", p.B.HardwareAddr, p.A.Name))
			if err != nil {
				done <- err
				return
			}
			msg := strings.Repeat(fmt.Sprintf("%#04x ", et), 100000)
			go func() {
				io.WriteString(c, msg)
				c.(*Conn).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			c.Close()
			if err == nil && string(got) != msg {
				err = fmt.Errorf("EtherType %#04x: echo of %d bytes came back as %d other bytes", et, len(msg), len(got))
			}
			done <- err
		}()
	}
	for range 2 * len(pairs) {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for _, pr := range pairs {
		for _, s := range []*Stack{pr.a, pr.b} {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The ports are free at once: another stack binds the listener's.
	s, err := openStack(&Config{Name: "side-c"}, packetProvider{ns: p.NetnsB})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	c := &Stack{s}
	ln, err := c.Listen("myproto", p.B.Name+":7")
	if err != nil {
		t.Fatalf("port of a closed stack: %v", err)
	}
	ln.Close()
	c.Close()
	goleak.VerifyNone(t, ignore)
}

// TestDefaultStackConflict: a second, different Config for the default
// stack of an EtherType is an error, not silently ignored.
func TestDefaultStackConflict(t *testing.T) {
	const et = 0x88bf // a default stack of its own
	if _, err := defaultStack(&Config{EtherType: et, Name: "first"}); err != nil {
		t.Fatal(err)
	}
	if _, err := defaultStack(&Config{EtherType: et, Name: "first"}); err != nil {
		t.Errorf("the same Config again: %v", err)
	}
	if _, err := defaultStack(nil); err != nil {
		t.Errorf("nil Config: %v", err)
	}
	d := Dialer{Config: &Config{EtherType: et, Name: "second"}}
	_, err := d.Dial("myproto", "[02:00:5e:00:00:01]:1")
	if err == nil || !strings.Contains(err.Error(), "another Config") {
		t.Errorf("dial with a conflicting Config: %v, want an error saying so", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "dial" {
		t.Errorf("error %#v is not a dial *net.OpError", err)
	}
}
