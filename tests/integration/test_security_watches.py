"""WatchQuotas slots with real mutual-TLS identities: per-identity caps, slots kept for customs and
admins, and a maximum duration after which a watch ends cleanly."""
from __future__ import annotations

import datetime as dt
import pathlib
import time
from collections.abc import Iterator
from dataclasses import replace

import grpc
import pytest

from client.tls import server_credentials
from ecert.v1 import quota_pb2 as qpb
from ecert.v1 import quota_pb2_grpc
from server.api.quota_servicer import WATCH_ENDED_KEY, WATCH_ENDED_MAX_DURATION
from server.app import RunningServer, create_server
from server.service.clock import FixedClock
from server.service.quota import QuotaEventBus
from tests.factories import NOW
from tests.grpc_errors import rich_error
from tests.tls_fixtures import DevPki, channel_as, pki, service_settings  # noqa: F401  (fixtures)

WATCH = qpb.WatchQuotasRequest(tpl_numbers=["9823.53.01"], quota_year=2026)  # one level: one snapshot event
MAX_WATCH_SECONDS = 600


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def watch_server(pki: DevPki, tmp_path: pathlib.Path, clock: FixedClock) -> Iterator[RunningServer]:
    # 16 workers: 4 watches in all, 1 of them kept for customs and admins, 2 per identity.
    settings = replace(service_settings(pki, tmp_path / "service"), workers=16, reserved_watches=1, watches_per_identity=2,
                       max_watch_seconds=MAX_WATCH_SECONDS)
    running = create_server(settings, address="127.0.0.1:0", clock=clock, credentials=server_credentials(pki.dir("service")))
    yield running
    running.stop(0)


class Watches:
    """Watches opened during a test; each is cancelled at the end."""

    def __init__(self, pki: DevPki, server: RunningServer):
        self.pki, self.server, self.open = pki, server, []

    def start(self, party: str):  # type: ignore[no-untyped-def]
        """Open a watch as `party` and read its first event (the snapshot): the watch then holds its slot."""
        stream = quota_pb2_grpc.QuotaServiceStub(channel_as(self.pki, party, self.server.port)).WatchQuotas(WATCH, timeout=30)
        self.open.append(stream)
        assert next(stream).kind == qpb.QUOTA_EVENT_KIND_SNAPSHOT
        return stream

    def refused(self, party: str) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as caught:
            self.start(party)
        return caught.value.code(), rich_error(caught.value).reason

    def held(self) -> int:
        return len(self.server.use_cases.events._subscribers)


@pytest.fixture
def watches(pki, watch_server) -> Iterator[Watches]:
    opened = Watches(pki, watch_server)
    yield opened
    for stream in opened.open:
        stream.cancel()


def wait_until(condition, seconds: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("operator", ["admin", "customs"])
def test_an_importer_opening_many_watches_cannot_lock_out_customs_or_an_admin(watches, operator):
    watches.start("importer")
    watches.start("importer")
    for _ in range(5):  # every further watch of the same identity, on new connections too, is refused
        assert watches.refused("importer") == (EXHAUSTED, "TOO_MANY_WATCHES_FOR_CALLER")
    assert watches.held() == 2
    watches.start("importer-other")
    # One slot is left, kept for customs and admins: neither importer nor a partner may take it.
    assert watches.refused("importer-other") == (EXHAUSTED, "TOO_MANY_WATCHERS")
    assert watches.refused("gateway-mx") == (EXHAUSTED, "TOO_MANY_WATCHERS")
    watches.start(operator)
    assert watches.held() == 4
    # Every slot is now taken: the reservation is a floor, not a bonus beyond the total.
    assert watches.refused("customs" if operator == "admin" else "admin") == (EXHAUSTED, "TOO_MANY_WATCHERS")


def test_customs_and_admins_are_capped_per_identity_too(watches):
    watches.start("admin")
    watches.start("admin")
    assert watches.refused("admin") == (EXHAUSTED, "TOO_MANY_WATCHES_FOR_CALLER")
    watches.start("customs")  # another identity still gets the last slot


def test_a_closed_watch_frees_its_callers_place(watches):
    first = watches.start("importer")
    watches.start("importer")
    assert watches.refused("importer") == (EXHAUSTED, "TOO_MANY_WATCHES_FOR_CALLER")
    first.cancel()
    assert wait_until(lambda: watches.held() == 1)
    watches.start("importer")


def test_a_watch_ends_cleanly_after_the_maximum_duration(watches, clock):
    importer = watches.start("importer")
    clock.advance(seconds=MAX_WATCH_SECONDS - 1)
    admin = watches.start("admin")  # opened later: its own duration runs from now
    time.sleep(1.5)  # more than the servicer's idle check: a watch within its duration is still open
    assert not importer.done() and watches.held() == 2

    clock.advance(seconds=1)
    assert list(importer) == []  # the stream ends without error
    assert importer.code() == grpc.StatusCode.OK
    assert dict(importer.trailing_metadata())[WATCH_ENDED_KEY] == WATCH_ENDED_MAX_DURATION
    assert wait_until(lambda: watches.held() == 1)
    assert not admin.done()

    # The ended watch gave its place back: the importer may watch again (two at once, as before).
    watches.start("importer")
    watches.start("importer")
    clock.advance(seconds=MAX_WATCH_SECONDS)
    assert list(admin) == [] and admin.code() == grpc.StatusCode.OK


@pytest.mark.parametrize(
    "limits",
    [{"max_watchers": 0}, {"per_identity": 0}, {"reserved": -1}, {"max_duration": dt.timedelta(0)}],
)
def test_watch_limits_that_would_admit_nobody_or_end_at_once_are_refused_at_start(limits):
    with pytest.raises(ValueError):
        QuotaEventBus(None, **limits)  # type: ignore[arg-type]  (the limits are checked before anything is used)
