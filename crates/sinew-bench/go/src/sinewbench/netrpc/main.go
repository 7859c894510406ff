// Command netrpc: the go-netrpc row of sinew-bench. Go's standard net/rpc with
// its gob codec, server and client as a Go user writes them: one rpc.Client
// (one TCP connection, calls multiplexed on it) shared by every in-flight call.
//
//	netrpc serve -port-file PATH
//	netrpc load -address HOST:PORT -payload N [-bytes] -concurrency C -connections K -warmup-ms W -duration-ms D -server-pid PID
//
// serve listens on a free port on 127.0.0.1, writes the port to PATH and serves
// until killed. load runs the harness's closed loop: C goroutines each making
// one call at a time over K clients (goroutine i uses client i mod K), a
// warm-up, then a measured phase; every echo is compared
// byte for byte. With -bytes the payload is a []byte (Echo.BytesEcho)
// instead of a string. It prints one line of JSON with the fields of sinew-bench's
// samples; CPU per call is this process's CPU plus the server's (from
// /proc/PID/stat) during the measured phase. GOMAXPROCS is set by the harness
// to its thread counts.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"net"
	"net/rpc"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// EchoRequest and EchoResponse are the messages, as gob encodes them.
type EchoRequest struct{ Message string }
type EchoResponse struct{ Message string }

// BlobRequest and BlobResponse are the messages of the bytes cells.
type BlobRequest struct{ Data []byte }
type BlobResponse struct{ Data []byte }

// Echo is the service.
type Echo struct{}

// UnaryEcho returns the request's message.
func (Echo) UnaryEcho(in *EchoRequest, out *EchoResponse) error {
	out.Message = in.Message
	return nil
}

// BytesEcho returns the request's data.
func (Echo) BytesEcho(in *BlobRequest, out *BlobResponse) error {
	out.Data = in.Data
	return nil
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: netrpc serve|load ...")
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "load":
		load(os.Args[2:])
	default:
		fail("unknown mode " + os.Args[1])
	}
}

func fail(message interface{}) {
	fmt.Fprintln(os.Stderr, message)
	os.Exit(1)
}

func serve(args []string) {
	flags := flag.NewFlagSet("serve", flag.ExitOnError)
	portFile := flags.String("port-file", "", "where to write the port")
	flags.Parse(args)
	server := rpc.NewServer()
	if err := server.RegisterName("Echo", Echo{}); err != nil {
		fail(err)
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	port := listener.Addr().(*net.TCPAddr).Port
	if err := ioutil.WriteFile(*portFile+".tmp", []byte(fmt.Sprint(port)), 0o644); err != nil {
		fail(err)
	}
	os.Rename(*portFile+".tmp", *portFile)
	server.Accept(listener)
}

// sample has the JSON fields of sinew-bench's Sample.
type sample struct {
	System       string  `json:"system"`
	PayloadBytes int     `json:"payload_bytes"`
	Bytes        bool    `json:"bytes"`
	Concurrency  int     `json:"concurrency"`
	Connections  int     `json:"connections"`
	Calls        uint64  `json:"calls"`
	Errors       uint64  `json:"errors"`
	Seconds      float64 `json:"seconds"`
	QPS          float64 `json:"qps"`
	P50          float64 `json:"p50_us"`
	P90          float64 `json:"p90_us"`
	P99          float64 `json:"p99_us"`
	P999         float64 `json:"p999_us"`
	Max          float64 `json:"max_us"`
	Mean         float64 `json:"mean_us"`
	CPUPerCall   float64 `json:"cpu_us_per_call"`
	FirstError   string  `json:"first_error,omitempty"`
}

// loopResult is what one closed loop measured.
type loopResult struct {
	latencies  []int64
	errors     uint64
	firstError string
}

// callLimit is how long after a phase's deadline a call may still run before
// its loop counts as stuck (the harness's own watchdog).
const callLimit = 5 * time.Second

// phase runs call (one verified echo on the client given) in concurrency
// goroutines until duration has passed.
func phase(clients []*rpc.Client, call func(*rpc.Client) error, concurrency int, duration time.Duration) ([]int64, uint64, string) {
	deadline := time.Now().Add(duration)
	results := make(chan loopResult, concurrency)
	for i := 0; i < concurrency; i++ {
		client := clients[i%len(clients)]
		go func() {
			var r loopResult
			for {
				started := time.Now()
				if !started.Before(deadline) {
					break
				}
				if err := call(client); err != nil {
					r.errors++
					if r.firstError == "" {
						r.firstError = err.Error()
					}
					continue
				}
				r.latencies = append(r.latencies, int64(time.Since(started)))
			}
			results <- r
		}()
	}
	var latencies []int64
	var errors uint64
	var firstError string
	watchdog := time.After(time.Until(deadline) + callLimit)
	for done := 0; done < concurrency; done++ {
		select {
		case r := <-results:
			latencies = append(latencies, r.latencies...)
			errors += r.errors
			if firstError == "" {
				firstError = r.firstError
			}
		case <-watchdog:
			return latencies, errors + uint64(concurrency-done), "a call still running 5s after the phase"
		}
	}
	return latencies, errors, firstError
}

// processCPU is the CPU time (user + system) of this process.
func processCPU() time.Duration {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}

// serverCPU is the CPU time of process pid, from /proc (clock ticks of 10 ms).
func serverCPU(pid int) time.Duration {
	data, err := ioutil.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

func quantileUs(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	index := int(q*float64(len(sorted)) + 0.5)
	if index >= len(sorted) {
		index = len(sorted) - 1
	}
	return float64(sorted[index]) / 1e3
}

func load(args []string) {
	flags := flag.NewFlagSet("load", flag.ExitOnError)
	address := flags.String("address", "", "the server")
	size := flags.Int("payload", 1024, "payload bytes")
	asBytes := flags.Bool("bytes", false, "send the payload as []byte (Echo.BytesEcho)")
	concurrency := flags.Int("concurrency", 1, "calls in flight")
	connections := flags.Int("connections", 1, "clients (connections) the calls are spread over")
	warmupMs := flags.Int("warmup-ms", 500, "warm-up")
	durationMs := flags.Int("duration-ms", 2500, "measured phase")
	serverPid := flags.Int("server-pid", 0, "the server's pid, for its CPU time")
	flags.Parse(args)
	if *connections < 1 {
		fail("-connections must be at least 1")
	}
	clients := make([]*rpc.Client, *connections)
	for i := range clients {
		client, err := rpc.Dial("tcp", *address)
		if err != nil {
			fail(err)
		}
		clients[i] = client
	}
	payload := strings.Repeat("x", *size)
	call := func(client *rpc.Client) error {
		var out EchoResponse
		if err := client.Call("Echo.UnaryEcho", &EchoRequest{Message: payload}, &out); err != nil {
			return err
		}
		if out.Message != payload {
			return fmt.Errorf("the echo differs from what was sent")
		}
		return nil
	}
	if *asBytes {
		data := []byte(payload)
		call = func(client *rpc.Client) error {
			var out BlobResponse
			if err := client.Call("Echo.BytesEcho", &BlobRequest{Data: data}, &out); err != nil {
				return err
			}
			if !bytes.Equal(out.Data, data) {
				return fmt.Errorf("the echo differs from what was sent")
			}
			return nil
		}
	}
	phase(clients, call, *concurrency, time.Duration(*warmupMs)*time.Millisecond)
	cpuBefore := processCPU() + serverCPU(*serverPid)
	started := time.Now()
	latencies, errors, firstError := phase(clients, call, *concurrency, time.Duration(*durationMs)*time.Millisecond)
	elapsed := time.Since(started)
	cpu := processCPU() + serverCPU(*serverPid) - cpuBefore
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	calls := uint64(len(latencies))
	var total int64
	for _, l := range latencies {
		total += l
	}
	out := sample{
		System: "go-netrpc", PayloadBytes: *size, Bytes: *asBytes, Concurrency: *concurrency, Connections: *connections,
		Calls: calls, Errors: errors, FirstError: firstError, Seconds: elapsed.Seconds(),
		QPS:  float64(calls) / elapsed.Seconds(),
		P50:  quantileUs(latencies, 0.5),
		P90:  quantileUs(latencies, 0.9),
		P99:  quantileUs(latencies, 0.99),
		P999: quantileUs(latencies, 0.999),
	}
	if calls > 0 {
		out.Max = float64(latencies[len(latencies)-1]) / 1e3
		out.Mean = float64(total) / float64(calls) / 1e3
		out.CPUPerCall = float64(cpu.Microseconds()) / float64(calls)
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
}
