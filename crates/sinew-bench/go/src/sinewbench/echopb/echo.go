// Package echopb holds the messages and service of sinew-examples'
// proto/echo.proto (package grpc.examples.echo) for grpc-go, in the form
// protoc-gen-go 1.3 generates: structs with protobuf field tags, encoded and
// decoded by github.com/golang/protobuf's table-driven runtime, as grpc-go's
// default codec does for generated code. Written out by hand because Debian's
// packages carry no protoc; the unary and server-streaming methods are
// benchmarked.
package echopb

import (
	"context"

	"github.com/golang/protobuf/proto"
	"google.golang.org/grpc"
)

// EchoRequest is the request of every Echo method.
type EchoRequest struct {
	Message string `protobuf:"bytes,1,opt,name=message,proto3" json:"message,omitempty"`
}

func (m *EchoRequest) Reset()         { *m = EchoRequest{} }
func (m *EchoRequest) String() string { return proto.CompactTextString(m) }
func (*EchoRequest) ProtoMessage()    {}

// EchoResponse is the response of every Echo method.
type EchoResponse struct {
	Message string `protobuf:"bytes,1,opt,name=message,proto3" json:"message,omitempty"`
}

func (m *EchoResponse) Reset()         { *m = EchoResponse{} }
func (m *EchoResponse) String() string { return proto.CompactTextString(m) }
func (*EchoResponse) ProtoMessage()    {}

func init() {
	proto.RegisterType((*EchoRequest)(nil), "grpc.examples.echo.EchoRequest")
	proto.RegisterType((*EchoResponse)(nil), "grpc.examples.echo.EchoResponse")
}

// EchoServer is the unary and server-streaming part of the Echo service.
type EchoServer interface {
	UnaryEcho(context.Context, *EchoRequest) (*EchoResponse, error)
	ServerStreamingEcho(*EchoRequest, grpc.ServerStream) error
}

func serverStreamingEchoHandler(srv interface{}, stream grpc.ServerStream) error {
	in := new(EchoRequest)
	if err := stream.RecvMsg(in); err != nil {
		return err
	}
	return srv.(EchoServer).ServerStreamingEcho(in, stream)
}

func unaryEchoHandler(srv interface{}, ctx context.Context, dec func(interface{}) error, interceptor grpc.UnaryServerInterceptor) (interface{}, error) {
	in := new(EchoRequest)
	if err := dec(in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return srv.(EchoServer).UnaryEcho(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/grpc.examples.echo.Echo/UnaryEcho"}
	handler := func(ctx context.Context, req interface{}) (interface{}, error) {
		return srv.(EchoServer).UnaryEcho(ctx, req.(*EchoRequest))
	}
	return interceptor(ctx, in, info, handler)
}

// ServiceDesc describes the Echo service as protoc-gen-go-grpc would.
var ServiceDesc = grpc.ServiceDesc{
	ServiceName: "grpc.examples.echo.Echo",
	HandlerType: (*EchoServer)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "UnaryEcho", Handler: unaryEchoHandler},
	},
	Streams: []grpc.StreamDesc{
		{StreamName: "ServerStreamingEcho", Handler: serverStreamingEchoHandler, ServerStreams: true},
	},
	Metadata: "echo.proto",
}

// RegisterEchoServer registers srv on s.
func RegisterEchoServer(s *grpc.Server, srv EchoServer) {
	s.RegisterService(&ServiceDesc, srv)
}

// Blob is the request and response of sinew-bench's proto/blob.proto
// (package sinew.bench), the echo of the harness's bytes cells.
type Blob struct {
	Data []byte `protobuf:"bytes,1,opt,name=data,proto3" json:"data,omitempty"`
}

func (m *Blob) Reset()         { *m = Blob{} }
func (m *Blob) String() string { return proto.CompactTextString(m) }
func (*Blob) ProtoMessage()    {}

func init() {
	proto.RegisterType((*Blob)(nil), "sinew.bench.Blob")
}

// BlobEchoServer is the BlobEcho service.
type BlobEchoServer interface {
	UnaryEcho(context.Context, *Blob) (*Blob, error)
}

func blobUnaryEchoHandler(srv interface{}, ctx context.Context, dec func(interface{}) error, interceptor grpc.UnaryServerInterceptor) (interface{}, error) {
	in := new(Blob)
	if err := dec(in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return srv.(BlobEchoServer).UnaryEcho(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/sinew.bench.BlobEcho/UnaryEcho"}
	handler := func(ctx context.Context, req interface{}) (interface{}, error) {
		return srv.(BlobEchoServer).UnaryEcho(ctx, req.(*Blob))
	}
	return interceptor(ctx, in, info, handler)
}

// BlobEchoServiceDesc describes the BlobEcho service as protoc-gen-go-grpc would.
var BlobEchoServiceDesc = grpc.ServiceDesc{
	ServiceName: "sinew.bench.BlobEcho",
	HandlerType: (*BlobEchoServer)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "UnaryEcho", Handler: blobUnaryEchoHandler},
	},
	Streams:  []grpc.StreamDesc{},
	Metadata: "blob.proto",
}

// RegisterBlobEchoServer registers srv on s.
func RegisterBlobEchoServer(s *grpc.Server, srv BlobEchoServer) {
	s.RegisterService(&BlobEchoServiceDesc, srv)
}
