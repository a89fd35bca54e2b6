"""Depth error as a function of distance: how a model degrades with range.

Stereo error grows with the square of depth and mono networks are often good near and poor far, so
one overall number hides what a user of the point cloud needs to know. :class:`ErrorByDistance`
pools the errors of every valid pixel by its ground-truth depth over a whole evaluation, in fine
fixed-width bins (cheap to update, exact to merge), and :meth:`ErrorByDistance.bins` merges them
into a handful of round ranges that fit the depths actually seen (0-1 m steps indoors, 10 m steps
on a street).

Unlike :func:`~cnd_depth_ros.evaluation.metrics.depth_metrics`, which averages frames, the values
here are pooled over pixels (a range has no frames of its own). A failed prediction (NaN, infinite
or not positive) cannot have a finite error; it is counted in the range's ``invalid`` fraction and
left out of its ``abs_rel`` and ``rmse``, so a plot can show both.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["ErrorByDistance"]

#: Bin widths :meth:`ErrorByDistance.bins` chooses from, in units of the resolution's decade.
_ROUND_STEPS = (1.0, 2.0, 2.5, 5.0)


class ErrorByDistance:
    """Accumulates per-pixel errors by ground-truth depth.

    :param resolution: width of the fine bins in metres; merged ranges are multiples of it.
    :param max_depth: depths beyond it share the last fine bin.
    :raises ValueError: a resolution or maximum depth that is not positive, or a maximum depth
        not above the resolution.
    """

    def __init__(self, *, resolution: float = 0.1, max_depth: float = 500.0) -> None:
        if not (math.isfinite(resolution) and resolution > 0):
            raise ValueError(f"resolution must be positive, got {resolution}")
        if not (math.isfinite(max_depth) and max_depth > resolution):
            raise ValueError(
                f"max_depth must be above the resolution ({resolution}), got {max_depth}"
            )
        self.resolution = resolution
        count = math.ceil(max_depth / resolution)
        self._pixels = np.zeros(count, np.int64)
        self._failed = np.zeros(count, np.int64)
        self._abs_rel = np.zeros(count, np.float64)
        self._squared = np.zeros(count, np.float64)

    @property
    def pixels(self) -> int:
        """Number of valid ground-truth pixels added so far."""
        return int(self._pixels.sum())

    def update(self, pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> None:
        """Add one frame: ``pred`` and ``gt`` H x W metres, ``valid`` the bool mask of pixels with
        ground truth (finite and positive there).

        :raises ValueError: shapes differ, or the mask is not bool.
        """
        if not pred.shape == gt.shape == valid.shape:
            raise ValueError(
                f"pred {pred.shape}, gt {gt.shape} and valid {valid.shape} must have the same shape"
            )
        if valid.dtype != np.bool_:
            raise ValueError(f"valid must be bool, got {valid.dtype}")
        target = gt[valid].astype(np.float64)
        estimate = pred[valid].astype(np.float64)
        index = np.minimum((target / self.resolution).astype(np.int64), self._pixels.size - 1)
        ok = np.isfinite(estimate) & (estimate > 0)
        error = np.where(ok, estimate - target, 0.0)
        size = self._pixels.size
        self._pixels += np.bincount(index, minlength=size)
        self._failed += np.bincount(index[~ok], minlength=size)
        self._abs_rel += np.bincount(index, weights=np.abs(error) / target, minlength=size)
        self._squared += np.bincount(index, weights=error**2, minlength=size)

    def bins(self, *, max_bins: int = 10) -> list[dict[str, Any]]:
        """Ranges of a round width (1, 2, 2.5 or 5 times a power of ten) covering the depths seen,
        at most ``max_bins`` of them (the last is open-ended when the depths run further), each
        ``{"min", "max", "pixels", "abs_rel", "rmse", "invalid"}``. Ranges without pixels are
        left out; errors are NaN where every prediction in the range failed.

        :raises ValueError: ``max_bins`` below 1 (an empty accumulator gives an empty list).
        """
        if max_bins < 1:
            raise ValueError(f"max_bins must be at least 1, got {max_bins}")
        seen = np.flatnonzero(self._pixels)
        if seen.size == 0:
            return []
        # Cover up to the 99th percentile in max_bins ranges, the rest goes to the last one.
        cumulative = np.cumsum(self._pixels)
        far = int(np.searchsorted(cumulative, 0.99 * cumulative[-1])) + 1
        width = self._round_width(far, max_bins)
        groups = np.minimum(np.arange(self._pixels.size) // width, max_bins - 1)
        last_group = int(groups[seen[-1]])
        result = []
        for group in range(last_group + 1):
            members = groups == group
            pixels = int(self._pixels[members].sum())
            if pixels == 0:
                continue
            scored = pixels - int(self._failed[members].sum())
            open_ended = group == max_bins - 1 and seen[-1] >= (group + 1) * width
            result.append({
                "min": round(group * width * self.resolution, 6),
                "max": math.inf if open_ended else round((group + 1) * width * self.resolution, 6),
                "pixels": pixels,
                "abs_rel": float(self._abs_rel[members].sum() / scored) if scored else math.nan,
                "rmse": math.sqrt(self._squared[members].sum() / scored) if scored else math.nan,
                "invalid": 1.0 - scored / pixels,
            })
        return result

    def _round_width(self, fine_bins: int, max_bins: int) -> int:
        """The smallest round width, in fine bins, that covers ``fine_bins`` in ``max_bins``."""
        decade = 1
        while True:
            for step in _ROUND_STEPS:
                width = step * decade
                if width == int(width) and int(width) * max_bins >= fine_bins:
                    return int(width)
            decade *= 10
