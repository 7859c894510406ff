// Command grpcserver: the grpc-go row of sinew-bench. The unary echo of
// grpc.examples.echo on grpc-go's server with its defaults, as a grpc-go user
// runs it.
//
//	grpcserver -port-file PATH
//
// Listens on a free port on 127.0.0.1, writes the port to PATH, and serves
// until killed. GOMAXPROCS is set by the harness to its server thread count.
package main

import (
	"context"
	"flag"
	"fmt"
	"io/ioutil"
	"net"
	"os"

	"google.golang.org/grpc"
	"sinewbench/echopb"
)

type echo struct{}

func (echo) UnaryEcho(_ context.Context, in *echopb.EchoRequest) (*echopb.EchoResponse, error) {
	return &echopb.EchoResponse{Message: in.Message}, nil
}

func main() {
	portFile := flag.String("port-file", "", "where to write the port")
	flag.Parse()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Messages up to the harness's largest payload (1 MiB) plus framing.
	server := grpc.NewServer(grpc.MaxRecvMsgSize(8<<20), grpc.MaxSendMsgSize(8<<20))
	echopb.RegisterEchoServer(server, echo{})
	port := listener.Addr().(*net.TCPAddr).Port
	if err := ioutil.WriteFile(*portFile+".tmp", []byte(fmt.Sprint(port)), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Rename(*portFile+".tmp", *portFile)
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
