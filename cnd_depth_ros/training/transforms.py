"""Augmentations ``Frame -> Frame`` that keep the camera, the ground truth and the stereo
geometry consistent.

Each transform is a callable ``transform(frame, rng)``; all randomness comes from the
``numpy.random.Generator`` passed in, so a seeded generator replays the same augmentation.
Geometry: resizing and cropping update the intrinsics (:meth:`PinholeCamera.resized`,
:meth:`PinholeCamera.cropped`), so back-projected ground truth stays where it was; ground truth
is never interpolated across a hole (NaN) and images never leak into depth. A rescale scales
``fx`` with the image while baseline and depth stay, so a pair's disparity ``fx * B / Z`` grows
and shrinks with the image, exactly as the pixels do.

Photometric transforms change pixel values only, never where things are: what a scene's light
does is the same in both views (:class:`ColorJitter`), what two real cameras do differently
(gain, gamma, white balance, sensor noise) is drawn per view, and what the shared optics and
encoder do (blur, JPEG) is the same setting on both views.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal

import cv2
import numpy as np

from cnd_depth_ros import geometry
from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.data.frame import Frame

__all__ = [
    "ColorJitter",
    "Compose",
    "GaussianBlur",
    "JpegArtifacts",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomRescale",
    "Resize",
    "SensorNoise",
    "Transform",
    "ViewGainGamma",
]

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


def _check_range(name: str, bounds: tuple[float, float]) -> tuple[float, float]:
    low, high = (float(value) for value in bounds)
    if not (math.isfinite(low) and math.isfinite(high) and 0.0 < low <= high):
        raise ValueError(f"{name} must be two numbers 0 < low <= high, got {tuple(bounds)}")
    return low, high


class RandomRescale:
    """Scale the frame by a random factor, the same along both axes (square pixels stay
    square), before a ``width`` x ``height`` crop: the content seen through a fixed crop then
    spans the scales at which a planner feeds whole camera images to the network.

    The factor is relative to the incoming frame and never below ``cover``, the smallest one at
    which the crop fits. With ``disparity_target=(low, high)`` in pixels, a stereo frame with
    ground truth is scaled so that the ``percentile`` of its valid disparity ``fx * B / Z`` lands
    on a target drawn uniformly from that range, so near and far rigs alike spread their
    disparities over a matcher's whole range. Other frames (mono, unlabeled), and all frames
    without ``disparity_target``, take a factor drawn log-uniformly from ``scale_range``. Either
    factor is then clamped to ``scale_range``: how far a frame may be shrunk and enlarged
    (enlarging makes no detail, only blur). ``scale_range=None`` always takes ``cover``: no
    randomness, the widest view the crop allows.

    Images, depth and normals go through :class:`Resize` (depth by nearest neighbour: never
    mixed with holes), so ``fx`` scales with the image while baseline and depth stay: disparity
    scales with the image. The generator is drawn from the same number of times for every frame.
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        scale_range: tuple[float, float] | None = (0.1, 2.0),
        disparity_target: tuple[float, float] | None = None,
        percentile: float = 98.0,
    ) -> None:
        _check_size("RandomRescale", width, height)
        self.width, self.height = width, height
        self.scale_range = None if scale_range is None else _check_range("scale_range", scale_range)
        self.disparity_target = (
            None if disparity_target is None else _check_range("disparity_target", disparity_target)
        )
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"RandomRescale percentile must be in (0, 100], got {percentile}")
        self.percentile = percentile

    def high_disparity(self, frame: Frame) -> float | None:
        """The ``percentile`` of ``frame``'s valid disparity in pixels; ``None`` for a frame
        that is no stereo pair or has no ground truth."""
        if frame.right is None or frame.depth is None or frame.camera.baseline is None:
            return None
        valid = frame.valid
        if not valid.any():
            return None
        disparity = geometry.depth_to_disparity(
            frame.depth[valid], frame.camera.fx, frame.camera.baseline
        )
        return float(np.percentile(disparity, self.percentile))

    def factor(self, frame: Frame, rng: np.random.Generator) -> float:
        """The scale for ``frame``: see the class."""
        cover = max(self.width / frame.camera.width, self.height / frame.camera.height)
        draw = float(rng.random())
        if self.scale_range is None:
            return cover
        low, high = self.scale_range
        disparity = None if self.disparity_target is None else self.high_disparity(frame)
        if self.disparity_target is not None and disparity is not None:
            target_low, target_high = self.disparity_target
            scale = (target_low + (target_high - target_low) * draw) / disparity
        else:
            smallest = max(low, cover)
            largest = max(high, smallest)
            scale = smallest * (largest / smallest) ** draw
        return max(cover, min(high, max(low, scale)))

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        scale = self.factor(frame, rng)
        width = max(self.width, round(scale * frame.camera.width))
        height = max(self.height, round(scale * frame.camera.height))
        return Resize(width, height)(frame, rng)

    def __repr__(self) -> str:
        return (
            f"RandomRescale({self.width}, {self.height}, scale_range={self.scale_range}, "
            f"disparity_target={self.disparity_target}, percentile={self.percentile})"
        )


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


def _each_view(frame: Frame, change: Callable[[np.ndarray, int], np.ndarray]) -> Frame:
    """``frame`` with ``change(view, index)`` applied to the left (0) and right (1) image."""
    return replace(
        frame,
        left=change(frame.left, 0),
        right=None if frame.right is None else change(frame.right, 1),
    )


def _check_amounts(name: str, **amounts: float) -> None:
    for label, value in amounts.items():
        if not (math.isfinite(value) and 0.0 <= value < 1.0):
            raise ValueError(f"{name} {label} must be in [0, 1), got {value}")


def _check_probability(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} p must be in [0, 1], got {p}")


class ColorJitter:
    """Random brightness, contrast and saturation, each factor drawn from ``[1 - x, 1 + x]``.

    The same pixel mapping is applied to both views (contrast pivots on the pair's common mean
    grey), so left/right photometric consistency, which stereo matching relies on, survives.
    """

    def __init__(
        self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0
    ) -> None:
        _check_amounts(
            "ColorJitter", brightness=brightness, contrast=contrast, saturation=saturation
        )
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        brightness, contrast, saturation = (
            rng.uniform(1.0 - amount, 1.0 + amount)
            for amount in (self.brightness, self.contrast, self.saturation)
        )
        views = [frame.left] if frame.right is None else [frame.left, frame.right]
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        pivot = float(np.mean([(view.astype(np.float32) @ weights).mean() for view in views]))

        def jitter(view: np.ndarray, _: int) -> np.ndarray:
            pixels = view.astype(np.float32) * brightness
            pixels = (pixels - pivot * brightness) * contrast + pivot * brightness
            grey = (pixels @ weights)[..., None]
            pixels = (pixels - grey) * saturation + grey
            return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)

        return _each_view(frame, jitter)

    def __repr__(self) -> str:
        return (
            f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation})"
        )


class ViewGainGamma:
    """What the two cameras of a real rig do differently: each view gets its own gain (from
    ``[1 - gain, 1 + gain]``), gamma (``exp`` of a value from ``[-gamma, gamma]``) and
    per-channel white balance (from ``[1 - white_balance, 1 + white_balance]``), as separate
    auto-exposure, response curves and colour balance give. A per-channel lookup table: pixel
    values change, positions do not. Both views' settings are drawn for every frame.
    """

    def __init__(self, gain: float = 0.1, gamma: float = 0.1, white_balance: float = 0.05) -> None:
        _check_amounts("ViewGainGamma", gain=gain, gamma=gamma, white_balance=white_balance)
        self.gain, self.gamma, self.white_balance = gain, gamma, white_balance

    def _curve(self, rng: np.random.Generator) -> np.ndarray:
        """A 256 x 3 uint8 lookup table: value -> value per channel."""
        gain = rng.uniform(1.0 - self.gain, 1.0 + self.gain)
        gamma = math.exp(rng.uniform(-self.gamma, self.gamma))
        balance = rng.uniform(1.0 - self.white_balance, 1.0 + self.white_balance, 3)
        levels = np.linspace(0.0, 1.0, 256)[:, None]
        return np.clip(np.rint(255.0 * gain * balance * levels**gamma), 0, 255).astype(np.uint8)

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        curves = (self._curve(rng), self._curve(rng))
        channels = np.arange(3)
        return _each_view(frame, lambda view, index: curves[index][view, channels])

    def __repr__(self) -> str:
        return (
            f"ViewGainGamma(gain={self.gain}, gamma={self.gamma}, "
            f"white_balance={self.white_balance})"
        )


class GaussianBlur:
    """With probability ``p``, a Gaussian blur of standard deviation drawn from
    ``sigma_range`` pixels: a lens slightly out of focus, or the smoothing a resize to the
    network adds. One sigma for both views (a rig's two cameras share optics and resampling);
    the kernel is symmetric, so nothing moves."""

    def __init__(self, p: float = 0.3, sigma_range: tuple[float, float] = (0.3, 1.0)) -> None:
        _check_probability("GaussianBlur", p)
        self.p = p
        self.sigma_range = _check_range("GaussianBlur sigma_range", sigma_range)

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        toss, sigma = rng.random(), rng.uniform(*self.sigma_range)
        if toss >= self.p:
            return frame
        return _each_view(
            frame,
            lambda view, _: cv2.GaussianBlur(
                view, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101
            ),
        )

    def __repr__(self) -> str:
        return f"GaussianBlur(p={self.p}, sigma_range={self.sigma_range})"


class SensorNoise:
    """Additive Gaussian noise, its standard deviation drawn per frame from ``[0, sigma]`` levels
    of 255, independent for every pixel and view (each camera has its own sensor)."""

    def __init__(self, sigma: float = 3.0) -> None:
        if not (math.isfinite(sigma) and sigma >= 0.0):
            raise ValueError(f"SensorNoise sigma must be finite and >= 0, got {sigma}")
        self.sigma = sigma

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        level = rng.uniform(0.0, self.sigma)

        def noisy(view: np.ndarray, _: int) -> np.ndarray:
            noise = rng.standard_normal(view.shape, dtype=np.float32) * np.float32(level)
            return np.clip(np.rint(view + noise), 0, 255).astype(np.uint8)

        return _each_view(frame, noisy)

    def __repr__(self) -> str:
        return f"SensorNoise(sigma={self.sigma})"


class JpegArtifacts:
    """With probability ``p``, both views through a JPEG encoder at one quality drawn from
    ``quality_range`` (camera topics recorded or sent compressed; image_transport's default
    is 80). One setting for both views, as one encoder gives; JPEG's 8 x 8 blocks are aligned
    with the image, so edges stay where they are."""

    def __init__(self, p: float = 0.3, quality_range: tuple[int, int] = (40, 95)) -> None:
        _check_probability("JpegArtifacts", p)
        low, high = quality_range
        if not 1 <= low <= high <= 100:
            raise ValueError(
                f"JpegArtifacts quality_range must be 1 <= low <= high <= 100, got {quality_range}"
            )
        self.p = p
        self.quality_range = (int(low), int(high))

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        toss = rng.random()
        quality = int(rng.integers(self.quality_range[0], self.quality_range[1] + 1))
        if toss >= self.p:
            return frame

        def compressed(view: np.ndarray, _: int) -> np.ndarray:
            ok, data = cv2.imencode(
                ".jpg", np.ascontiguousarray(view[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality]
            )
            assert ok, "OpenCV failed to encode an 8-bit RGB image as JPEG"
            return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

        return _each_view(frame, compressed)

    def __repr__(self) -> str:
        return f"JpegArtifacts(p={self.p}, quality_range={self.quality_range})"
