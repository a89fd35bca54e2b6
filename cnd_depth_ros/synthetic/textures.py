"""Surface textures: real photographs plus procedural noise, sampled trilinearly in metres.

Every texture is a square, mip-mapped, linear-light RGB image repeated with mirroring (so tiles
meet without seams). Sampling is bilinear within a mip level and linear across levels, and the
level depends only on the surface point's distance along the optical axis, which is the same in
both views of a rectified rig: a surface point has the same colour in the left and the right image,
so warping one view into the other with the true disparity reproduces it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["PHOTOGRAPHS", "TextureBank", "default_bank", "noise_texture"]

#: Photographs shipped in the scikit-image wheel (``skimage/data``) used as surface textures.
#: The Middlebury "motorcycle" pair is left out on purpose: it is real evaluation data.
PHOTOGRAPHS = (
    "brick.png",
    "gravel.png",
    "grass.png",
    "coffee.png",
    "chelsea.png",
    "astronaut.png",
    "rocket.jpg",
    "camera.png",
    "coins.png",
    "moon.png",
    "page.png",
    "text.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
    "color.png",
    "clock_motion.png",
    "cell.png",
)
#: Number of procedural noise textures added after the photographs.
NOISE_TEXTURES = 8
#: Side of every texture at full resolution (a power of two, for the mip chain).
TEXTURE_SIZE = 256


def _to_linear(srgb: np.ndarray) -> np.ndarray:
    """8-bit sRGB -> linear light in [0, 1] (the usual 2.2 power approximation)."""
    return (srgb.astype(np.float32) / 255.0) ** 2.2


def _load_photograph(path: Path, size: int) -> np.ndarray:
    from skimage import io

    image = io.imread(path)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = image[..., :3]
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = np.ascontiguousarray(image[top : top + side, left : left + side])
    return _to_linear(cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA))


def noise_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Periodic fractal noise in linear RGB: white noise shaped to a ``1/f^beta`` spectrum.

    Spectral synthesis makes it tile exactly; ``beta`` sets how blotchy (high) or grainy (low)
    it is, and two random colours give it a hue.
    """
    beta = rng.uniform(1.2, 2.4)
    frequency = np.fft.fftfreq(size)
    radius = np.hypot(frequency[:, None], frequency[None, :])
    radius[0, 0] = 1.0
    spectrum = np.fft.fft2(rng.standard_normal((size, size))) / radius ** (beta / 2.0)
    spectrum[0, 0] = 0.0
    field = np.fft.ifft2(spectrum).real
    field = (field - field.mean()) / (field.std() + 1e-12)
    grain = rng.standard_normal((size, size)) * rng.uniform(0.05, 0.3)
    level = 1.0 / (1.0 + np.exp(-(field + grain)))
    dark, light = rng.uniform(0.02, 0.5, size=3), rng.uniform(0.3, 0.9, size=3)
    return (dark + (light - dark) * level[..., None]).astype(np.float32)


def _mirror(index: np.ndarray, size: int | np.ndarray) -> np.ndarray:
    """Mirrored-repeat addressing: ... 2 1 0 | 0 1 2 ... size-1 | size-1 ..."""
    index = np.mod(index, 2 * size)
    return np.where(index >= size, 2 * size - 1 - index, index)


@dataclass(frozen=True)
class TextureBank:
    """Mip chains of ``count`` square textures, packed level by level into one texel array.

    ``names`` label the textures (file names, or ``noise-N``); ``means`` are their average colours,
    which low-contrast materials fade towards.
    """

    names: tuple[str, ...]
    texels: np.ndarray
    level_offsets: tuple[int, ...]
    size: int
    means: np.ndarray

    @classmethod
    def from_images(cls, names: Sequence[str], images: Sequence[np.ndarray]) -> TextureBank:
        """Build from ``size x size x 3`` linear-light float images (size a power of two)."""
        stack = np.stack(images).astype(np.float32)
        size = stack.shape[1]
        if size & (size - 1) or stack.shape[1:] != (size, size, 3):
            raise ValueError(f"textures must be NxNx3 with N a power of two, got {stack.shape[1:]}")
        levels, offsets, offset = [], [], 0
        while True:
            levels.append(stack.reshape(-1, 3))
            offsets.append(offset)
            offset += levels[-1].shape[0]
            if stack.shape[1] == 1:
                break
            count, side = stack.shape[0], stack.shape[1] // 2
            stack = stack.reshape(count, side, 2, side, 2, 3).mean(axis=(2, 4))
        return cls(
            names=tuple(names),
            texels=np.concatenate(levels),
            level_offsets=tuple(offsets),
            size=size,
            means=np.stack(images).reshape(len(images), -1, 3).mean(axis=1),
        )

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"no texture named {name!r}; have {list(self.names)}") from None

    def _bilinear(
        self, texture: np.ndarray, u: np.ndarray, v: np.ndarray, level: np.ndarray
    ) -> np.ndarray:
        """Bilinear sample at mip ``level`` (per point) of texel coordinates at level 0."""
        side = self.size >> level
        scale = 1.0 / (1 << level)
        x = u * scale - 0.5
        y = v * scale - 0.5
        x0, y0 = np.floor(x), np.floor(y)
        fx, fy = (x - x0)[:, None], (y - y0)[:, None]
        x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
        base = np.asarray(self.level_offsets)[level] + texture * side * side
        xs = (_mirror(x0, side), _mirror(x0 + 1, side))
        ys = (_mirror(y0, side), _mirror(y0 + 1, side))
        top = (
            self.texels[base + ys[0] * side + xs[0]] * (1 - fx)
            + self.texels[base + ys[0] * side + xs[1]] * fx
        )
        bottom = (
            self.texels[base + ys[1] * side + xs[0]] * (1 - fx)
            + self.texels[base + ys[1] * side + xs[1]] * fx
        )
        return top * (1 - fy) + bottom * fy

    def sample(
        self, texture: np.ndarray, u: np.ndarray, v: np.ndarray, footprint: np.ndarray
    ) -> np.ndarray:
        """Trilinear sample: ``texture`` ids, texel coordinates ``u``, ``v`` at full resolution and
        the pixel ``footprint`` in texels, all ``(M,)``; returns ``(M, 3)`` linear RGB."""
        top_level = len(self.level_offsets) - 1
        lod = np.clip(np.log2(np.maximum(footprint, 1.0)), 0.0, top_level)
        fine = np.floor(lod).astype(np.int64)
        blend = lod - fine
        colour = self._bilinear(texture, u, v, fine)
        mixed = np.flatnonzero(blend > 0.0)
        if mixed.size:
            coarse = self._bilinear(texture[mixed], u[mixed], v[mixed], fine[mixed] + 1)
            weight = blend[mixed, None]
            colour[mixed] = (1.0 - weight) * colour[mixed] + weight * coarse
        return colour


@functools.cache
def default_bank() -> TextureBank:
    """The photographs of :data:`PHOTOGRAPHS` and :data:`NOISE_TEXTURES` noise textures.

    Fixed (seeded) and cached per process: frames vary through which texture, scale, offset and
    tint each material takes, never through the bank itself.
    """
    from skimage.data import data_dir

    images = [_load_photograph(Path(data_dir) / name, TEXTURE_SIZE) for name in PHOTOGRAPHS]
    rng = np.random.default_rng(20240601)
    images += [noise_texture(rng, TEXTURE_SIZE) for _ in range(NOISE_TEXTURES)]
    names = PHOTOGRAPHS + tuple(f"noise-{i}" for i in range(NOISE_TEXTURES))
    return TextureBank.from_images(names, images)
