"""A witness's decisions: cosign a log's new checkpoint only if it extends the last one cosigned.

The witness remembers one thing per log: the last checkpoint it cosigned (its note). Offered a new
checkpoint note and a consistency proof from the remembered size to the new one, it
1. opens the note with the log's key (contract/note.py): no valid log signature, no decision;
2. refuses a smaller tree (rollback), a tree of the same size with another root (fork), and a
   larger one whose consistency proof does not verify (RFC 6962 / RFC 9162, contract/merkle.py):
   each is a checkpoint the log signed that contradicts one the witness already vouched for, so each
   is an alarm, and the state is left as it was;
3. otherwise cosigns it (contract/cosignature.py) and returns the new state, which the caller
   persists BEFORE handing the cosignature out: a witness that handed out a cosignature and then
   forgot it could be led to cosign a rolled-back tree after a restart.
The first checkpoint a witness sees is trusted as it is (every tree extends the empty one). Pure: the
state file and the polling loop are the caller's (client/witness.py).
"""
from __future__ import annotations

import base64
import enum
from collections.abc import Sequence
from dataclasses import dataclass

from contract import merkle
from contract.cosignature import CosignatureError, WitnessKey, cosign, split_note, verify_cosignature, with_cosignatures
from contract.note import Checkpoint, NoteError, NoteVerifier, open_note


class Refusal(enum.Enum):
    ROLLBACK = "ROLLBACK"  # a smaller tree than the one cosigned
    FORK = "FORK"  # the same size with another root
    INCONSISTENT = "INCONSISTENT"  # a larger tree whose consistency proof does not verify
    BAD_SIGNATURE = "BAD_SIGNATURE"  # not signed by the log's key (or a signature of it fails)
    MALFORMED = "MALFORMED"  # not a checkpoint, or an empty tree with a non-empty root, or a proof where none belongs
    OTHER_LOG = "OTHER_LOG"  # a checkpoint of another origin than the log this witness follows

    @property
    def alarm(self) -> bool:
        """The log signed a checkpoint contradicting one the witness cosigned: evidence against it."""
        return self in (Refusal.ROLLBACK, Refusal.FORK, Refusal.INCONSISTENT)


class WitnessRefused(Exception):
    def __init__(self, refusal: Refusal, message: str, offered: Checkpoint | None = None):
        super().__init__(message)
        self.refusal = refusal
        self.message = message
        self.offered = offered  # the checkpoint refused, when its note could be read


@dataclass(frozen=True)
class WitnessState:
    """What the witness last cosigned: the log's checkpoint note with the witness's cosignature."""

    note: str
    checkpoint: Checkpoint

    @classmethod
    def from_note(cls, note: str, log_keys: Sequence[NoteVerifier]) -> WitnessState:
        """A remembered note, re-checked: it must still open with the log's key."""
        return cls(note, _open_checkpoint(note, log_keys))

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root_hash(self) -> bytes:
        return self.checkpoint.root_hash


@dataclass(frozen=True)
class Decision:
    """What to do with an acceptable checkpoint: persist `state` if it changed, then hand `to_send`
    (the checkpoint note with this witness's cosignature) to the log, unless it is None (the log's
    note already carries it)."""

    state: WitnessState
    to_send: str | None
    cosigned: bool  # a new cosignature was made (False: the checkpoint was the one already cosigned)


def _open_checkpoint(note: str, log_keys: Sequence[NoteVerifier]) -> Checkpoint:
    try:
        opened = open_note(note, list(log_keys))
    except NoteError as error:
        raise WitnessRefused(Refusal.BAD_SIGNATURE, f"not a checkpoint signed by the log: {error}") from None
    try:
        checkpoint = Checkpoint.parse(opened.text)
    except NoteError as error:
        raise WitnessRefused(Refusal.MALFORMED, f"the log signed something that is not a checkpoint: {error}") from None
    if checkpoint.size == 0 and checkpoint.root_hash != merkle.EMPTY_ROOT:
        raise WitnessRefused(Refusal.MALFORMED, "a checkpoint of the empty tree must have the empty tree's root", checkpoint)
    return checkpoint


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Witness:
    """One witness key following one log (its origin learned from the first checkpoint cosigned,
    or given)."""

    def __init__(self, key: WitnessKey, log_keys: Sequence[NoteVerifier], origin: str | None = None):
        if not log_keys:
            raise ValueError("a witness needs the log's verifier key")
        self.key = key
        self.log_keys = tuple(log_keys)
        self.origin = origin

    def open(self, note: str) -> Checkpoint:
        """The checkpoint of a note signed by the log (WitnessRefused otherwise): what the caller
        reads to know which consistency proof to fetch (see `proof_range`)."""
        checkpoint = _open_checkpoint(note, self.log_keys)
        if self.origin is not None and checkpoint.origin != self.origin:
            raise WitnessRefused(
                Refusal.OTHER_LOG, f"a checkpoint of {checkpoint.origin!r}; this witness follows {self.origin!r}", checkpoint)
        return checkpoint

    @staticmethod
    def proof_range(state: WitnessState | None, offered: Checkpoint) -> tuple[int, int] | None:
        """The (first, second) sizes of the consistency proof `consider` needs, None for none."""
        if state is None or state.size == 0 or offered.size <= state.size:
            return None
        return state.size, offered.size

    def _already_cosigned(self, note: str) -> bool:
        try:
            return bool(verify_cosignature(note, [self.key.verifier]))
        except CosignatureError:  # a line under our name that does not verify: not ours; send ours
            return False

    def consider(self, state: WitnessState | None, note: str, proof: Sequence[bytes], timestamp: int) -> Decision:
        """Decide on the log's checkpoint `note`, given what was last cosigned (None: nothing yet)
        and the consistency proof from `state`'s size to the note's (empty when none is needed).
        WitnessRefused when it must not be cosigned; `state` is then still what holds."""
        offered = self.open(note)
        if state is not None and offered.origin != state.checkpoint.origin:
            raise WitnessRefused(Refusal.OTHER_LOG,
                                 f"a checkpoint of {offered.origin!r}; this witness cosigned {state.checkpoint.origin!r}", offered)
        if state is not None:
            old = state.checkpoint
            if offered.size < old.size:
                raise WitnessRefused(
                    Refusal.ROLLBACK,
                    f"rollback: the log offers a tree of {offered.size} entries after this witness cosigned {old.size}", offered)
            if offered.size == old.size:
                if offered.root_hash != old.root_hash:
                    raise WitnessRefused(
                        Refusal.FORK,
                        f"fork: two roots for {old.size} entries, {_b64(old.root_hash)} cosigned and {_b64(offered.root_hash)} offered",
                        offered)
                if proof:
                    raise WitnessRefused(Refusal.MALFORMED, "a consistency proof between equal trees is empty", offered)
                if split_note(note)[0] == split_note(state.note)[0]:  # the very checkpoint cosigned
                    return Decision(state, None if self._already_cosigned(note) else state.note, cosigned=False)
                # The same tree with other extension lines: cosigned again below.
            elif old.size == 0:
                if proof:
                    raise WitnessRefused(Refusal.MALFORMED, "the empty tree needs no consistency proof", offered)
            elif not merkle.verify_consistency(old.size, offered.size, old.root_hash, offered.root_hash, proof):
                raise WitnessRefused(
                    Refusal.INCONSISTENT,
                    f"the log's proof does not show the tree of {offered.size} entries extending the {old.size} cosigned "
                    f"(root {_b64(old.root_hash)}): a fork or a rewritten history", offered)
        elif proof:
            raise WitnessRefused(Refusal.MALFORMED, "a first checkpoint needs no consistency proof", offered)
        line = cosign(note, self.key, timestamp)
        cosigned = with_cosignatures(note, [line])
        return Decision(WitnessState(cosigned, offered), cosigned, cosigned=True)
