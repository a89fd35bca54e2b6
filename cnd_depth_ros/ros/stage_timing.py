"""Where a frame's time goes in depth_node: each stage timed, its median reported in
``/diagnostics`` as ``"<stage> p50 (ms)"`` and the current frame's breakdown in the debug log
(benchmarks/node_latency.py reads both).

The stages, in order: input: left stamp -> synchronised set here (driver, transport,
deserialisation, synchroniser); queue: waiting for the worker; decode: camera_info and image
conversion; inference: the backend's estimate (resize, network, metric depth, resize back);
depth (with the depth limits), points, colored, confidence, disparity: building and publishing
that output.
"""

from __future__ import annotations

import collections
import time

import numpy as np

__all__ = ["STAGES", "StageTimes"]

STAGES = ("input", "queue", "decode", "inference", "depth", "points", "colored", "confidence",
          "disparity")
# Durations kept per stage for its median.
_HISTORY = 200


class StageTimes:
    """The last durations of every stage, and the stages of the frame in progress.

    The executor thread records ``input`` and reads the medians; the inference worker times
    the other stages. Appending to a bounded deque and copying it are safe across threads.
    """

    def __init__(self) -> None:
        self._durations: dict[str, collections.deque[float]] = {
            stage: collections.deque(maxlen=_HISTORY) for stage in STAGES
        }
        self._frame: dict[str, float] = {}  # the worker's current frame, for the debug log

    def record(self, stage: str, seconds: float) -> None:
        """One ``stage`` duration measured elsewhere (the input's age, from its stamp)."""
        self._durations[stage].append(seconds)

    def start_frame(self) -> None:
        """The worker begins a frame: forget the previous frame's breakdown."""
        self._frame.clear()

    def lap(self, stage: str, since: float) -> float:
        """Record ``since`` -> now (``time.perf_counter()``) as one ``stage`` duration; return
        now, the next lap's start."""
        now = time.perf_counter()
        self._durations[stage].append(now - since)
        self._frame[stage] = now - since
        return now

    def medians_ms(self) -> dict[str, float]:
        """The median duration of every stage timed so far, in milliseconds."""
        return {
            stage: 1e3 * float(np.median(times))
            for stage, durations in self._durations.items()
            if (times := list(durations))
        }

    def frame_ms(self) -> str:
        """The current frame's stages as ``"queue 0.410, decode 1.203, ..."`` (milliseconds)."""
        return ", ".join(f"{stage} {1e3 * s:.3f}" for stage, s in self._frame.items())
