"""Health of an input -> inference -> output pipeline, published as diagnostic_msgs.

:class:`PipelineDiagnostics` counts inputs, outputs (with their latency) and drops by reason
over a sliding window, and turns them into what a ROS user reads in ``rqt_runtime_monitor`` or
``ros2 topic echo /diagnostics``, following ``diagnostic_updater``'s conventions: statuses named
``<node>: <task>`` (the node's fully qualified name without the leading slash), a
``hardware_id``, and a frequency status of the output with its acceptable range.

The verdict is OK while the pipeline is idle on purpose (unconfigured, inactive, or active and
waiting for a subscriber to an output: the node does not even subscribe to the cameras then),
and WARN or ERROR only for real problems once it listens: no input at all, one input silent
(named), inputs that never make a synchronised set, drops above a ratio, inference failing,
inputs without outputs, an output rate outside the expected range. It only keeps bounded
deques, so it can run for the lifetime of a node.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

__all__ = ["PipelineDiagnostics", "hardware_id", "status_name"]

# Enough events for a 5 s window at 100 Hz; older ones fall out of the deques anyway.
_MAX_EVENTS = 1000
#: The state in which the pipeline is expected to work (the lifecycle's "active").
ACTIVE = "active"
#: The drop reason of a failing inference, reported as an error rather than a drop rate.
INFERENCE_ERROR = "inference error"


def status_name(fully_qualified_node_name: str, task: str) -> str:
    """``diagnostic_updater``'s status name: ``ns/node: task``."""
    return f"{fully_qualified_node_name.lstrip('/')}: {task}"


def hardware_id(info: Mapping[str, Any]) -> str:
    """The hardware a backend runs on, from its ``info()``: the GPU's name, else the device."""
    return str(info.get("gpu") or info.get("device") or "cpu")


class PipelineDiagnostics:
    """Rates, latency percentiles, drops and input silence of a pipeline, for ``/diagnostics``.

    The ``record_*`` methods are called from the subscription callbacks and the inference worker
    at the same time; a lock keeps the counters consistent. ``clock`` returns seconds on a
    monotonic scale (injectable for tests). ``min_rate_hz`` / ``max_rate_hz`` are the output's
    acceptable rates (0 and infinity: not checked), with ``diagnostic_updater``'s 10 % tolerance.

    :raises ValueError: a non-positive window or timeout, a drop ratio outside [0, 1], or an
        expected rate range that is negative or upside down.
    """

    def __init__(
        self,
        name: str,
        *,
        hardware_id: str = "none",
        window_s: float = 5.0,
        input_timeout_s: float = 2.0,
        max_drop_ratio: float = 0.5,
        min_rate_hz: float = 0.0,
        max_rate_hz: float = math.inf,
        rate_tolerance: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0 or input_timeout_s <= 0:
            raise ValueError(
                f"diagnostics window ({window_s} s) and input timeout ({input_timeout_s} s) "
                "must be positive"
            )
        if not 0.0 <= max_drop_ratio <= 1.0:
            raise ValueError(f"max_drop_ratio must lie in [0, 1], got {max_drop_ratio}")
        if not 0.0 <= min_rate_hz <= max_rate_hz:
            raise ValueError(
                f"expected output rate range [{min_rate_hz}, {max_rate_hz}] Hz must satisfy "
                "0 <= min <= max"
            )
        self.name = name
        self.hardware_id = hardware_id
        self._window_s = window_s
        self._input_timeout_s = input_timeout_s
        self._max_drop_ratio = max_drop_ratio
        self._min_rate_hz = min_rate_hz
        self._max_rate_hz = max_rate_hz
        self._rate_tolerance = rate_tolerance
        self._clock = clock
        self._lock = threading.Lock()
        self._state = ACTIVE
        self._listening_since: float | None = clock()
        self._topics: dict[str, float | None] = {}  # topic -> when its last message arrived
        self._inputs: deque[float] = deque(maxlen=_MAX_EVENTS)
        self._outputs: deque[tuple[float, float]] = deque(maxlen=_MAX_EVENTS)  # (time, latency)
        self._output_count = 0
        self._drops: deque[tuple[float, str]] = deque(maxlen=_MAX_EVENTS)
        self._drops_by_reason: Counter[str] = Counter()
        self._warnings: Counter[str] = Counter()
        self._info: dict[str, str] = {}

    def set_info(self, key: str, value: object) -> None:
        """A fixed fact to report, such as the backend, model or device."""
        with self._lock:
            self._info[key] = str(value)

    def set_state(self, state: str) -> None:
        """The node's lifecycle state; outside ``"active"`` the pipeline is idle, and OK."""
        with self._lock:
            self._state = state
            self._info["state"] = state

    def listen(self, topics: Sequence[str] | None) -> None:
        """The inputs are subscribed (``topics``), or no longer (``None``: waiting for a
        subscriber to an output, which is OK). Silence is counted from here."""
        with self._lock:
            if topics is None:
                self._listening_since = None
                self._topics = {}
            else:
                self._listening_since = self._clock()
                self._topics = dict.fromkeys(topics)

    def record_message(self, _msg: object, topic: str) -> None:
        """One message arrived on the input ``topic`` (a message_filters callback's signature)."""
        with self._lock:
            if topic in self._topics:
                self._topics[topic] = self._clock()

    def record_input(self) -> None:
        """One input (a synchronised set) arrived."""
        with self._lock:
            self._inputs.append(self._clock())

    def record_output(self, latency_s: float) -> None:
        """One output went out ``latency_s`` after its input was stamped."""
        with self._lock:
            self._outputs.append((self._clock(), latency_s))
            self._output_count += 1

    def record_drop(self, reason: str) -> None:
        """One input was dropped, e.g. ``"busy"`` (inference slower than the camera),
        ``"bad input"`` or ``"inference error"``."""
        with self._lock:
            self._drops.append((self._clock(), reason))
            self._drops_by_reason[reason] += 1

    def record_warning(self, reason: str) -> None:
        """One input was used although something about it looked wrong, e.g. ``"stamp in the
        future"``; counted per reason, not a drop."""
        with self._lock:
            self._warnings[reason] += 1

    def status(self) -> DiagnosticStatus:
        """The pipeline's status with its reasons and key values."""
        now = self._clock()
        with self._lock:
            since = now - self._window_s
            inputs = [t for t in self._inputs if t > since]
            latencies_ms = [1e3 * latency for t, latency in self._outputs if t > since]
            window_drops = Counter(reason for t, reason in self._drops if t > since)
            last_input = self._inputs[-1] if self._inputs else None
            last_output = self._outputs[-1][0] if self._outputs else None
            drops_by_reason = dict(self._drops_by_reason)
            warnings = dict(self._warnings)
            info = dict(self._info)
            state, listening_since, topics = self._state, self._listening_since, dict(self._topics)

        span = self._span(now, listening_since)
        drop_ratio = sum(window_drops.values()) / len(inputs) if inputs else 0.0
        if state != ACTIVE:
            level, reasons = DiagnosticStatus.OK, [state]
        elif listening_since is None:
            level, reasons = DiagnosticStatus.OK, ["waiting for a subscriber to an output"]
        else:
            level, reasons = self._assess(
                now, listening_since, topics, last_input, last_output, drop_ratio, window_drops
            )
            rate_level, rate_reason = self._rate_verdict(len(latencies_ms) / span, span)
            if rate_reason and rate_level > DiagnosticStatus.OK:
                level = max(level, rate_level)
                reasons.append(rate_reason)

        values = {
            "input rate (Hz)": f"{len(inputs) / span:.1f}",
            "output rate (Hz)": f"{len(latencies_ms) / span:.1f}",
            "latency p50 (ms)": _percentile(latencies_ms, 50),
            "latency p95 (ms)": _percentile(latencies_ms, 95),
            "drop ratio (%)": f"{100.0 * drop_ratio:.1f}",
            "drops (total)": str(sum(drops_by_reason.values())),
            **{f"drops: {reason}": str(n) for reason, n in sorted(drops_by_reason.items())},
            **{f"warnings: {reason}": str(n) for reason, n in sorted(warnings.items())},
            **{f"last message age (s): {topic}": _age(now, t) for topic, t in topics.items()},
            **info,
        }
        return DiagnosticStatus(
            level=level,
            name=self.name,
            message="; ".join(reasons) if reasons else "ok",
            hardware_id=self.hardware_id,
            values=[KeyValue(key=key, value=value) for key, value in values.items()],
        )

    def frequency_status(self) -> DiagnosticStatus:
        """The output's rate as ``diagnostic_updater``'s FrequencyStatus reports it (its keys
        and messages), named ``<node>: depth/image topic status``. Idle: OK, "no events
        expected"."""
        now = self._clock()
        with self._lock:
            events = sum(1 for t, _ in self._outputs if t > now - self._window_s)
            count, state, listening_since = self._output_count, self._state, self._listening_since
        span = self._span(now, listening_since)
        frequency = events / span
        if state != ACTIVE or listening_since is None:
            level, message = DiagnosticStatus.OK, "No events expected (idle)."
        elif events == 0 and span >= self._window_s:
            level, message = DiagnosticStatus.ERROR, "No events recorded."
        else:
            level, verdict = self._rate_verdict(frequency, span)
            message = verdict or "Desired frequency met"
        values = {
            "Events in window": str(events),
            "Events since startup": str(count),
            "Duration of window (s)": f"{span:.6f}",
            "Actual frequency (Hz)": f"{frequency:.6f}",
        }
        if self._min_rate_hz == self._max_rate_hz:
            values["Target frequency (Hz)"] = f"{self._min_rate_hz:.6f}"
        if self._min_rate_hz > 0:
            values["Minimum acceptable frequency (Hz)"] = (
                f"{self._min_rate_hz * (1 - self._rate_tolerance):.6f}"
            )
        if math.isfinite(self._max_rate_hz):
            values["Maximum acceptable frequency (Hz)"] = (
                f"{self._max_rate_hz * (1 + self._rate_tolerance):.6f}"
            )
        task = self.name.rsplit(": ", 1)[0]
        return DiagnosticStatus(
            level=level,
            name=f"{task}: depth/image topic status",
            message=message,
            hardware_id=self.hardware_id,
            values=[KeyValue(key=key, value=value) for key, value in values.items()],
        )

    def _span(self, now: float, listening_since: float | None) -> float:
        """The part of the window the rates are counted over (shorter right after listening)."""
        start = now - self._window_s if listening_since is None else listening_since
        return min(self._window_s, max(now - start, 1e-9))

    def _rate_verdict(self, frequency: float, span: float) -> tuple[bytes, str | None]:
        """Level and message of an output rate, once a whole window has been seen."""
        if span < self._window_s:
            return DiagnosticStatus.OK, None
        if self._min_rate_hz > 0 and frequency < self._min_rate_hz * (1 - self._rate_tolerance):
            return DiagnosticStatus.WARN, (
                f"Frequency too low: output {frequency:.1f} Hz, expected at least "
                f"{self._min_rate_hz:g} Hz"
            )
        if frequency > self._max_rate_hz * (1 + self._rate_tolerance):
            return DiagnosticStatus.WARN, (
                f"Frequency too high: output {frequency:.1f} Hz, expected at most "
                f"{self._max_rate_hz:g} Hz"
            )
        return DiagnosticStatus.OK, None

    def _assess(
        self,
        now: float,
        listening_since: float,
        topics: dict[str, float | None],
        last_input: float | None,
        last_output: float | None,
        drop_ratio: float,
        window_drops: Counter[str],
    ) -> tuple[bytes, list[str]]:
        level, reasons = DiagnosticStatus.OK, []
        timeout = self._input_timeout_s

        def age(t: float | None) -> float:
            return now - (listening_since if t is None or t < listening_since else t)

        silent = {topic: age(t) for topic, t in topics.items() if age(t) > timeout}
        input_age = age(last_input)
        all_silent = len(silent) == len(topics) if topics else input_age > timeout
        if all_silent:
            level = DiagnosticStatus.WARN
            reasons.append(f"no input for {input_age:.1f} s")
        elif silent:
            level = DiagnosticStatus.WARN
            names = ", ".join(f"{topic} ({seconds:.1f} s)" for topic, seconds in silent.items())
            reasons.append(f"no messages on {names}; the other inputs arrive")
        elif input_age > timeout:
            level = DiagnosticStatus.WARN
            reasons.append(
                f"every input arrives but none synchronised for {input_age:.1f} s: their stamps "
                "differ (approximate_sync pairs the nearest)"
            )
        elif age(last_output) > timeout:
            level = DiagnosticStatus.ERROR
            reasons.append(f"input arrives but no output for {age(last_output):.1f} s")
        if window_drops[INFERENCE_ERROR]:
            level = DiagnosticStatus.ERROR
            reasons.append(
                f"inference failing: {window_drops[INFERENCE_ERROR]} in the last "
                f"{self._window_s:g} s"
            )
        if drop_ratio > self._max_drop_ratio:
            level = max(level, DiagnosticStatus.WARN)
            worst = max(window_drops, key=window_drops.__getitem__)
            reasons.append(
                f"drops {100 * drop_ratio:.0f}% > {100 * self._max_drop_ratio:.0f}% "
                f"(mostly {worst})"
            )
        return level, reasons

    def to_message(self, stamp: Time) -> DiagnosticArray:
        """A ``/diagnostics`` message holding :meth:`status` and :meth:`frequency_status`,
        stamped with the node's clock."""
        return DiagnosticArray(
            header=Header(stamp=stamp), status=[self.status(), self.frequency_status()]
        )


def _percentile(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.2f}" if values else "n/a"


def _age(now: float, t: float | None) -> str:
    return "never" if t is None else f"{now - t:.1f}"
