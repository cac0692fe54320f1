"""The gateway's own register (SQLite): every envelope it sent, every receipt it got back.

It is what lets the partner prove later what it transmitted, re-send what was never receipted
(byte for byte, same message id), and know each certificate's current version for amendments.
"""
from __future__ import annotations

import enum
import pathlib
import sqlite3
import threading
import time
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS sent (
    message_id TEXT PRIMARY KEY,
    certificate_number TEXT NOT NULL,
    action TEXT NOT NULL,
    envelope BLOB NOT NULL,         -- serialized SignedEnvelope, re-sent unchanged
    digest BLOB NOT NULL,           -- customs' digest of it (canonical bytes), checked on receipts
    created_at REAL NOT NULL,
    last_sent_at REAL,
    sends INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    certificate_version INTEGER NOT NULL DEFAULT 0,
    receipt BLOB,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sent_state ON sent (state);
CREATE TABLE IF NOT EXISTS certificates (
    certificate_number TEXT PRIMARY KEY,
    certificate BLOB NOT NULL,      -- latest accepted ecert.v1.Certificate
    version INTEGER NOT NULL,
    status TEXT NOT NULL            -- ACTIVE or CANCELED
);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class SendState(enum.Enum):
    NEW = "NEW"  # registered, not yet acknowledged by the relay
    RELAYED = "RELAYED"  # the relay stored it; no receipt yet
    RECEIPTED = "RECEIPTED"  # customs accepted it
    REJECTED = "REJECTED"  # customs (or the relay) refused it
    EXPIRED = "EXPIRED"  # the relay gave up reaching customs


OPEN = (SendState.NEW.value, SendState.RELAYED.value)


@dataclass(frozen=True)
class Sent:
    message_id: str
    certificate_number: str
    action: str
    envelope: bytes
    digest: bytes
    created_at: float
    last_sent_at: float | None
    sends: int
    state: SendState
    certificate_version: int
    receipt: bytes | None
    reason: str


_COLUMNS = "message_id, certificate_number, action, envelope, digest, created_at, last_sent_at, sends, state, certificate_version, receipt, reason"


def _sent(row: tuple) -> Sent:
    values = list(row)
    values[8] = SendState(values[8])
    return Sent(*values)


class Register:
    def __init__(self, path: str | pathlib.Path):
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives the process dying (not the machine losing power): enough for a
        # simulator, whose relay and customs hold the durable copies; FULL halves its send rate.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def setting(self, name: str, default: int = 0) -> int:
        row = self._run("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return row[0] if row else default

    def set_setting(self, name: str, value: int) -> None:
        self._run("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))

    def next_serial(self) -> int:
        with self._lock:
            serial = self.setting("serial") + 1
            self.set_setting("serial", serial)
            return serial

    def add(self, message_id: str, certificate_number: str, action: str, envelope: bytes, digest: bytes) -> None:
        self._run(
            "INSERT INTO sent (message_id, certificate_number, action, envelope, digest, created_at, state) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (message_id, certificate_number, action, envelope, digest, time.time(), SendState.NEW.value),
        )

    def mark_sent(self, message_id: str, relayed: bool) -> None:
        state = "CASE WHEN state = 'NEW' THEN 'RELAYED' ELSE state END" if relayed else "state"
        self._run(f"UPDATE sent SET sends = sends + 1, last_sent_at = ?, state = {state} WHERE message_id = ?", (time.time(), message_id))

    def finish(self, message_id: str, state: SendState, *, version: int = 0, receipt: bytes | None = None, reason: str = "") -> bool:
        """Record an outcome once; later copies of the same outcome change nothing."""
        placeholders = ",".join("?" * len(OPEN))
        cursor = self._run(
            f"UPDATE sent SET state = ?, certificate_version = ?, receipt = ?, reason = ? WHERE message_id = ? AND state IN ({placeholders})",
            (state.value, version, receipt, reason, message_id, *OPEN),
        )
        return cursor.rowcount == 1

    def get(self, message_id: str) -> Sent | None:
        row = self._run(f"SELECT {_COLUMNS} FROM sent WHERE message_id = ?", (message_id,)).fetchone()
        return _sent(row) if row else None

    def due_for_resend(self, cutoff: float) -> list[Sent]:
        """Never acknowledged by the relay (it was unreachable): every time; relayed without receipt: after cutoff."""
        rows = self._run(
            f"SELECT {_COLUMNS} FROM sent WHERE state = 'NEW' OR (state = 'RELAYED' AND last_sent_at <= ?) ORDER BY created_at",
            (cutoff,),
        ).fetchall()
        return [_sent(r) for r in rows]

    def all(self) -> list[Sent]:
        return [_sent(r) for r in self._run(f"SELECT {_COLUMNS} FROM sent ORDER BY created_at").fetchall()]

    def counts(self) -> dict[str, int]:
        return dict(self._run("SELECT state, COUNT(*) FROM sent GROUP BY state").fetchall())

    def resends(self) -> int:
        return self._run("SELECT COALESCE(SUM(sends - 1), 0) FROM sent WHERE sends > 1").fetchone()[0]

    # -- certificates as customs has them --------------------------------------------------------

    def set_certificate(self, number: str, certificate: bytes, version: int, status: str) -> None:
        self._run(
            "INSERT INTO certificates (certificate_number, certificate, version, status) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(certificate_number) DO UPDATE SET certificate = excluded.certificate, version = excluded.version, "
            "status = excluded.status WHERE excluded.version > certificates.version",
            (number, certificate, version, status),
        )

    def mark_canceled(self, number: str, version: int) -> None:
        """The certificate stays on record (as customs keeps it) with its last elements."""
        self._run("UPDATE certificates SET status = 'CANCELED', version = ? WHERE certificate_number = ? AND version < ?", (version, number, version))

    def certificates(self, status: str) -> list[bytes]:
        rows = self._run("SELECT certificate FROM certificates WHERE status = ? ORDER BY certificate_number", (status,)).fetchall()
        return [r[0] for r in rows]

    def active_idle_certificates(self, limit: int) -> list[tuple[str, bytes, int]]:
        """Active certificates with nothing in flight: candidates for a replace or a cancel."""
        return self._run(
            "SELECT certificate_number, certificate, version FROM certificates c WHERE status = 'ACTIVE' AND NOT EXISTS "
            "(SELECT 1 FROM sent s WHERE s.certificate_number = c.certificate_number AND s.state IN ('NEW', 'RELAYED')) "
            "ORDER BY certificate_number LIMIT ?",
            (limit,),
        ).fetchall()
