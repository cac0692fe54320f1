"""SDK tests seal envelopes with the real time, as a partner does: the server keeps the system clock."""
from __future__ import annotations

import pytest

from server.service.clock import SystemClock


@pytest.fixture
def clock() -> SystemClock:
    return SystemClock()
