"""The stereo rigs synthetic frames are rendered with: one fixed camera, or one drawn per frame.

A fixed rig is a :class:`~cnd_depth_ros.camera.PinholeCamera`. :class:`RigRanges` draws each
frame's rig from ranges of baseline and horizontal field of view, from small robot cameras
(:data:`ROBOT_BASELINE_M`, :data:`ROBOT_FOV_DEG`) to a car's (:func:`kitti_like_camera`). Frame
``i``'s rig comes from ``default_rng([seed, i, RIG_STREAM])``, a stream of its own: a set's scenes
do not change when only its rig ranges do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnd_depth_ros.camera import PinholeCamera

__all__ = [
    "BASELINE_LIMITS_M",
    "FOV_LIMITS_DEG",
    "KITTI_BASELINE",
    "KITTI_FX_PER_WIDTH",
    "RIG_STREAM",
    "ROBOT_BASELINE_M",
    "ROBOT_FOV_DEG",
    "Rig",
    "RigRanges",
    "centred_camera",
    "check_range",
    "focal_for_fov",
    "frame_camera",
    "horizontal_fov",
    "kitti_like_camera",
]

#: KITTI's colour rig (``P_rect_02``: fx 721.5 px at 1242 px wide, 81.4 degrees; baseline 0.54 m).
KITTI_FX_PER_WIDTH = 721.5377 / 1242.0
KITTI_BASELINE = 0.54
#: Small robot stereo cameras (RealSense D4xx 5 cm, ZED Mini 6.3 cm, OAK-D 7.5 cm, ZED 2 12 cm)
#: and their horizontal fields of view.
ROBOT_BASELINE_M = (0.05, 0.12)
ROBOT_FOV_DEG = (60.0, 100.0)
#: Third seed word of the per-frame rig stream (the scene's stream has two words).
RIG_STREAM = 1
#: Open intervals a rig's ranges must lie in: a pinhole image cannot reach 180 degrees.
BASELINE_LIMITS_M = (0.0, math.inf)
FOV_LIMITS_DEG = (1.0, 170.0)


def focal_for_fov(width: int, fov_deg: float) -> float:
    """Focal length (pixels) whose image ``width`` pixels wide spans ``fov_deg`` horizontally
    (edge to edge of the outer pixels, so ``cx = (width - 1) / 2`` is the centre)."""
    return width / 2.0 / math.tan(math.radians(fov_deg) / 2.0)


def horizontal_fov(camera: PinholeCamera) -> float:
    """The horizontal field of view of a centred ``camera``, degrees."""
    return math.degrees(2.0 * math.atan(camera.width / 2.0 / camera.fx))


def centred_camera(width: int, height: int, fx: float, baseline: float) -> PinholeCamera:
    """A rectified rig with square pixels and the principal point at the image centre (pixel
    centres at integer coordinates)."""
    return PinholeCamera(
        width=width,
        height=height,
        fx=fx,
        fy=fx,
        cx=(width - 1) / 2.0,
        cy=(height - 1) / 2.0,
        baseline=baseline,
    )


def kitti_like_camera(
    width: int = 256, height: int = 160, fx: float | None = None, baseline: float = KITTI_BASELINE
) -> PinholeCamera:
    """A rectified rig like KITTI's scaled to ``width``: square pixels, centred principal point
    (pixel centres at integer coordinates), ``fx`` defaulting to KITTI's focal length per pixel
    of width."""
    return centred_camera(width, height, KITTI_FX_PER_WIDTH * width if fx is None else fx, baseline)


def check_range(
    name: str, unit: str, bounds: tuple[float, float], limits: tuple[float, float]
) -> None:
    """``bounds`` is a finite ``(low, high)`` with ``limits[0] < low <= high < limits[1]``."""
    low, high = bounds
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} must be finite, got {low}:{high} {unit}")
    if low > high:
        raise ValueError(f"{name} range is reversed: {low:g}:{high:g} {unit} (write MIN:MAX)")
    if low <= limits[0] or high >= limits[1]:
        allowed = (
            "positive" if limits[1] == math.inf
            else f"strictly between {limits[0]:g} and {limits[1]:g} {unit}"
        )
        given = f"{low:g}" if low == high else f"{low:g}:{high:g}"
        raise ValueError(f"{name} must be {allowed}, got {given} {unit}")


@dataclass(frozen=True)
class RigRanges:
    """Centred rectified rigs of one image size whose baseline (metres, drawn log-uniformly: as
    many 5-10 cm rigs as 10-20 cm ones) and horizontal field of view (degrees, uniformly) vary
    per frame; ``fx`` instead of ``fov_deg`` fixes the focal length (pixels).

    :raises ValueError: a reversed, non-finite or impossible range (names it), or neither or
        both of ``fov_deg`` and ``fx``.
    """

    width: int
    height: int
    baseline: tuple[float, float]
    fov_deg: tuple[float, float] | None = None
    fx: float | None = None

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        check_range("baseline", "m", self.baseline, BASELINE_LIMITS_M)
        if (self.fov_deg is None) == (self.fx is None):
            raise ValueError("give the rig a field of view range or a focal length, not both")
        if self.fov_deg is not None:
            check_range("field of view", "degrees", self.fov_deg, FOV_LIMITS_DEG)
        elif not (self.fx is not None and math.isfinite(self.fx) and self.fx > 0):
            raise ValueError(f"focal length must be finite and positive, got {self.fx} px")

    def camera(self, seed: int, index: int) -> PinholeCamera:
        """Frame ``index``'s rig in the set made with ``seed``."""
        rng = np.random.default_rng([seed, index, RIG_STREAM])
        low, high = self.baseline
        baseline = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        if self.fov_deg is None:
            assert self.fx is not None
            return centred_camera(self.width, self.height, self.fx, baseline)
        fov = float(rng.uniform(*self.fov_deg))
        return centred_camera(self.width, self.height, focal_for_fov(self.width, fov), baseline)

    @property
    def varies(self) -> bool:
        """Whether frames can get different rigs."""
        fov = self.fov_deg or (0.0, 0.0)
        return self.baseline[0] != self.baseline[1] or fov[0] != fov[1]

    def nominal(self) -> PinholeCamera:
        """The middle of the ranges (geometric mean baseline, mean field of view); the rig
        itself where nothing varies."""
        low, high = self.baseline
        baseline = low if low == high else math.sqrt(low * high)
        if self.fov_deg is None:
            assert self.fx is not None
            return centred_camera(self.width, self.height, self.fx, baseline)
        fov = sum(self.fov_deg) / 2.0
        return centred_camera(self.width, self.height, focal_for_fov(self.width, fov), baseline)

    def simplest(self) -> Rig:
        """The fixed camera where nothing varies, else these ranges."""
        return self if self.varies else self.nominal()

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "baseline": list(self.baseline),
            "fov_deg": None if self.fov_deg is None else list(self.fov_deg),
            "fx": self.fx,
        }


#: What a set is filmed with: one camera for every frame, or one drawn per frame.
Rig = PinholeCamera | RigRanges


def frame_camera(rig: Rig, seed: int, index: int) -> PinholeCamera:
    """The camera of frame ``index`` of the set made with ``seed`` and ``rig``."""
    return rig if isinstance(rig, PinholeCamera) else rig.camera(seed, index)
