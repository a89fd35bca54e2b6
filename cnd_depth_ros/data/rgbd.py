"""Single RGB-D frames as TUM RGB-D, SUN RGB-D and raw NYU Depth v2 store them: mono frames.

Each kind reads a folder of ``NAME_color.*`` / ``NAME_depth.*`` pairs (the layout of Open3D's
RGB-D test data, ``TestData/RGBD/other_formats/``, which the shared samples come from) and
decodes the depth with its dataset's own encoding; only that encoding differs between them:

- ``tum_rgbd``: ``NAME_depth.png`` uint16, ``Z = value / 5000`` m, 0 = no reading
  (TUM RGB-D "File Formats": "a pixel value of 5000 in the depth image corresponds to a distance
  of 1 meter"), registered to the colour image. Camera: the ROS default Kinect intrinsics the
  same page names, fx = fy = 525, cx = 319.5, cy = 239.5 (:data:`TUM_CAMERA`); each sequence's
  own calibration (freiburg1-3) differs from it by a few per cent.
- ``sun_rgbd``: ``NAME_depth.png`` uint16 in millimetres with its 16 bits rotated right by 3,
  ``Z = ((v >> 3) | (v << 13)) mod 2^16 / 1000`` m, 0 = no reading: SUN3D / SUN RGB-D toolbox
  ``depthRead.m`` (``bitor(bitshift(depth, -3), bitshift(depth, 16 - 3)) / 1000``). The toolbox's
  ``read3dPoints.m`` further clips at 8 or 10 m for its point clouds; ground truth is kept as
  stored here. Camera: the Kinect colour camera of the ``nyu`` loader (:data:`NYU_CAMERA`,
  fx 518.9), since SUN RGB-D's Kinect v1 frames are NYU's sensor.
- ``nyu_raw``: ``NAME_depth.pgm`` holding the Kinect's raw 11-bit disparity, 2047 = no reading,
  ``Z = 351.3 / (1092.5 - raw)`` m (NYU toolbox ``depth_rel2depth_abs.m``, ``depthParam1``,
  ``depthParam2`` of ``camera_params.m``), masked beyond the toolbox's ``maxDepth`` of 10 m.
  The PGM header says 16-bit, which Netpbm defines as big-endian, but the samples are written
  little-endian (the toolbox ``swapbytes`` them after ``imread``): the reader takes the byte
  order in which every value fits in 11 bits. The raw depth is in the depth camera's view, NOT
  registered to the colour image (the toolbox projects it with its stereo calibration, which
  this loader does not), so scores on it are approximate at object edges and in the parallax
  band along the image border. Camera: :data:`NYU_CAMERA`, as the colour image is what a net
  sees.

``shared/data/README.md`` states the same three encodings for the samples; on them the decoded
depth lies in 1.0-9.9 m with 81-93 % of pixels valid (``test/test_datasets_rgbd.py``).
Invalid pixels are NaN.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.data.base import FrameDataset
from cnd_depth_ros.data.frame import Frame
from cnd_depth_ros.data.nyu import NYU_CAMERA
from cnd_depth_ros.data.readers import read_rgb, read_scaled_png
from cnd_depth_ros.errors import DatasetError

__all__ = [
    "NYU_RAW_DEPTH_PARAMETERS",
    "NYU_RAW_INVALID",
    "NYU_RAW_MAX_DEPTH",
    "SUN_DEPTH_SCALE",
    "TUM_CAMERA",
    "TUM_DEPTH_SCALE",
    "NyuRawDataset",
    "RgbdPairDataset",
    "SunRgbdDataset",
    "TumRgbdDataset",
    "nyu_raw_depth",
    "read_nyu_raw_pgm",
    "sun_rgbd_depth",
    "tum_rgbd_depth",
]

#: TUM RGB-D's depth PNG: 5000 per metre (TUM RGB-D "File Formats").
TUM_DEPTH_SCALE = 5000.0

#: The ROS default Kinect intrinsics (TUM RGB-D "File Formats").
TUM_CAMERA = PinholeCamera(width=640, height=480, fx=525.0, fy=525.0, cx=319.5, cy=239.5)

#: SUN RGB-D's depth PNG, after the bit rotation: millimetres (toolbox ``depthRead.m``).
SUN_DEPTH_SCALE = 1000.0

#: Kinect raw disparity to metres, ``Z = a / (b - raw)``: NYU toolbox ``camera_params.m``
#: ``depthParam1``, ``depthParam2`` (used by ``depth_rel2depth_abs.m``).
NYU_RAW_DEPTH_PARAMETERS = (351.3, 1092.5)

#: The raw value of a pixel without a reading (the Kinect's 11-bit maximum).
NYU_RAW_INVALID = 2047

#: Depth beyond this (m) is not a reading (NYU toolbox ``maxDepth``).
NYU_RAW_MAX_DEPTH = 10.0

_COLOUR_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm")
_PGM_HEADER = re.compile(rb"^P5\s+(\d+)\s+(\d+)\s+(\d+)\s")


def _read_uint16(path: Path) -> np.ndarray:
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f"cannot read {path}")
    if raw.ndim != 2 or raw.dtype != np.uint16:
        raise DatasetError(f"{path}: expected a single-channel 16-bit image, got {raw.shape} "
                           f"{raw.dtype}")
    return raw


def _metres(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    depth = values.astype(np.float32)
    depth[~valid] = np.nan
    return depth


def tum_rgbd_depth(path: Path) -> np.ndarray:
    """float32 metres of a TUM RGB-D depth PNG, NaN where it is 0."""
    return read_scaled_png(path, TUM_DEPTH_SCALE)


def sun_rgbd_depth(path: Path) -> np.ndarray:
    """float32 metres of a SUN RGB-D depth PNG (bits rotated right by 3), NaN where it is 0."""
    raw = _read_uint16(path)
    millimetres = (raw >> 3) | (raw << 13)  # uint16 arithmetic: the rotation wraps at 16 bits
    return _metres(millimetres / SUN_DEPTH_SCALE, millimetres > 0)


def read_nyu_raw_pgm(path: Path) -> np.ndarray:
    """uint16 H x W raw Kinect disparity of an NYU Depth v2 raw ``.pgm``, in either byte order.

    The values are 11-bit, so the byte order is the one in which none exceeds 2047 (the samples
    are little-endian despite Netpbm's big-endian rule for 16-bit PGM).
    """
    data = Path(path).read_bytes()
    match = _PGM_HEADER.match(data)
    if match is None:
        raise DatasetError(f"{path} is not a binary PGM (P5) file")
    width, height, maxval = (int(group) for group in match.groups())
    if maxval < 256:
        raise DatasetError(f"{path}: expected a 16-bit PGM, got maxval {maxval}")
    payload = data[match.end() : match.end() + width * height * 2]
    if len(payload) != width * height * 2:
        raise DatasetError(f"{path}: PGM data is truncated ({len(payload)} of "
                           f"{width * height * 2} bytes)")
    for order in ("<u2", ">u2"):
        raw = np.frombuffer(payload, dtype=order).reshape(height, width)
        if raw.max() <= NYU_RAW_INVALID:
            return raw.astype(np.uint16)
    raise DatasetError(f"{path}: values exceed the Kinect's 11 bits in either byte order; not "
                       "raw NYU Depth v2 disparity")


def nyu_raw_depth(path: Path) -> np.ndarray:
    """float32 metres of an NYU Depth v2 raw depth ``.pgm``; NaN where there is no reading."""
    raw = read_nyu_raw_pgm(path).astype(np.float32)
    numerator, offset = NYU_RAW_DEPTH_PARAMETERS
    with np.errstate(divide="ignore"):
        depth = numerator / (offset - raw)
    valid = (raw < NYU_RAW_INVALID) & (depth > 0) & (depth <= NYU_RAW_MAX_DEPTH)
    return _metres(depth, valid)


@dataclass(frozen=True)
class _Format:
    kind: str
    depth_suffix: str
    read_depth: Callable[[Path], np.ndarray]
    camera: PinholeCamera


class RgbdPairDataset(FrameDataset[tuple[Path, Path]]):
    """Mono frames of the ``NAME_color.*`` / ``NAME_depth.*`` pairs in ``root``, sorted by name.

    A colour image may be PNG, JPEG or PPM. Images of another size than 640 x 480 get the
    format's camera scaled to their size.

    :raises DatasetError: when ``root`` is not a folder, holds no pair, or a depth map lacks its
        colour image.
    """

    _format: _Format

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        kind, suffix = self._format.kind, self._format.depth_suffix
        if not self.root.is_dir():
            raise DatasetError(f"{kind}: {self.root} is not a folder")
        pairs = []
        for depth_path in sorted(self.root.glob(f"*_depth{suffix}")):
            stem = depth_path.name[: -len(f"_depth{suffix}")]
            colour = [
                self.root / f"{stem}_color{ext}"
                for ext in _COLOUR_SUFFIXES
                if (self.root / f"{stem}_color{ext}").is_file()
            ]
            if not colour:
                raise DatasetError(
                    f"{kind}: {depth_path} has no colour image {stem}_color"
                    f"{{{','.join(_COLOUR_SUFFIXES)}}}"
                )
            pairs.append((colour[0], depth_path))
        if not pairs:
            raise DatasetError(
                f"{kind}: no NAME_color.* / NAME_depth{suffix} pair in {self.root}"
            )
        super().__init__(pairs)

    def load(self, item: tuple[Path, Path]) -> Frame:
        colour_path, depth_path = item
        image = read_rgb(colour_path)
        depth = self._format.read_depth(depth_path)
        if depth.shape != image.shape[:2]:
            raise DatasetError(
                f"{depth_path}: depth {depth.shape} differs from {colour_path.name} "
                f"{image.shape[:2]}"
            )
        height, width = depth.shape
        camera = self._format.camera
        if (width, height) != (camera.width, camera.height):
            camera = camera.resized(width, height)
        stem = depth_path.name[: -len(f"_depth{self._format.depth_suffix}")]
        return Frame(left=image, camera=camera, depth=depth, name=f"{self._format.kind}/{stem}")


class TumRgbdDataset(RgbdPairDataset):
    """TUM RGB-D pairs: depth PNG / 5000, ROS default Kinect camera (fx 525)."""

    _format = _Format("tum_rgbd", ".png", tum_rgbd_depth, TUM_CAMERA)


class SunRgbdDataset(RgbdPairDataset):
    """SUN RGB-D pairs: bit-rotated millimetre depth PNG, NYU's Kinect colour camera."""

    _format = _Format("sun_rgbd", ".png", sun_rgbd_depth, NYU_CAMERA)


class NyuRawDataset(RgbdPairDataset):
    """NYU Depth v2 raw pairs: Kinect disparity PGM (unregistered), NYU's Kinect colour camera."""

    _format = _Format("nyu_raw", ".pgm", nyu_raw_depth, NYU_CAMERA)
