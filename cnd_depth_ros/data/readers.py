"""File decoding shared by the loaders: RGB images, 16-bit PNG maps, PFM and stereo disparity.

Every reader names the file in its error, so a broken dataset says where it is broken.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from cnd_depth_ros import geometry
from cnd_depth_ros.errors import DatasetError

__all__ = [
    "depth_from_disparity",
    "read_pfm",
    "read_rgb",
    "read_scaled_png",
]


def read_rgb(path: Path) -> np.ndarray:
    """H x W x 3 uint8 RGB of a colour or grey image file (OpenCV decodes BGR; we flip it)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read image {path}")
    return np.ascontiguousarray(image[..., ::-1])


def read_scaled_png(path: Path, scale: float) -> np.ndarray:
    """float32 ``value / scale`` of a single-channel 8- or 16-bit image; NaN where the value is 0.

    The encoding of KITTI (disparity and depth * 256), ApolloScape (depth * 200) and Middlebury
    2001-2006 (disparity * 1, 4, 8 or 16), all of which reserve 0 for "no ground truth".
    """
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f"cannot read {path}")
    if raw.ndim == 3:
        # Some 8-bit ground truth is stored as grey RGB: all channels are equal.
        raw = raw[..., 0]
    if raw.dtype not in (np.uint8, np.uint16):
        raise DatasetError(f"{path}: expected an 8- or 16-bit map, got {raw.dtype}")
    values = raw.astype(np.float32) / np.float32(scale)
    values[raw == 0] = np.nan
    return values


_PFM_HEADER = re.compile(rb"^(P[Ff])\s+(\d+)\s+(\d+)\s+([-+0-9.eE]+)\s")


def read_pfm(path: Path) -> np.ndarray:
    """float32 H x W (``Pf``) or H x W x 3 (``PF``) array of a Portable Float Map.

    The header's scale gives the byte order (negative: little-endian) and rows are stored
    bottom to top (http://www.pauldebevec.com/Research/HDR/PFM/; Middlebury 2014 stores its
    disparities this way with ``inf`` for unknown pixels).
    """
    data = Path(path).read_bytes()
    match = _PFM_HEADER.match(data)
    if match is None:
        raise DatasetError(f"{path} is not a PFM file (bad header)")
    kind, width, height, scale = (
        match.group(1),
        int(match.group(2)),
        int(match.group(3)),
        float(match.group(4)),
    )
    channels = 3 if kind == b"PF" else 1
    dtype = np.dtype("<f4" if scale < 0 else ">f4")
    count = width * height * channels
    payload = data[match.end() : match.end() + count * 4]
    if len(payload) != count * 4:
        raise DatasetError(f"{path}: PFM data is truncated ({len(payload)} of {count * 4} bytes)")
    values = np.frombuffer(payload, dtype=dtype).astype(np.float32)
    shape = (height, width, channels) if channels == 3 else (height, width)
    return np.ascontiguousarray(values.reshape(shape)[::-1])


def depth_from_disparity(
    disparity: np.ndarray, fx: float, baseline: float, doffs: float = 0.0
) -> np.ndarray:
    """Metric depth ``Z = fx * B / (d + doffs)`` (float32, NaN where ``d`` is unknown).

    ``doffs`` is the difference of the two principal points (Middlebury 2014's ``doffs``, 0 for
    rigs rectified to a common principal point such as KITTI's).
    """
    shifted = np.where(np.isfinite(disparity), disparity + np.float32(doffs), np.nan)
    return geometry.disparity_to_depth(shifted.astype(np.float32), fx, baseline)
