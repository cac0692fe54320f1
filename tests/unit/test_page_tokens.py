"""Page tokens are authenticated with the server's key and their content is checked after that."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from server.domain.errors import DomainError
from server.service.pagination import PageTokens

FILTERS = {"country": "MX", "status": "", "year": 0, "tpl": ""}
KEY = b"k" * 32


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def signed_token(payload: bytes, key: bytes = KEY) -> str:
    """What someone holding the key could write: content that only the content checks refuse."""
    return f"{b64(payload)}.{b64(hmac.new(key, b'ecert.v1.PageToken' + bytes([10]) + payload, hashlib.sha256).digest()[:16])}"


def refused(tokens: PageTokens, token: str, filters: dict[str, object] = FILTERS) -> str:
    with pytest.raises(DomainError) as caught:
        tokens.decode(token, filters)
    assert caught.value.reason == "PAGE_TOKEN_INVALID"
    assert [(f.code, f.field) for f in caught.value.findings] == [("PAGE_TOKEN_INVALID", "page_token")]
    return caught.value.findings[0].description


def test_a_token_round_trips_and_only_for_its_filters():
    tokens = PageTokens(KEY)
    token = tokens.encode("MX26-00000007", FILTERS)
    assert tokens.decode(token, FILTERS) == "MX26-00000007"
    assert tokens.decode("", FILTERS) == ""
    assert "other filters" in refused(tokens, token, {**FILTERS, "tpl": "9823.53.02"})
    assert PageTokens(b"another key....." * 2).encode("MX26-00000007", FILTERS) != token


def fingerprint() -> str:  # the unkeyed fingerprint anyone could recompute before tokens were keyed
    return hashlib.sha256(json.dumps(FILTERS, sort_keys=True, default=str).encode()).hexdigest()[:16]


FORGED = {
    "old unkeyed format with a NUL": b64(json.dumps({"a": "\x00", "f": fingerprint()}).encode()),
    "old unkeyed format with a lone surrogate": b64(b'{"a": "\\ud800", "f": "' + fingerprint().encode() + b'"}'),
    "garbage": "garbage!",
    "no mac": b64(b'{"a":"MX26-00000001","f":"x"}') + ".",
    "mac of another key": signed_token(b'{"a":"MX26-00000001","f":"' + fingerprint().encode() + b'"}', b"x" * 32),
    "non-ASCII": "\u0661\u0662.\u0663",
    "lone surrogate in the token": "abc\ud800.def",
    "NUL in the token": "abc\x00.def",
    "too long": "A" * 5000 + ".AAAA",
    "three parts": "a.b.c",
}


@pytest.mark.parametrize("token", FORGED.values(), ids=FORGED.keys())
def test_forged_tokens_are_refused(token):
    refused(PageTokens(KEY), token)


AUTHENTIC_BUT_BAD = {
    "NUL position": '{"a":"\\u0000","f":"%s"}',
    "lone surrogate position": '{"a":"\\ud800","f":"%s"}',
    "empty position": '{"a":"","f":"%s"}',
    "number position": '{"a":7,"f":"%s"}',
    "long position": '{"a":"' + "A" * 200 + '","f":"%s"}',
    "not JSON": "not json %s",
    "a list": '["%s"]',
}


@pytest.mark.parametrize("template", AUTHENTIC_BUT_BAD.values(), ids=AUTHENTIC_BUT_BAD.keys())
def test_authentic_tokens_with_bad_content_are_refused(template):
    refused(PageTokens(KEY), signed_token((template % fingerprint()).encode()))
