"""A lock handed to the threads that wait for it in the order they asked.

threading.Lock promises no order: a thread that releases it and asks again at once usually gets it
back before any thread already waiting wakes up. For SQLite's single writer that let one busy
caller (the opening allocation, step after step) starve every other write; handed over in order,
each waiting write gets the writer in turn, and claims take it first come, first served.
"""
from __future__ import annotations

import threading
from collections import deque


class FairLock:
    def __init__(self) -> None:
        self._state = threading.Lock()  # guards the two below
        self._held = False
        self._queue: deque[threading.Lock] = deque()  # one pre-acquired lock per waiting thread

    @property
    def waiting(self) -> int:
        """How many threads wait for it now."""
        return len(self._queue)

    def acquire(self, timeout: float) -> bool:
        with self._state:
            if not self._held:
                self._held = True
                return True
            turn = threading.Lock()
            turn.acquire()
            self._queue.append(turn)
        if turn.acquire(timeout=timeout):
            return True  # release() handed it over: it never became free in between
        with self._state:
            if turn in self._queue:
                self._queue.remove(turn)
                return False
        # Handed over just as the wait timed out: it is this thread's now.
        turn.acquire()
        return True

    def release(self) -> None:
        with self._state:
            if self._queue:
                self._queue.popleft().release()  # the oldest waiter owns it now
            else:
                self._held = False
