"""ecert.v1.QuotaService: status reads and the WatchQuotas stream."""
from __future__ import annotations

import datetime as dt
import queue
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from ecert.v1 import quota_pb2 as qpb
from ecert.v1 import quota_pb2_grpc
from server.api import claim_converters as conv
from server.api.auth import caller
from server.api.converters import instant_from
from server.api.errors import translate_errors
from server.api.wrapping import Idle
from server.service.quota import QuotaEventBus, QuotaUseCases, watcher_for

# Trailing metadata of a watch that the service ended at its maximum duration (status OK).
WATCH_ENDED_KEY = "ecert-watch-ended"
WATCH_ENDED_MAX_DURATION = "MAX_DURATION"


def _as_of(request: qpb.GetQuotaStatusRequest | qpb.ListQuotasRequest) -> dt.datetime | None:
    return instant_from(request.as_of, "as_of") if request.HasField("as_of") else None


class QuotaServicer(quota_pb2_grpc.QuotaServiceServicer):
    # How often a quiet stream checks whether its client is still there.
    IDLE_CHECK_SECONDS = 1.0

    def __init__(self, quota: QuotaUseCases, events: QuotaEventBus):
        self.quota = quota
        self.events = events

    @translate_errors()
    def ListQuotas(self, request: qpb.ListQuotasRequest, context: grpc.ServicerContext) -> qpb.ListQuotasResponse:
        return qpb.ListQuotasResponse(quotas=[conv.status_to_proto(s) for s in self.quota.list(request.quota_year, _as_of(request))])

    @translate_errors()
    def GetQuotaStatus(self, request: qpb.GetQuotaStatusRequest, context: grpc.ServicerContext) -> qpb.GetQuotaStatusResponse:
        status = self.quota.status(request.tpl_number, request.quota_year, _as_of(request))
        return qpb.GetQuotaStatusResponse(status=conv.status_to_proto(status))

    def WatchQuotas(self, request: qpb.WatchQuotasRequest, context: grpc.ServicerContext) -> Iterator[qpb.QuotaEvent | Idle]:
        subscription, snapshot = self._subscribe(request, context)
        # Served by server/api/serving.py, a watch with nothing to send yields Idle and holds no worker
        # until the bus delivers to it (which wakes it) or the idle check is due; on a plain context it
        # waits on its queue.
        wake = getattr(context, "wake", None)
        if wake is not None:
            _wake_on_delivery(subscription.events, wake)
        clock = self.quota.clock
        try:
            for status in snapshot:
                yield conv.event_to_proto(conv.QuotaEvent(None, status))
            while context.is_active():
                remaining = subscription.remaining(clock.now())
                if remaining is not None and remaining <= dt.timedelta(0):
                    # Ends cleanly (OK) and says why; a new watch starts with a fresh snapshot.
                    context.set_trailing_metadata(((WATCH_ENDED_KEY, WATCH_ENDED_MAX_DURATION),))
                    return
                wait = self.IDLE_CHECK_SECONDS if remaining is None else min(self.IDLE_CHECK_SECONDS, remaining.total_seconds())
                try:
                    event = subscription.events.get_nowait() if wake is not None else subscription.events.get(timeout=wait)
                except queue.Empty:
                    if wake is not None:
                        yield Idle(wait)
                    continue
                yield conv.event_to_proto(event)
        finally:
            self.events.unsubscribe(subscription)

    @translate_errors()
    def _subscribe(self, request: qpb.WatchQuotasRequest, context: grpc.ServicerContext):  # type: ignore[no-untyped-def]  # an untyped event stream
        year = request.quota_year or self.quota.calendar.year_of(self.quota.clock.now())
        return self.events.subscribe(frozenset(request.tpl_numbers), year, watcher_for(caller(context)))


def _wake_on_delivery(events: queue.Queue[Any], wake: Callable[[], None]) -> None:
    """The bus delivers with put_nowait; from now on a delivery also wakes the watch. One that races
    with this still lands in the queue, and is read when the pause ends at the latest."""
    put = events.put_nowait

    def put_and_wake(item: Any) -> None:
        put(item)
        wake()

    events.put_nowait = put_and_wake  # type: ignore[method-assign]  # wraps put_nowait so each event also wakes the stream
