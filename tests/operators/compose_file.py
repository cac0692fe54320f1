"""A reader for the part of YAML that deploy/compose.yaml is written in, strict about the rest.

PyYAML is not a dependency, so the compose file keeps to: `#` comment lines, block mappings
(`key: value`, or `key:` with a deeper-indented block), and flow collections on one line in JSON's
style (`["a", "b"]`, `{key: "value"}`). Scalars stay text. Anything else (block sequences, anchors,
multi-line scalars, tabs) raises, so a compose file that drifts from the subset fails its test loudly
instead of being read wrongly.
"""
from __future__ import annotations

import json
import re
from typing import Any

_KEY = re.compile(r"(?P<key>[A-Za-z0-9_.-]+):(?: (?P<value>.*))?$")


class Unsupported(ValueError):
    pass


def _flow(text: str, at: int) -> tuple[Any, int]:
    """One flow value starting at `at`; returns it and the index after it."""
    while text[at] == " ":
        at += 1
    if text[at] == '"':
        decoder = json.JSONDecoder()
        return decoder.raw_decode(text, at)
    if text[at] in "[{":
        closing, items, mapping = ("]" if text[at] == "[" else "}"), [], {}
        at += 1
        while True:
            while text[at] == " ":
                at += 1
            if text[at] == closing:
                return (items if closing == "]" else mapping), at + 1
            if closing == "}":
                match = re.compile(r"([A-Za-z0-9_.-]+): ").match(text, at)
                if not match:
                    raise Unsupported(f"flow mapping key at {text[at:]!r}")
                value, at = _flow(text, match.end())
                mapping[match.group(1)] = value
            else:
                value, at = _flow(text, at)
                items.append(value)
            while text[at] == " ":
                at += 1
            if text[at] == ",":
                at += 1
            elif text[at] != closing:
                raise Unsupported(f"expected ',' or {closing!r} at {text[at:]!r}")
    match = re.compile(r"[^,\]}\s\"'&*!|>#][^,\]}]*").match(text, at)
    if not match:
        raise Unsupported(f"scalar at {text[at:]!r}")
    return match.group(0).rstrip(), match.end()


def _scalar(text: str) -> Any:
    value, end = _flow(text, 0)
    if text[end:].strip():
        raise Unsupported(f"trailing text in {text!r}")
    return value


def load(text: str) -> dict[str, Any]:
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw:
            raise Unsupported(f"line {number}: tab")
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        lines.append((number, len(raw) - len(raw.lstrip(" ")), raw.strip()))
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for index, (number, indent, content) in enumerate(lines):
        match = _KEY.match(content)
        if not match:
            raise Unsupported(f"line {number}: not `key: value`: {content!r}")
        while indent <= stack[-1][0]:
            stack.pop()
        parent = stack[-1][1]
        key = match.group("key")
        if key in parent:
            raise Unsupported(f"line {number}: duplicate key {key!r}")
        if match.group("value") is None:
            following = lines[index + 1][1] if index + 1 < len(lines) else -1
            if following <= indent:
                raise Unsupported(f"line {number}: {key!r} has no value")
            parent[key] = {}
            stack.append((indent, parent[key]))
        else:
            parent[key] = _scalar(match.group("value"))
    return root
