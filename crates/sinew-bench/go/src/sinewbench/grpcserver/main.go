// Command grpcserver: the grpc-go row of sinew-bench. The unary and
// server-streaming echo of grpc.examples.echo, and the bytes echo of
// sinew.bench.BlobEcho, on grpc-go's server with its defaults, as a grpc-go
// user runs it.
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
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"sinewbench/echopb"
)

type echo struct{}

func (echo) UnaryEcho(_ context.Context, in *echopb.EchoRequest) (*echopb.EchoResponse, error) {
	return &echopb.EchoResponse{Message: in.Message}, nil
}

// ServerStreamingEcho sends the message back x-repeat times (metadata; 10 by
// default), as sinew-examples' echo service does.
func (echo) ServerStreamingEcho(in *echopb.EchoRequest, stream grpc.ServerStream) error {
	repeat := 10
	if md, ok := metadata.FromIncomingContext(stream.Context()); ok {
		if values := md.Get("x-repeat"); len(values) > 0 {
			n, err := strconv.Atoi(values[0])
			if err != nil || n < 0 || n > 1000000 {
				return status.Errorf(codes.InvalidArgument, "x-repeat must be a number from 0 to 1000000, got %q", values[0])
			}
			repeat = n
		}
	}
	out := &echopb.EchoResponse{Message: in.Message}
	for i := 0; i < repeat; i++ {
		if err := stream.SendMsg(out); err != nil {
			return err
		}
	}
	return nil
}

type blobEcho struct{}

func (blobEcho) UnaryEcho(_ context.Context, in *echopb.Blob) (*echopb.Blob, error) {
	return &echopb.Blob{Data: in.Data}, nil
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
	echopb.RegisterBlobEchoServer(server, blobEcho{})
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
