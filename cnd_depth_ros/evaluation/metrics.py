"""Depth metrics: the paper's rel, log10 and RMSE, plus sq_rel, RMSE(log) and the delta < 1.25^k
accuracies, for one frame and averaged over a dataset.

Failed predictions are counted, never dropped: a predicted depth that is NaN, infinite or not
positive inside the mask has an infinite error and misses every delta threshold, so the error
metrics of a frame with any failed pixel are ``inf`` and ``invalid`` says which fraction failed.
A network that leaves holes cannot score better than one that does not.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

__all__ = [
    "EVALUATION_RANGE_M",
    "METRIC_NAMES",
    "MetricAccumulator",
    "check_depth_range",
    "depth_metrics",
    "within_depth_range",
]

#: Keys of :func:`depth_metrics`: errors (lower is better), then accuracies (higher is better),
#: then the fraction of failed predictions.
METRIC_NAMES = (
    "rel",
    "log10",
    "rmse",
    "sq_rel",
    "rmse_log",
    "delta1",
    "delta2",
    "delta3",
    "invalid",
)

ArrayLike = np.ndarray | torch.Tensor


def depth_metrics(pred: ArrayLike, gt: ArrayLike, valid_mask: ArrayLike) -> dict[str, float]:
    """Metrics of ``pred`` against ``gt`` (metres, same shape, numpy or torch) over the pixels of
    the bool ``valid_mask``, pooled: pass one frame for per-frame values.

    :raises ValueError: if the shapes differ, the mask is empty or not bool, or the ground truth
        inside the mask is not finite and positive.
    """
    pred_np, gt_np, mask_np = _same_shape_arrays(pred, gt, valid_mask)
    if mask_np.dtype != np.bool_:
        raise ValueError(f"valid_mask must be bool, got {mask_np.dtype}")
    if not mask_np.any():
        raise ValueError("valid_mask selects no pixel: there is nothing to evaluate")
    target = gt_np[mask_np].astype(np.float64)
    bad_gt = ~(np.isfinite(target) & (target > 0))
    if bad_gt.any():
        raise ValueError(
            f"valid_mask selects {int(bad_gt.sum())} pixels whose ground truth is not finite and "
            "positive"
        )
    estimate = pred_np[mask_np].astype(np.float64)
    ok = np.isfinite(estimate) & (estimate > 0)
    estimate = np.where(ok, estimate, 1.0)
    abs_error = np.where(ok, np.abs(estimate - target), np.inf)
    log_error = np.where(ok, np.abs(np.log(estimate) - np.log(target)), np.inf)
    ratio = np.where(ok, np.maximum(estimate / target, target / estimate), np.inf)
    return {
        "rel": float(np.mean(abs_error / target)),
        "log10": float(np.mean(log_error) / math.log(10.0)),
        "rmse": float(np.sqrt(np.mean(abs_error**2))),
        "sq_rel": float(np.mean(abs_error**2 / target)),
        "rmse_log": float(np.sqrt(np.mean(log_error**2))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
        "invalid": float(np.mean(~ok)),
    }


#: The depths (m) scored by default everywhere (``eval``, ``replay``, validation): the KITTI cap.
EVALUATION_RANGE_M = (1e-3, 80.0)


def check_depth_range(min_depth: float, max_depth: float) -> None:
    """:raises ValueError: a range that is empty or starts below 0."""
    if not 0 <= min_depth < max_depth:
        raise ValueError(
            f"need 0 <= min_depth < max_depth, got {min_depth} and {max_depth} metres"
        )


def within_depth_range(
    prediction: np.ndarray, truth: np.ndarray, min_depth: float, max_depth: float
) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation range of Eigen et al. (NIPS 2014), used for KITTI: ``(prediction clipped to
    [min_depth, max_depth], truth with NaN outside it)``. Only ground truth in the range is scored,
    and one absurd prediction (a near-zero disparity is kilometres away) costs at most the range,
    as it would after the clamp every driving benchmark applies. NaN predictions stay NaN: they
    are failures (decision 5).

    :raises ValueError: a range that is empty or starts below 0.
    """
    check_depth_range(min_depth, max_depth)
    with np.errstate(invalid="ignore"):
        inside = (truth >= min_depth) & (truth <= max_depth)
    return (
        np.clip(prediction, min_depth, max_depth).astype(np.float32, copy=False),
        np.where(inside, truth, np.nan).astype(np.float32),
    )


class MetricAccumulator:
    """Averages per-frame :func:`depth_metrics` over a dataset: every frame counts once, however
    many valid pixels it has (the Eigen / KITTI convention; RMSE is the mean of per-frame RMSEs).
    """

    def __init__(self) -> None:
        self._sums = dict.fromkeys(METRIC_NAMES, 0.0)
        self._frames = 0

    @property
    def frames(self) -> int:
        """Number of frames added so far."""
        return self._frames

    def update(self, pred: ArrayLike, gt: ArrayLike, valid_mask: ArrayLike) -> None:
        """Add one H x W frame, or a batch shaped N x H x W or N x 1 x H x W.

        :raises ValueError: as :func:`depth_metrics`, naming the frame of the batch; then
            nothing of the batch is added.
        """
        batch = []
        for index, frame in enumerate(_frames(pred, gt, valid_mask)):
            try:
                batch.append(depth_metrics(*frame))
            except ValueError as error:
                raise ValueError(f"frame {index} of the batch: {error}") from error
        for metrics in batch:
            for name, value in metrics.items():
                self._sums[name] += value
        self._frames += len(batch)

    def compute(self) -> dict[str, float]:
        """The mean of every metric over the frames added.

        :raises ValueError: if no frame has been added.
        """
        if not self._frames:
            raise ValueError("no frames were added: there is nothing to average")
        return {name: total / self._frames for name, total in self._sums.items()}


def _frames(
    pred: ArrayLike, gt: ArrayLike, valid_mask: ArrayLike
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(pred, gt, mask) of each frame: one for H x W input, N for N x H x W or N x 1 x H x W."""
    arrays = _same_shape_arrays(pred, gt, valid_mask)
    shape = arrays[0].shape
    if len(shape) == 2:
        arrays = [a[None] for a in arrays]
    elif len(shape) == 4 and shape[1] == 1:
        arrays = [a[:, 0] for a in arrays]
    elif len(shape) != 3:
        raise ValueError(f"expected H x W, N x H x W or N x 1 x H x W frames, got {shape}")
    yield from zip(*arrays, strict=True)


def _same_shape_arrays(
    pred: ArrayLike, gt: ArrayLike, valid_mask: ArrayLike
) -> list[np.ndarray]:
    arrays = [_to_numpy(a) for a in (pred, gt, valid_mask)]
    shapes = [a.shape for a in arrays]
    if len(set(shapes)) != 1:
        raise ValueError(
            f"pred {shapes[0]}, gt {shapes[1]} and valid_mask {shapes[2]} must have the same shape"
        )
    return arrays


def _to_numpy(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        # numpy has no bfloat16; float64 is what the metrics compute in anyway.
        return (values.double() if values.is_floating_point() else values).numpy()
    return np.asarray(values)
