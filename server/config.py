"""Service configuration: `ecert serve` flags, then ECERT_* environment variables, then an optional
configuration file (TOML, `--config` / ECERT_CONFIG), then the defaults below.

Every field has its variable (ECERT_ and the field's name in upper case), its `ecert serve` flag
(`--` and the name with dashes) and its configuration-file key (the field's name).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
import ipaddress
import logging
import os
import pathlib
import tomllib
from dataclasses import dataclass, field
from typing import Any

PREFIX = "ECERT_"
CONFIG_VARIABLE = "ECERT_CONFIG"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("json", "text")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names where it came from."""


def is_loopback(host: str) -> bool:
    """True for a loopback address (127.0.0.0/8, ::1) or "localhost"; any other name is not trusted to be one."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _env(name: str, default: str) -> str:
    return os.environ.get(f"{PREFIX}{name}", default)


def _env_int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: not a whole number") from None


@dataclass
class Settings:
    data_dir: pathlib.Path = field(default_factory=lambda: pathlib.Path(_env("DATA_DIR", "ecert-data")))
    database_url: str = field(default_factory=lambda: _env("DATABASE_URL", ""))
    host: str = field(default_factory=lambda: _env("HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: _env_int("PORT", 50051))
    trust_store: str = field(default_factory=lambda: _env("TRUST_STORE", ""))
    receipt_key: str = field(default_factory=lambda: _env("RECEIPT_KEY", ""))
    receipt_key_id: str = field(default_factory=lambda: _env("RECEIPT_KEY_ID", "us-cbp-receipts-1"))
    # Whether a missing receipt-signing key file is generated instead of refusing to start. A new key
    # signs under the usual key id with a key nobody published (a mis-mounted secret), so `ecert serve`
    # sets this only with its development flag --create-receipt-key; embedded use (tests, the
    # benchmarks' in-process servers) keeps generating one in its own temporary data folder.
    create_missing_receipt_key: bool = True
    recipient: str = field(default_factory=lambda: _env("RECIPIENT", "US-CBP"))
    # The transparency log's Ed25519 checkpoint-signing key, apart from the receipt key (default: beside
    # it, so replicas that share the receipt key share this one too; made if missing), and the log's
    # origin, the first line of every checkpoint and the name of its verifier key.
    log_key: str = field(default_factory=lambda: _env("LOG_KEY", ""))
    log_origin: str = field(default_factory=lambda: _env("LOG_ORIGIN", "ecert.cbp.example/log"))
    # How often each replica's sequencer looks for new entries (one at a time across replicas).
    log_interval_ms: int = field(default_factory=lambda: _env_int("LOG_INTERVAL_MS", 500))
    # Witnesses whose cosignatures the log accepts: their note verifier keys (name+hash+key), comma-separated.
    witness_keys: str = field(default_factory=lambda: _env("WITNESS_KEYS", ""))
    # Share of a level at which it turns CRITICAL ("potentially filled").
    critical_share: str = field(default_factory=lambda: _env("CRITICAL_SHARE", "0.9"))
    # The daily cutoff (HH:MM in the quota time zone) at which claims pending near fill are decided in
    # presentation-time order (CBP: 20:30 Eastern, QB 23-128).
    batch_cutoff: str = field(default_factory=lambda: _env("BATCH_CUTOFF", "20:30"))
    # Per-replica allotments of open levels (server/service/allotments.py): auto (on with PostgreSQL, off
    # with SQLite's single writer), on or off; and the share of a level's limit carved at a time.
    allotments: str = field(default_factory=lambda: _env("ALLOTMENTS", "auto"))
    allotment_share: str = field(default_factory=lambda: _env("ALLOTMENT_SHARE", "0.01"))
    # Quota periods are calendar years opening at midnight in this zone.
    quota_timezone: str = field(default_factory=lambda: _env("QUOTA_TIMEZONE", "America/New_York"))
    # How long after a period ends an ordinary entry may still be charged to it.
    max_clock_skew_seconds: int = field(default_factory=lambda: _env_int("MAX_CLOCK_SKEW_SECONDS", 600))
    workers: int = field(default_factory=lambda: _env_int("WORKERS", 16))
    db_pool_size: int = field(default_factory=lambda: _env_int("DB_POOL_SIZE", 16))
    # Back-pressure (server/api/limits.py, server/adapters/admission.py): beyond these, RESOURCE_EXHAUSTED.
    max_transactions: int = field(default_factory=lambda: _env_int("MAX_TRANSACTIONS", 16))
    transaction_wait_ms: int = field(default_factory=lambda: _env_int("TRANSACTION_WAIT_MS", 1000))
    max_concurrent_rpcs: int = field(default_factory=lambda: _env_int("MAX_CONCURRENT_RPCS", 256))
    # The serving model's limits (server/api/serving.py), counted from the moment a call starts, before
    # its request arrives: calls in flight per identity (the whole identity a client certificate names);
    # of ECERT_MAX_CONCURRENT_RPCS, how many only customs and admins may take; of ECERT_WORKERS, how many
    # only their calls may run on (each at most all but one); how long a call's request message may take to arrive.
    calls_per_identity: int = field(default_factory=lambda: _env_int("CALLS_PER_IDENTITY", 64))
    reserved_calls: int = field(default_factory=lambda: _env_int("RESERVED_CALLS", 32))
    reserved_workers: int = field(default_factory=lambda: _env_int("RESERVED_WORKERS", 4))
    request_arrival_ms: int = field(default_factory=lambda: _env_int("REQUEST_ARRIVAL_MS", 10_000))
    # The HTTP/2 transport: concurrent streams (calls) one connection may open; keepalive pings on every
    # connection, which is closed when one goes unanswered; a connection with no call for this long is
    # closed, and one older than its maximum age is asked to go away (GOAWAY) and its calls get the grace
    # to finish (longer than a watch lasts, ECERT_MAX_WATCH_SECONDS). 0 for the idle and age limits: none.
    max_streams_per_connection: int = field(default_factory=lambda: _env_int("MAX_STREAMS_PER_CONNECTION", 100))
    keepalive_time_ms: int = field(default_factory=lambda: _env_int("KEEPALIVE_TIME_MS", 60_000))
    keepalive_timeout_ms: int = field(default_factory=lambda: _env_int("KEEPALIVE_TIMEOUT_MS", 20_000))
    max_connection_idle_ms: int = field(default_factory=lambda: _env_int("MAX_CONNECTION_IDLE_MS", 300_000))
    max_connection_age_ms: int = field(default_factory=lambda: _env_int("MAX_CONNECTION_AGE_MS", 7_200_000))
    max_connection_age_grace_ms: int = field(default_factory=lambda: _env_int("MAX_CONNECTION_AGE_GRACE_MS", 3_900_000))
    tls_dir: str = field(default_factory=lambda: _env("TLS_DIR", ""))
    # The CRL of TLS client certificates (PEM, signed by the CA in ca.pem), read again when it changes.
    # Empty: crl.pem in the TLS folder, in force once it exists; a named file must exist at start.
    revocation_list: str = field(default_factory=lambda: _env("REVOCATION_LIST", ""))
    # The operator's HTTP endpoint (/metrics, /healthz, /quota): off unless a port is given (0 picks one).
    metrics_port: str = field(default_factory=lambda: _env("METRICS_PORT", ""))
    # Loopback by default: the quota page and the metrics are for operators on the host (README).
    metrics_host: str = field(default_factory=lambda: _env("METRICS_HOST", "127.0.0.1"))
    log_format: str = field(default_factory=lambda: _env("LOG_FORMAT", "json"))  # json or text
    # Test harnesses only: the service's clock runs this many seconds ahead of (or, negative, behind)
    # the system clock. Zero in production; a non-zero offset is logged at start.
    clock_offset_seconds: float = field(default_factory=lambda: float(_env("CLOCK_OFFSET_SECONDS", "0")))
    # Test harnesses only: an ISO 8601 instant; the service starts its clock there, runs it on in real
    # time and serves ecert.v1.ClockService (admin role) to set or advance it. Empty in production.
    simulated_clock: str = field(default_factory=lambda: _env("SIMULATED_CLOCK", ""))
    log_level: str = field(default_factory=lambda: _env("LOG_LEVEL", "INFO"))  # DEBUG, INFO, WARNING, ERROR
    # How old an envelope's sent_at may be when it arrives (how far ahead of customs' clock it may be is
    # ECERT_MAX_CLOCK_SKEW_SECONDS). Twice the relay's default retry horizon (3600 s): an envelope
    # acknowledged by a relay before an outage may have waited for the gateway's re-sends first.
    max_envelope_age_seconds: int = field(default_factory=lambda: int(_env("MAX_ENVELOPE_AGE_SECONDS", "7200")))
    # WatchQuotas: ECERT_WORKERS // 4 watches in all (a waiting watch holds no worker), of which this many are kept
    # for customs and admins; at most this many per identity; each ends (OK) after this long.
    reserved_watches: int = field(default_factory=lambda: int(_env("RESERVED_WATCHES", "1")))
    watches_per_identity: int = field(default_factory=lambda: int(_env("WATCHES_PER_IDENTITY", "2")))
    max_watch_seconds: int = field(default_factory=lambda: int(_env("MAX_WATCH_SECONDS", "3600")))

    @classmethod
    def load(cls, config_file: str | os.PathLike[str] | None = None) -> Settings:
        """The environment over the configuration file (when one is named) over the defaults."""
        settings = cls()
        path = config_file or os.environ.get(CONFIG_VARIABLE, "")
        if path:
            settings.apply_file(pathlib.Path(path))
        return settings

    def apply_file(self, path: pathlib.Path) -> None:
        """Values from a TOML file, each unless its ECERT_* variable is set (the environment wins)."""
        try:
            with path.open("rb") as handle:
                values = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError(f"configuration file {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path}: not valid TOML ({exc})") from None
        known = {f.name: f for f in dataclasses.fields(self)}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"configuration file {path}: unknown key {key!r} (keys are the ECERT_* variables' "
                                  f"names without ECERT_, in lower case: {', '.join(sorted(known))})")
            if f"{PREFIX}{key.upper()}" in os.environ:
                continue
            self.set(key, value, source=f"{path}: {key}")

    def set(self, name: str, value: Any, *, source: str) -> None:
        """One setting, converted to the field's type; `source` names it in the error."""
        current = getattr(self, name)
        if isinstance(value, bool) or isinstance(value, (dict, list)):
            raise ConfigError(f"{source} = {value!r}: expected {type(current).__name__}")
        if isinstance(current, int):
            try:
                value = int(value)
            except ValueError:
                raise ConfigError(f"{source} = {value!r}: not a whole number") from None
        elif isinstance(current, float):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{source} = {value!r}: not a number") from None
        elif isinstance(current, pathlib.Path):
            value = pathlib.Path(value)
        else:
            value = str(value)
        setattr(self, name, value)

    def validate(self) -> None:
        """What would otherwise fail later, or silently: raises ConfigError naming the setting."""
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(f"log level {self.log_level!r}: one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log format {self.log_format!r}: one of {', '.join(LOG_FORMATS)}")
        if self.metrics_port != "":
            try:
                int(self.metrics_port)
            except ValueError:
                raise ConfigError(f"metrics port {self.metrics_port!r}: not a whole number") from None
        if self.simulated_clock:
            self.simulated_start()
            if self.clock_offset_seconds:
                raise ConfigError("simulated clock and clock offset: give one of them")
        if not 1 <= self.log_interval_ms <= 1000:
            raise ConfigError(f"log interval {self.log_interval_ms} ms: between 1 and 1000 (a checkpoint at least every second)")
        if not self.log_origin or any(c.isspace() for c in self.log_origin) or "+" in self.log_origin:
            raise ConfigError(f"log origin {self.log_origin!r}: one word without spaces or '+', e.g. ecert.cbp.example/log")
        self.witness_verifiers()
        self.batch_cutoff_time()
        try:
            share = Decimal(self.critical_share)
        except ArithmeticError:
            raise ConfigError(f"critical share {self.critical_share!r}: a decimal fraction such as 0.9") from None
        if not Decimal(0) < share <= Decimal(1):
            raise ConfigError(f"critical share {self.critical_share}: above 0 and at most 1")
        if self.allotments not in ("auto", "on", "off"):
            raise ConfigError(f"allotments {self.allotments!r}: auto, on or off")
        try:
            allotment_share = Decimal(self.allotment_share)
        except ArithmeticError:
            raise ConfigError(f"allotment share {self.allotment_share!r}: a decimal fraction such as 0.01") from None
        if not Decimal(0) < allotment_share <= Decimal("0.1"):
            raise ConfigError(f"allotment share {self.allotment_share}: above 0 and at most 0.1 (of a level's limit)")
        for name in ("workers", "db_pool_size", "max_transactions", "max_concurrent_rpcs", "calls_per_identity",
                     "request_arrival_ms", "max_streams_per_connection", "keepalive_time_ms", "keepalive_timeout_ms"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', ' ')} {getattr(self, name)}: at least 1")
        for name in ("reserved_calls", "reserved_workers", "max_connection_idle_ms", "max_connection_age_ms",
                     "max_connection_age_grace_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.replace('_', ' ')} {getattr(self, name)}: not negative")

    def batch_cutoff_time(self) -> dt.time:
        """The daily cutoff as a time of day (ConfigError if it is not HH:MM)."""
        try:
            return dt.time.fromisoformat(self.batch_cutoff)
        except ValueError:
            raise ConfigError(f"batch cutoff {self.batch_cutoff!r}: a time of day HH:MM, e.g. 20:30") from None

    def simulated_start(self) -> dt.datetime:
        """Where the simulated clock starts (ConfigError if it is not an instant)."""
        try:
            at = dt.datetime.fromisoformat(self.simulated_clock.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"simulated clock {self.simulated_clock!r}: an ISO 8601 instant, e.g. 2027-01-04T04:59:00Z") from None
        return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)

    def logging_level(self) -> int:
        return int(getattr(logging, self.log_level.upper()))

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'ecert.db').resolve()}"

    def resolved_trust_store(self) -> pathlib.Path:
        return pathlib.Path(self.trust_store) if self.trust_store else self.data_dir / "trust" / "partner-keys.json"

    def resolved_receipt_key(self) -> pathlib.Path:
        return pathlib.Path(self.receipt_key) if self.receipt_key else self.data_dir / "keys" / "receipt-signing.pem"

    def resolved_log_key(self) -> pathlib.Path:
        return pathlib.Path(self.log_key) if self.log_key else self.resolved_receipt_key().parent / "log-signing.pem"

    def witness_verifiers(self) -> list[Any]:
        """The witnesses' verifier keys (C2SP tlog-cosignature, type 0x04; contract/cosignature.py);
        ConfigError if one is malformed."""
        from contract.cosignature import WitnessVerifier
        from contract.note import NoteError

        verifiers = []
        for text in (part.strip() for part in self.witness_keys.split(",")):
            if not text:
                continue
            try:
                verifiers.append(WitnessVerifier.parse(text))
            except NoteError as exc:
                raise ConfigError(f"witness key {text!r}: {exc}") from None
        return verifiers

    def listens_on_loopback(self) -> bool:
        return is_loopback(self.host)

    def resolved_tls_dir(self) -> pathlib.Path:
        """ca.pem, cert.pem, key.pem of the service (see `ecert pki init`)."""
        return pathlib.Path(self.tls_dir) if self.tls_dir else self.data_dir / "tls"
