"""The paper's metrics of a depth estimator over a dataset, as deployed.

Every estimator, a network or the classical baseline (backend ``sgbm``), runs through an
inference backend (:meth:`~cnd_depth_ros.inference.backend.DepthEstimator.estimate`), from the
camera images to metric depth at the ground truth's resolution. So the numbers measure what the
node would publish, and SGBM and the networks are scored on exactly the same pixels.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.data.frame import Frame
from cnd_depth_ros.inference.depth_estimate import DepthEstimate

__all__ = [
    "FrameCallback",
    "Predictor",
    "evaluate_dataset",
    "open_predictor",
]

_LOGGER = logging.getLogger(__name__)

#: A frame's camera images -> the metric depth of its left view (H x W float32, NaN where
#: unknown) with the matcher's confidence where the model has one.
Predictor = Callable[[Frame], DepthEstimate]

#: Called with (index, frame, estimate, ground truth as scored, seconds the prediction took)
#: for every scored frame; the estimate's depth and the ground truth are those of the
#: evaluation depth range (and confidence threshold).
FrameCallback = Callable[[int, Frame, DepthEstimate, np.ndarray, float], None]


@contextlib.contextmanager
def open_predictor(
    model: str | None,
    *,
    backend: str = "torch",
    camera: PinholeCamera | None = None,
    pixel_budget: int | None = None,
    input_size: tuple[int, int] | None = None,
    **options: Any,
) -> Iterator[tuple[Predictor, dict[str, Any]]]:
    """``(predict, info)`` for ``model`` (a shipped model name or an artifact path; ``None`` for
    a backend without a model, ``sgbm``) run by the backend spec ``backend`` with its
    ``options``; the backend is closed on exit.

    Networks run at the input planned for each frame's camera (``pixel_budget``, or
    ``input_size`` for every frame; ``camera``: the first frame's, planned at once); ``info``
    gains ``"input_plans"``, one per camera size seen, when the block ends.

    :raises ArtifactError: the model cannot be found or read.
    :raises BackendError: the backend cannot run here.
    :raises ValueError: a bad backend spec or option (an unknown SGBM preset, ...).
    """
    from cnd_depth_ros.inference.planned_backend import PlannedBackend

    runner = PlannedBackend(backend, model, camera=camera, pixel_budget=pixel_budget,
                            input_size=input_size, **options)
    stereo = runner.stereo
    info = {**runner.info(), "stereo": stereo}
    try:
        yield (
            lambda frame: runner.estimate(
                frame.left, frame.right if stereo else None, camera=frame.camera
            ),
            info,
        )
    finally:
        info["input_plans"] = [plan.to_json() for plan in runner.plans]
        runner.close()


def evaluate_dataset(
    predict: Predictor,
    frames: Sequence[Frame],
    *,
    max_frames: int | None = None,
    progress: bool = False,
    description: str = "eval",
    on_frame: FrameCallback | None = None,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    confidence_threshold: float = 0.0,
) -> dict[str, Any]:
    """``{"metrics": {...}, "frames": N}`` of ``predict`` over the first ``max_frames`` frames,
    scoring ground truth within ``[min_depth, max_depth]`` against predictions clipped to it
    (:func:`~cnd_depth_ros.evaluation.metrics.within_depth_range`).

    With ``confidence_threshold`` above 0, pixels the model is less confident of are not scored,
    as the node marks them invalid: ``"confidence"`` then says which share of the ground truth
    was kept (estimates without confidence keep every pixel).

    Frames without ground truth in the range are skipped (and counted in ``"skipped"``);
    ``on_frame`` sees every other one with its prediction and ground truth as scored (reports
    keep figures and per-frame numbers that way).

    :raises ValueError: ``max_frames`` below 1, an empty range, a threshold outside [0, 1], or
        no frame with ground truth.
    """
    from tqdm import tqdm

    from cnd_depth_ros.evaluation.metrics import (
        MetricAccumulator,
        check_depth_range,
        within_depth_range,
    )

    check_depth_range(min_depth, max_depth)
    if not 0.0 <= confidence_threshold <= 1.0:
        raise ValueError(f"confidence_threshold must be within [0, 1], got {confidence_threshold}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    count = len(frames) if max_frames is None else min(max_frames, len(frames))
    accumulator = MetricAccumulator()
    skipped = 0
    truth_pixels = kept_pixels = 0
    for index in tqdm(range(count), desc=description, unit="frame", disable=not progress):
        frame = frames[index]
        truth = np.full(frame.left.shape[:2], np.nan, np.float32)
        if frame.depth is not None:
            truth[frame.valid] = frame.depth[frame.valid]
        with np.errstate(invalid="ignore"):
            if not ((truth >= min_depth) & (truth <= max_depth)).any():
                skipped += 1
                continue
        started = time.perf_counter()
        estimate = predict(frame)
        seconds = time.perf_counter() - started
        prediction, truth = within_depth_range(estimate.depth, truth, min_depth, max_depth)
        truth_pixels += int(np.isfinite(truth).sum())
        if confidence_threshold > 0.0 and estimate.confidence is not None:
            truth[estimate.confidence < confidence_threshold] = np.nan
        kept_pixels += int(np.isfinite(truth).sum())
        if not np.isfinite(truth).any():
            continue
        accumulator.update(prediction, truth, np.isfinite(truth))
        if on_frame is not None:
            on_frame(index, frame, replace(estimate, depth=prediction), truth, seconds)
    if accumulator.frames == 0:
        raise ValueError(
            f"none of the {count} frames evaluated has ground-truth depth within "
            f"[{min_depth}, {max_depth}] m"
        )
    if skipped:
        _LOGGER.warning(
            "%d of %d frames have no ground truth in the depth range and were skipped",
            skipped, count,
        )
    metrics = {name: float(value) for name, value in accumulator.compute().items()}
    result = {"metrics": metrics, "frames": accumulator.frames, "skipped": skipped}
    if confidence_threshold > 0.0:
        result["confidence"] = {"threshold": confidence_threshold,
                                "kept": kept_pixels / max(truth_pixels, 1)}
    return result
