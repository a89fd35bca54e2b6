"""The pinhole camera every part of the package speaks: intrinsics in pixels, baseline in metres."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

__all__ = ["PinholeCamera"]


@dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics of a rectified camera at one image size, plus the stereo baseline if any.

    ``baseline`` is the distance between the optical centres in metres (positive); ``None`` for a
    single camera. For a ROS right camera it comes from ``P[0, 3] = -fx * baseline``.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    baseline: float | None = None

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")
        for name in ("fx", "fy"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0.0:
                raise ValueError(f"camera {name} must be finite and positive, got {value}")
        for name in ("cx", "cy"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"camera {name} must be finite, got {getattr(self, name)}")
        if self.baseline is not None and (not math.isfinite(self.baseline) or self.baseline <= 0):
            raise ValueError(f"stereo baseline must be finite and positive, got {self.baseline}")

    @property
    def is_stereo(self) -> bool:
        return self.baseline is not None

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the conventional name of the intrinsic matrix
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64
        )

    def resized(self, width: int, height: int) -> PinholeCamera:
        """The same camera seen through an image resized to ``width`` x ``height``.

        Pixel centres map as ``u' = (u + 0.5) * s - 0.5``, which keeps the principal point exact
        for any scale (the convention of OpenCV's ``resize`` and of PyTorch's
        ``align_corners=False``).
        """
        sx, sy = width / self.width, height / self.height
        return replace(
            self,
            width=width,
            height=height,
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
        )

    def cropped(self, left: int, top: int, width: int, height: int) -> PinholeCamera:
        """The camera of the ``width`` x ``height`` window whose top-left pixel is (left, top)."""
        return replace(self, width=width, height=height, cx=self.cx - left, cy=self.cy - top)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PinholeCamera:
        """Build from a mapping such as ``camera.json``; unknown keys are rejected by name."""
        known = {"width", "height", "fx", "fy", "cx", "cy", "baseline"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown camera fields: {sorted(unknown)}")
        missing = known - {"baseline"} - set(data)
        if missing:
            raise ValueError(f"camera is missing fields: {sorted(missing)}")
        return cls(
            width=int(data["width"]),
            height=int(data["height"]),
            fx=float(data["fx"]),
            fy=float(data["fy"]),
            cx=float(data["cx"]),
            cy=float(data["cy"]),
            baseline=None if data.get("baseline") is None else float(data["baseline"]),
        )
