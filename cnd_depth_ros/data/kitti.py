"""KITTI: the stereo 2015 / 2012 benchmarks and the raw recordings with depth annotations.

Formats (KITTI devkits, https://www.cvlibs.net/datasets/kitti/): images are rectified 8-bit PNG;
ground truth is a 16-bit PNG holding ``value / 256`` (disparity in pixels for the stereo
benchmarks, depth in metres for the depth annotations), 0 where there is none. Calibration files
are ``key: numbers`` lines; ``P_rect_02`` / ``P_rect_03`` (``P2`` / ``P3`` in the 2012 benchmark)
are the 3 x 4 projections of the left and right colour cameras, so ``fx = P[0, 0]`` and the
baseline is ``(P_left[0, 3] - P_right[0, 3]) / fx``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.data.base import FrameDataset
from cnd_depth_ros.data.frame import Frame
from cnd_depth_ros.data.readers import (
    depth_from_disparity,
    read_rgb,
    read_scaled_png,
)
from cnd_depth_ros.errors import DatasetError

__all__ = [
    "DEFAULT_BASELINE",
    "DEFAULT_FX",
    "KittiDepthDataset",
    "KittiStereoDataset",
    "read_calibration",
    "stereo_camera",
]

#: Focal length and colour-camera baseline of the 2011_09_26 rig (its ``P_rect_02``/``P_rect_03``),
#: used when a stereo benchmark folder ships without calibration; KITTI's rigs vary by about 2 %.
DEFAULT_FX = 721.5377
DEFAULT_BASELINE = 0.5327

#: Fixed-point scale of every KITTI ground-truth PNG.
KITTI_PNG_SCALE = 256.0

#: (left images, right images, disparity with / without occluded pixels, calibration, P keys).
_STEREO_LAYOUTS = {
    "2015": ("image_2", "image_3", ("disp_occ_0", "disp_noc_0"), "calib_cam_to_cam", "P_rect_0"),
    "2012": ("colored_0", "colored_1", ("disp_occ", "disp_noc"), "calib", "P"),
}


def read_calibration(path: Path) -> dict[str, np.ndarray]:
    """The numeric entries of a KITTI calibration file (non-numeric ones such as
    ``calib_time`` are skipped)."""
    entries: dict[str, np.ndarray] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise DatasetError(f"cannot read KITTI calibration {path}: {error}") from error
    for line in lines:
        key, sep, values = line.partition(":")
        if not sep:
            continue
        try:
            entries[key.strip()] = np.array(values.split(), dtype=np.float64)
        except ValueError:
            continue
    return entries


def stereo_camera(
    calibration: dict[str, np.ndarray], left_key: str, right_key: str, width: int, height: int
) -> PinholeCamera:
    """The left camera of the rectified pair whose projections are ``left_key``/``right_key``."""
    try:
        left = calibration[left_key].reshape(3, 4)
        right = calibration[right_key].reshape(3, 4)
    except (KeyError, ValueError) as error:
        raise DatasetError(f"KITTI calibration lacks a 3x4 {left_key} / {right_key}") from error
    fx = float(left[0, 0])
    return PinholeCamera(
        width=width,
        height=height,
        fx=fx,
        fy=float(left[1, 1]),
        cx=float(left[0, 2]),
        cy=float(left[1, 2]),
        baseline=float(left[0, 3] - right[0, 3]) / fx,
    )


@dataclass(frozen=True)
class _StereoItem:
    left: Path
    right: Path
    disparity: Path
    calibration: Path | None


class KittiStereoDataset(FrameDataset[_StereoItem]):
    """Frames of a KITTI stereo benchmark training folder, metric depth from its disparity.

    Layouts, recognised by their folders: stereo 2015 (``image_2/``, ``image_3/``,
    ``disp_occ_0/``, ``calib_cam_to_cam/NNNNNN.txt``) and stereo 2012 (``colored_0/``,
    ``colored_1/``, ``disp_occ/``, optional ``calib/NNNNNN.txt`` with ``P2``/``P3``). Only the
    ``NNNNNN_10.png`` frames have ground truth. ``occluded=False`` reads the ``disp_noc``
    folders instead. Where a frame has no calibration file, ``fx`` and ``baseline`` (defaults
    :data:`DEFAULT_FX`, :data:`DEFAULT_BASELINE`, principal point at the image centre) make
    the depth approximate; pass the rig's values when known.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        occluded: bool = True,
        fx: float = DEFAULT_FX,
        baseline: float = DEFAULT_BASELINE,
    ) -> None:
        self.root = Path(root)
        self.fx = fx
        self.baseline = baseline
        layout = next(
            (name for name, spec in _STEREO_LAYOUTS.items() if (self.root / spec[0]).is_dir()),
            None,
        )
        if layout is None:
            expected = " or ".join(f"{spec[0]}/" for spec in _STEREO_LAYOUTS.values())
            raise DatasetError(f"{self.root} is not a KITTI stereo folder: no {expected}")
        self.layout = layout
        left_dir, right_dir, disparity_dirs, calib_dir, self._p_key = _STEREO_LAYOUTS[layout]
        disparity_dir = self.root / disparity_dirs[0 if occluded else 1]
        if not disparity_dir.is_dir():
            raise DatasetError(f"KITTI {layout} folder {self.root} has no {disparity_dir.name}/")
        items = []
        for disparity in sorted(disparity_dir.glob("*_10.png")):
            calibration = self.root / calib_dir / f"{disparity.stem[:-3]}.txt"
            items.append(
                _StereoItem(
                    left=self.root / left_dir / disparity.name,
                    right=self.root / right_dir / disparity.name,
                    disparity=disparity,
                    calibration=calibration if calibration.is_file() else None,
                )
            )
        super().__init__(items)

    def load(self, item: _StereoItem) -> Frame:
        left, right = read_rgb(item.left), read_rgb(item.right)
        height, width = left.shape[:2]
        if item.calibration is not None:
            camera = stereo_camera(
                read_calibration(item.calibration),
                f"{self._p_key}2",
                f"{self._p_key}3",
                width,
                height,
            )
        else:
            camera = PinholeCamera(
                width, height, self.fx, self.fx, (width - 1) / 2, (height - 1) / 2, self.baseline
            )
        disparity = read_scaled_png(item.disparity, KITTI_PNG_SCALE)
        assert camera.baseline is not None
        return Frame(
            left=left,
            right=right,
            camera=camera,
            depth=depth_from_disparity(disparity, camera.fx, camera.baseline),
            name=f"kitti{self.layout}/{item.disparity.stem}",
        )


@dataclass(frozen=True)
class _RawItem:
    left: Path
    right: Path
    depth: Path
    right_depth: Path | None
    calibration: Path


class KittiDepthDataset(FrameDataset[_RawItem]):
    """Stereo frames of KITTI raw recordings with the depth-completion annotations.

    ``raw_root`` holds the raw recordings (``DATE/calib_cam_to_cam.txt``,
    ``DATE/DRIVE/image_02/data/FRAME.png``, ``image_03``); ``annotations_root`` (default
    ``raw_root``) holds ``[train|val/]DRIVE/proj_depth/groundtruth/image_02/FRAME.png``
    (``data_depth_annotated``). Only annotated frames are yielded; the ``image_03`` annotation,
    where present, is the right view's depth, so a horizontal flip can swap the views.
    """

    def __init__(self, raw_root: str | Path, annotations_root: str | Path | None = None) -> None:
        self.raw_root = Path(raw_root)
        self.annotations_root = Path(annotations_root) if annotations_root else self.raw_root
        if not self.raw_root.is_dir():
            raise DatasetError(f"KITTI raw folder {self.raw_root} does not exist")
        items = []
        for depth in sorted(
            self.annotations_root.rglob("proj_depth/groundtruth/image_02/*.png"),
            key=lambda path: (path.parents[3].name, path.name),
        ):
            drive = depth.parents[3].name  # e.g. 2011_09_26_drive_0001_sync
            date_dir = self.raw_root / drive[:10]
            right_depth = depth.parents[1] / "image_03" / depth.name
            items.append(
                _RawItem(
                    left=date_dir / drive / "image_02" / "data" / depth.name,
                    right=date_dir / drive / "image_03" / "data" / depth.name,
                    depth=depth,
                    right_depth=right_depth if right_depth.is_file() else None,
                    calibration=date_dir / "calib_cam_to_cam.txt",
                )
            )
        if not items:
            raise DatasetError(
                f"no depth annotations (proj_depth/groundtruth/image_02/*.png) under "
                f"{self.annotations_root}"
            )
        super().__init__(items)

    def load(self, item: _RawItem) -> Frame:
        left, right = read_rgb(item.left), read_rgb(item.right)
        height, width = left.shape[:2]
        camera = stereo_camera(
            read_calibration(item.calibration), "P_rect_02", "P_rect_03", width, height
        )
        right_depth = None
        if item.right_depth is not None:
            right_depth = read_scaled_png(item.right_depth, KITTI_PNG_SCALE)
        return Frame(
            left=left,
            right=right,
            camera=camera,
            depth=read_scaled_png(item.depth, KITTI_PNG_SCALE),
            right_depth=right_depth,
            name=f"kitti_raw/{item.depth.parents[3].name}/{item.depth.stem}",
        )
