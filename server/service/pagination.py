"""Opaque page tokens (AIP-158): a position plus a fingerprint of the query's filters."""
from __future__ import annotations

import base64
import hashlib
import json

from server.domain.errors import DomainError, ErrorKind, Finding

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    if requested < 0:
        raise DomainError(
            "PAGE_SIZE_NEGATIVE", "page_size must not be negative", ErrorKind.INVALID,
            [Finding("PAGE_SIZE_NEGATIVE", "page_size", "must not be negative")],
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _fingerprint(filters: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode_token(after: str, filters: dict[str, object]) -> str:
    raw = json.dumps({"a": after, "f": _fingerprint(filters)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, filters: dict[str, object]) -> str:
    """The position after which the next page starts; "" for the first page."""
    if not token:
        return ""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after, fingerprint = data["a"], data["f"]
        if not isinstance(after, str):
            raise TypeError
    except (ValueError, TypeError, KeyError) as exc:
        raise _bad_token("is not a token this service issued") from exc
    if fingerprint != _fingerprint(filters):
        raise _bad_token("was issued for a query with other filters")
    return after


def _bad_token(why: str) -> DomainError:
    return DomainError("PAGE_TOKEN_INVALID", f"page_token {why}", ErrorKind.INVALID, [Finding("PAGE_TOKEN_INVALID", "page_token", why)])
