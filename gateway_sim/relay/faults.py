"""Fault injection on the road from the relay to customs, switched on by flags, driven by a seeded RNG.

Each fault acts on one forwarding attempt; the relay's durable copy is never touched, so every fault
must be survivable by retrying from it (and customs' idempotency and signature checks).
"""
from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

from ecert.v1 import transmission_pb2 as tpb

# Certificate elements a corruption may hit: all are inside the signed bytes.
_CORRUPTIBLE = ("goods_description", "quantity", "invoice_number", "importer_of_record", "htsus_number", "certificate_number")


@dataclass
class Faults:
    drop: float = 0.0  # the attempt is lost: before reaching customs, or its answer on the way back
    delay_ms: int = 0  # each attempt waits up to this long first
    duplicate: float = 0.0  # the envelope is sent twice
    reorder: bool = False  # due envelopes are forwarded in random order
    corrupt: float = 0.0  # one byte of the certificate is changed on the way
    unavailable: float = 0.0  # customs answers UNAVAILABLE without seeing the envelope
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @property
    def any(self) -> bool:
        return bool(self.drop or self.delay_ms or self.duplicate or self.reorder or self.corrupt or self.unavailable)

    def roll(self, probability: float) -> bool:
        if probability <= 0:
            return False
        with self._lock:
            return self._rng.random() < probability

    def uniform(self, low: float, high: float) -> float:
        with self._lock:
            return self._rng.uniform(low, high)

    def shuffle(self, items: list) -> None:  # type: ignore[type-arg]  # shuffles a list of any items
        with self._lock:
            self._rng.shuffle(items)

    def corrupt_one_byte(self, envelope: tpb.SignedEnvelope) -> tpb.SignedEnvelope:
        """A copy with one ASCII character of one certificate element replaced by another."""
        damaged = tpb.SignedEnvelope()
        damaged.CopyFrom(envelope)
        with self._lock:
            names = [n for n in _CORRUPTIBLE if any(c.isascii() for c in getattr(damaged.certificate, n))]
            name = self._rng.choice(names)
            text = getattr(damaged.certificate, name)
            position = self._rng.choice([i for i, c in enumerate(text) if c.isascii()])
            replacement = self._rng.choice([c for c in "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ" if c != text[position]])
        setattr(damaged.certificate, name, text[:position] + replacement + text[position + 1:])
        return damaged
