package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/myproto/myproto"
)

// The stream half of the demo: HTTPS (HTTP/2 over TLS 1.3) served over a
// myproto listener, fetched by a net/http client whose transport dials
// myproto. Nothing in net/http or crypto/tls knows it isn't TCP.
const (
	httpsPort = 443
	// serverName is the server's myproto node name: the client finds it
	// by neighbour discovery, and TLS checks the certificate against it.
	serverName = "demo-server"
	clientName = "demo-client"
	bigBody    = 64 << 20 // bytes in /big
)

// serveHTTPS serves the demo site on a myproto listener on serverLink. The
// certificate is made on the spot; its PEM goes to the client through the
// server's address line so the client can verify it.
func serveHTTPS(stderr io.Writer) (net.Listener, []byte, error) {
	cert, certPEM, err := selfSigned(serverName)
	if err != nil {
		return nil, nil, err
	}
	ln, err := myproto.Listen("myproto", serverLink+":"+strconv.Itoa(httpsPort))
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello from %s over myproto: %s, TLS, no IP anywhere.\n", serverName, r.Proto)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(bigBody))
		buf := make([]byte, 1<<20)
		for i := range buf {
			buf[i] = byte(i * 7)
		}
		for range bigBody / len(buf) {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	})
	srv := &http.Server{
		Handler:   mux,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	go func() {
		// Closing the listener is how the demo server stops.
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, net.ErrClosed) {
			fmt.Fprintf(stderr, "myproto %s: https: %v\n", serverCmd, err)
		}
	}()
	return ln, certPEM, nil
}

// httpsDemo fetches a page and a large body from the server over HTTPS on
// myproto, by name, then prints the connection's protocol state.
func httpsDemo(w io.Writer, certPEM []byte) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		return fmt.Errorf("bad server certificate")
	}
	var (
		mu   sync.Mutex
		conn *myproto.Conn
		d    myproto.Dialer
	)
	client := &http.Client{Transport: &http.Transport{
		// The URL's host:port is a myproto address: the name is found
		// on the link by discovery; TLS checks the certificate against it.
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, "myproto", addr)
			if err == nil {
				mu.Lock()
				conn = c.(*myproto.Conn)
				mu.Unlock()
			}
			return c, err
		},
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
	}}
	defer client.CloseIdleConnections()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := myproto.DefaultResolver.LookupName(ctx, serverName)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "  lookup      %s is %v on %s (neighbour discovery)\n", serverName, a.HardwareAddr, a.Zone)
	url := "https://" + serverName
	resp, err := client.Get(url + "/")
	if err != nil {
		return err
	}
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "  GET %s/      %s %s, TLS 1.3: %v\n", url, resp.Proto, resp.Status, resp.TLS.Version == tls.VersionTLS13)
	fmt.Fprintf(w, "              %s", page)

	start := time.Now()
	resp, err = client.Get(url + "/big")
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Fprintf(w, "  GET %s/big   %d MiB in %v: %.2f Gbit/s, sha256 %s…\n", url, n>>20,
		el.Round(time.Millisecond), float64(n)*8/el.Seconds()/1e9, hex.EncodeToString(h.Sum(nil))[:16])

	mu.Lock()
	c := conn
	mu.Unlock()
	if c != nil {
		in := c.Info()
		fmt.Fprintf(w, "  Conn.Info   %s, srtt %v (min %v), cwnd %d KiB, %d packets sent, %d received, %d retransmitted, %d lost\n",
			in.State, in.SRTT.Round(time.Microsecond), in.MinRTT.Round(time.Microsecond), in.Cwnd>>10,
			in.PacketsSent, in.PacketsReceived, in.PacketsRetransmitted, in.PacketsLost)
	}
	return nil
}

// selfSigned makes a certificate for name and returns it with its PEM.
func selfSigned(name string) (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
