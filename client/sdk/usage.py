"""The utilization feed (ecert.v1.UsageService): every use of the caller's certificates, in the order of
customs' transparency log, each with the log position and entry bytes that prove it (client/sdk/log.py
asks for the inclusion proof; contract/merkle.py checks it offline)."""
from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from client.sdk.errors import from_rpc_error
from client.sdk.services import _Connection, _stamp
from ecert.v1 import usage_pb2 as upb


@dataclass(frozen=True)
class UsageEvent:
    cursor: str  # pass it as `cursor` to resume after this event
    log_index: int
    leaf_hash: bytes
    entry: bytes  # the log entry's bytes exactly as hashed
    kind: str  # DECISION, ALLOCATION, REVERSAL, OFFER_ANSWERED, OFFER_LAPSED
    at: dt.datetime
    claim_id: str
    entry_number: str
    line_number: int
    revision: int
    issuing_country: str
    certificate_number: str
    certificate_version: int
    decision: str  # empty for a REVERSAL
    granted_quantity: str  # held on the certificate after this entry; empty for a REVERSAL
    returned_quantity: str  # given back by a REVERSAL; empty otherwise
    unit: str
    tpl: str

    @classmethod
    def from_proto(cls, m: upb.UsageEvent) -> UsageEvent:
        return cls(
            m.cursor, m.log_index, m.leaf_hash, m.entry, m.kind, m.at.ToDatetime(dt.timezone.utc), m.claim_id, m.entry_number,
            m.line_number, m.revision, m.issuing_country, m.certificate_number, m.certificate_version, m.decision,
            m.granted_quantity, m.returned_quantity, m.unit, m.tpl,
        )

    def leaf_hash_matches(self) -> bool:
        """Whether `leaf_hash` is SHA-256(0x00 || entry), as RFC 6962 defines a leaf."""
        return hashlib.sha256(b"\x00" + self.entry).digest() == self.leaf_hash


class UsageFeed(_Connection):
    def watch_usage(
        self, cursor: str = "", *, follow: bool = False, issuing_country: str = "", not_before: dt.datetime | None = None,
    ) -> Iterator[UsageEvent]:
        """Every use after `cursor` (from the start when empty), in log order; with `follow`, then each
        new one live, without a deadline (close the iterator to stop). A follow also ends, without
        error, at the service's maximum watch duration: watch again from the last event's cursor."""
        request = upb.WatchCertificateUsageRequest(cursor=cursor, follow=follow, issuing_country=issuing_country, not_before=_stamp(not_before))
        stream = self.stubs.usage.WatchCertificateUsage(request)
        try:
            for event in stream:
                yield UsageEvent.from_proto(event)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                raise from_rpc_error(error) from None
        finally:
            stream.cancel()
