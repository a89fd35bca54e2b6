"""One throttled log line per *kind* of event, where rclpy throttles per line of code.

rclpy's ``throttle_duration_sec`` keeps one clock per call site, so a node that logs every bad
input from one ``except`` block shows the first kind of bad input and hides every other kind for
the whole period. :class:`KindThrottle` keeps one clock per kind and counts what it held back, so
each kind is reported once per period together with how many events the line stands for.
:func:`raise_site` names the kind of an exception: the check that raised it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["KindThrottle", "raise_site"]


def raise_site(error: BaseException) -> str:
    """Where ``error`` was raised (``module:function:line``): one kind per check that rejects an
    input, without every error type having to carry a kind of its own."""
    traceback = error.__traceback__
    if traceback is None:
        return type(error).__name__
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    code = traceback.tb_frame.f_code
    return f"{Path(code.co_filename).stem}:{code.co_name}:{traceback.tb_lineno}"


class KindThrottle:
    """Lets one event per kind through every ``period_s`` seconds and counts the others.

    Called from the executor and the inference worker at once, hence the lock. ``clock`` returns
    seconds on a monotonic scale (injectable for tests).

    :raises ValueError: a negative period.
    """

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if period_s < 0:
            raise ValueError(f"throttle period must not be negative, got {period_s} s")
        self.period_s = period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def due(self, kind: str) -> int:
        """Count one event of ``kind``; how many events a log line written now stands for (this
        one and those held back since the last line), or 0 while the period is not over."""
        now = self._clock()
        with self._lock:
            held = self._held.get(kind, 0) + 1
            last = self._last.get(kind)
            if last is not None and now - last < self.period_s:
                self._held[kind] = held
                return 0
            self._last[kind] = now
            self._held[kind] = 0
            return held
