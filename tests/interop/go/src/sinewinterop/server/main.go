// Command server: a gRPC server built only from grpc-go's own packages (the
// health service and server reflection), for sinew's client to call.
//
//	server -port-file PATH
//
// Listens on a free port on 127.0.0.1, writes the port to PATH, and stops
// gracefully on SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"io/ioutil"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

func main() {
	portFile := flag.String("port-file", "", "where to write the port")
	flag.Parse()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	server := grpc.NewServer()
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
