"""The service's observability interceptor: the kit's (service_kit/interceptor.py), reporting to the
service's metrics and unpacking the Receipt a rejected transmission carries in its error status."""
from __future__ import annotations

from ecert.v1 import transmission_pb2 as tpb
from server.observability.metrics import ServiceMetrics
from service_kit import interceptor


class ObservabilityInterceptor(interceptor.ObservabilityInterceptor):
    def __init__(self, metrics: ServiceMetrics | None = None):
        super().__init__(metrics, detail_types=(tpb.Receipt,))
