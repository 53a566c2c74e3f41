package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// randomFile writes size random bytes to a new file and returns it, open
// at its start, with its SHA-256.
func randomFile(t *testing.T, name string, size int) (*os.File, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, int64(size)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	return f, hex.EncodeToString(h.Sum(nil))
}

// hashWriter is a SHA-256 of what a command writes, and its length.
type hashWriter struct {
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	n int64
}

func newHashWriter() *hashWriter { return &hashWriter{h: sha256.New()} }

func (w *hashWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return w.h.Write(p)
}

func (w *hashWriter) sum() string { return hex.EncodeToString(w.h.Sum(nil)) }

// TestIntegrationNc: 16 MiB each way at once through listen on host b and
// connect (by name) on host a, half-closes and all; the SHA-256s match, both
// exit 0 and say nothing when piped.
func TestIntegrationNc(t *testing.T) {
	h := newTwoHosts(t)
	const size = 16 << 20
	fa, sumA := randomFile(t, "a", size)
	fb, sumB := randomFile(t, "b", size)
	gotA, gotB := newHashWriter(), newHashWriter()

	start := time.Now()
	srv := h.start("b", "nodeb", fb, gotB, "listen", "-v", h.bIf+":7")
	srv.waitStderr("listening on")
	cli := h.start("a", "nodea", fa, gotA, "connect", "nodeb:7")
	if code := cli.wait(time.Minute); code != 0 {
		t.Fatalf("connect exited with %d\nstderr:\n%s", code, cli.stderr)
	}
	if code := srv.wait(10 * time.Second); code != 0 {
		t.Fatalf("listen exited with %d\nstderr:\n%s", code, srv.stderr)
	}
	t.Logf("16 MiB each way in %v", time.Since(start).Round(time.Millisecond))
	if gotB.n != size || gotB.sum() != sumA {
		t.Errorf("listen received %d bytes, sha256 %s; connect sent %d, %s", gotB.n, gotB.sum(), size, sumA)
	}
	if gotA.n != size || gotA.sum() != sumB {
		t.Errorf("connect received %d bytes, sha256 %s; listen sent %d, %s", gotA.n, gotA.sum(), size, sumB)
	}
	if s := cli.stderr.String(); s != "" {
		t.Errorf("connect wrote to standard error (no progress meter when piped): %q", s)
	}
	if s := srv.stderr.String(); !strings.Contains(s, "connection from [") {
		t.Errorf("listen -v said %q", s)
	}

	// listen -k (here as nc's connect -l) serves one connection after
	// another; its empty standard input half-closes each at once.
	srv = h.start("b", "nodeb", nil, nil, "connect", "-l", "-k", "-v", "7")
	srv.waitStderr("listening on")
	for _, msg := range []string{"one\n", "two\n"} {
		out, errOut, code := h.run("a", "nodea", strings.NewReader(msg), "connect", "-w", "5", h.bEndpt+":7")
		if code != 0 || out != "" || errOut != "" {
			t.Fatalf("connect to listen -k: %d, stdout %q, stderr %q", code, out, errOut)
		}
	}
	// Refused, like nc: a port nobody listens on.
	_, errOut, code := h.run("a", "nodea", nil, "connect", "nodeb:8")
	if code != 1 || errOut != "myproto: connect nodeb:8: connection refused\n" {
		t.Errorf("connect to a closed port: %d, stderr %q", code, errOut)
	}
	srv.stop()
	if out := srv.stdout.String(); out != "one\ntwo\n" {
		t.Errorf("listen -k wrote %q", out)
	}
}

// TestIntegrationNcDatagrams: listen -u and connect -u trade datagrams and
// exit once standard input is done and -w passes in silence.
func TestIntegrationNcDatagrams(t *testing.T) {
	h := newTwoHosts(t)
	srv := h.start("b", "nodeb", strings.NewReader("pong\n"), nil, "listen", "-u", "-v", "-w", "1", h.bIf+":9")
	srv.waitStderr("listening for datagrams on")
	out, errOut, code := h.run("a", "nodea", strings.NewReader("hello\n"), "connect", "-u", "-w", "0.5", "nodeb:9")
	if code != 0 || out != "pong\n" || errOut != "" {
		t.Errorf("connect -u: %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code := srv.wait(10 * time.Second); code != 0 || srv.stdout.String() != "hello\n" {
		t.Errorf("listen -u: %d, stdout %q, stderr %q", code, srv.stdout, srv.stderr)
	}
}
