"""SIGKILL the service in the middle of a transmission stream, restart it, retry what was not answered.

Nothing acknowledged may be lost, nothing may be stored twice, and a retry of anything the service
had stored (answered or not) returns the very receipt it signed the first time.
"""
from __future__ import annotations

import pathlib
import threading
from dataclasses import dataclass, field

import grpc
import pytest
from sqlalchemy import create_engine, text

from ecert.v1 import transmission_pb2 as tpb
from tests.factories import CREATE, REPLACE, new_signer
from tests.processes import Deployment, ServiceProcess, envelope_now, stub, todays_certificate

pytestmark = pytest.mark.slow

LANES = 8  # one certificate each, its transmissions in order (CREATE, then REPLACEs)
PER_LANE = 20
KILL_AFTER = 50  # acknowledged transmissions before the SIGKILL


@dataclass
class Lane:
    envelopes: list[tpb.SignedEnvelope]
    receipts: dict[int, tpb.Receipt] = field(default_factory=dict)  # index -> receipt the client saw

    @property
    def next_unanswered(self) -> int:
        return len(self.receipts)


def make_lanes(deployment: Deployment) -> list[Lane]:
    lanes = []
    for lane in range(LANES):
        number = f"MX26-{lane:08d}"
        envelopes = [envelope_now(deployment.partner, todays_certificate(number), message_id=f"{number}-0", action=CREATE)]
        for step in range(1, PER_LANE):
            envelopes.append(
                envelope_now(deployment.partner, todays_certificate(number, quantity=str(1000 + step)),
                             message_id=f"{number}-{step}", action=REPLACE, replaces_version=step)
            )
        lanes.append(Lane(envelopes))
    return lanes


def drive(target: str, lanes: list[Lane], acknowledged: threading.Semaphore | None = None) -> None:
    """Each lane sends its next unanswered transmission until done or until the service is gone."""
    channel, service = stub(target)

    def run(lane: Lane) -> None:
        while lane.next_unanswered < len(lane.envelopes):
            env = lane.envelopes[lane.next_unanswered]
            try:
                response = service.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env), timeout=20)
            except grpc.RpcError as error:
                assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), error
                return  # not answered: the client retries it after the restart
            lane.receipts[lane.next_unanswered] = response.receipt
            if acknowledged:
                acknowledged.release()

    threads = [threading.Thread(target=run, args=(lane,)) for lane in lanes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    channel.close()


def test_sigkill_mid_stream_loses_nothing_acknowledged_and_stores_nothing_twice(tmp_path: pathlib.Path, database_url: str):
    deployment = Deployment(tmp_path, database_url, new_signer("mx-se-2026-1"))
    lanes = make_lanes(deployment)
    total = LANES * PER_LANE

    service = ServiceProcess(deployment, "service").start()
    acknowledged = threading.Semaphore(0)
    stream = threading.Thread(target=drive, args=(service.target, lanes, acknowledged))
    stream.start()
    for _ in range(KILL_AFTER):
        assert acknowledged.acquire(timeout=60), "the stream stalled before the kill"
    service.kill()
    stream.join(120)
    before_crash = {(i, n): r for i, lane in enumerate(lanes) for n, r in lane.receipts.items()}
    assert KILL_AFTER <= len(before_crash) < total, "the kill did not land mid-stream"

    restarted = ServiceProcess(deployment, "restarted").start()
    try:
        drive(restarted.target, lanes)  # retry what was not answered, then go on
        assert all(len(lane.receipts) == PER_LANE for lane in lanes)
        # Everything acknowledged before the crash is still there, under the same signed receipt.
        channel, svc = stub(restarted.target)
        with channel:
            for (i, n), receipt in before_crash.items():
                again = svc.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=lanes[i].envelopes[n]), timeout=20)
                assert again.replayed and again.receipt == receipt
            for i in range(LANES):
                latest = svc.GetCertificate(tpb.GetCertificateRequest(issuing_country="MX", certificate_number=f"MX26-{i:08d}"))
                assert latest.certificate.version == PER_LANE
                assert latest.certificate.receipt_id == lanes[i].receipts[PER_LANE - 1].receipt_id
    finally:
        restarted.stop()

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT message_id, receipt_id FROM transmissions")).all()
            versions = connection.execute(text("SELECT count(*) FROM certificate_versions")).scalar_one()
    finally:
        engine.dispose()
    assert len(stored) == total == versions  # each transmission exactly once
    seen = {lane.envelopes[n].message_id: r.receipt_id for lane in lanes for n, r in lane.receipts.items()}
    assert dict(stored) == seen  # and under the receipt its sender holds
