//go:build linux

package sys

import (
	"bufio"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParseProcNetUnix(t *testing.T) {
	const in = `Num       RefCount Protocol Flags    Type St Inode Path
0000000044de87ee: 00000002 00000000 00010000 0001 01 21162 @myproto/88b5/diag/12/00aa
00000000ee3c76f1: 00000003 00000000 00000000 0001 03 21163 @myproto/88b5/diag/12/00aa
00000000ee3c76f2: 00000002 00000000 00010000 0001 01 21164 @myproto/88b5/agent
00000000ee3c76f3: 00000002 00000000 00010000 0001 01 21165 /run/some.sock
00000000ee3c76f4: 00000002 00000000 00010000 0005 01 21166 @myproto/88b5/diag/13/with space
00000000ee3c76f5: 00000003 00000000 00000000 0001 03 21167
`
	got, err := parseProcNetUnix(bufio.NewScanner(strings.NewReader(in)), "myproto/88b5/diag/")
	want := []string{"myproto/88b5/diag/12/00aa", "myproto/88b5/diag/13/with space"}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("parseProcNetUnix = %q, %v; want %q", got, err, want)
	}
}

func TestAbstractListenersAndPeerCred(t *testing.T) {
	name := "myproto-test/" + t.Name()
	ln, err := net.Listen("unix", "@"+name)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	names, err := AbstractListeners("myproto-test/")
	if err != nil || !slices.Contains(names, name) {
		t.Fatalf("AbstractListeners = %q, %v; want %q among them", names, err, name)
	}
	c, err := net.Dial("unix", "@"+name)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pid, uid, err := PeerCred(s)
	if err != nil || pid != os.Getpid() || uid != os.Geteuid() {
		t.Fatalf("PeerCred = %d, %d, %v; want %d, %d", pid, uid, err, os.Getpid(), os.Geteuid())
	}
}
