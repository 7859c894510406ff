// Command server: a gRPC server built only from grpc-go's own packages (the
// health service and server reflection), for sinew's client to call.
//
//	server -port-file PATH [-tls-cert FILE -tls-key FILE [-client-ca FILE]]
//
// Listens on a free port on 127.0.0.1, writes the port to PATH, and stops
// gracefully on SIGTERM or SIGINT. A call carrying `x-fail-first: yes` fails
// with UNAVAILABLE and a 50 ms pushback on its first attempt (one without
// `grpc-previous-rpc-attempts`), for sinew's retries to meet. With
// -tls-cert and -tls-key it serves over TLS (and with -client-ca requires
// client certificates from that CA), for sinew's grpcs:// client.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io/ioutil"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// failFirst fails the first attempt of calls that ask for it, with a pushback.
func failFirst(ctx context.Context, req interface{}, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (interface{}, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if len(md.Get("x-fail-first")) > 0 && len(md.Get("grpc-previous-rpc-attempts")) == 0 {
		grpc.SetTrailer(ctx, metadata.Pairs("grpc-retry-pushback-ms", "50"))
		return nil, status.Error(codes.Unavailable, "first attempt refused on purpose")
	}
	return handler(ctx, req)
}

func main() {
	portFile := flag.String("port-file", "", "where to write the port")
	certFile := flag.String("tls-cert", "", "serve over TLS with this certificate (PEM)")
	keyFile := flag.String("tls-key", "", "the key of -tls-cert (PEM)")
	clientCA := flag.String("client-ca", "", "require client certificates from this CA (PEM)")
	flag.Parse()
	options := []grpc.ServerOption{grpc.UnaryInterceptor(failFirst)}
	if *certFile != "" {
		pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		config := &tls.Config{Certificates: []tls.Certificate{pair}}
		if *clientCA != "" {
			pem, err := ioutil.ReadFile(*clientCA)
			if err != nil {
				fmt.Println(err)
				os.Exit(1)
			}
			config.ClientCAs = x509.NewCertPool()
			config.ClientCAs.AppendCertsFromPEM(pem)
			config.ClientAuth = tls.RequireAndVerifyClientCert
		}
		options = append(options, grpc.Creds(credentials.NewTLS(config)))
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	server := grpc.NewServer(options...)
	checker := health.NewServer()
	checker.SetServingStatus("sinew.interop.Go", healthpb.HealthCheckResponse_SERVING)
	checker.SetServingStatus("sinew.interop.Down", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(server, checker)
	reflection.Register(server)
	port := listener.Addr().(*net.TCPAddr).Port
	if err := ioutil.WriteFile(*portFile+".tmp", []byte(fmt.Sprint(port)), 0o644); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	os.Rename(*portFile+".tmp", *portFile)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		server.GracefulStop()
	}()
	server.Serve(listener)
}
