package myproto_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"time"

	"github.com/myproto/myproto"
)

// The examples run in a private network namespace where the test binary has
// made a veth pair, myproto0 and myproto1: two stations on one Ethernet
// segment, with no IP addresses at all.

// peerOf returns the address to dial to reach the listener ln from the other
// end of the pair: the listener's hardware address and port, leaving by
// myproto0.
func peerOf(ln net.Listener) string {
	to := *ln.Addr().(*myproto.Addr)
	to.Zone = "myproto0"
	return to.String()
}

// An echo server and client over a myproto stream.
func Example_echo() {
	ln, err := myproto.Listen("myproto", "myproto1:7")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()

	c, err := myproto.Dial("myproto", peerOf(ln))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintln(c, "hello, link")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(line)
	// Output: hello, link
}

// crypto/tls over a myproto connection, unchanged: a *myproto.Conn is a
// net.Conn.
func Example_tls() {
	cert, pool := selfSigned("tls.example")
	ln, err := myproto.Listen("myproto", "myproto1:443")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	tln := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
	go func() {
		c, err := tln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintln(c, "secret hello")
	}()

	raw, err := myproto.Dial("myproto", peerOf(ln))
	if err != nil {
		log.Fatal(err)
	}
	c := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "tls.example"})
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(line)
	fmt.Println("TLS 1.3:", c.ConnectionState().Version == tls.VersionTLS13)
	// Output:
	// secret hello
	// TLS 1.3: true
}

// An HTTP/1.1 server on a *myproto.Listener and a client whose transport
// dials myproto.
func Example_http() {
	ln, err := myproto.Listen("myproto", "myproto1:80")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s over %s\n", r.URL.Path, r.Proto)
	})}
	go srv.Serve(ln)
	defer srv.Close()

	var d myproto.Dialer
	client := &http.Client{Transport: &http.Transport{
		// The URL's host is only a name here; every request goes to the
		// listener over myproto.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "myproto", peerOf(ln))
		},
	}}
	resp, err := client.Get("http://node.example/page")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(resp.Status, ": ", string(body))
	// Output: 200 OK: hello from /page over HTTP/1.1
}

// HTTP/2 over TLS (ALPN "h2") over myproto.
func Example_http2() {
	cert, pool := selfSigned("h2.example")
	ln, err := myproto.Listen("myproto", "myproto1:8443")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello over %s\n", r.Proto)
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	go srv.ServeTLS(ln, "", "") // ServeTLS offers "h2" by ALPN
	defer srv.Close()

	var d myproto.Dialer
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "myproto", peerOf(ln))
		},
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
	}}
	for range 2 { // the second request reuses the HTTP/2 connection
		resp, err := client.Get("https://h2.example/")
		if err != nil {
			log.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Print(resp.Proto, " ", resp.TLS.NegotiatedProtocol, ": ", string(body))
	}
	// Output:
	// HTTP/2.0 h2: hello over HTTP/2.0
	// HTTP/2.0 h2: hello over HTTP/2.0
}

// selfSigned makes a certificate for name and a pool that trusts it.
func selfSigned(name string) (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// Two stacks over UDP bearers, one on 127.0.0.1 and one on 127.0.0.2 in
// place of two hosts on different IP networks: a name found by discovery
// over UDP, a stream to it, and IP addresses for its ends. No packet
// socket is opened, so this needs no privilege.
func Example_udpBearer() {
	server, err := myproto.NewStack(&myproto.Config{Name: "udp-server",
		Bearers: []myproto.Bearer{{Media: myproto.MediaUDP, Local: "127.0.0.2"}}})
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	client, err := myproto.NewStack(&myproto.Config{Name: "udp-client",
		Bearers: []myproto.Bearer{{Media: myproto.MediaUDP, Local: "127.0.0.1", Peers: []string{"127.0.0.2"}}}})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ln, err := server.Listen("myproto", "udp:7007")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("listening on", ln.Addr())
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(c, c)
		c.Close()
	}()

	c, err := client.Dial("myproto", "udp-server:7007")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println("connected to", c.RemoteAddr())
	if _, err := c.Write([]byte("hello over UDP\n")); err != nil {
		log.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(line)
	// Output:
	// listening on [127.0.0.2%udp]:7007
	// connected to [127.0.0.2%udp]:7007
	// hello over UDP
}

// A message connection: each Write arrives as one message, whole and apart,
// whatever its length; ReadMsg reports a message longer than the buffer.
func Example_messages() {
	ln, err := myproto.ListenMsg("myproto", "myproto1:7008")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.AcceptMsg()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 16)
		for {
			n, size, err := c.ReadMsg(buf)
			if err == io.EOF {
				fmt.Println("end of messages")
				return
			}
			if err != nil {
				log.Fatal(err)
			}
			fmt.Printf("%d of %d bytes: %q\n", n, size, buf[:n])
		}
	}()

	c, err := myproto.DialMsg("myproto", peerOf(ln))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for _, m := range []string{"one", "two", "", "a message longer than the buffer"} {
		if _, err := c.Write([]byte(m)); err != nil {
			log.Fatal(err)
		}
	}
	c.CloseWrite()
	<-done
	// Output:
	// 3 of 3 bytes: "one"
	// 3 of 3 bytes: "two"
	// 0 of 0 bytes: ""
	// 16 of 32 bytes: "a message longer"
	// end of messages
}
