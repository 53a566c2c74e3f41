package mptest_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"

	"github.com/myproto/myproto"
	"github.com/myproto/myproto/mptest"
)

// An HTTP server and client over myproto on an in-memory link that loses
// 5 % of its frames: a test of an application built on myproto that runs
// anywhere, as any user, with no packet sockets.
func Example() {
	n := mptest.NewNetwork(&mptest.Config{Seed: 1, Loss: 0.05})
	defer n.Close()
	srv, err := n.NewStack(&myproto.Config{Name: "server"})
	if err != nil {
		log.Fatal(err)
	}
	cli, err := n.NewStack(&myproto.Config{Name: "client"})
	if err != nil {
		log.Fatal(err)
	}

	ln, err := srv.Listen("myproto", ":80")
	if err != nil {
		log.Fatal(err)
	}
	body := strings.Repeat("myproto ", 128<<10) // 1 MiB
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	}))

	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return cli.DialContext(ctx, "myproto", "server:80")
		},
	}}
	resp, err := client.Get("http://server/")
	if err != nil {
		log.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Status, len(got) == len(body) && string(got) == body)
	fmt.Println("frames lost:", n.Stats().Lost > 0)
	// Output:
	// 200 OK true
	// frames lost: true
}
