"""The relay's durable store: one SQLite file, every acknowledgement preceded by a committed write.

WAL with synchronous=FULL, so an envelope the relay acknowledged survives SIGKILL and power loss.
One connection behind a lock: the relay's write rate is far below what one SQLite writer sustains.
Deliveries get a sequence number when they finish; senders read receipts back by that cursor.
"""
from __future__ import annotations

import enum
import hashlib
import pathlib
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    digest BLOB NOT NULL,            -- SHA-256 of the envelope bytes as accepted
    envelope BLOB NOT NULL,          -- the serialized ecert.v1.SignedEnvelope, exactly as received
    accepted_at REAL NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    integrity_failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    sequence INTEGER UNIQUE,
    finished_at REAL,
    receipt BLOB,
    replayed INTEGER NOT NULL DEFAULT 0,
    error_code TEXT NOT NULL DEFAULT '',
    error_reason TEXT NOT NULL DEFAULT '',
    error_message TEXT NOT NULL DEFAULT '',
    request_id TEXT NOT NULL DEFAULT '',      -- the accepting call's, sent on with the forwarded one
    trace_context TEXT NOT NULL DEFAULT '',   -- its W3C trace context (JSON of traceparent, tracestate)
    UNIQUE (sender, message_id)
);
CREATE INDEX IF NOT EXISTS messages_due ON messages (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class State(enum.Enum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class Message:
    id: int
    sender: str
    message_id: str
    digest: bytes
    envelope: bytes
    accepted_at: float
    state: State
    attempts: int
    integrity_failures: int
    sequence: int | None
    finished_at: float | None
    receipt: bytes | None
    replayed: bool
    error_code: str
    error_reason: str
    error_message: str
    request_id: str = ""
    trace_context: str = ""


@dataclass(frozen=True)
class Accepted:
    message: Message
    duplicate: bool


class MessageIdReused(Exception):
    pass


def digest_of(envelope: bytes) -> bytes:
    return hashlib.sha256(envelope).digest()


_COLUMNS = (
    "id, sender, message_id, digest, envelope, accepted_at, state, attempts, integrity_failures, sequence, "
    "finished_at, receipt, replayed, error_code, error_reason, error_message, request_id, trace_context"
)
# Columns added after the first stores were written: (name, definition), added to an older file on open.
_ADDED = (("request_id", "TEXT NOT NULL DEFAULT ''"), ("trace_context", "TEXT NOT NULL DEFAULT ''"))


def _message(row: tuple) -> Message:
    values = list(row)
    values[6] = State(values[6])
    values[12] = bool(values[12])
    return Message(*values)


class RelayStore:
    def __init__(self, path: str | pathlib.Path):
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(messages)")}
        for name, definition in _ADDED:
            if name not in present:
                self._db.execute(f"ALTER TABLE messages ADD COLUMN {name} {definition}")
        self._lock = threading.Lock()
        self.finished = threading.Condition()  # notified whenever a delivery finishes

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, statements: Iterable[tuple[str, tuple]]) -> list[sqlite3.Cursor]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursors = [self._db.execute(sql, args) for sql, args in statements]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return cursors

    def _count(self, name: str, by: int = 1) -> tuple[str, tuple]:
        return ("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?", (name, by, by))

    def count(self, name: str, by: int = 1) -> None:
        self._write([self._count(name, by)])

    # -- accepting ---------------------------------------------------------------------------------

    def accept(
        self, sender: str, message_id: str, envelope: bytes, now: float | None = None, *, request_id: str = "", trace_context: str = "",
    ) -> Accepted:
        """Store a new envelope (committed before returning), or recognise one already held. The request
        id and trace context are the first acceptance's: forwarding continues that call's trace."""
        digest = digest_of(envelope)
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(f"SELECT {_COLUMNS} FROM messages WHERE sender = ? AND message_id = ?", (sender, message_id)).fetchone()
                if row is not None:
                    held = _message(row)
                    if held.digest != digest:
                        self._db.execute("ROLLBACK")
                        raise MessageIdReused(message_id)
                    self._db.execute(*self._count("duplicates"))
                    self._db.execute("COMMIT")
                    return Accepted(held, duplicate=True)
                self._db.execute(
                    "INSERT INTO messages (sender, message_id, digest, envelope, accepted_at, state, next_attempt_at, request_id, trace_context) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (sender, message_id, digest, envelope, now, State.PENDING.value, now, request_id, trace_context),
                )
                self._db.execute(*self._count("accepted"))
                row = self._db.execute(f"SELECT {_COLUMNS} FROM messages WHERE sender = ? AND message_id = ?", (sender, message_id)).fetchone()
                self._db.execute("COMMIT")  # durable: only now may the sender be told
            except MessageIdReused:
                raise
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return Accepted(_message(row), duplicate=False)

    # -- forwarding --------------------------------------------------------------------------------

    def due(self, now: float, limit: int) -> list[Message]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE state = ? AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
                (State.PENDING.value, now, limit),
            ).fetchall()
        return [_message(r) for r in rows]

    def next_due_at(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(next_attempt_at) FROM messages WHERE state = ?", (State.PENDING.value,)).fetchone()
        return row[0]

    def retry_later(self, message: Message, at: float, *, code: str, reason: str, text: str, integrity_failure: bool = False) -> None:
        self._write([
            (
                "UPDATE messages SET attempts = attempts + 1, integrity_failures = integrity_failures + ?, next_attempt_at = ?, "
                "error_code = ?, error_reason = ?, error_message = ? WHERE id = ? AND state = ?",
                (int(integrity_failure), at, code, reason, text, message.id, State.PENDING.value),
            ),
            self._count("attempts"),
        ])

    def finish(
        self,
        message: Message,
        state: State,
        *,
        receipt: bytes | None = None,
        replayed: bool = False,
        code: str = "",
        reason: str = "",
        text: str = "",
        attempted: bool = True,
        now: float | None = None,
    ) -> None:
        now = time.time() if now is None else now
        with self.finished:
            self._write([
                (
                    "UPDATE messages SET state = ?, attempts = attempts + ?, finished_at = ?, receipt = ?, replayed = ?, "
                    "error_code = ?, error_reason = ?, error_message = ?, "
                    "sequence = (SELECT COALESCE(MAX(sequence), 0) + 1 FROM messages) WHERE id = ? AND state = ?",
                    (state.value, int(attempted), now, receipt, int(replayed), code, reason, text, message.id, State.PENDING.value),
                ),
                self._count("attempts", int(attempted)),
                self._count(state.value.lower()),
            ])
            self.finished.notify_all()

    # -- reading back ------------------------------------------------------------------------------

    def finished_after(self, senders: Iterable[str] | None, after: int, limit: int) -> list[Message]:
        """Finished deliveries after a cursor; senders=None means every sender."""
        args: list[object] = [after]
        where = "sequence IS NOT NULL AND sequence > ?"
        if senders is not None:
            names = sorted(senders)
            where += f" AND sender IN ({','.join('?' * len(names))})"
            args += names
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM messages WHERE {where} ORDER BY sequence LIMIT ?", (*args, limit)).fetchall()
        return [_message(r) for r in rows]

    def get(self, sender: str, message_id: str) -> Message | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM messages WHERE sender = ? AND message_id = ?", (sender, message_id)).fetchone()
        return _message(row) if row else None

    def pending_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM messages WHERE state = ?", (State.PENDING.value,)).fetchone()[0]

    def counters(self) -> dict[str, int]:
        with self._lock:
            values = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
            values["pending"] = self._db.execute("SELECT COUNT(*) FROM messages WHERE state = ?", (State.PENDING.value,)).fetchone()[0]
        return values
