// Command client: grpc-go (Debian's golang-google-grpc-dev) calls a sinew server.
//
//	client -address 127.0.0.1:PORT
//
// The echo messages are encoded by hand (one string field) and sent with a
// pass-through codec, so no generated Go code is needed; the health check uses
// grpc-go's own generated health client. Prints one line per check and ends
// with "N passed, M failed"; exits 1 if anything failed.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"sinewinterop/raw"
)

const echo = "/grpc.examples.echo.Echo/"

func main() {
	address := flag.String("address", "", "host:port of the sinew server")
	flag.Parse()
	conn, err := grpc.Dial(*address, grpc.WithInsecure(), grpc.WithBlock(), grpc.WithTimeout(10*time.Second))
	if err != nil {
		fmt.Println("cannot connect:", err)
		os.Exit(1)
	}
	defer conn.Close()
	codec := grpc.ForceCodec(raw.Codec{})
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
	ctx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 10*time.Second)
	}

	check("unary call with metadata echoed back", func() error {
		c, cancel := ctx()
		defer cancel()
		c = metadata.AppendToOutgoingContext(c, "x-echo-lang", "go")
		request, reply := raw.Message("hello from go"), []byte{}
		var header metadata.MD
		if err := conn.Invoke(c, echo+"UnaryEcho", &request, &reply, codec, grpc.Header(&header)); err != nil {
			return err
		}
		if got, _ := raw.Text(reply); got != "hello from go" {
			return fmt.Errorf("got %q", got)
		}
		if v := header.Get("x-echo-lang"); len(v) != 1 || v[0] != "go" {
			return fmt.Errorf("metadata not echoed: %v", header)
		}
		return nil
	})

	check("server streaming", func() error {
		c, cancel := ctx()
		defer cancel()
		c = metadata.AppendToOutgoingContext(c, "x-repeat", "3")
		stream, err := conn.NewStream(c, &grpc.StreamDesc{ServerStreams: true}, echo+"ServerStreamingEcho", codec)
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
		count := 0
		for {
			var reply []byte
			err := stream.RecvMsg(&reply)
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			if got, _ := raw.Text(reply); got != "tick" {
				return fmt.Errorf("got %q", got)
			}
			count++
		}
		if count != 3 {
			return fmt.Errorf("got %d messages, want 3", count)
		}
		return nil
	})

	check("client streaming", func() error {
		c, cancel := ctx()
		defer cancel()
		stream, err := conn.NewStream(c, &grpc.StreamDesc{ClientStreams: true}, echo+"ClientStreamingEcho", codec)
		if err != nil {
			return err
		}
		for _, word := range []string{"a", "b", "c"} {
			request := raw.Message(word)
			if err := stream.SendMsg(&request); err != nil {
				return err
			}
		}
		if err := stream.CloseSend(); err != nil {
			return err
		}
		var reply []byte
		if err := stream.RecvMsg(&reply); err != nil {
			return err
		}
		if got, _ := raw.Text(reply); got != "a\nb\nc" {
			return fmt.Errorf("got %q", got)
		}
		return nil
	})

	check("bidirectional streaming", func() error {
		c, cancel := ctx()
		defer cancel()
		stream, err := conn.NewStream(c, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, echo+"BidirectionalStreamingEcho", codec)
		if err != nil {
			return err
		}
		for i := 0; i < 5; i++ {
			request := raw.Message(fmt.Sprintf("ping %d", i))
			if err := stream.SendMsg(&request); err != nil {
				return err
			}
			var reply []byte
			if err := stream.RecvMsg(&reply); err != nil {
				return err
			}
			if got, _ := raw.Text(reply); got != fmt.Sprintf("ping %d", i) {
				return fmt.Errorf("got %q", got)
			}
		}
		return stream.CloseSend()
	})

	check("deadline exceeded", func() error {
		c, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		stream, err := conn.NewStream(c, &grpc.StreamDesc{ServerStreams: true}, "/sinew.examples.kv.KeyValue/Watch", codec)
		if err != nil {
			return err
		}
		request := raw.Message("none/")
		if err := stream.SendMsg(&request); err != nil {
			return err
		}
		stream.CloseSend()
		var reply []byte
		err = stream.RecvMsg(&reply)
		if status.Code(err) != codes.DeadlineExceeded {
			return fmt.Errorf("got %v, want DEADLINE_EXCEEDED", err)
		}
		return nil
	})

	check("error status with message", func() error {
		c, cancel := ctx()
		defer cancel()
		request, reply := raw.Message("missing"), []byte{}
		err := conn.Invoke(c, "/sinew.examples.kv.KeyValue/Get", &request, &reply, codec)
		s := status.Convert(err)
		if s.Code() != codes.NotFound || s.Message() != `no value for key "missing"` {
			return fmt.Errorf("got %v", err)
		}
		return nil
	})

	check("health Check (grpc-go's generated client)", func() error {
		c, cancel := ctx()
		defer cancel()
		reply, err := healthpb.NewHealthClient(conn).Check(c, &healthpb.HealthCheckRequest{Service: "grpc.examples.echo.Echo"})
		if err != nil {
			return err
		}
		if reply.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("got %v", reply.Status)
		}
		return nil
	})

	// grpc-go's retries (GRPC_GO_RETRY=on before grpc-go 1.40) against a sinew
	// server whose fault rules fail first attempts: with a backoff of
	// minutes, only the server's 50 ms pushback brings the retry within the
	// deadline.
	retrying, err := grpc.Dial(*address, grpc.WithInsecure(), grpc.WithBlock(), grpc.WithTimeout(10*time.Second),
		grpc.WithDefaultServiceConfig(`{"methodConfig": [{"name": [{"service": "grpc.examples.echo.Echo"}],
			"retryPolicy": {"maxAttempts": 3, "initialBackoff": "300s", "maxBackoff": "300s",
				"backoffMultiplier": 1, "retryableStatusCodes": ["UNAVAILABLE"]}}]}`))
	if err != nil {
		fmt.Println("cannot connect:", err)
		os.Exit(1)
	}
	defer retrying.Close()
	check("grpc-go's service-config retry, after sinew's pushback", func() error {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c = metadata.AppendToOutgoingContext(c, "x-fault", "retry-me")
		request, reply := raw.Message("again"), []byte{}
		if err := retrying.Invoke(c, echo+"UnaryEcho", &request, &reply, codec); err != nil {
			return err
		}
		if got, _ := raw.Text(reply); got != "again" {
			return fmt.Errorf("got %q", got)
		}
		return nil
	})
	check("sinew's negative pushback stops grpc-go's retries", func() error {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c = metadata.AppendToOutgoingContext(c, "x-fault", "never")
		request, reply := raw.Message("no"), []byte{}
		err := retrying.Invoke(c, echo+"UnaryEcho", &request, &reply, codec)
		if s := status.Convert(err); s.Code() != codes.Unavailable {
			return fmt.Errorf("got %v", err)
		}
		return nil
	})

	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}
