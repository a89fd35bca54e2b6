"""The stereo net's disparity refined against the camera images at the camera's own resolution.

The net runs at the input the planner chose (a 1282x1110 camera becomes 288x256 on a CPU), so
its disparity, upsampled to the camera, is blurred across object edges and quantised to the
net's pixels: a 0.25-pixel error at the network's size is one pixel at the camera's. A local
matcher run on the full images fixes both where the images have texture, and is cheap because
the net tells it where to look:

1. **Search.** Each pixel tries the net's disparity plus each whole offset within ``radius``
   camera pixels (the net's error at the network size, times the downscale), scores each by the
   zero-mean normalised cross-correlation (ZNCC) of a ``window`` around it, and interpolates a
   sub-pixel peak. The hypotheses follow the net's disparity, fractions included, so the windows
   of a slanted surface (the ground ahead) are compared along the slant.
2. **Propagation.** The net blurs a foreground object's disparity over the background around it,
   further than the search reaches. So each pixel also tries the disparity of the pixels
   ``propagation_steps`` (network pixels, times the downscale) to its left and right, above and
   below, coarse to fine, and keeps whichever correlates best: the background's own disparity
   wins back the pixels the foreground was smeared over (the propagation step of PatchMatch
   stereo). A neighbour's disparity outside what the net has near the pixel is not tried.
3. A 5x5 median removes the isolated wrong matches local matching makes.

Pixels without texture, or whose best match is weak or at the edge of the search, keep the net's
disparity, so what the net gets right where matching is hopeless (walls, sky, the border the
right camera does not see) stays. Measured on the real pairs in docs/models.md; the choice and
how the constants were chosen in docs/decisions.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["DisparityRefinement"]


class _WindowCorrelation:
    """Each pixel's ZNCC between its left window and the right image read at a disparity; the
    left windows' statistics are computed once per image pair."""

    def __init__(self, left_grey: np.ndarray, right_grey: np.ndarray, window: int) -> None:
        height, width = left_grey.shape
        self._window = window
        self._left, self._right = left_grey, right_grey
        self._columns = np.arange(width, dtype=np.float32)[None, :]
        self._rows = np.repeat(np.arange(height, dtype=np.float32)[:, None], width, axis=1)
        self._left_mean = self._mean(left_grey)
        self.left_variance = self._mean(left_grey * left_grey) - self._left_mean**2
        self._left_inverse_std = 1.0 / np.sqrt(np.maximum(self.left_variance, 1e-6))

    def _mean(self, image: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(image, -1, (self._window, self._window),
                             borderType=cv2.BORDER_REFLECT)

    def __call__(self, disparity: np.ndarray) -> np.ndarray:
        """H x W disparity -> H x W correlation in [-1, 1]."""
        warped = cv2.remap(self._right, self._columns - disparity, self._rows, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        warped_mean = self._mean(warped)
        warped_variance = self._mean(warped * warped)
        warped_variance -= warped_mean * warped_mean
        np.maximum(warped_variance, 1e-6, out=warped_variance)
        correlation = self._mean(self._left * warped)
        correlation -= self._left_mean * warped_mean
        correlation *= self._left_inverse_std
        correlation /= np.sqrt(warped_variance, out=warped_variance)
        return correlation


@dataclass(frozen=True)
class DisparityRefinement:
    """How to refine: see the module docstring.

    :param network_radius: search half-width in pixels at the network's input size; scaled by the
        downscale from the camera to the network.
    :param propagation_steps: distances, in pixels at the network's input size, of the neighbours
        (left, right, above, below) whose disparity each pixel tries after the search, coarse to
        fine.
    :param window: side of the correlation window in camera pixels (odd).
    :param min_correlation: a best match weaker than this keeps the net's disparity.
    :param min_texture: grey-level standard deviation (0-255) a window needs to be matched.
    """

    network_radius: float = 3.0
    propagation_steps: tuple[float, ...] = (16.0, 8.0, 4.0, 2.0)
    window: int = 9
    min_correlation: float = 0.3
    min_texture: float = 1.0

    def __post_init__(self) -> None:
        if self.window < 3 or self.window % 2 == 0:
            raise ValueError(f"window must be odd and at least 3, got {self.window}")
        if self.network_radius <= 0:
            raise ValueError(f"network_radius must be positive, got {self.network_radius}")
        if any(step <= 0 for step in self.propagation_steps):
            raise ValueError(f"propagation_steps must be positive, got {self.propagation_steps}")

    def radius(self, downscale: float) -> int:
        """Search half-width in camera pixels for a net that ran ``downscale`` times smaller."""
        return max(1, math.ceil(self.network_radius * max(downscale, 1.0)))

    def refine(
        self, left: np.ndarray, right: np.ndarray, disparity: np.ndarray, *, downscale: float
    ) -> np.ndarray:
        """``disparity`` (H x W float32 pixels of the left view, NaN where unknown) refined
        against the rectified H x W x 3 uint8 ``left`` and ``right`` images; NaN stays NaN and
        a known disparity stays positive.

        :param downscale: camera width over network input width.
        """
        left_grey, right_grey = (
            cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) for image in (left, right)
        )
        known = np.isfinite(disparity)
        net = np.where(known, disparity, 0.0).astype(np.float32)
        correlation_at = _WindowCorrelation(left_grey, right_grey, self.window)
        textured = correlation_at.left_variance > self.min_texture**2
        radius = self.radius(downscale)
        refined, score = self._search(net, correlation_at, radius)
        accepted = known & textured & (score > self.min_correlation) & (refined > 0.0)
        refined = np.where(accepted, refined, net)
        score = np.where(accepted, score, -1.0)
        for step in self.propagation_steps:
            distance = max(1, round(step * max(downscale, 1.0)))
            for axis in (1, 0):
                # The net smears an edge, it does not invent disparities: a neighbour's disparity
                # is plausible only within what the net has nearby (plus the search radius), so
                # a repeated texture far off cannot lure a pixel to a depth of another place.
                reach = np.ones((1, 2 * distance + 1) if axis == 1 else (2 * distance + 1, 1),
                                np.uint8)
                lowest = cv2.erode(net, reach) - radius
                highest = cv2.dilate(net, reach) + radius
                for shift in (distance, -distance):
                    candidate = np.roll(refined, shift, axis=axis)
                    candidate_score = correlation_at(candidate)
                    better = (
                        known
                        & textured
                        & (candidate > 0.0)
                        & (candidate >= lowest)
                        & (candidate <= highest)
                        & (candidate_score > score)
                    )
                    refined = np.where(better, candidate, refined)
                    score = np.where(better, candidate_score, score)
        refined = cv2.medianBlur(refined.astype(np.float32), 5)
        # The median may pull a pixel next to an unknown one to 0: it keeps the net's value.
        refined = np.where(refined > 0.0, refined, net)
        refined[~known] = np.nan
        return refined.astype(np.float32)

    @staticmethod
    def _search(
        net: np.ndarray, correlation_at: _WindowCorrelation, radius: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each pixel's best disparity within ``radius`` of ``net``, to a sub-pixel peak, and its
        correlation; -1 where the best is at the edge of the search (no peak inside it)."""
        correlations = np.stack([correlation_at(net + offset)
                                 for offset in range(-radius, radius + 1)])
        best = correlations.argmax(axis=0)
        at_best, before, after = (
            np.take_along_axis(correlations, np.clip(best + step, 0, 2 * radius)[None], 0)[0]
            for step in (0, -1, 1)
        )
        curvature = before - 2.0 * at_best + after
        peaked = (best > 0) & (best < 2 * radius) & (curvature < -1e-6)
        sub_pixel = 0.5 * (before - after) / np.where(peaked, curvature, -1.0)
        refined = net + (best - radius) + np.clip(sub_pixel, -0.5, 0.5)
        return refined.astype(np.float32), np.where(peaked, at_best, -1.0)
