"""Handlers wrapped once per method, and the pause of a response stream: the kit's
(service_kit/wrapping.py), under the name the serving layer and the servicers import them by."""
from __future__ import annotations

from service_kit.wrapping import MAX_WRAPPED as MAX_WRAPPED
from service_kit.wrapping import Idle as Idle
from service_kit.wrapping import WrappedHandlers as WrappedHandlers
