"""One trace across Python and sinew: a grpcio client instrumented with
OpenTelemetry (opentelemetry-instrumentation-grpc) calls `sinew serve
--forward`, which passes the call on to a grpcio server instrumented the same
way. The Python spans are collected in memory; sinew sends its spans over OTLP
to a collector this script runs (a grpcio server of OpenTelemetry's
TraceService, from opentelemetry-proto). All four spans must share one trace
id with every parent link intact, and the caller's baggage must reach the far
server through sinew.

    python otel_trace.py --sinew target/debug/sinew
"""

import argparse
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
from opentelemetry import baggage, context, trace
from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient, GrpcInstrumentorServer
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from interop_client import generate_stubs

METHOD = "grpc.examples.echo.Echo/UnaryEcho"

passed = 0
failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok    {name}")
    else:
        failed += 1
        print(f"FAIL  {name} {detail}")


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps the spans OTLP exporters send."""

    def __init__(self):
        self.spans = []
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for resource_spans in request.resource_spans:
                service = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }.get("service.name")
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append((service, span))
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sinew", required=True)
    args = parser.parse_args()

    # The collector first: the instrumentation below must not trace its calls.
    collector = Collector()
    collector_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, collector_server)
    collector_port = collector_server.add_insecure_port("127.0.0.1:0")
    collector_server.start()

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    GrpcInstrumentorServer().instrument()
    GrpcInstrumentorClient().instrument()

    echo_pb2, echo_grpc, _, _ = generate_stubs()

    class Echo(echo_grpc.EchoServicer):
        def UnaryEcho(self, request, grpc_context):
            tenant = baggage.get_baggage("tenant") or "(no baggage)"
            return echo_pb2.EchoResponse(message=f"{request.message} for {tenant}")

    echo_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    echo_grpc.add_EchoServicer_to_server(Echo(), echo_server)
    echo_port = echo_server.add_insecure_port("127.0.0.1:0")
    echo_server.start()

    # sinew in the middle: serves only its key-value example, forwards the
    # rest (Echo) to the Python server, exports its spans to the collector.
    sinew = subprocess.Popen(
        [args.sinew, "serve", "--example", "kv", "--listen", "tcp://127.0.0.1:0",
         "--forward", f"grpc://127.0.0.1:{echo_port}",
         "--otlp", f"http://127.0.0.1:{collector_port}", "--drain-timeout", "2s"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        address = None
        deadline = time.time() + 30
        while time.time() < deadline:
            line = sinew.stdout.readline()
            if not line:
                break
            if line.startswith("listening on tcp://"):
                address = line.strip()[len("listening on tcp://"):]
                break
        if address is None:
            raise RuntimeError("sinew serve did not start")

        channel = grpc.insecure_channel(address)
        stub = echo_grpc.EchoStub(channel)
        token = context.attach(baggage.set_baggage("tenant", "acme corp"))
        try:
            reply = stub.UnaryEcho(echo_pb2.EchoRequest(message="traced"), timeout=10)
        finally:
            context.detach(token)
        channel.close()
        check("the call went through sinew to Python, with the baggage",
              reply.message == "traced for acme corp", repr(reply.message))
    finally:
        sinew.send_signal(signal.SIGINT)
        try:
            sinew.wait(timeout=30)
        except subprocess.TimeoutExpired:
            sinew.kill()

    deadline = time.time() + 15
    while time.time() < deadline:
        with collector.lock:
            if len(collector.spans) >= 2:
                break
        time.sleep(0.1)

    python_spans = exporter.get_finished_spans()
    python_client = [s for s in python_spans if s.kind == trace.SpanKind.CLIENT]
    python_server = [s for s in python_spans if s.kind == trace.SpanKind.SERVER]
    with collector.lock:
        sinew_spans = list(collector.spans)
    sinew_server = [s for _, s in sinew_spans if s.kind == s.SPAN_KIND_SERVER]
    sinew_client = [s for _, s in sinew_spans if s.kind == s.SPAN_KIND_CLIENT]
    check("one span each: Python client, sinew server, sinew client, Python server",
          (len(python_client), len(sinew_server), len(sinew_client), len(python_server)) == (1, 1, 1, 1),
          f"{len(python_client)} {len(sinew_server)} {len(sinew_client)} {len(python_server)}")
    if failed:
        print(f"{passed} passed, {failed} failed")
        sys.exit(1)
    (pc,), (ss,), (sc,), (ps,) = python_client, sinew_server, sinew_client, python_server
    trace_id = pc.context.trace_id
    check("sinew's spans are in the caller's trace",
          int.from_bytes(ss.trace_id, "big") == trace_id and int.from_bytes(sc.trace_id, "big") == trace_id)
    check("the far server's span is in the same trace", ps.context.trace_id == trace_id)
    check("sinew's server span is a child of the Python client's",
          int.from_bytes(ss.parent_span_id, "big") == pc.context.span_id)
    check("sinew's client span is a child of its server span", sc.parent_span_id == ss.span_id)
    check("the Python server's span is a child of sinew's client span",
          ps.parent is not None and ps.parent.span_id == int.from_bytes(sc.span_id, "big"))
    # The forwarding server has no Echo service of its own: per the semantic
    # conventions its rpc.method is _OTHER with the path in
    # rpc.method_original; its client span knows the method.
    attributes = {a.key: a.value.string_value for a in ss.attributes}
    check("sinew's server span has the OpenTelemetry RPC attributes",
          attributes.get("rpc.system.name") == "grpc" and attributes.get("rpc.method") == "_OTHER"
          and attributes.get("rpc.method_original") == "/" + METHOD
          and attributes.get("rpc.response.status_code") == "OK"
          and attributes.get("network.peer.address", "").startswith("tcp://127.0.0.1:"), repr(attributes))
    attributes = {a.key: a.value.string_value for a in sc.attributes}
    check("sinew's client span has the method and the target",
          attributes.get("rpc.method") == METHOD
          and attributes.get("server.address", "").startswith("grpc://127.0.0.1:"), repr(attributes))
    check("sinew's spans are named for the method and come from service sinew",
          ss.name == METHOD and sc.name == METHOD and {service for service, _ in sinew_spans} == {"sinew"},
          f"{ss.name!r} {sc.name!r} {sinew_spans[0][0]!r}")
    collector_server.stop(0)
    echo_server.stop(0)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
