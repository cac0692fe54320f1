"""`ecert demo`: the whole road, on the embedded SQLite default with mutual TLS on every hop.

A development PKI; customs' service and the relay as separate processes on loopback ports; the
Mexican gateway issuing a batch through a relay that drops, delays, duplicates, reorders, corrupts
and finds customs unavailable; amendments and cancellations; a few attacks; then a summary drawn
from what each party recorded (the gateway's register, the relay's counters, customs' books).
"""
from __future__ import annotations

import datetime as dt
import pathlib
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

import grpc

from client.pki import PkiLayout, init_pki, issue, new_authority, write_party
from client.tls import secure_channel
from contract.cosignature import verify_cosignature
from contract.identity import Identity, Role
from contract.keys import load_public_key
from ecert.relay.v1 import relay_pb2 as rpb
from ecert.relay.v1 import relay_pb2_grpc
from ecert.v1 import certificate_pb2 as cpb
from ecert.v1 import log_pb2, log_pb2_grpc, transmission_pb2_grpc
from ecert.v1 import transmission_pb2 as tpb
from gateway_sim.claims_player import ClaimsPlayer, ClaimsReport, serves
from gateway_sim.gateway.gateway import Gateway
from gateway_sim.gateway.register import Register
from gateway_sim.processes import Party, start_relay, start_service
from gateway_sim.reference_table import tpl_labels
from gateway_sim.witness_party import alarms, cosigned, start_witness, witness_keygen

DEMO_FAULTS = ["--drop", "0.1", "--delay-ms", "10", "--duplicate", "0.1", "--reorder", "--corrupt", "0.1", "--unavailable", "0.1"]


class PartyDied(RuntimeError):
    """A party the demo started exited on its own; the message carries the end of its log."""


def _require_alive(parties: list[Party]) -> None:
    for party in parties:
        if not party.alive():
            raise PartyDied(f"the {party.name} exited with code {party.process.returncode}; end of its log:\n{party.log_tail()}")


@dataclass
class DemoReport:
    directory: pathlib.Path
    seconds: float = 0.0
    register: dict[str, int] = field(default_factory=dict)
    rejections: dict[str, int] = field(default_factory=dict)  # reason -> count
    gateway: dict[str, int] = field(default_factory=dict)
    relay: dict[str, int] = field(default_factory=dict)
    books: list[tuple[str, str, int, int, Decimal, str]] = field(default_factory=list)  # tpl, label, active, canceled, quantity, unit
    transmissions_on_books: int = 0
    attacks: list[tuple[str, str]] = field(default_factory=list)  # what was tried, how it was refused
    claims: ClaimsReport | None = None  # None when this build's service offers no MatchService
    witness: dict[str, str] = field(default_factory=dict)  # the log's latest checkpoint and who cosigned it
    ok: bool = True


def run_demo(directory: pathlib.Path, *, count: int = 60, seed: int = 2026, log=print) -> DemoReport:  # type: ignore[no-untyped-def]  # `log` prints
    started = time.monotonic()
    report = DemoReport(directory)
    log(f"[1/6] development PKI in {directory / 'pki'}")
    layout = init_pki(directory / "pki")
    parties: list[Party] = []
    try:
        log("[2/6] starting customs' certification service, the relay and the relay operator's log witness (separate processes, mutual TLS)")
        witness_key = witness_keygen(directory / "witness")
        service = start_service(layout.root, directory / "service", env={"ECERT_WITNESS_KEYS": witness_key})
        parties.append(service)
        relay = start_relay(layout.root, directory / "relay", service.address, faults=[*DEMO_FAULTS, "--seed", str(seed)])
        parties.append(relay)
        log_key = log_pb2_grpc.LogServiceStub(secure_channel(service.address, layout.party("witness"))).GetCheckpoint(
            log_pb2.GetCheckpointRequest(), timeout=5).log_verifier_key  # customs publishes it; the witness pins it
        parties.append(start_witness(layout.root, directory / "witness", service.address, log_key))

        log(f"[3/6] gateway issues {count} certificates (+2 large yarn shipments, +3 with clerical mistakes) through the faulty relay")
        customs_key = load_public_key((layout.root / "service" / "receipt-signing.pem.pub").read_bytes())
        register = Register(directory / "gateway" / "register.db")
        gateway = Gateway(
            register, layout.document_signer(), secure_channel(relay.address, layout.party("gateway-mx")),
            seed=seed, resend_after=3.0, customs_key=customs_key,
        )
        _require_alive(parties)
        gateway.issue(count)
        large = gateway.issue_large([400_000, 400_000])  # kg of yarn: together more than TPL 6's level
        gateway.issue_mistaken(3)
        report.ok &= gateway.settle(40, on_tick=lambda: _require_alive(parties))
        log("      amendment wave and cancellations")
        gateway.amend(max(1, count // 10))
        gateway.cancel(max(1, count // 20))
        report.ok &= gateway.settle(40, on_tick=lambda: _require_alive(parties))

        _require_alive(parties)
        log("[4/6] attacks on the road")
        report.attacks = _attacks(layout, service, directory)

        customs_channel = secure_channel(service.address, layout.party("customs"))
        if serves(customs_channel, "ecert.v1.MatchService"):
            log("[5/6] an internal customs client files matching and mismatching claims")
            by_number = {cpb.Certificate.FromString(b).certificate_number: cpb.Certificate.FromString(b) for b in register.certificates("ACTIVE")}
            large_numbers = {register.get(m).certificate_number for m in large}  # type: ignore[union-attr]  # each message in `large` was registered
            report.claims = ClaimsPlayer(customs_channel).play(
                [c for n, c in sorted(by_number.items()) if n not in large_numbers],
                [cpb.Certificate.FromString(b) for b in register.certificates("CANCELED")],
                [by_number[n] for n in sorted(large_numbers) if n in by_number],
                quota_year=dt.date.today().year,
            )
        else:
            log("[5/6] claims skipped: this build's service offers no ecert.v1.MatchService")

        _require_alive(parties)
        log("[6/6] reading back what each party recorded")
        report.register = register.counts()
        report.rejections = dict(Counter(s.reason for s in register.all() if s.state.value == "REJECTED"))
        report.gateway = {"sent": gateway.tally.sent, "re-sent": gateway.tally.resent, "receipts verified": gateway.tally.receipts,
                          "bad receipts": gateway.tally.bad_receipts}
        admin = relay_pb2_grpc.RelayServiceStub(secure_channel(relay.address, layout.party("admin")))
        report.relay = dict(admin.GetRelayStats(rpb.GetRelayStatsRequest(), timeout=5).counters)
        report.books, report.transmissions_on_books = _books(layout, service)
        report.witness = _witnessed(layout, service, directory / "witness", witness_key)
        report.ok &= bool(report.witness.get("cosigned")) and not report.witness.get("alarms")
        register.close()
    finally:
        for party in reversed(parties):
            party.stop()
    report.seconds = time.monotonic() - started
    return report


def _witnessed(layout: PkiLayout, service: Party, witness_dir: pathlib.Path, witness_key: str, wait: float = 15.0) -> dict[str, str]:
    """Waits until the witness has cosigned the log's latest checkpoint, as the service serves it."""
    stub = log_pb2_grpc.LogServiceStub(secure_channel(service.address, layout.party("customs")))
    deadline = time.monotonic() + wait
    while True:
        latest = stub.GetCheckpoint(log_pb2.GetCheckpointRequest(), timeout=5)
        done = cosigned(witness_dir)
        found = verify_cosignature(latest.note, [witness_key])
        if found or time.monotonic() > deadline or alarms(witness_dir):
            return {"size": str(latest.tree_size), "witnessed size": str(done[0] if done else 0),
                    "cosigned": ", ".join(c.name for c in found), "alarms": ", ".join(alarms(witness_dir))}
        time.sleep(0.2)


def _books(layout: PkiLayout, service: Party) -> tuple[list[tuple[str, str, int, int, Decimal, str]], int]:
    """Customs' books as an internal customs client sees them, by TPL."""
    stub = transmission_pb2_grpc.TransmissionServiceStub(secure_channel(service.address, layout.party("customs")))
    active: Counter[str] = Counter()
    canceled: Counter[str] = Counter()
    quantity: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    versions = 0
    token = ""
    while True:
        page = stub.ListCertificates(tpb.ListCertificatesRequest(issuing_country="MX", page_size=500, page_token=token), timeout=10)
        for stored in page.certificates:
            tpl = stored.certificate.tpl_number
            versions += stored.version
            if stored.status == cpb.CERTIFICATE_STATUS_CANCELED:
                canceled[tpl] += 1
            else:
                active[tpl] += 1
                quantity[tpl][stored.certificate.unit] += Decimal(stored.certificate.quantity)
        token = page.next_page_token
        if not token:
            break
    labels = tpl_labels()
    rows = []
    for tpl in sorted(set(active) | set(canceled)):
        units = quantity[tpl] or {"": Decimal(0)}
        for index, (unit, amount) in enumerate(sorted(units.items())):
            if index == 0:
                rows.append((tpl, labels.get(tpl, tpl), active[tpl], canceled[tpl], amount, unit))
            else:  # the same TPL certified in another unit: one more line, certificates counted once
                rows.append(("", "", 0, 0, amount, unit))
    return rows, versions


def _refusal(call) -> str:  # type: ignore[no-untyped-def]  # `call` is a zero-argument RPC call
    try:
        call()
    except grpc.RpcError as error:
        from google.rpc import error_details_pb2
        from grpc_status import rpc_status

        status = rpc_status.from_call(error)
        reason = ""
        for detail in status.details if status else []:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
        return f"{error.code().name} {reason}".strip()
    return "ACCEPTED (unexpected)"


def _attacks(layout: PkiLayout, service: Party, directory: pathlib.Path) -> list[tuple[str, str]]:
    from contract.envelope import seal

    signer = layout.document_signer()
    certificate = cpb.Certificate(
        certificate_number="MX99-99999999", issuing_country="MX", tpl_number="9823.53.01", htsus_number="6109.10.0012",
        goods_description="Men's knit cotton T-shirts", quantity="100", unit="DOZ", importer_of_record="12-345678900",
        exporter=cpb.Party(name="X", address="Y"), producer=cpb.Party(name="X", address="Y"), quota_year=dt.date.today().year,
        issue_date=dt.date.today().isoformat(), last_valid_date=f"{dt.date.today().year}-12-31", invoice_number="ATTACK-1",
    )
    envelope = seal(tpb.SignedEnvelope(message_id="attack-1", sender="MX", action=tpb.TRANSMISSION_ACTION_CREATE, certificate=certificate), signer)
    altered = tpb.SignedEnvelope()
    altered.CopyFrom(envelope)
    altered.certificate.quantity = "900"

    stranger = new_authority("an impostor's CA")
    impostor = write_party(directory / "impostor", stranger, issue(stranger, Identity("fake Mexico gateway", Role.PARTNER, frozenset({"MX"}))))
    (impostor / "ca.pem").write_bytes((layout.party("gateway-mx") / "ca.pem").read_bytes())  # it knows whom to call

    def submit_as(party_dir: pathlib.Path, env: tpb.SignedEnvelope):  # type: ignore[no-untyped-def]  # returns a zero-argument RPC call
        stub = transmission_pb2_grpc.TransmissionServiceStub(secure_channel(service.address, party_dir))
        return lambda: stub.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env), timeout=5)

    return [
        ("a relay alters the quantity of a signed certificate", _refusal(submit_as(layout.party("relay"), altered))),
        ("an importer tries to transmit a certificate", _refusal(submit_as(layout.party("importer"), envelope))),
        ("a gateway with a certificate from another CA", _refusal(submit_as(impostor, envelope))),
    ]
