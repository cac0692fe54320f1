"""ecert.v1.ClockService: registered only when the service runs on a simulated clock."""
from __future__ import annotations

import datetime as dt

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from ecert.v1 import clock_pb2 as kpb
from ecert.v1 import clock_pb2_grpc
from server.api.converters import instant_from
from server.api.errors import translate_errors
from server.service.clock_control import ClockControl


def _stamp(at: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


class ClockServicer(clock_pb2_grpc.ClockServiceServicer):
    def __init__(self, control: ClockControl):
        self.control = control

    @translate_errors()
    def GetTime(self, request: kpb.GetTimeRequest, context: grpc.ServicerContext) -> kpb.GetTimeResponse:
        return kpb.GetTimeResponse(now=_stamp(self.control.now()), simulated=True)

    @translate_errors()
    def SetTime(self, request: kpb.SetTimeRequest, context: grpc.ServicerContext) -> kpb.SetTimeResponse:
        at = instant_from(request.now, "now") if request.HasField("now") else None
        return kpb.SetTimeResponse(now=_stamp(self.control.set(at)))

    @translate_errors()
    def AdvanceTime(self, request: kpb.AdvanceTimeRequest, context: grpc.ServicerContext) -> kpb.AdvanceTimeResponse:
        by = request.by.ToTimedelta() if request.HasField("by") else None
        return kpb.AdvanceTimeResponse(now=_stamp(self.control.advance(by)))
