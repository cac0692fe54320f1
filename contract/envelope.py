"""Signed envelopes: the bytes a partner signs, their SHA-256 (the transmission's digest), sealing an
envelope with a document-signing key, and checking a sealed one against the sender's public key."""
from __future__ import annotations

import datetime as dt

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from contract.canonical import envelope_bytes
from contract.messages import action_name, draft_from_proto
from contract.protos import transmission_pb2 as tpb
from contract.signing import Signer, sha256, signature_valid


def signed_bytes(envelope: tpb.SignedEnvelope) -> bytes:
    """The canonical bytes of every field but the signature, as carried."""
    return envelope_bytes(
        message_id=envelope.message_id,
        sender=envelope.sender,
        sent_at_seconds=envelope.sent_at.seconds,
        sent_at_nanos=envelope.sent_at.nanos,
        action=action_name(envelope.action),
        replaces_version=envelope.replaces_version,
        key_id=envelope.key_id,
        certificate=draft_from_proto(envelope.certificate),
    )


def digest(envelope: tpb.SignedEnvelope) -> bytes:
    return sha256(signed_bytes(envelope))


def seal(envelope: tpb.SignedEnvelope, signer: Signer, *, sent_at: dt.datetime | None = None) -> tpb.SignedEnvelope:
    """Set key id (and sent_at when given or missing), then sign the canonical bytes. Returns a copy."""
    sealed = tpb.SignedEnvelope()
    sealed.CopyFrom(envelope)
    sealed.key_id = signer.key_id
    if sent_at is not None or not sealed.HasField("sent_at"):
        sealed.sent_at.FromDatetime((sent_at or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc))
    sealed.ClearField("signature")
    sealed.signature = signer.sign(signed_bytes(sealed))
    return sealed


def signature_ok(envelope: tpb.SignedEnvelope, public_key: Ed25519PublicKey) -> bool:
    """Whether the holder of `public_key` signed exactly this envelope (the key's owner and window are the
    receiver's to judge)."""
    return signature_valid(public_key, envelope.signature, signed_bytes(envelope))
