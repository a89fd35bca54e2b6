"""The stereo net's disparity refined against the camera images at the camera's own resolution.

The net runs at the input the planner chose (a 1282x1110 camera becomes 288x256 on a CPU), so
its disparity, upsampled to the camera, is blurred across object edges and quantised to the
net's pixels: a 0.25-pixel error at the network's size is one pixel at the camera's. A local
matcher run on the full images fixes both where the images have texture, and is cheap because
the net tells it where to look: each pixel searches only ``radius`` camera pixels around the net's
disparity (the net's error at the network size, times the downscale), keeps the best zero-mean
normalised cross-correlation over a ``window``, interpolates to a sub-pixel peak, and a 5x5
median removes the isolated wrong matches local matching makes. Pixels without texture, with a
weak best match, or whose best match is at the edge of the search keep the net's disparity, so
what the net gets right where matching is hopeless (walls, sky, the border the right camera does
not see) stays. Measured on the real pairs in docs/models.md; the choice in docs/decisions.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["DisparityRefinement"]


@dataclass(frozen=True)
class DisparityRefinement:
    """How to refine: see the module docstring.

    :param network_radius: search half-width in pixels at the network's input size; scaled by the
        downscale from the camera to the network.
    :param window: side of the correlation window in camera pixels (odd).
    :param min_correlation: a best match weaker than this keeps the net's disparity.
    :param min_texture: grey-level standard deviation (0-255) a window needs to be matched.
    """

    network_radius: float = 3.0
    window: int = 9
    min_correlation: float = 0.3
    min_texture: float = 1.0

    def __post_init__(self) -> None:
        if self.window < 3 or self.window % 2 == 0:
            raise ValueError(f"window must be odd and at least 3, got {self.window}")
        if self.network_radius <= 0:
            raise ValueError(f"network_radius must be positive, got {self.network_radius}")

    def radius(self, downscale: float) -> int:
        """Search half-width in camera pixels for a net that ran ``downscale`` times smaller."""
        return max(1, math.ceil(self.network_radius * max(downscale, 1.0)))

    def refine(
        self, left: np.ndarray, right: np.ndarray, disparity: np.ndarray, *, downscale: float
    ) -> np.ndarray:
        """``disparity`` (H x W float32 pixels of the left view, NaN where unknown) refined
        against the rectified H x W x 3 uint8 ``left`` and ``right`` images; NaN stays NaN.

        :param downscale: camera width over network input width.
        """
        radius = self.radius(downscale)
        left_grey, right_grey = (
            cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) for image in (left, right)
        )
        height, width = left_grey.shape
        known = np.isfinite(disparity)
        # Hypotheses follow the net's disparity, fractions included, so the windows of a slanted
        # surface (the ground ahead) are compared along the slant, not in whole-pixel steps.
        base = np.where(known, disparity, 0.0).astype(np.float32)
        columns = np.arange(width, dtype=np.float32)[None, :] - base
        rows = np.repeat(np.arange(height, dtype=np.float32)[:, None], width, axis=1)

        def mean(image: np.ndarray) -> np.ndarray:
            return cv2.boxFilter(image, -1, (self.window, self.window),
                                 borderType=cv2.BORDER_REFLECT)

        left_mean = mean(left_grey)
        left_variance = mean(left_grey * left_grey) - left_mean * left_mean
        left_inverse_std = 1.0 / np.sqrt(np.maximum(left_variance, 1e-6))
        correlations = np.empty((2 * radius + 1, height, width), np.float32)
        for index, offset in enumerate(range(-radius, radius + 1)):
            warped = cv2.remap(right_grey, columns - offset, rows, cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
            warped_mean = mean(warped)
            warped_variance = mean(warped * warped)
            warped_variance -= warped_mean * warped_mean
            np.maximum(warped_variance, 1e-6, out=warped_variance)
            correlation = mean(left_grey * warped)
            correlation -= left_mean * warped_mean
            correlation *= left_inverse_std
            correlation /= np.sqrt(warped_variance, out=warped_variance)
            correlations[index] = correlation
        best = correlations.argmax(axis=0)
        inner = (best > 0) & (best < 2 * radius)
        at_best, before, after = (
            np.take_along_axis(correlations, np.clip(best + step, 0, 2 * radius)[None], 0)[0]
            for step in (0, -1, 1)
        )
        curvature = before - 2.0 * at_best + after
        peaked = inner & (curvature < -1e-6)
        sub_pixel = 0.5 * (before - after) / np.where(peaked, curvature, -1.0)
        matched = base + (best - radius) + np.clip(sub_pixel, -0.5, 0.5)
        accepted = (
            known
            & peaked
            & (matched > 0.0)
            & (at_best > self.min_correlation)
            & (left_variance > self.min_texture**2)
        )
        refined = np.where(accepted, matched, np.where(known, disparity, 0.0)).astype(np.float32)
        refined = cv2.medianBlur(refined, 5)
        # The median may pull a pixel next to an unknown one to 0: it keeps the net's value.
        refined = np.where(refined > 0.0, refined, disparity)
        refined[~known] = np.nan
        return refined.astype(np.float32)
