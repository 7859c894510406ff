// Command tlsclient: grpc-go (Debian's golang-google-grpc-dev) calls sinew
// servers over TLS and mutual TLS, with certificates from `sinew certs`.
//
//	tlsclient -pki DIR -other-pki DIR -tls 127.0.0.1:PORT -mtls 127.0.0.1:PORT
//
// -tls is a server with a certificate only; -mtls one that requires client
// certificates from DIR's CA and denies ServerStreamingEcho to the "intern"
// identity. DIR holds ca.crt, teller.{crt,key}, intern.{crt,key} and
// expired.{crt,key}; -other-pki another CA's ca.crt and stranger.{crt,key}.
// Prints one line per check and ends with "N passed, M failed"; exits 1 if
// anything failed.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"sinewinterop/raw"
)

const echo = "/grpc.examples.echo.Echo/"

func pool(path string) *x509.CertPool {
	pem, err := ioutil.ReadFile(path)
	if err != nil {
		fmt.Println("reading", path, err)
		os.Exit(1)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	return roots
}

// dial connects over TLS trusting ca, presenting identity (a stem in dir) if
// not empty.
func dial(address, ca, dir, identity string) (*grpc.ClientConn, error) {
	config := &tls.Config{RootCAs: pool(ca), ServerName: "127.0.0.1"}
	if identity != "" {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, identity+".crt"), filepath.Join(dir, identity+".key"))
		if err != nil {
			return nil, err
		}
		config.Certificates = []tls.Certificate{pair}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return grpc.DialContext(ctx, address, grpc.WithTransportCredentials(credentials.NewTLS(config)))
}

func unary(conn *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	request, reply := raw.Message("hi from go"), []byte{}
	if err := conn.Invoke(ctx, echo+"UnaryEcho", &request, &reply, grpc.ForceCodec(raw.Codec{})); err != nil {
		return err
	}
	if got, err := raw.Text(reply); err != nil || got != "hi from go" {
		return fmt.Errorf("got %q (%v)", got, err)
	}
	return nil
}

func streaming(conn *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, echo+"ServerStreamingEcho", grpc.ForceCodec(raw.Codec{}))
	if err != nil {
		return err
	}
	request := raw.Message("tick")
	if err := stream.SendMsg(&request); err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	for {
		var reply []byte
		err := stream.RecvMsg(&reply)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// fails checks that err is a status with code, its message containing text.
func fails(err error, code codes.Code, text string) error {
	if err == nil {
		return fmt.Errorf("succeeded; expected %v", code)
	}
	s, _ := status.FromError(err)
	if s.Code() != code || !strings.Contains(s.Message(), text) {
		return fmt.Errorf("expected %v containing %q, got %v: %s", code, text, s.Code(), s.Message())
	}
	return nil
}

func main() {
	dir := flag.String("pki", "", "directory of `sinew certs` output")
	other := flag.String("other-pki", "", "directory of another CA's certificates")
	tlsAddress := flag.String("tls", "", "host:port of the TLS server")
	mtlsAddress := flag.String("mtls", "", "host:port of the mutual TLS server")
	flag.Parse()
	ca := filepath.Join(*dir, "ca.crt")
	passed, failed := 0, 0
	check := func(name string, f func() error) {
		if err := f(); err != nil {
			failed++
			fmt.Printf("FAIL  %s: %v\n", name, err)
			return
		}
		passed++
		fmt.Printf("ok    %s\n", name)
	}
	call := func(address, ca, dir, identity string, f func(*grpc.ClientConn) error) error {
		conn, err := dial(address, ca, dir, identity)
		if err != nil {
			return err
		}
		defer conn.Close()
		return f(conn)
	}

	check("TLS: unary", func() error { return call(*tlsAddress, ca, *dir, "", unary) })
	check("TLS: server streaming", func() error { return call(*tlsAddress, ca, *dir, "", streaming) })
	check("TLS: a server from an untrusted CA is refused", func() error {
		return fails(call(*tlsAddress, filepath.Join(*other, "ca.crt"), *dir, "", unary), codes.Unavailable, "certificate")
	})
	check("mTLS: the teller streams", func() error { return call(*mtlsAddress, ca, *dir, "teller", streaming) })
	check("mTLS: the intern calls unary", func() error { return call(*mtlsAddress, ca, *dir, "intern", unary) })
	check("mTLS: the policy denies the intern streaming", func() error {
		return fails(call(*mtlsAddress, ca, *dir, "intern", streaming), codes.PermissionDenied, "permission denied")
	})
	check("mTLS: no client certificate is refused", func() error {
		return fails(call(*mtlsAddress, ca, *dir, "", unary), codes.Unavailable, "")
	})
	check("mTLS: an expired client certificate is refused", func() error {
		return fails(call(*mtlsAddress, ca, *dir, "expired", unary), codes.Unavailable, "")
	})
	check("mTLS: a client certificate from another CA is refused", func() error {
		return fails(call(*mtlsAddress, ca, *other, "stranger", unary), codes.Unavailable, "")
	})
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}
