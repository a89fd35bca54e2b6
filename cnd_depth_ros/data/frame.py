"""The one sample structure every loader yields (numpy only: no torch, no ROS)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnd_depth_ros.camera import PinholeCamera

__all__ = ["Frame"]


@dataclass
class Frame:
    """One view (or rectified stereo pair) with whatever ground truth the dataset has.

    Images are H x W x 3 uint8 RGB. ``depth`` is H x W float32 metres of the left view with NaN
    where there is no ground truth (sparse LiDAR, sky, occlusion holes). ``normals`` are H x W x 3
    unit vectors in the left camera's optical frame (x right, y down, z forward), NaN where unknown;
    ``None`` means "compute them from depth". ``camera`` describes the left view at this size.
    ``right_depth`` is the right view's depth where the source has it (the synthetic renderer): a
    horizontal flip swaps the views, and then it becomes the new left view's ground truth.
    """

    left: np.ndarray
    camera: PinholeCamera
    right: np.ndarray | None = None
    depth: np.ndarray | None = None
    normals: np.ndarray | None = None
    right_depth: np.ndarray | None = None
    name: str = ""

    def __post_init__(self) -> None:
        height, width = self.left.shape[:2]
        if self.left.ndim != 3 or self.left.shape[2] != 3 or self.left.dtype != np.uint8:
            raise ValueError(
                f"{self.name or 'frame'}: left must be HxWx3 uint8, got {self.left.shape} "
                f"{self.left.dtype}"
            )
        if (self.camera.width, self.camera.height) != (width, height):
            raise ValueError(
                f"{self.name or 'frame'}: camera is {self.camera.width}x{self.camera.height} "
                f"but the image is {width}x{height}"
            )
        if self.right is not None and self.right.shape != self.left.shape:
            raise ValueError(
                f"{self.name or 'frame'}: right image {self.right.shape} differs from left "
                f"{self.left.shape}"
            )
        for field_name in ("depth", "right_depth"):
            depth = getattr(self, field_name)
            if depth is not None and depth.shape != (height, width):
                raise ValueError(
                    f"{self.name or 'frame'}: {field_name} {depth.shape} differs from image "
                    f"{(height, width)}"
                )
        if self.normals is not None and self.normals.shape != (height, width, 3):
            raise ValueError(
                f"{self.name or 'frame'}: normals {self.normals.shape} must be "
                f"{(height, width, 3)}"
            )

    @property
    def valid(self) -> np.ndarray:
        """Pixels with ground truth: finite, positive depth."""
        if self.depth is None:
            return np.zeros(self.left.shape[:2], dtype=bool)
        return np.isfinite(self.depth) & (self.depth > 0)
