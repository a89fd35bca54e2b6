"""The one sample structure every loader yields, and its conversion to training tensors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cnd_depth_ros import geometry
from cnd_depth_ros.camera import PinholeCamera

__all__ = ["CAMERA_FIELDS", "Frame", "to_sample"]

#: Order of the per-sample camera vector in :func:`to_sample` (baseline 0 for a single camera).
CAMERA_FIELDS = ("fx", "fy", "cx", "cy", "baseline")


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


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


def to_sample(frame: Frame) -> dict[str, torch.Tensor | str]:
    """Tensors for the trainer: ``left``/``right`` 3xHxW in [0, 1], ``depth`` 1xHxW (0 where
    invalid), ``valid`` 1xHxW bool, ``normals`` 3xHxW (0 where unknown, so the loss's normal term
    ignores those pixels; with sparse LiDAR most are), ``camera`` the :data:`CAMERA_FIELDS`
    vector, ``name``. Normals missing from the dataset come from depth.
    """
    height, width = frame.left.shape[:2]
    depth = (
        frame.depth.astype(np.float32)
        if frame.depth is not None
        else np.full((height, width), np.nan, np.float32)
    )
    normals = frame.normals
    if normals is None:
        normals = geometry.normals_from_depth(depth, frame.camera)
    valid = frame.valid
    normals_known = np.isfinite(normals).all(axis=2, keepdims=True)
    camera = frame.camera
    sample: dict[str, torch.Tensor | str] = {
        "left": _image_tensor(frame.left),
        "depth": torch.from_numpy(np.where(valid, depth, 0.0).astype(np.float32))[None],
        "valid": torch.from_numpy(valid)[None],
        "normals": torch.from_numpy(
            np.where(normals_known, normals, 0.0).astype(np.float32).transpose(2, 0, 1).copy()
        ),
        "camera": torch.tensor(
            [camera.fx, camera.fy, camera.cx, camera.cy, camera.baseline or 0.0],
            dtype=torch.float32,
        ),
        "name": frame.name,
    }
    if frame.right is not None:
        sample["right"] = _image_tensor(frame.right)
    return sample
