"""Augmentations ``Frame -> Frame`` that keep the camera, the ground truth and the stereo
geometry consistent.

Each transform is a callable ``transform(frame, rng)``; all randomness comes from the
``numpy.random.Generator`` passed in, so a seeded generator replays the same augmentation.
Geometry: resizing and cropping update the intrinsics (:meth:`PinholeCamera.resized`,
:meth:`PinholeCamera.cropped`), so back-projected ground truth stays where it was; ground truth
is never interpolated across a hole (NaN) and images never leak into depth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal

import cv2
import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.training.datasets.frame import Frame

__all__ = ["ColorJitter", "Compose", "RandomCrop", "RandomHorizontalFlip", "Resize", "Transform"]

Transform = Callable[[Frame, np.random.Generator], Frame]


class Compose:
    """Apply ``transforms`` in order, sharing one generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        for transform in self.transforms:
            frame = transform(frame, rng)
        return frame

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def _check_size(name: str, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(f"{name} size must be positive, got {width}x{height}")


def _remap(
    frame: Frame,
    camera: PinholeCamera,
    *,
    image: Callable[[np.ndarray], np.ndarray],
    depth: Callable[[np.ndarray], np.ndarray],
    normals: Callable[[np.ndarray], np.ndarray],
) -> Frame:
    """``frame`` seen by ``camera``: both views through ``image``, both depths through
    ``depth``, normals through ``normals`` (absent fields stay absent)."""

    def apply(
        function: Callable[[np.ndarray], np.ndarray], array: np.ndarray | None
    ) -> np.ndarray | None:
        return None if array is None else function(array)

    return replace(
        frame,
        left=image(frame.left),
        right=apply(image, frame.right),
        depth=apply(depth, frame.depth),
        right_depth=apply(depth, frame.right_depth),
        normals=apply(normals, frame.normals),
        camera=camera,
    )


def _resize_depth(
    depth: np.ndarray, size: tuple[int, int], mode: Literal["nearest", "mean"]
) -> np.ndarray:
    """Resize metric depth without mixing valid values with holes.

    ``nearest`` keeps measured values only (pixel-centre aligned, like the camera model);
    ``mean`` averages the valid values under each output pixel (area weights), NaN where there
    are none, which keeps sparse LiDAR dense enough when shrinking a lot.
    """
    if mode == "nearest":
        return cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST_EXACT)
    valid = (np.isfinite(depth) & (depth > 0)).astype(np.float32)
    weight = cv2.resize(valid, size, interpolation=cv2.INTER_AREA)
    total = cv2.resize(
        np.where(valid > 0, depth, 0.0).astype(np.float32), size, interpolation=cv2.INTER_AREA
    )
    mean = np.full(weight.shape, np.nan, np.float32)
    np.divide(total, weight, out=mean, where=weight > 1e-6)
    return mean


class Resize:
    """Resize to ``width`` x ``height``: images by area (shrinking) or linear (enlarging)
    interpolation, depth by ``depth_mode`` (``"nearest"`` or masked ``"mean"``), normals by
    nearest neighbour; the camera follows."""

    def __init__(
        self, width: int, height: int, depth_mode: Literal["nearest", "mean"] = "nearest"
    ) -> None:
        _check_size("Resize", width, height)
        if depth_mode not in ("nearest", "mean"):
            raise ValueError(f"depth_mode must be 'nearest' or 'mean', got {depth_mode!r}")
        self.width, self.height, self.depth_mode = width, height, depth_mode

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        size = (self.width, self.height)
        if size == (frame.camera.width, frame.camera.height):
            return frame
        shrinking = self.width * self.height < frame.camera.width * frame.camera.height
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        return _remap(
            frame,
            frame.camera.resized(self.width, self.height),
            image=lambda array: cv2.resize(array, size, interpolation=interpolation),
            depth=lambda array: _resize_depth(array, size, self.depth_mode),
            normals=lambda array: cv2.resize(array, size, interpolation=cv2.INTER_NEAREST_EXACT),
        )

    def __repr__(self) -> str:
        return f"Resize({self.width}, {self.height}, depth_mode={self.depth_mode!r})"


class RandomCrop:
    """Cut a ``width`` x ``height`` window at a uniformly random position (same window in both
    views, so disparities are unchanged); the principal point moves with it."""

    def __init__(self, width: int, height: int) -> None:
        _check_size("RandomCrop", width, height)
        self.width, self.height = width, height

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        full_width, full_height = frame.camera.width, frame.camera.height
        if self.width > full_width or self.height > full_height:
            raise ValueError(
                f"RandomCrop {self.width}x{self.height} is larger than frame {frame.name!r} "
                f"({full_width}x{full_height})"
            )
        left = int(rng.integers(0, full_width - self.width + 1))
        top = int(rng.integers(0, full_height - self.height + 1))
        window = np.s_[top : top + self.height, left : left + self.width]

        def crop(array: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(array[window])

        camera = frame.camera.cropped(left, top, self.width, self.height)
        return _remap(frame, camera, image=crop, depth=crop, normals=crop)

    def __repr__(self) -> str:
        return f"RandomCrop({self.width}, {self.height})"


def _mirror(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array[:, ::-1])


def _mirror_normals(normals: np.ndarray) -> np.ndarray:
    """Mirrored normals point the other way along x."""
    return _mirror(normals) * np.array([-1.0, 1.0, 1.0], dtype=normals.dtype)


class RandomHorizontalFlip:
    """Mirror the frame with probability ``p``, respecting stereo geometry.

    A mirrored stereo pair is only a valid pair with its views swapped: the mirrored right image
    becomes the left view, and its ground truth is the old ``right_depth``. So:

    * mono frames are mirrored (normals' x component negated, ``cx -> W - 1 - cx``);
    * stereo frames with ``right_depth`` are mirrored and swapped (normals dropped, to be
      recomputed from the new depth: the dataset has none for the right view);
    * stereo frames without ``right_depth`` are returned unchanged, since the new left view
      would have no ground truth.

    The coin is tossed for every frame, so the random stream does not depend on frame types.
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        if rng.random() >= self.p:
            return frame
        camera = replace(frame.camera, cx=frame.camera.width - 1 - frame.camera.cx)
        if frame.right is not None:
            if frame.right_depth is None:
                return frame
            frame = replace(
                frame,
                left=frame.right,
                right=frame.left,
                depth=frame.right_depth,
                right_depth=frame.depth,
                normals=None,
            )
        return _remap(frame, camera, image=_mirror, depth=_mirror, normals=_mirror_normals)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class ColorJitter:
    """Random brightness, contrast and saturation, each factor drawn from ``[1 - x, 1 + x]``.

    The same pixel mapping is applied to both views (contrast pivots on the pair's common mean
    grey), so left/right photometric consistency, which stereo matching relies on, survives.
    """

    def __init__(
        self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0
    ) -> None:
        for name, value in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"ColorJitter {name} must be in [0, 1), got {value}")
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        brightness, contrast, saturation = (
            rng.uniform(1.0 - amount, 1.0 + amount)
            for amount in (self.brightness, self.contrast, self.saturation)
        )
        views = [frame.left] if frame.right is None else [frame.left, frame.right]
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        pivot = float(np.mean([(view.astype(np.float32) @ weights).mean() for view in views]))

        def jitter(view: np.ndarray) -> np.ndarray:
            pixels = view.astype(np.float32) * brightness
            pixels = (pixels - pivot * brightness) * contrast + pivot * brightness
            grey = (pixels @ weights)[..., None]
            pixels = (pixels - grey) * saturation + grey
            return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)

        return replace(
            frame,
            left=jitter(frame.left),
            right=None if frame.right is None else jitter(frame.right),
        )

    def __repr__(self) -> str:
        return (
            f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation})"
        )
