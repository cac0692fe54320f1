"""Sealing envelopes: what a partner (or a test harness playing one) does before transmitting."""
from __future__ import annotations

import datetime as dt

from contract.signing import Signer
from ecert.v1 import transmission_pb2 as tpb
from server.api.converters import envelope_from_proto


def seal(envelope: tpb.SignedEnvelope, signer: Signer, *, sent_at: dt.datetime | None = None) -> tpb.SignedEnvelope:
    """Set key id (and sent_at when given or missing), then sign the canonical bytes. Returns a copy."""
    sealed = tpb.SignedEnvelope()
    sealed.CopyFrom(envelope)
    sealed.key_id = signer.key_id
    if sent_at is not None or not sealed.HasField("sent_at"):
        sealed.sent_at.FromDatetime((sent_at or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc))
    sealed.ClearField("signature")
    sealed.signature = signer.sign(envelope_from_proto(sealed).signed_bytes())
    return sealed
