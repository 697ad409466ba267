"""Bounds on time that hold on a loaded machine.

A wall-clock limit (``assert elapsed < 3``) failed whenever the machine was busy (a CI runner
shared with other jobs, or two workers and a fork server on two cores): the same parse took 9x
as long with a load average of 18. The performance cliffs these tests guard against are orders
of magnitude (minutes against a tenth of a second), so a pathological input is timed against a
plain input of the same size, in the same test, and their ratio is bounded: load slows both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_time(fn: Callable[[], Any], repeats: int = 3) -> float:
    """The shortest of ``repeats`` timings of ``fn()`` (the least disturbed by other work)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def time_ratio(fn: Callable[[], Any], plain: Callable[[], Any], repeats: int = 3) -> float:
    """How many times as long ``fn()`` takes as ``plain()``, each at its best of ``repeats``
    (interleaved, so that a burst of load reaches both)."""
    slow, fast = [], []
    for _ in range(repeats):
        slow.append(best_time(fn, 1))
        fast.append(best_time(plain, 1))
    return min(slow) / max(min(fast), 1e-6)
