"""The baseline: an echo RPC with no work at all, served by the same server as the real RPCs."""
from __future__ import annotations

import grpc

from ecert.bench.v1 import echo_pb2, echo_pb2_grpc


class EchoServicer(echo_pb2_grpc.EchoServiceServicer):
    def Echo(self, request: echo_pb2.EchoRequest, context: grpc.ServicerContext) -> echo_pb2.EchoResponse:
        return echo_pb2.EchoResponse(payload=request.payload)


def register_echo(server: grpc.Server) -> None:
    echo_pb2_grpc.add_EchoServiceServicer_to_server(EchoServicer(), server)
