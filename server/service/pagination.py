"""Opaque page tokens (AIP-158): a position plus a fingerprint of the query's filters, authenticated
with a server key (HMAC-SHA256), so that a caller can neither forge a position nor reuse a token
with other filters. A token this service did not issue is INVALID_ARGUMENT PAGE_TOKEN_INVALID."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets

from server.domain.errors import DomainError, ErrorKind, Finding

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_TOKEN_CHARS = 512  # what this service issues is far shorter
MAX_POSITION_CHARS = 128
_MAC_TAG = b"ecert.v1.PageToken\n"
_MAC_BYTES = 16


def page_size(requested: int) -> int:
    if requested < 0:
        raise DomainError(
            "PAGE_SIZE_NEGATIVE", "page_size must not be negative", ErrorKind.INVALID,
            [Finding("PAGE_SIZE_NEGATIVE", "page_size", "must not be negative")],
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _fingerprint(filters: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    # validate=True: a character outside the URL-safe alphabet is an error, not silently dropped.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


class PageTokens:
    """Issues and checks page tokens under one key. Replicas that share the key accept each
    other's tokens (server/app.py derives it from the receipt-signing key, which they share)."""

    def __init__(self, key: bytes):
        if len(key) < 16:
            raise ValueError("a page-token key needs at least 16 bytes")
        self._key = key

    @classmethod
    def with_random_key(cls) -> "PageTokens":
        """Tokens valid in this process only."""
        return cls(secrets.token_bytes(32))

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, _MAC_TAG + payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, after: str, filters: dict[str, object]) -> str:
        payload = json.dumps({"a": after, "f": _fingerprint(filters)}, sort_keys=True, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, token: str, filters: dict[str, object]) -> str:
        """The position after which the next page starts; "" for the first page."""
        if not token:
            return ""
        if len(token) > MAX_TOKEN_CHARS:
            raise _bad_token("is not a token this service issued")
        try:
            token.encode("ascii")
            payload_text, mac_text = token.split(".")
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except (ValueError, binascii.Error):  # non-ASCII text (a lone surrogate too), no dot, bad base64
            raise _bad_token("is not a token this service issued") from None
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise _bad_token("is not a token this service issued")
        # Authenticated: this service wrote it. Its content is still checked before use.
        try:
            data = json.loads(payload)
            after, fingerprint = data["a"], data["f"]
        except (ValueError, TypeError, KeyError):
            raise _bad_token("is not a token this service issued") from None
        if not isinstance(after, str) or not isinstance(fingerprint, str) or not _is_position(after):
            raise _bad_token("is not a token this service issued")
        if fingerprint != _fingerprint(filters):
            raise _bad_token("was issued for a query with other filters")
        return after


def _is_position(text: str) -> bool:
    """A certificate number as stored: printable, encodable, no longer than a column holds."""
    if not text or len(text) > MAX_POSITION_CHARS or not text.isprintable():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _bad_token(why: str) -> DomainError:
    return DomainError("PAGE_TOKEN_INVALID", f"page_token {why}", ErrorKind.INVALID, [Finding("PAGE_TOKEN_INVALID", "page_token", why)])
