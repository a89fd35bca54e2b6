"""Scores of a replay: depth metrics per frame and overall, latency and frame counts, written as
``metrics.json`` and ``report.html``.

Each prediction is scored as it arrives against its ground truth (:mod:`.matching`) on the
ground-truth pixels within ``[min_depth, max_depth]``, through the report's
:class:`~cnd_depth_ros.evaluation.report.ReportCollector` (``depth_metrics``, error by distance,
the panels of a few frames), so the JSON and the page show the same numbers. Overall metrics are
per-frame means (as ``MetricAccumulator`` averages). Failed predictions count as infinite errors
(docs/decisions.md, 5), written as ``null`` since JSON has no infinity. A prediction of another
size than its ground truth is resized to it (nearest neighbour: no depth is invented between
surfaces).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cnd_depth_ros.atomic_file import write_text_atomically
from cnd_depth_ros.evaluation.matching import GroundTruth
from cnd_depth_ros.evaluation.metrics import METRIC_NAMES, check_depth_range, within_depth_range
from cnd_depth_ros.evaluation.report import ReportCollector, panel_indices, write_report

__all__ = ["METRICS_NAME", "ReplayScorer", "json_safe"]

METRICS_NAME = "metrics.json"


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


class ReplayScorer:
    """Scores predictions against ``truth`` one at a time, keeping running sums, per-frame rows
    and the images of ``panels`` frames spread evenly over the ``expected`` ones.

    :raises ValueError: a depth range that is empty or negative.
    """

    def __init__(
        self,
        truth: GroundTruth,
        *,
        expected: int,
        min_depth: float = 1e-3,
        max_depth: float = 80.0,
        panels: int = 4,
    ) -> None:
        check_depth_range(min_depth, max_depth)
        self.truth = truth
        self.min_depth, self.max_depth = min_depth, max_depth
        self.panel_frames = set(panel_indices(expected, panels))
        self.collector = ReportCollector(keep=sorted(self.panel_frames))
        self.unmatched = 0

    def add(
        self,
        index: int,
        stamp: int,
        prediction: np.ndarray,
        *,
        left: np.ndarray,
        right: np.ndarray | None = None,
        latency_s: float | None = None,
    ) -> bool:
        """Score the prediction of input frame ``index`` stamped ``stamp`` (ns), with its camera
        images for the report; ``False`` if it has no ground truth (no stamp near enough, or no
        valid pixel within the depth range)."""
        latency_ms = None if latency_s is None else 1e3 * latency_s
        if latency_ms is not None:
            self.collector.latency_ms.append(latency_ms)
        truth = self.truth.depth(stamp, prediction.shape[:2])
        if truth is None:
            self.unmatched += 1
            return False
        height, width = truth.shape
        if prediction.shape != truth.shape:
            prediction = cv2.resize(prediction, (width, height), interpolation=cv2.INTER_NEAREST)
        prediction, truth = within_depth_range(prediction, truth, self.min_depth, self.max_depth)
        if not np.isfinite(truth).any():
            self.unmatched += 1
            return False
        images = [left] + ([right] if right is not None else [])
        if left.shape[:2] != truth.shape:
            images = [cv2.resize(i, (width, height), interpolation=cv2.INTER_AREA) for i in images]
        self.collector.add(
            index,
            prediction,
            truth,
            left=images[0],
            right=images[1] if right is not None else None,
            name=f"frame {index}, stamp {stamp / 1e9:.3f} s",
        )
        row = self.collector.per_frame[-1]
        row.update(stamp_ns=stamp, pixels=int(np.isfinite(truth).sum()))
        if latency_ms is not None:
            row["latency_ms"] = latency_ms
        return True

    @property
    def scored(self) -> int:
        return len(self.collector.per_frame)

    def result(self, frames_in: int, frames_out: int) -> dict[str, Any]:
        """The ``metrics.json`` content for ``frames_in`` inputs and ``frames_out`` outputs."""
        rows = self.collector.per_frame
        latencies = np.asarray(self.collector.latency_ms)
        overall = {
            name: float(np.mean([row[name] for row in rows])) if rows else None
            for name in METRIC_NAMES
        }
        return {
            "overall": overall,
            "per_frame": rows,
            "latency_ms": {
                key: float(np.percentile(latencies, q)) if latencies.size else None
                for key, q in (("p50", 50), ("p95", 95), ("max", 100))
            },
            "frames": {
                "in": frames_in,
                "out": frames_out,
                "dropped": max(frames_in - frames_out, 0),
                "unmatched": self.unmatched,
                "scored": len(rows),
            },
            "error_by_distance": self.collector.by_distance.bins(),
            "depth_range_m": [self.min_depth, self.max_depth],
        }

    def write(
        self,
        out: Path,
        result: dict[str, Any],
        *,
        title: str,
        details: dict[str, Any],
        baseline: tuple[str, ReportCollector, dict[str, float]] | None = None,
    ) -> dict[str, Path]:
        """Write ``metrics.json`` (strict JSON, atomically) and ``report.html`` into ``out``;
        ``baseline`` is ``(name, collector, overall metrics)`` of a method scored on the same
        frames (SGBM), shown beside the node in the report."""
        out.mkdir(parents=True, exist_ok=True)
        metrics = write_text_atomically(
            out / METRICS_NAME, json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n"
        )
        scored = {k: v for k, v in result["overall"].items() if v is not None}
        report = write_report(
            out,
            title=title,
            metrics=scored or dict.fromkeys(METRIC_NAMES, math.nan),
            **self.collector.report_arguments(baseline[1] if baseline else None),
            baseline=baseline[1].baseline(baseline[0], baseline[2]) if baseline else None,
            details=details,
        )
        return {"metrics": metrics, "report": report}
