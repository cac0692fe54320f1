"""Claims per second on PostgreSQL with one and with several `ecert serve` replicas.

    python -m bench.replicas --postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
                             [--replicas 1 2] [--claims 3000] [--in-flight 16] [--clients 2] [--allotments auto|on|off] [--quick] [--json FILE]

For each replica count: a fresh database on that server (dropped afterwards), the replicas started
as real processes (plaintext, loopback), 20 certificates transmitted, then MatchClaim calls on the
packaged TPL 1 level (large: nothing fills, every claim charges a certificate and the level) sent
round-robin to the replicas by `--clients` load processes (two by default). Prints a table; --json writes the results
(rpc, in_flight, calls_per_s, p50_ms, p99_ms, ratio_to_baseline; plus replicas). The client, the
replicas and PostgreSQL share the machine's cores: read the figures as "on this machine".
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = pathlib.Path(__file__).resolve().parents[1]
SERVING = re.compile(r"ecert serving on (\S+):(\d+)")
CERTIFICATES = 20
CLIENT_PROCESSES = 2  # load processes by default (--clients): two cannot drive eight replicas


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Cluster:
    """A fresh database and R service processes sharing it, its trust store and receipt key."""

    def __init__(self, server_url: str, replicas: int, workdir: pathlib.Path, allotments: str = "auto"):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from contract.keys import trust_entry, write_trust_store
        from contract.signing import Signer
        from server.adapters.keystore import load_or_create_log_key, load_or_create_signer

        self.admin = create_engine(make_url(server_url), isolation_level="AUTOCOMMIT")
        self.name = f"ecert_bench_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.url = make_url(server_url).set(database=self.name).render_as_string(hide_password=False)
        self.partner = Signer("mx-bench-1", Ed25519PrivateKey.generate())
        year = dt.timedelta(days=365)
        write_trust_store(workdir / "partner-keys.json", [trust_entry(self.partner, "MX", _now() - year, _now() + year)])
        load_or_create_signer(workdir / "receipt.pem", "us-cbp-receipts-1")
        load_or_create_log_key(workdir / "log-signing.pem")  # the replicas' one log key, beside the receipt key
        env = {k: v for k, v in os.environ.items() if not k.startswith("ECERT_")}
        env.update(ECERT_DATABASE_URL=self.url, ECERT_TRUST_STORE=str(workdir / "partner-keys.json"),
                   ECERT_RECEIPT_KEY=str(workdir / "receipt.pem"), ECERT_LOG_FORMAT="json", ECERT_ALLOTMENTS=allotments)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.targets: list[str] = []
        for n in range(replicas):
            log = workdir / f"replica-{n}.log"
            with open(log, "wb") as out:
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-m", "client.cli", "serve", "--insecure", "--port", "0"],
                    env={**env, "ECERT_DATA_DIR": str(workdir / f"replica-{n}")}, cwd=ROOT, stdout=out, stderr=out,
                    stdin=subprocess.DEVNULL))
            deadline = time.monotonic() + 60
            while not SERVING.search(log.read_text(errors="replace")):
                if time.monotonic() > deadline or self.processes[-1].poll() is not None:
                    raise RuntimeError(f"replica {n} did not start:\n{log.read_text()}")
                time.sleep(0.05)
            self.targets.append(f"127.0.0.1:{SERVING.search(log.read_text()).group(2)}")  # type: ignore[union-attr]  # waited for SERVING above

    def close(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        with self.admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


def transmit(cluster: Cluster) -> list[str]:
    from contract.envelope import seal
    from ecert.v1 import certificate_pb2 as cpb
    from ecert.v1 import transmission_pb2 as tpb
    from ecert.v1 import transmission_pb2_grpc

    today = _now().date()
    numbers = [f"MX{today.year % 100:02d}-{n:08d}" for n in range(CERTIFICATES)]
    with grpc.insecure_channel(cluster.targets[0]) as channel:
        service = transmission_pb2_grpc.TransmissionServiceStub(channel)
        for n, number in enumerate(numbers):
            cert = cpb.Certificate(
                certificate_number=number, issuing_country="MX", tpl_number="9823.53.01", htsus_number="6109.10.0012",
                goods_description="Knit cotton T-shirts", quantity="10000000", unit="DOZ", importer_of_record="12-345678900",
                exporter=cpb.Party(name="Exportadora SA", address="Monterrey", tax_id="EXP010101AAA"),
                producer=cpb.Party(name="Confecciones SA", address="León", tax_id="CON020202BBB"),
                quota_year=today.year, issue_date=today.isoformat(),
                last_valid_date=dt.date(today.year, 12, 31).isoformat(), invoice_number=f"INV-{n}")
            envelope = tpb.SignedEnvelope(message_id=f"bench-{n}", sender="MX", action=tpb.TRANSMISSION_ACTION_CREATE, certificate=cert)
            service.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=seal(envelope, cluster.partner)))
    return numbers


def _line(index: int, numbers: list[str], base: int) -> bytes:
    from contract.entry_number import make_entry_number
    from ecert.v1 import match_pb2 as mpb

    now = _now()
    line = mpb.EntrySummaryLine(
        entry_number=make_entry_number("B76", base + index), line_number=1, filer_code="B76",
        importer_of_record="12-345678900", entry_type="02", country_of_origin="MX", htsus_number="6109.10.0012",
        tpl_number="9823.53.01", spi="S+", certificate_number=numbers[index % len(numbers)], quantity="1", unit="DOZ",
        date_of_importation=now.date().isoformat())
    # Presented (paid) now: after the certificates were transmitted, as a claim must be.
    for name, minutes in (("filed_at", 30), ("arrived_at", 20), ("paid_at", 0)):
        getattr(line, name).FromDatetime(now - dt.timedelta(minutes=minutes))
    return mpb.MatchClaimRequest(line=line).SerializeToString()


def _client(targets: list[str], numbers: list[str], indexes: list[int], base: int, threads: int,
            start_at: float, out: "multiprocessing.Queue[list[float]]") -> None:
    """One client process: its threads send its share of claims, round-robin over the replicas."""
    payloads = [(i, _line(i, numbers, base)) for i in indexes]
    channels = [grpc.insecure_channel(t) for t in targets]
    calls = [c.unary_unary("/ecert.v1.MatchService/MatchClaim") for c in channels]
    latencies: list[float] = []

    def send(item: tuple[int, bytes]) -> None:
        index, payload = item
        began = time.perf_counter()
        calls[index % len(calls)](payload, timeout=60)
        latencies.append(time.perf_counter() - began)

    time.sleep(max(0.0, start_at - time.time()))
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, payloads))
    out.put(latencies)


def measure(
    cluster: Cluster, numbers: list[str], claims: int, in_flight: int, base: int, clients: int = CLIENT_PROCESSES
) -> dict[str, float]:
    queue: multiprocessing.Queue[list[float]] = multiprocessing.Queue()
    start_at = time.time() + 1.0
    shares = [list(range(k, claims, clients)) for k in range(clients)]
    workers = [multiprocessing.Process(target=_client, args=(cluster.targets, numbers, share, base,
                                                             max(1, in_flight // clients), start_at, queue))
               for share in shares]
    for worker in workers:
        worker.start()
    latencies = [x for _ in workers for x in queue.get(timeout=600)]
    finished = time.time()
    for worker in workers:
        worker.join()
    latencies.sort()
    return {
        "calls_per_s": round(claims / (finished - start_at), 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres-url", default=os.environ.get("ECERT_BENCH_POSTGRES_URL") or os.environ.get("ECERT_TEST_POSTGRES_URL"))
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--claims", type=int, default=3000)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--clients", type=int, default=int(os.environ.get("BENCH_CLIENTS") or CLIENT_PROCESSES),
                        help="load-generating processes (each with in-flight / clients threads)")
    parser.add_argument("--allotments", choices=("auto", "on", "off"), default="auto",
                        help="the replicas' per-replica allotments (ECERT_ALLOTMENTS; auto: on with PostgreSQL)")
    parser.add_argument("--quick", action="store_true", help="300 claims per run")
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args()
    if not args.postgres_url:
        parser.error("--postgres-url (or ECERT_BENCH_POSTGRES_URL) is required")
    claims = 300 if args.quick else args.claims

    results = []
    for replicas in args.replicas:
        with tempfile.TemporaryDirectory(prefix="ecert-bench-") as workdir:
            cluster = Cluster(args.postgres_url, replicas, pathlib.Path(workdir), args.allotments)
            try:
                numbers = transmit(cluster)
                measure(cluster, numbers, min(200, claims), args.in_flight, base=1_000_000, clients=args.clients)  # warm-up
                row = measure(cluster, numbers, claims, args.in_flight, base=2_000_000, clients=args.clients)
            finally:
                cluster.close()
        results.append({"rpc": "MatchClaim", "replicas": replicas, "in_flight": args.in_flight, "clients": args.clients,
                        "allotments": args.allotments, **row})
    baseline = results[0]["calls_per_s"]
    print(f"{'rpc':<12}{'replicas':>9}{'in_flight':>10}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>7}")
    for row in results:
        row["ratio_to_baseline"] = round(row["calls_per_s"] / baseline, 2)
        print(f"{row['rpc']:<12}{row['replicas']:>9}{row['in_flight']:>10}{row['calls_per_s']:>10}"
              f"{row['p50_ms']:>9}{row['p99_ms']:>9}{row['ratio_to_baseline']:>7}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
