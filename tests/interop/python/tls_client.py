#!/usr/bin/env python3
"""Python's grpcio calls sinew servers over TLS and mutual TLS.

    python tls_client.py --pki DIR --other-pki DIR --tls 127.0.0.1:PORT --mtls 127.0.0.1:PORT

--tls is a server with a certificate only; --mtls one that requires client
certificates from DIR's CA and denies ServerStreamingEcho to the "intern"
identity (scripts/tls-fixtures.sh starts both). DIR holds `sinew certs`
output: ca.crt, teller.*, intern.*, expired.*; --other-pki another CA's
ca.crt and stranger.*. Prints one line per check and ends with
"N passed, M failed"; exits non-zero if anything failed.
"""
import argparse
import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(__file__))
from interop_client import Checks, generate_stubs  # noqa: E402


def read(path):
    with open(path, "rb") as file:
        return file.read()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pki", required=True)
    parser.add_argument("--other-pki", required=True)
    parser.add_argument("--tls", required=True)
    parser.add_argument("--mtls", required=True)
    args = parser.parse_args()
    echo_pb2, echo_grpc, _, _ = generate_stubs()
    check = Checks()

    def stub(address, ca_dir, identity=None, identity_dir=None):
        key = chain = None
        if identity:
            directory = identity_dir or args.pki
            key = read(os.path.join(directory, f"{identity}.key"))
            chain = read(os.path.join(directory, f"{identity}.crt"))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read(os.path.join(ca_dir, "ca.crt")),
            private_key=key, certificate_chain=chain)
        return echo_grpc.EchoStub(grpc.secure_channel(address, credentials))

    def unary(echo):
        reply = echo.UnaryEcho(echo_pb2.EchoRequest(message="hi from python"), timeout=10)
        assert reply.message == "hi from python", reply

    def streaming(echo):
        replies = list(echo.ServerStreamingEcho(
            echo_pb2.EchoRequest(message="tick"), metadata=[("x-repeat", "3")], timeout=10))
        assert [r.message for r in replies] == ["tick"] * 3, replies

    def fails(function, code, text=""):
        try:
            function()
        except grpc.RpcError as error:
            assert error.code() == code, (error.code(), error.details())
            assert text in (error.details() or ""), error.details()
            return
        raise AssertionError(f"succeeded; expected {code}")

    check("TLS: unary", lambda: unary(stub(args.tls, args.pki)))
    check("TLS: server streaming", lambda: streaming(stub(args.tls, args.pki)))
    check("TLS: a server from an untrusted CA is refused",
          lambda: fails(lambda: unary(stub(args.tls, args.other_pki)), grpc.StatusCode.UNAVAILABLE))
    check("mTLS: the teller streams", lambda: streaming(stub(args.mtls, args.pki, "teller")))
    check("mTLS: the intern calls unary", lambda: unary(stub(args.mtls, args.pki, "intern")))
    check("mTLS: the policy denies the intern streaming",
          lambda: fails(lambda: streaming(stub(args.mtls, args.pki, "intern")),
                        grpc.StatusCode.PERMISSION_DENIED, "permission denied"))
    check("mTLS: no client certificate is refused",
          lambda: fails(lambda: unary(stub(args.mtls, args.pki)), grpc.StatusCode.UNAVAILABLE))
    check("mTLS: an expired client certificate is refused",
          lambda: fails(lambda: unary(stub(args.mtls, args.pki, "expired")), grpc.StatusCode.UNAVAILABLE))
    check("mTLS: a client certificate from another CA is refused",
          lambda: fails(lambda: unary(stub(args.mtls, args.pki, "stranger", args.other_pki)),
                        grpc.StatusCode.UNAVAILABLE))
    sys.exit(check.summary())


if __name__ == "__main__":
    main()
