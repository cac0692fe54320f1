"""The writer lock is handed to waiting threads in the order they asked, and a wait that timed out
leaves no trace."""
from __future__ import annotations

import threading
import time

from server.adapters.fair_lock import FairLock


def _wait_until(condition, seconds: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.001)


def test_waiters_get_it_in_the_order_they_asked_even_if_the_holder_asks_again():
    lock = FairLock()
    assert lock.acquire(timeout=1)
    order: list[str] = []

    def waiter(name: str) -> None:
        assert lock.acquire(timeout=5)
        order.append(name)
        lock.release()

    threads = []
    for n, name in enumerate("abc", start=1):
        threads.append(threading.Thread(target=waiter, args=(name,)))
        threads[-1].start()
        _wait_until(lambda n=n: lock.waiting == n)
    lock.release()
    # The releasing thread asks again at once: it comes after the three that were already waiting.
    assert lock.acquire(timeout=5)
    order.append("again")
    lock.release()
    for thread in threads:
        thread.join()
    assert order == ["a", "b", "c", "again"]
    assert lock.waiting == 0 and lock.acquire(timeout=0)


def test_a_wait_that_times_out_leaves_the_queue_and_the_lock_usable():
    lock = FairLock()
    assert lock.acquire(timeout=1)
    assert not lock.acquire(timeout=0.05)
    assert lock.waiting == 0
    lock.release()
    assert lock.acquire(timeout=0)  # free again: the timed-out waiter was not handed it
    lock.release()
