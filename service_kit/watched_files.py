"""Files followed while a process runs: what tells that one was rewritten or replaced.

A watcher keeps the signature of the files it read and reads them again once it differs (the
revocation list here; the service's trust store and TLS material, server/adapters/reload.py).
"""
from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

Signature = tuple[tuple[int, int, int] | None, ...]


def file_signature(paths: Sequence[pathlib.Path]) -> Signature:
    """What changes when a file is rewritten or replaced: its inode, size and modification time."""
    result: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            result.append(None)
        else:
            result.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(result)
