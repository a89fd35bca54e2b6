"""What the camera does to the light it gathers: vignetting, lens blur, per-view gain and noise.

These act on each rendered view's radiance in image space, after ray casting, so depth, normals
and disparity stay exact whatever they do. Vignetting and blur are the same function of the pixel
position in both views (a point seen at ``u`` in one and ``u - d`` in the other is darkened
slightly differently, as with a real rig); the right camera's gain differs from the left's by
``right_gain``; shot and read noise are drawn independently per view. Order, as in a camera: lens
(vignetting, blur), exposure, sensor noise in linear light; the sRGB curve and 8-bit rounding
follow in the renderer.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["NO_SENSOR_EFFECTS", "SensorEffects", "SensorRanges"]


@dataclass(frozen=True)
class SensorEffects:
    """One camera's effects (the default: none).

    ``vignetting``: fraction of the light lost in the image corners, falling off as ``1 - v r^2``
    with ``r`` the distance from the image centre (1 at the corners). ``blur_sigma``: Gaussian
    lens blur in pixels. ``shot_noise``: variance per unit of exposed linear signal (photon
    noise, ``1 / full well``); ``read_noise``: standard deviation of signal-independent noise on
    linear [0, 1] values. ``right_gain``: the right camera's gain relative to the left's.
    """

    vignetting: float = 0.0
    blur_sigma: float = 0.0
    shot_noise: float = 0.0
    read_noise: float = 0.0
    right_gain: float = 1.0

    def through_lens(self, radiance: np.ndarray) -> np.ndarray:
        """``radiance`` (H x W x 3) as the sensor receives it: vignetted and blurred."""
        if self.vignetting > 0.0:
            height, width = radiance.shape[:2]
            u = (np.arange(width) - (width - 1) / 2.0) / (width / 2.0)
            v = (np.arange(height) - (height - 1) / 2.0) / (height / 2.0)
            r2 = (u[None, :] ** 2 + v[:, None] ** 2) / 2.0
            radiance = radiance * (1.0 - self.vignetting * r2)[..., None]
        if self.blur_sigma > 0.0:
            radiance = cv2.GaussianBlur(radiance, (0, 0), self.blur_sigma)
        return radiance

    def expose(
        self, radiance: np.ndarray, gain: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Linear signal of one view: ``radiance`` times ``gain`` plus shot and read noise."""
        signal = radiance * gain
        if self.shot_noise > 0.0 or self.read_noise > 0.0:
            variance = self.shot_noise * np.clip(signal, 0.0, 1.0) + self.read_noise**2
            signal = signal + np.sqrt(variance) * rng.standard_normal(signal.shape)
        return signal


@dataclass(frozen=True)
class SensorRanges:
    """Ranges :class:`SensorEffects` are drawn from, uniformly (``gain_difference``: the right
    gain lies in ``1 +- gain_difference``)."""

    vignetting: tuple[float, float] = (0.0, 0.0)
    blur_sigma: tuple[float, float] = (0.0, 0.0)
    shot_noise: tuple[float, float] = (0.0, 0.0)
    read_noise: tuple[float, float] = (0.0, 0.0)
    gain_difference: float = 0.0

    def draw(self, rng: np.random.Generator) -> SensorEffects:
        return SensorEffects(
            vignetting=rng.uniform(*self.vignetting),
            blur_sigma=rng.uniform(*self.blur_sigma),
            shot_noise=rng.uniform(*self.shot_noise),
            read_noise=rng.uniform(*self.read_noise),
            right_gain=1.0 + rng.uniform(-self.gain_difference, self.gain_difference),
        )


#: A perfect camera: every effect off.
NO_SENSOR_EFFECTS = SensorRanges()
