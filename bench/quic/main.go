// Command quicperf measures the bulk throughput of one quic-go stream, the
// peer bench/run.sh compares TLS over myproto with. It lives in a module of
// its own so that the library's go.mod never requires quic-go.
//
//	quicperf -s ADDR -certfile FILE        serve until killed; write the certificate (DER) to FILE
//	quicperf -c ADDR -certfile FILE [-t 10s] [-l 128K]
//
// The client opens one stream, writes to it for the duration and closes
// it; the server reads to the end and answers with what it counted on the
// same stream. The client prints one JSON object: the server's bytes and
// seconds (first byte to end of stream), the rate, and each side's CPU
// seconds from getrusage(2).
//
// The certificate is ECDSA P-256, self-signed and made at start, as
// myproto perf --tls makes its own; TLS 1.3 picks AES-128-GCM.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"os"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
)

// certName is the name in the certificate.
const certName = "quicperf"

// result is the server's account of one stream, and the client's output.
type result struct {
	Bytes         int64   `json:"bytes"`
	Seconds       float64 `json:"seconds"`
	BitsPerSecond float64 `json:"bits_per_second"`
	SenderSeconds float64 `json:"sender_seconds,omitempty"`
	ServerCPU     float64 `json:"server_cpu_s"`
	ClientCPU     float64 `json:"client_cpu_s,omitempty"`
}

func main() {
	server := flag.String("s", "", "serve on `ADDR` (host:port)")
	client := flag.String("c", "", "measure the server at `ADDR` (host:port)")
	certFile := flag.String("certfile", "", "the server's certificate, DER: written by -s, read by -c")
	dur := flag.Duration("t", 10*time.Second, "test length")
	length := flag.Int("l", 128<<10, "write size in bytes")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("quicperf: ")
	var err error
	switch {
	case *server != "" && *client == "" && *certFile != "":
		err = serve(*server, *certFile)
	case *client != "" && *server == "" && *certFile != "":
		err = measure(*client, *certFile, *dur, *length)
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// quicConfig lets the windows grow past what a veth pair's
// bandwidth-delay product needs.
func quicConfig() *quic.Config {
	return &quic.Config{
		MaxStreamReceiveWindow:     32 << 20,
		MaxConnectionReceiveWindow: 64 << 20,
		MaxIdleTimeout:             30 * time.Second,
	}
}

// serve accepts connections and measures each one's first stream.
func serve(addr, certFile string) error {
	cert, err := selfSigned()
	if err != nil {
		return err
	}
	if err := os.WriteFile(certFile, cert.Certificate[0], 0o644); err != nil {
		return err
	}
	ln, err := quic.ListenAddr(addr, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
		NextProtos: []string{certName}}, quicConfig())
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Printf("quicperf: listening on %v\n", ln.Addr())
	for {
		conn, err := ln.Accept(context.Background())
		if err != nil {
			return err
		}
		go func() {
			if err := receive(conn); err != nil {
				log.Printf("%v: %v", conn.RemoteAddr(), err)
			}
		}()
	}
}

// receive reads the connection's first stream to its end and answers on
// it with what it counted.
func receive(conn *quic.Conn) error {
	defer conn.CloseWithError(0, "")
	st, err := conn.AcceptStream(context.Background())
	if err != nil {
		return err
	}
	cpu0 := cpuSeconds()
	buf := make([]byte, 1<<20)
	var r result
	var first time.Time
	for {
		n, err := st.Read(buf)
		if n > 0 && r.Bytes == 0 {
			first = time.Now()
		}
		r.Bytes += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	r.Seconds = time.Since(first).Seconds()
	r.BitsPerSecond = float64(r.Bytes) * 8 / r.Seconds
	r.ServerCPU = cpuSeconds() - cpu0
	if err := json.NewEncoder(st).Encode(r); err != nil {
		return err
	}
	if err := st.Close(); err != nil {
		return err
	}
	// Wait for the client to have read the answer and closed.
	<-conn.Context().Done()
	return nil
}

// measure sends on one stream for dur and prints the server's account.
func measure(addr, certFile string, dur time.Duration, length int) error {
	der, err := os.ReadFile(certFile)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, &tls.Config{RootCAs: pool, ServerName: certName, MinVersion: tls.VersionTLS13,
		NextProtos: []string{certName}}, quicConfig())
	if err != nil {
		return err
	}
	defer conn.CloseWithError(0, "")
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	buf := make([]byte, length)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	cpu0 := cpuSeconds()
	start := time.Now()
	for time.Since(start) < dur {
		if _, err := st.Write(buf); err != nil {
			return err
		}
	}
	sent := time.Since(start)
	if err := st.Close(); err != nil {
		return err
	}
	var r result
	if err := json.NewDecoder(st).Decode(&r); err != nil {
		return fmt.Errorf("reading the server's result: %w", err)
	}
	if r.Bytes == 0 {
		return errors.New("the server received nothing")
	}
	r.SenderSeconds = sent.Seconds()
	r.ClientCPU = cpuSeconds() - cpu0
	return json.NewEncoder(os.Stdout).Encode(r)
}

// cpuSeconds returns the process's user and system CPU time so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// selfSigned makes an ECDSA P-256 certificate for certName.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: certName},
		DNSNames:              []string{certName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
