#!/usr/bin/env python3
"""Python's grpcio, a gRPC implementation nobody here wrote, calls a sinew server.

    python interop_client.py --tcp 127.0.0.1:PORT --unix /path/to/sinew.sock

Stubs are generated at run time from the repository's .proto files with
grpc_tools.protoc (from PyPI, bundled protoc). Prints one line per check and
ends with "N passed, M failed"; exits non-zero if anything failed.
"""
import argparse
import importlib
import os
import sys
import tempfile
import traceback

import grpc
from grpc_tools import protoc

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PROTO_DIR = os.path.join(ROOT, "crates", "sinew-examples", "proto")


def generate_stubs():
    out = tempfile.mkdtemp(prefix="sinew-interop-")
    for proto in ("echo.proto", "kv.proto"):
        code = protoc.main([
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            os.path.join(PROTO_DIR, proto),
        ])
        if code != 0:
            raise RuntimeError(f"protoc failed on {proto}")
    sys.path.insert(0, out)
    return (importlib.import_module("echo_pb2"), importlib.import_module("echo_pb2_grpc"),
            importlib.import_module("kv_pb2"), importlib.import_module("kv_pb2_grpc"))


class Checks:
    """Runs named checks, one line each, going on after a failure."""

    def __init__(self):
        self.results = []

    def __call__(self, name, function):
        try:
            function()
            self.results.append(True)
            print(f"ok    {name}")
        except Exception:  # noqa: BLE001 - report every failure and go on
            self.results.append(False)
            print(f"FAIL  {name}")
            traceback.print_exc()

    def summary(self):
        """Prints the tally; the process's exit status."""
        passed, failed = self.results.count(True), self.results.count(False)
        print(f"{passed} passed, {failed} failed")
        return 0 if failed == 0 else 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tcp", required=True, help="host:port of the sinew server")
    parser.add_argument("--unix", required=True, help="Unix socket path of the same server")
    args = parser.parse_args()

    echo_pb2, echo_grpc, kv_pb2, kv_grpc = generate_stubs()
    channel = grpc.insecure_channel(args.tcp)
    echo = echo_grpc.EchoStub(channel)
    kv = kv_grpc.KeyValueStub(channel)
    check = Checks()

    def unary():
        reply = echo.UnaryEcho(echo_pb2.EchoRequest(message="hello"), timeout=10)
        assert reply.message == "hello", reply

    def server_streaming():
        replies = list(echo.ServerStreamingEcho(
            echo_pb2.EchoRequest(message="tick"), metadata=[("x-repeat", "4")], timeout=10))
        assert [r.message for r in replies] == ["tick"] * 4, replies

    def client_streaming():
        reply = echo.ClientStreamingEcho(
            iter([echo_pb2.EchoRequest(message=m) for m in ("a", "b", "c")]), timeout=10)
        assert reply.message == "a\nb\nc", reply

    def bidirectional():
        replies = echo.BidirectionalStreamingEcho(
            iter([echo_pb2.EchoRequest(message=f"ping {i}") for i in range(10)]), timeout=10)
        assert [r.message for r in replies] == [f"ping {i}" for i in range(10)]

    def metadata_echo():
        reply, call = echo.UnaryEcho.with_call(
            echo_pb2.EchoRequest(message="m"),
            metadata=[("x-echo-user", "ada"), ("x-echo-blob-bin", b"\x00\xff")], timeout=10)
        headers = dict(call.initial_metadata())
        assert headers.get("x-echo-user") == "ada", headers
        assert headers.get("x-echo-blob-bin") == b"\x00\xff", headers

    def deadline():
        try:
            for _ in kv.Watch(kv_pb2.WatchRequest(prefix="none/"), timeout=0.3):
                pass
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
            return
        raise AssertionError("the watch should have ended with DEADLINE_EXCEEDED")

    def error_status():
        try:
            kv.Get(kv_pb2.GetRequest(key="missing"), timeout=10)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND, error
            assert error.details() == 'no value for key "missing"', error.details()
            return
        raise AssertionError("Get of a missing key should fail")

    def unknown_method():
        call = channel.unary_unary("/grpc.examples.echo.Echo/Nope")
        try:
            call(b"", timeout=10)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNIMPLEMENTED, error
            return
        raise AssertionError("an unknown method should be UNIMPLEMENTED")

    def health_check():
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="grpc.examples.echo.Echo"), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, reply
        overall = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert overall.status == health_pb2.HealthCheckResponse.SERVING, overall

    def reflection_listing():
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
            ProtoReflectionDescriptorDatabase,
        )
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        for expected in ("grpc.examples.echo.Echo", "sinew.examples.kv.KeyValue", "grpc.health.v1.Health"):
            assert expected in services, services
        # And a schema, fetched from the server.
        file = database.FindFileContainingSymbol("grpc.examples.echo.Echo")
        assert file.package == "grpc.examples.echo", file

    def unix_socket():
        # grpc-core (C++, Python, Ruby) since 1.57 sends the percent-encoded socket
        # path as :authority, which hyper's HTTP/2 layer (h2) rejects as a malformed
        # authority (hyperium/h2#487); grpc-go and tonic send "localhost". Setting
        # the authority is the standard client-side remedy (grpcurl: -authority).
        options = [("grpc.default_authority", "localhost")]
        with grpc.insecure_channel(f"unix://{args.unix}", options=options) as unix_channel:
            reply = echo_grpc.EchoStub(unix_channel).UnaryEcho(
                echo_pb2.EchoRequest(message="over unix"), timeout=10)
            assert reply.message == "over unix", reply

    def gzip_compression():
        with grpc.insecure_channel(args.tcp, compression=grpc.Compression.Gzip) as gzip_channel:
            reply = echo_grpc.EchoStub(gzip_channel).UnaryEcho(
                echo_pb2.EchoRequest(message="squeezed " * 100), timeout=10)
            assert reply.message == "squeezed " * 100

    for name, function in [
        ("unary call", unary),
        ("server streaming with request metadata", server_streaming),
        ("client streaming", client_streaming),
        ("bidirectional streaming", bidirectional),
        ("metadata echoed back (ASCII and -bin)", metadata_echo),
        ("deadline exceeded (grpc-timeout)", deadline),
        ("error status with message", error_status),
        ("unknown method is UNIMPLEMENTED", unknown_method),
        ("health Check", health_check),
        ("reflection listing and schema (v1alpha)", reflection_listing),
        ("gRPC over a Unix socket", unix_socket),
        ("gzip compression", gzip_compression),
    ]:
        check(name, function)

    channel.close()
    return check.summary()


if __name__ == "__main__":
    sys.exit(main())
