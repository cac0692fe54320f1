"""Where the tests' databases come from: a fresh SQLite file, or a fresh PostgreSQL database.

PostgreSQL is the server named by ECERT_TEST_POSTGRES_URL when it is set. Otherwise the first test
that needs PostgreSQL starts a throwaway cluster for the session on a free loopback port, with the
same script as CI (`.ci/pg-cluster`, which finds Debian's server binaries or, as root, installs
them), and the session removes it at the end. Each test gets its own database, cloned from a
template migrated once per session, and dropped after. Only when no server can be had are the
PostgreSQL tests skipped, with a reason saying how to enable them, except where
ECERT_REQUIRE_POSTGRES is set (CI): there they fail, so that CI can never pass while silently
skipping them.
"""
from __future__ import annotations

import atexit
import os
import pathlib
import subprocess
import tempfile
import uuid
from collections import Counter

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

URL_VARIABLE = "ECERT_TEST_POSTGRES_URL"
REQUIRE_VARIABLE = "ECERT_REQUIRE_POSTGRES"
ENGINES = ("sqlite", "postgres")
PG_CLUSTER = pathlib.Path(__file__).resolve().parents[1] / ".ci" / "pg-cluster"
CLUSTER_START_TIMEOUT_S = 600  # a first run as root may install Debian's postgresql package
HOW_TO_ENABLE = (
    f"install PostgreSQL's server binaries (Debian: apt-get install postgresql) so that {PG_CLUSTER.name} can start "
    f"a throwaway cluster, or set {URL_VARIABLE} to a server's SQLAlchemy URL "
    "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres; the user must be allowed to create databases)"
)


def configured_url() -> str | None:
    raw = os.environ.get(URL_VARIABLE, "").strip()
    if not raw:
        return None
    url = make_url(raw)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def unavailable(reason: str, how: str = HOW_TO_ENABLE) -> None:
    """Skip (a laptop without PostgreSQL) or fail (CI must run these tests)."""
    if os.environ.get(REQUIRE_VARIABLE):
        pytest.fail(f"{reason}, and {REQUIRE_VARIABLE} is set", pytrace=False)
    pytest.skip(f"{reason}; to run them, {how}")


class ThrowawayCluster:
    """A PostgreSQL cluster in a temporary folder, started and removed by `.ci/pg-cluster`."""

    def __init__(self, directory: pathlib.Path, url: str):
        self.directory = directory
        self.url = url
        self._stopped = False
        atexit.register(self.stop)  # a session that ends without its fixture's teardown still removes it

    @classmethod
    def start(cls, script: pathlib.Path = PG_CLUSTER) -> "ThrowawayCluster":
        """Raises ClusterUnavailable with the script's own explanation when no cluster can be started."""
        directory = pathlib.Path(tempfile.mkdtemp(prefix="ecert-test-pg."))
        try:
            done = subprocess.run(
                [str(script), "start", str(directory)],
                capture_output=True, text=True, timeout=CLUSTER_START_TIMEOUT_S, check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            _remove(directory)
            raise ClusterUnavailable(f"{PG_CLUSTER.name} could not run ({exc})") from None
        url = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        if done.returncode != 0 or not url.startswith("postgresql"):
            _remove(directory)
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ClusterUnavailable(f"{PG_CLUSTER.name} could not start a throwaway cluster ({last})")
        return cls(directory, url)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        subprocess.run([str(PG_CLUSTER), "stop", str(self.directory)], capture_output=True, timeout=120, check=False)


class ClusterUnavailable(Exception):
    pass


def _remove(directory: pathlib.Path) -> None:
    subprocess.run([str(PG_CLUSTER), "stop", str(directory)], capture_output=True, timeout=120, check=False)


class PostgresServer:
    """Creates and drops databases on one server, through an autocommit admin connection."""

    def __init__(self, url: str, cluster: ThrowawayCluster | None = None):
        self.url = make_url(url)
        self.cluster = cluster  # started for this session: stopped and removed by close()
        self.admin: Engine = create_engine(self.url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=2)
        self.prefix = f"ecert_t{uuid.uuid4().hex[:8]}"

    def url_of(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    def new_name(self) -> str:
        return f"{self.prefix}_{uuid.uuid4().hex[:10]}"

    def create(self, *, template: str | None = None) -> str:
        name = self.new_name()
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
        return name

    def drop(self, name: str) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        if self.cluster is not None:  # the whole cluster goes: nothing to drop one by one
            self.admin.dispose()
            self.cluster.stop()
            return
        # Leftovers of an interrupted run carry this session's prefix; drop them too.
        with self.admin.connect() as connection:
            names = connection.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": self.prefix + "%"}
            ).scalars().all()
        for name in names:
            self.drop(name)
        self.admin.dispose()


def connect_or_skip() -> PostgresServer:
    """The configured server, or a throwaway cluster for this session; skip (fail in CI) if neither."""
    url = configured_url()
    cluster = None
    if url is None:
        try:
            cluster = ThrowawayCluster.start()
        except ClusterUnavailable as exc:
            unavailable(f"{URL_VARIABLE} is not set and {exc}")
        assert cluster is not None
        url = cluster.url
    server = PostgresServer(url, cluster)
    try:
        with server.admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any connection failure means "not available"
        server.admin.dispose()
        if cluster is not None:
            cluster.stop()
            unavailable(f"the throwaway cluster at {url} does not answer ({type(exc).__name__})")
        unavailable(f"PostgreSQL at {URL_VARIABLE} is not reachable ({type(exc).__name__})",
                    f"start that server, or unset {URL_VARIABLE} so that the session starts a throwaway cluster")
    return server


# -- how many tests ran on each engine (printed at the end of the run) --------------------------------

_engine_of: dict[str, str] = {}
_passed: Counter[str] = Counter()


def engine_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("database_url") in ENGINES:
        return str(callspec.params["database_url"])
    if item.get_closest_marker("postgres"):
        return "postgres"
    if item.get_closest_marker("sqlite"):
        return "sqlite"
    return None


def record_collection(items: list[pytest.Item]) -> None:
    for item in items:
        engine = engine_of(item)
        if engine:
            _engine_of[item.nodeid] = engine


def record_report(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed and report.nodeid in _engine_of:
        _passed[_engine_of[report.nodeid]] += 1


def summary_line() -> str:
    return "database tests passed: " + ", ".join(f"{_passed[e]} on {e}" for e in ENGINES)
