"""The wire's messages: the generated protobuf modules, compiled from protos/ into the `ecert` package when
the project is installed (that package is generated, never edited nor committed).

Only the message modules are named here; the gRPC stubs (`*_pb2_grpc`) need grpc and belong to whoever calls
or serves, not to the contract.
"""
from __future__ import annotations

from ecert.relay.v1 import relay_pb2
from ecert.v1 import certificate_pb2, clock_pb2, log_pb2, match_pb2, quota_pb2, transmission_pb2, usage_pb2

__all__ = [
    "certificate_pb2", "clock_pb2", "log_pb2", "match_pb2", "quota_pb2", "relay_pb2", "transmission_pb2", "usage_pb2",
]
