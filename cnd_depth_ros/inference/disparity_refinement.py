"""The stereo net's disparity refined against the camera images at the camera's own resolution.

The net runs at the input the planner chose (a 1282x1110 camera becomes 288x256 on a CPU), so
its disparity, upsampled to the camera, is blurred across object edges and quantised to the
net's pixels: a 0.25-pixel error at the network's size is one pixel at the camera's. A local
matcher run on the images fixes both where they have texture, and is cheap because the net
tells it where to look. Where the net ran at least twice smaller than the camera, it can miss an
object altogether (a leaf a few network pixels wide, a pole), so it is re-seeded first:

0. **Re-seeding.** At a quarter of the camera's size, every whole disparity within the range
   the net uses is scored by correlation. Where the best of them correlates well, and clearly
   better than anything within ``_SEED_TOLERANCE`` pixels of the net's own disparity, the net
   missed what is there, and the matching starts from the best instead. A repeated texture
   cannot lure the pixels the net got right: their own disparity correlates as well as any.

One matching pass:

1. **Search.** Each pixel tries its disparity plus each whole offset within a radius, scores
   each by the zero-mean normalised cross-correlation (ZNCC) of a ``window`` around it, and
   interpolates a sub-pixel peak. The hypotheses follow the disparity, fractions included, so
   the windows of a slanted surface (the ground ahead) are compared along the slant.
2. **Propagation.** The net blurs a foreground object's disparity over the background around it,
   further than the search reaches. So each pixel also tries the disparity of the pixels some
   distance to its left and right, above and below, coarse to fine, and keeps whichever
   correlates best: the background's own disparity wins back the pixels the foreground was
   smeared over (the propagation step of PatchMatch stereo). A neighbour's disparity outside
   what the net has near the pixel is not tried.
3. A 5x5 median removes the isolated wrong matches local matching makes.

Where the net ran at least twice smaller than the camera, the full pass (search within
``network_radius`` network pixels, propagation) runs on the images at half the camera's size,
where its windows cost a quarter, and a second pass at the camera's size only searches within
``fine_radius`` pixels of that result, for the last pixel and its fraction. Pixels without
texture, or whose best match is weak or at the edge of the search, keep the disparity they
came with, so what the net gets right where matching is hopeless (walls, sky, the border the
right camera does not see) stays. Measured on the real pairs in docs/models.md; the choice and
how the constants were chosen in docs/decisions.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["DisparityRefinement"]

# Pixels, at the re-seeding sweep's size, around the net's disparity that count as its own.
_SEED_TOLERANCE = 2


def _greater(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """uint8 mask, 255 where ``a > b``: OpenCV's masks are an order of magnitude cheaper to
    combine and apply than numpy's boolean ones at camera sizes."""
    return cv2.compare(a, b, cv2.CMP_GT)


def _all(*masks: np.ndarray) -> np.ndarray:
    combined = masks[0]
    for mask in masks[1:]:
        combined = cv2.bitwise_and(combined, mask)
    return combined


class _WindowCorrelation:
    """Each pixel's ZNCC between its left window and the right image read at a disparity; the
    left windows' statistics are computed once per image pair."""

    def __init__(self, left_grey: np.ndarray, right_grey: np.ndarray, window: int) -> None:
        height, width = left_grey.shape
        self._window = window
        self._left, self._right = left_grey, right_grey
        self._columns = np.arange(width, dtype=np.float32)[None, :]
        self._rows = np.repeat(np.arange(height, dtype=np.float32)[:, None], width, axis=1)
        self._sample_columns = np.empty((height, width), np.float32)
        self._left_mean = self._mean(left_grey)
        self.left_variance = self._mean(left_grey * left_grey) - self._left_mean**2
        self._left_inverse_std = 1.0 / np.sqrt(np.maximum(self.left_variance, 1e-6))

    def _mean(self, image: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(image, -1, (self._window, self._window),
                             borderType=cv2.BORDER_REFLECT)

    def __call__(self, disparity: np.ndarray) -> np.ndarray:
        """H x W disparity -> H x W correlation in [-1, 1]."""
        np.subtract(self._columns, disparity, out=self._sample_columns)
        warped = cv2.remap(self._right, self._sample_columns, self._rows, cv2.INTER_LINEAR,
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

    def sweep(self, candidates: range) -> tuple[np.ndarray, np.ndarray]:
        """Each left pixel's best ZNCC over the whole-pixel disparities ``candidates``, and which.
        A whole-pixel shift moves the right image's window statistics with it, so only the
        product of the two images is filtered per disparity. Windows flatter than a grey level
        correlate weakly rather than by rounding error."""
        left_std = np.sqrt(np.maximum(self.left_variance, 1.0))
        right_mean = self._mean(self._right)
        right_std = np.sqrt(np.maximum(self._mean(self._right * self._right) - right_mean**2,
                                       1.0))
        width, half = self._left.shape[1], self._window // 2
        best = np.full(self._left.shape, -2.0, np.float32)
        best_disparity = np.zeros_like(best)
        for candidate in candidates:
            if candidate + 2 * half >= width:
                break
            # Left pixels whose window and matched window (``candidate`` to the left) are both
            # within the images, away from where the product's filter meets the overlap's ends.
            seen = np.s_[:, candidate + half:width - half]
            matched = np.s_[:, half:width - candidate - half]
            product = self._left[:, candidate:] * self._right[:, :width - candidate]
            correlation = self._mean(product)[:, half:product.shape[1] - half]
            correlation -= self._left_mean[seen] * right_mean[matched]
            correlation /= left_std[seen] * right_std[matched]
            improved = _greater(correlation, best[seen])
            cv2.copyTo(correlation, improved, best[seen])
            cv2.copyTo(np.full_like(correlation, candidate), improved, best_disparity[seen])
        return best, best_disparity


@dataclass(frozen=True)
class DisparityRefinement:
    """How to refine: see the module docstring.

    :param network_radius: search half-width in pixels at the network's input size; scaled by the
        downscale from the matched images to the network.
    :param propagation_steps: distances, in pixels at the network's input size, of the neighbours
        (left, right, above, below) whose disparity each pixel tries after the search, coarse to
        fine.
    :param fine_radius: search half-width, in camera pixels, of the pass at the camera's size
        after a pass at half of it.
    :param window: side of the correlation window in pixels of the matched images (odd).
    :param min_correlation: a best match weaker than this keeps the disparity it came with.
    :param min_texture: grey-level standard deviation (0-255) a window needs to be matched.
    :param reseed: re-seed where the net missed an object (step 0).
    :param seed_window: side of the re-seeding sweep's correlation window (odd), in its pixels.
    :param seed_min_correlation: the correlation a re-seeding disparity needs.
    :param seed_margin: by how much it must beat the best near the net's own disparity.
    """

    network_radius: float = 3.0
    propagation_steps: tuple[float, ...] = (16.0, 8.0, 4.0, 2.0)
    fine_radius: int = 2
    window: int = 9
    min_correlation: float = 0.5
    min_texture: float = 1.0
    reseed: bool = True
    seed_window: int = 7
    seed_min_correlation: float = 0.7
    seed_margin: float = 0.2

    def __post_init__(self) -> None:
        for name in ("window", "seed_window"):
            side = getattr(self, name)
            if side < 3 or side % 2 == 0:
                raise ValueError(f"{name} must be odd and at least 3, got {side}")
        if self.network_radius <= 0:
            raise ValueError(f"network_radius must be positive, got {self.network_radius}")
        if self.fine_radius < 1:
            raise ValueError(f"fine_radius must be at least 1, got {self.fine_radius}")
        if any(step <= 0 for step in self.propagation_steps):
            raise ValueError(f"propagation_steps must be positive, got {self.propagation_steps}")

    def radius(self, downscale: float) -> int:
        """Search half-width in pixels of images ``downscale`` times larger than the net's."""
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
        if downscale < 2.0:
            refined = self._match(left_grey, right_grey, net, self.radius(downscale),
                                  self._distances(downscale))
        else:
            if self.reseed:
                net = self._reseeded(left_grey, right_grey, net)
            height, width = net.shape
            half = (max(1, width // 2), max(1, height // 2))
            shrunk = _shrunk(net, known, half)
            coarse = self._match(
                *(cv2.resize(grey, half, interpolation=cv2.INTER_AREA)
                  for grey in (left_grey, right_grey)),
                shrunk, self.radius(downscale / 2.0), self._distances(downscale / 2.0))
            # What the half-size pass changed, enlarged: where it matched nothing, the second
            # pass starts from the net's own disparity, not from a blur of it.
            change = cv2.resize(coarse - shrunk, (width, height), interpolation=cv2.INTER_LINEAR)
            start = net + change * (width / half[0])
            start = np.where(known & (start > 0.0), start, net).astype(np.float32)
            refined = self._match(left_grey, right_grey, start, self.fine_radius, ())
        refined[~known] = np.nan
        return refined

    def _reseeded(
        self, left_grey: np.ndarray, right_grey: np.ndarray, net: np.ndarray
    ) -> np.ndarray:
        """``net`` (0 where unknown) re-seeded where it missed an object (step 0)."""
        height, width = net.shape
        size = (max(1, width // 4), max(1, height // 4))
        small = _shrunk(net, net > 0.0, size)
        if not (small > 0.0).any():
            return net
        left_small, right_small = (cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
                                   for grey in (left_grey, right_grey))
        correlation_at = _WindowCorrelation(left_small, right_small, self.seed_window)
        own = np.full(small.shape, -2.0, np.float32)
        for offset in range(-_SEED_TOLERANCE, _SEED_TOLERANCE + 1):
            np.maximum(own, correlation_at(small + np.float32(offset)), out=own)
        candidates = range(max(1, math.floor(float(small[small > 0.0].min())) - _SEED_TOLERANCE),
                           min(size[0], math.ceil(float(small.max())) + _SEED_TOLERANCE) + 1)
        best, best_disparity = correlation_at.sweep(candidates)
        # The same sweep from the right view (mirrored, the right image becomes a left one): a
        # seed the right view does not confirm is a window straddling an object's edge, or a
        # pixel the right camera does not see, matched to whatever resembles it.
        _, right_disparity = _WindowCorrelation(
            cv2.flip(right_small, 1), cv2.flip(left_small, 1), self.seed_window).sweep(candidates)
        columns = np.arange(size[0], dtype=np.float32)[None, :]
        matched_columns = np.maximum(columns - best_disparity, 0.0).astype(np.intp)
        confirmed = np.take_along_axis(cv2.flip(right_disparity, 1), matched_columns, axis=1)
        consistent = cv2.compare(np.abs(confirmed - best_disparity), 1.5, cv2.CMP_LT)
        # Where the net says the right camera does not see the pixel, nothing contradicts it.
        in_view = _greater(columns - small, float(self.seed_window // 2))
        seeded = _all(_greater(correlation_at.left_variance, float(self.min_texture**2)),
                      _greater(small, 0.0), in_view, consistent,
                      _greater(best, float(self.seed_min_correlation)),
                      _greater(best, own + np.float32(self.seed_margin)))
        # A lone seeded pixel is more likely a chance match than a missed object.
        seeded = cv2.resize(cv2.bitwise_and(seeded, cv2.medianBlur(seeded, 5)), (width, height),
                            interpolation=cv2.INTER_NEAREST)
        seeds = cv2.resize(best_disparity * np.float32(width / size[0]), (width, height),
                           interpolation=cv2.INTER_NEAREST)
        reseeded = net.copy()
        cv2.copyTo(seeds, _all(seeded, _greater(net, 0.0)), reseeded)
        return reseeded

    def _distances(self, downscale: float) -> list[int]:
        return [max(1, round(step * max(downscale, 1.0))) for step in self.propagation_steps]

    def _match(
        self,
        left_grey: np.ndarray,
        right_grey: np.ndarray,
        start: np.ndarray,
        radius: int,
        distances: Sequence[int],
    ) -> np.ndarray:
        """One matching pass (search, propagation, median) from ``start`` (0 where unknown):
        the refined disparity, ``start`` where nothing better was found."""
        correlation_at = _WindowCorrelation(left_grey, right_grey, self.window)
        matchable = _all(_greater(correlation_at.left_variance, float(self.min_texture**2)),
                         _greater(start, 0.0))
        refined, score = self._search(start, correlation_at, radius)
        rejected = cv2.bitwise_not(_all(matchable, _greater(score, float(self.min_correlation)),
                                        _greater(refined, 0.0)))
        cv2.copyTo(start, rejected, refined)
        cv2.copyTo(np.full_like(score, -1.0), rejected, score)
        for distance in distances:
            for axis in (1, 0):
                # The net smears an edge, it does not invent disparities: a neighbour's disparity
                # is plausible only within what the pass started from nearby (plus the search
                # radius), so a repeated texture far off cannot lure a pixel to a depth of
                # another place.
                reach = np.ones((1, 2 * distance + 1) if axis == 1 else (2 * distance + 1, 1),
                                np.uint8)
                lowest = cv2.erode(start, reach) - radius
                highest = cv2.dilate(start, reach) + radius
                for shift in (distance, -distance):
                    candidate = np.roll(refined, shift, axis=axis)
                    candidate_score = correlation_at(candidate)
                    better = _all(matchable, _greater(candidate_score, score),
                                  _greater(candidate, lowest - 1e-6),
                                  _greater(highest + 1e-6, candidate), _greater(candidate, 0.0))
                    cv2.copyTo(candidate, better, refined)
                    cv2.copyTo(candidate_score, better, score)
        refined = cv2.medianBlur(refined, 5)
        # What could not be matched, and a pixel the median pulled to 0 next to an unknown one,
        # keep where they started.
        cv2.copyTo(start, cv2.bitwise_or(cv2.bitwise_not(matchable),
                                         cv2.compare(refined, 0.0, cv2.CMP_LE)), refined)
        return refined

    @staticmethod
    def _search(
        start: np.ndarray, correlation_at: _WindowCorrelation, radius: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each pixel's best disparity within ``radius`` of ``start``, to a sub-pixel peak, and
        its correlation; -1 where the best is at the edge of the search (no peak inside it)."""
        best = np.full(start.shape, -2.0, np.float32)
        best_offset = np.zeros(start.shape, np.float32)
        before, after = np.full_like(best, -2.0), np.full_like(best, -2.0)
        previous = improved = None
        for offset in range(-radius, radius + 1):
            correlation = correlation_at(start + np.float32(offset))
            if improved is not None:  # the one after a best so far
                cv2.copyTo(correlation, improved, after)
            improved = _greater(correlation, best)
            cv2.copyTo(correlation, improved, best)
            cv2.copyTo(np.full_like(best_offset, offset), improved, best_offset)
            if previous is not None:
                cv2.copyTo(previous, improved, before)
            previous = correlation
        curvature = before - 2.0 * best + after
        peaked = (np.abs(best_offset) < radius) & (curvature < -1e-6)
        sub_pixel = 0.5 * (before - after) / np.where(peaked, curvature, -1.0)
        refined = start + best_offset + np.clip(sub_pixel, -0.5, 0.5)
        return refined.astype(np.float32), np.where(peaked, best, -1.0).astype(np.float32)


def _shrunk(disparity: np.ndarray, known: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``disparity`` (0 where unknown) at ``size``, in pixels of that size: the mean of the known
    pixels under each new one, 0 where none is known."""
    scale = size[0] / disparity.shape[1]
    total = cv2.resize(disparity, size, interpolation=cv2.INTER_AREA)
    share = cv2.resize(known.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    return np.where(share > 1e-3, total * scale / np.maximum(share, 1e-3), 0.0).astype(np.float32)
