"""ecert.v1.UsageService: the partner's utilization feed (server/service/usage.py) as a server stream."""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from ecert.v1 import usage_pb2 as upb
from ecert.v1 import usage_pb2_grpc
from server.api.auth import caller
from server.api.converters import instant_from
from server.api.errors import translate_errors
from server.api.quota_servicer import WATCH_ENDED_KEY, WATCH_ENDED_MAX_DURATION
from server.api.wrapping import Idle
from server.domain.usage import UsageEvent
from server.service.quota import QuotaEventBus, Subscription, watcher_for
from server.service.usage import UsageFeed, UsageUseCases

# A following stream counts against the watch limits as a subscription to the quota bus that wants
# no level (no quota year 0 exists): the bus admits it and bounds its duration, and never delivers to it.
_NO_LEVELS: frozenset[str] = frozenset({""})


def event_to_proto(event: UsageEvent) -> upb.UsageEvent:
    at = Timestamp()
    try:
        at.FromDatetime(dt.datetime.fromisoformat(event.at))
    except ValueError:
        pass  # the entry's own text stays in `entry`
    return upb.UsageEvent(
        cursor=event.cursor, log_index=event.log_index, leaf_hash=event.leaf_hash, entry=event.entry, kind=event.kind, at=at,
        claim_id=event.claim_id, entry_number=event.entry_number, line_number=event.line_number, revision=event.revision,
        issuing_country=event.certificate.issuing_country, certificate_number=event.certificate.number,
        certificate_version=event.certificate.version, decision=event.decision, granted_quantity=event.granted_quantity,
        returned_quantity=event.returned_quantity, unit=event.unit, tpl=event.tpl,
    )


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    # How often a following stream looks for newly integrated entries (the sequencer's tick is shorter).
    POLL_SECONDS = 0.5

    def __init__(self, usage: UsageUseCases, events: QuotaEventBus):
        self.usage = usage
        self.events = events

    def WatchCertificateUsage(self, request: upb.WatchCertificateUsageRequest, context: grpc.ServicerContext) -> Iterator[upb.UsageEvent | Idle]:
        feed, subscription = self._open(request, context)
        # Served by server/api/serving.py, a following stream that is caught up yields Idle and holds no
        # worker until its next look; on a plain context it sleeps.
        paused = getattr(context, "wake", None) is not None
        clock = self.events.quota.clock
        try:
            while context.is_active():
                for event in self._page(feed, context):
                    yield event_to_proto(event)
                if not feed.caught_up:
                    continue
                if subscription is None:
                    return  # the history up to now, and no following
                remaining = subscription.remaining(clock.now())
                if remaining is not None and remaining <= dt.timedelta(0):
                    context.set_trailing_metadata(((WATCH_ENDED_KEY, WATCH_ENDED_MAX_DURATION),))
                    return
                wait = self.POLL_SECONDS if remaining is None else min(self.POLL_SECONDS, remaining.total_seconds())
                if paused:
                    yield Idle(wait)
                else:
                    time.sleep(wait)
        finally:
            if subscription is not None:
                self.events.unsubscribe(subscription)

    @translate_errors()
    def _open(self, request: upb.WatchCertificateUsageRequest, context: grpc.ServicerContext) -> tuple[UsageFeed, Subscription | None]:
        identity = caller(context)
        not_before = instant_from(request.not_before, "not_before") if request.HasField("not_before") else None
        feed = self.usage.open(request.cursor, self.usage.scope(identity, request.issuing_country), not_before)
        subscription = self.events.subscribe(_NO_LEVELS, 0, watcher_for(identity))[0] if request.follow else None
        return feed, subscription

    @translate_errors()
    def _page(self, feed: UsageFeed, context: grpc.ServicerContext) -> list[UsageEvent]:
        return feed.next_page()
