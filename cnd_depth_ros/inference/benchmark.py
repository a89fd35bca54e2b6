"""Latency and agreement of backends (networks and StereoSGBM, ``sgbm``), measured in one run.

Every contender gets the same camera-sized stereo pair and does the whole job a node would:
``infer(left, right, camera=...)``, i.e. resize to the input size, run, turn the output into
metres for the camera, resize back. Every contender runs at the same input size, the one planned
for the torch reference (SGBM matches at it too), and the reported latency is that call's, so the
classical matcher and the networks are compared on equal terms. Agreement with the torch reference
is the largest absolute depth difference in metres over the pixels where both are valid.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.inference.backend import DepthEstimator
from cnd_depth_ros.inference.disparity_refinement import DisparityRefinement
from cnd_depth_ros.inference.input_plan import default_pixel_budget
from cnd_depth_ros.inference.planned_backend import PlannedBackend
from cnd_depth_ros.inference.registry import parse_backend_spec, with_calibration

if TYPE_CHECKING:
    from cnd_depth_ros.data.frame import Frame

__all__ = ["BenchmarkResult", "StereoInput", "max_abs_diff", "run_benchmark"]

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchmarkResult:
    """One row of ``cnd-depth bench --json``: one backend's latency and agreement with torch."""

    backend: str
    model: str
    height: int
    width: int
    p50_ms: float
    p95_ms: float
    fps: float
    max_abs_diff_vs_torch: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StereoInput:
    """The rectified pair every contender gets, and the camera that sees it."""

    left: np.ndarray
    right: np.ndarray
    camera: PinholeCamera

    def resized(self, width: int, height: int) -> StereoInput:
        """The pair as a ``width`` x ``height`` camera would see it (area filter)."""
        left, right = (
            cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            for image in (self.left, self.right)
        )
        return StereoInput(left, right, self.camera.resized(width, height))


def max_abs_diff(depth: np.ndarray, reference: np.ndarray) -> float:
    """Largest absolute difference over the pixels valid (finite) in both maps; NaN if none."""
    both = np.isfinite(depth) & np.isfinite(reference)
    if not both.any():
        return float("nan")
    return float(np.abs(depth[both] - reference[both]).max())


def _time(estimator: DepthEstimator, pair: StereoInput, iterations: int, warmup: int) -> np.ndarray:
    """Milliseconds per ``infer`` call, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        estimator.infer(pair.left, pair.right, camera=pair.camera)
    times = np.empty(iterations)
    for i in range(iterations):
        start = time.perf_counter()
        estimator.infer(pair.left, pair.right, camera=pair.camera)
        times[i] = (time.perf_counter() - start) * 1000.0
    return times


def run_benchmark(
    model: str | os.PathLike[str],
    specs: Sequence[str],
    pair: StereoInput,
    *,
    pixel_budget: int | None = None,
    input_size: tuple[int, int] | None = None,
    iterations: int = 50,
    warmup: int = 5,
    options: dict[str, Any] | None = None,
    calibration: Sequence[Frame] | None = None,
    refinement: DisparityRefinement | None = DisparityRefinement(),  # noqa: B008 - frozen
) -> list[BenchmarkResult]:
    """Time each backend spec (``torch``, ``onnxruntime:int8``, ``sgbm``, ...) on ``pair``, every
    one at the input planned for the pair's camera within ``pixel_budget`` (default: the one for
    the timed device) or at ``input_size``; ``options`` (device, threads) go to every backend,
    ``calibration`` frames to INT8 ones; a stereo net's disparity is refined with
    ``refinement`` (``None``: not refined) by every network backend and the reference.

    :raises ValueError: bad specs or sizes; backend errors propagate as they are.
    """
    if iterations < 1 or warmup < 0:
        raise ValueError(f"iterations must be >= 1 and warmup >= 0, got {iterations}, {warmup}")
    for spec in specs:  # unknown names fail before minutes of timing, not after
        parse_backend_spec(spec)
    options = dict(options or {})
    budget = pixel_budget or default_pixel_budget(options.get("device") or "cpu")
    # The reference is torch on the CPU (every machine has one) with the timed backends' threads:
    # oneDNN's results are reproducible for one thread count, not across counts.
    threads = {"threads": options["threads"]} if options.get("threads") else {}
    torch_backend = PlannedBackend("torch", model, pixel_budget=budget, input_size=input_size,
                                   camera=pair.camera, device="cpu", refinement=refinement,
                                   **threads)
    reference = torch_backend.infer(pair.left, pair.right, camera=pair.camera)
    size = torch_backend.input_size
    assert size is not None  # a network's
    width, height = size
    torch_backend.close()
    results = []
    for spec in specs:
        _LOGGER.info("benchmarking %s: %d iterations at %dx%d", spec, iterations, width, height)
        backend = PlannedBackend(spec, model, input_size=size, camera=pair.camera,
                                 refinement=refinement,
                                 **with_calibration(spec, options, calibration))
        try:
            depth = backend.infer(pair.left, pair.right, camera=pair.camera)
            difference = max_abs_diff(depth, reference)
            times = _time(backend, pair, iterations, warmup)
        finally:
            backend.close()
        result = BenchmarkResult(
            backend=spec,
            model=str(model),
            height=height,
            width=width,
            p50_ms=round(float(np.percentile(times, 50)), 3),
            p95_ms=round(float(np.percentile(times, 95)), 3),
            fps=round(1000.0 / float(times.mean()), 2),
            max_abs_diff_vs_torch=round(difference, 6),
        )
        _LOGGER.info("%s", result)
        results.append(result)
    return results
