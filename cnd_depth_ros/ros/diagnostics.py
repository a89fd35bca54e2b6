"""Health of an input -> inference -> output pipeline, published as diagnostic_msgs.

:class:`PipelineDiagnostics` counts inputs, outputs (with their latency) and drops by reason
over a sliding window, and turns them into one ``DiagnosticStatus``: OK, WARN when the input
stops or too many inputs are dropped, ERROR when inputs arrive but no output comes out. It only
keeps bounded deques, so it can run for the lifetime of a node.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

__all__ = ["PipelineDiagnostics"]

# Enough events for a 5 s window at 100 Hz; older ones fall out of the deques anyway.
_MAX_EVENTS = 1000


class PipelineDiagnostics:
    """Rates, latency percentiles and drops of a pipeline, for ``/diagnostics``.

    The ``record_*`` methods are called from the subscription callback and the inference worker
    at the same time; a lock keeps the counters consistent. ``clock`` returns seconds on a
    monotonic scale (injectable for tests).

    :raises ValueError: a non-positive window or timeout, or a drop ratio outside [0, 1].
    """

    def __init__(
        self,
        name: str,
        *,
        hardware_id: str = "",
        window_s: float = 5.0,
        input_timeout_s: float = 2.0,
        max_drop_ratio: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0 or input_timeout_s <= 0:
            raise ValueError(
                f"diagnostics window ({window_s} s) and input timeout ({input_timeout_s} s) "
                "must be positive"
            )
        if not 0.0 <= max_drop_ratio <= 1.0:
            raise ValueError(f"max_drop_ratio must lie in [0, 1], got {max_drop_ratio}")
        self.name = name
        self.hardware_id = hardware_id
        self._window_s = window_s
        self._input_timeout_s = input_timeout_s
        self._max_drop_ratio = max_drop_ratio
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._inputs: deque[float] = deque(maxlen=_MAX_EVENTS)
        self._outputs: deque[tuple[float, float]] = deque(maxlen=_MAX_EVENTS)  # (time, latency)
        self._drops: deque[float] = deque(maxlen=_MAX_EVENTS)
        self._drops_by_reason: Counter[str] = Counter()
        self._warnings: Counter[str] = Counter()
        self._info: dict[str, str] = {}

    def set_info(self, key: str, value: object) -> None:
        """A fixed fact to report, such as the backend, model or device."""
        with self._lock:
            self._info[key] = str(value)

    def record_input(self) -> None:
        """One input (a synchronised pair) arrived."""
        with self._lock:
            self._inputs.append(self._clock())

    def record_output(self, latency_s: float) -> None:
        """One output went out ``latency_s`` after its input was stamped."""
        with self._lock:
            self._outputs.append((self._clock(), latency_s))

    def record_drop(self, reason: str) -> None:
        """One input was dropped, e.g. ``"busy"`` (inference slower than the camera) or
        ``"bad_message"``."""
        with self._lock:
            self._drops.append(self._clock())
            self._drops_by_reason[reason] += 1

    def record_warning(self, reason: str) -> None:
        """One input was used although something about it looked wrong, e.g. ``"stamp in the
        future"``; counted per reason, not a drop."""
        with self._lock:
            self._warnings[reason] += 1

    def status(self) -> DiagnosticStatus:
        """The current status with its reasons and key values."""
        now = self._clock()
        with self._lock:
            since = now - self._window_s
            inputs = [t for t in self._inputs if t > since]
            latencies_ms = [1e3 * latency for t, latency in self._outputs if t > since]
            drops_in_window = sum(1 for t in self._drops if t > since)
            last_input = self._inputs[-1] if self._inputs else None
            last_output = self._outputs[-1][0] if self._outputs else None
            drops_by_reason = dict(self._drops_by_reason)
            warnings = dict(self._warnings)
            info = dict(self._info)

        span = min(self._window_s, max(now - self._started, 1e-9))
        drop_ratio = drops_in_window / len(inputs) if inputs else 0.0
        level, reasons = self._assess(now, last_input, last_output, drop_ratio, drops_by_reason)

        values = {
            "input rate (Hz)": f"{len(inputs) / span:.1f}",
            "output rate (Hz)": f"{len(latencies_ms) / span:.1f}",
            "latency p50 (ms)": _percentile(latencies_ms, 50),
            "latency p95 (ms)": _percentile(latencies_ms, 95),
            "drop ratio (%)": f"{100.0 * drop_ratio:.1f}",
            "drops (total)": str(sum(drops_by_reason.values())),
            **{f"drops: {reason}": str(n) for reason, n in sorted(drops_by_reason.items())},
            **{f"warnings: {reason}": str(n) for reason, n in sorted(warnings.items())},
            **info,
        }
        return DiagnosticStatus(
            level=level,
            name=self.name,
            message="; ".join(reasons) if reasons else "ok",
            hardware_id=self.hardware_id,
            values=[KeyValue(key=key, value=value) for key, value in values.items()],
        )

    def _assess(
        self,
        now: float,
        last_input: float | None,
        last_output: float | None,
        drop_ratio: float,
        drops_by_reason: dict[str, int],
    ) -> tuple[bytes, list[str]]:
        level, reasons = DiagnosticStatus.OK, []
        input_age = now - (self._started if last_input is None else last_input)
        if input_age > self._input_timeout_s:
            level = DiagnosticStatus.WARN
            reasons.append(f"no input for {input_age:.1f} s")
        else:
            output_age = now - (self._started if last_output is None else last_output)
            if output_age > self._input_timeout_s:
                level = DiagnosticStatus.ERROR
                reasons.append(f"input arrives but no output for {output_age:.1f} s")
        if drop_ratio > self._max_drop_ratio:
            level = max(level, DiagnosticStatus.WARN)
            worst = max(drops_by_reason, key=drops_by_reason.__getitem__)
            reasons.append(
                f"drops {100 * drop_ratio:.0f}% > {100 * self._max_drop_ratio:.0f}% "
                f"(mostly {worst})"
            )
        return level, reasons

    def to_message(self, stamp: Time) -> DiagnosticArray:
        """A ``/diagnostics`` message holding :meth:`status`, stamped with the node's clock."""
        return DiagnosticArray(header=Header(stamp=stamp), status=[self.status()])


def _percentile(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.2f}" if values else "n/a"
