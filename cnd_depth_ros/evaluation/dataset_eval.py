"""The paper's metrics of a depth estimator over a dataset, as deployed.

Networks run through an inference backend (``DepthBackend.infer``) and the classical baseline
through :class:`~cnd_depth_ros.inference.sgbm.SgbmMatcher`, both from the camera images to metric
depth at the ground truth's resolution. So the numbers measure what the node would publish, and
SGBM and the networks are scored on exactly the same pixels.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from cnd_depth_ros.training.datasets.frame import Frame

__all__ = ["FrameCallback", "Predictor", "evaluate_dataset", "open_predictor"]

_LOGGER = logging.getLogger(__name__)

#: A frame's camera images -> H x W float32 metric depth of its left view (NaN where unknown).
Predictor = Callable[[Frame], np.ndarray]

#: Called with (index, frame, prediction, seconds the prediction took) for every scored frame.
FrameCallback = Callable[[int, Frame, np.ndarray, float], None]


@contextlib.contextmanager
def open_predictor(
    model: str, *, backend: str = "torch", **options: Any
) -> Iterator[tuple[Predictor, dict[str, Any]]]:
    """``(predict, info)`` for ``model``: ``"sgbm"``, a shipped model name or an artifact path,
    run by ``backend`` with its ``options``; the backend is closed on exit.

    :raises ArtifactError: the model cannot be found or read.
    :raises BackendError: the backend cannot run here.
    """
    from cnd_depth_ros.inference.registry import create_backend
    from cnd_depth_ros.inference.sgbm import SgbmMatcher

    if model == "sgbm":
        matcher = SgbmMatcher(**options)
        try:
            yield (
                lambda frame: matcher.infer(frame.left, frame.right, camera=frame.camera),
                {**matcher.info(), "stereo": True},
            )
        finally:
            matcher.close()
        return
    runner = create_backend(backend, model, **options)
    stereo = runner.metadata.stereo
    try:
        yield (
            lambda frame: runner.infer(
                frame.left, frame.right if stereo else None, camera=frame.camera
            ),
            {**runner.info(), "stereo": stereo},
        )
    finally:
        runner.close()


def evaluate_dataset(
    predict: Predictor,
    frames: Sequence[Frame],
    *,
    max_frames: int | None = None,
    progress: bool = False,
    description: str = "eval",
    on_frame: FrameCallback | None = None,
) -> dict[str, Any]:
    """``{"metrics": {...}, "frames": N}`` of ``predict`` over the first ``max_frames`` frames.

    Frames without ground truth are skipped (and counted in ``"skipped"``); ``on_frame`` sees
    every other one with its prediction (reports keep figures and per-frame numbers that way).

    :raises ValueError: ``max_frames`` below 1, or no frame with ground truth.
    """
    from tqdm import tqdm

    from cnd_depth_ros.training.metrics import MetricAccumulator

    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    count = len(frames) if max_frames is None else min(max_frames, len(frames))
    accumulator = MetricAccumulator()
    skipped = 0
    for index in tqdm(range(count), desc=description, unit="frame", disable=not progress):
        frame = frames[index]
        valid = frame.valid
        if not valid.any():
            skipped += 1
            continue
        started = time.perf_counter()
        prediction = predict(frame)
        seconds = time.perf_counter() - started
        accumulator.update(prediction, frame.depth, valid)
        if on_frame is not None:
            on_frame(index, frame, prediction, seconds)
    if accumulator.frames == 0:
        raise ValueError(f"none of the {count} frames evaluated has ground-truth depth")
    if skipped:
        _LOGGER.warning("%d of %d frames have no ground truth and were skipped", skipped, count)
    metrics = {name: float(value) for name, value in accumulator.compute().items()}
    return {"metrics": metrics, "frames": accumulator.frames, "skipped": skipped}
