#!/usr/bin/env python3
"""A gRPC server written with Python's grpcio, for sinew's client to call.

    python interop_server.py --port-file PATH

Serves grpc.examples.echo.Echo (implemented here), grpcio's own health service
and grpcio's server reflection, on a free port on 127.0.0.1, writes the port to
PATH, and runs until SIGTERM or SIGINT.
"""
import argparse
import os
import signal
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from interop_client import generate_stubs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()

    echo_pb2, echo_grpc, _, _ = generate_stubs()

    class Echo(echo_grpc.EchoServicer):
        def UnaryEcho(self, request, context):
            if request.message == "fail":
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "python says no")
            context.set_trailing_metadata([("x-served-by", "python")])
            return echo_pb2.EchoResponse(message=request.message)

        def ServerStreamingEcho(self, request, context):
            for i in range(3):
                yield echo_pb2.EchoResponse(message=f"{request.message} {i}")

        def ClientStreamingEcho(self, request_iterator, context):
            return echo_pb2.EchoResponse(message="+".join(r.message for r in request_iterator))

        def BidirectionalStreamingEcho(self, request_iterator, context):
            for request in request_iterator:
                yield echo_pb2.EchoResponse(message=request.message.upper())

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    echo_grpc.add_EchoServicer_to_server(Echo(), server)
    health_servicer = health.HealthServicer()
    health_servicer.set("grpc.examples.echo.Echo", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [echo_pb2.DESCRIPTOR.services_by_name["Echo"].full_name, reflection.SERVICE_NAME, "grpc.health.v1.Health"],
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(args.port_file + ".tmp", args.port_file)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=2).wait()


if __name__ == "__main__":
    main()
