"""Middlebury stereo: the 2014 scenes (PFM + ``calib.txt``), the 2001-2006 scenes (scaled
PNG/PGM disparity) and the 2014 "motorcycle" pair that scikit-image ships.

Sources: https://vision.middlebury.edu/stereo/data/ (2014: ``im0.png``, ``im1.png``,
``disp0.pfm``/``disp1.pfm`` with ``inf`` for unknown, ``calib.txt`` with ``cam0``, ``doffs``
and ``baseline`` in mm, and ``Z = baseline * f / (d + doffs)``; 2001/2003/2005/2006: integer
disparity PNG/PGM scaled by 8, 4 or 1, 0 for unknown) and ``skimage.data.stereo_motorcycle``.

The 2014 rigs' principal points differ by ``doffs``, while this package converts disparity
with ``fx * B / d`` (decisions.md, 1). The loader therefore shifts the right image left by
``doffs`` pixels (linear interpolation): the pair then has a common principal point, its
disparity is exactly ``fx * B / Z``, and the left view, depth and camera are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.data.base import FrameDataset
from cnd_depth_ros.data.frame import Frame
from cnd_depth_ros.data.readers import (
    depth_from_disparity,
    read_pfm,
    read_rgb,
    read_scaled_png,
)
from cnd_depth_ros.errors import DatasetError

__all__ = [
    "LEGACY_BASELINE",
    "LEGACY_FOCAL",
    "MOTORCYCLE_CALIBRATION",
    "MiddleburyCalibration",
    "MiddleburyDataset",
    "MotorcycleDataset",
    "read_calib",
    "stereo_frame",
]

#: Rig assumed for the 2001-2006 scenes, which publish disparity only: the 2005/2006 rig
#: (f = 3740 px at full size, B = 160 mm) without its per-scene offset. Depth is then exactly
#: consistent with the images' disparity (``fx * B / d``) but only approximately metric.
LEGACY_FOCAL = 3740.0
LEGACY_BASELINE = 0.160


@dataclass(frozen=True)
class MiddleburyCalibration:
    """The parts of a Middlebury ``calib.txt`` that make disparity metric (baseline in metres)."""

    fx: float
    fy: float
    cx: float
    cy: float
    doffs: float
    baseline: float

    def camera(self, width: int, height: int) -> PinholeCamera:
        return PinholeCamera(width, height, self.fx, self.fy, self.cx, self.cy, self.baseline)


#: ``skimage.data.stereo_motorcycle()``: Middlebury 2014 "Motorcycle" downscaled by 4, with the
#: calibration its docstring gives for that size (f 994.978 px, principal point (311.193,
#: 254.877), doffs 31.086 px, baseline 193.001 mm: the full-size ``calib.txt`` divided by 4).
MOTORCYCLE_CALIBRATION = MiddleburyCalibration(
    fx=994.978, fy=994.978, cx=311.193, cy=254.877, doffs=31.086, baseline=0.193001
)


def read_calib(path: Path) -> MiddleburyCalibration:
    """Parse a Middlebury 2014 ``calib.txt`` (``cam0=[f 0 cx; 0 f cy; 0 0 1]``, ``doffs=``,
    ``baseline=`` in mm)."""
    fields: dict[str, str] = {}
    try:
        for line in Path(path).read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip()] = value.strip()
    except OSError as error:
        raise DatasetError(f"cannot read Middlebury calibration {path}: {error}") from error
    try:
        cam0 = np.array(fields["cam0"].strip("[]").replace(";", " ").split(), dtype=np.float64)
        return MiddleburyCalibration(
            fx=float(cam0[0]),
            fy=float(cam0[4]),
            cx=float(cam0[2]),
            cy=float(cam0[5]),
            doffs=float(fields["doffs"]),
            baseline=float(fields["baseline"]) / 1000.0,
        )
    except (KeyError, ValueError, IndexError) as error:
        raise DatasetError(
            f"{path}: expected cam0=[...], doffs= and baseline= entries ({error!r})"
        ) from error


def _shift_left(image: np.ndarray, offset: float, interpolation: int) -> np.ndarray:
    """``out[:, x] = image[:, x + offset]``; columns that fall outside are 0 (NaN for float)."""
    height, width = image.shape[:2]
    border = np.nan if image.dtype.kind == "f" else 0
    matrix = np.array([[1.0, 0.0, -offset], [0.0, 1.0, 0.0]])
    return cv2.warpAffine(
        image,
        matrix,
        (width, height),
        flags=interpolation,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border,
    )


def stereo_frame(
    left: np.ndarray,
    right: np.ndarray,
    disparity: np.ndarray,
    calibration: MiddleburyCalibration,
    name: str,
    right_disparity: np.ndarray | None = None,
) -> Frame:
    """A frame with a common principal point (right view shifted by ``doffs``) and metric depth."""
    height, width = left.shape[:2]
    right_depth = None
    if right_disparity is not None:
        right_depth = depth_from_disparity(
            right_disparity, calibration.fx, calibration.baseline, calibration.doffs
        )
        right_depth = _shift_left(right_depth, calibration.doffs, cv2.INTER_NEAREST)
    return Frame(
        left=left,
        right=_shift_left(right, calibration.doffs, cv2.INTER_LINEAR),
        camera=calibration.camera(width, height),
        depth=depth_from_disparity(
            disparity, calibration.fx, calibration.baseline, calibration.doffs
        ),
        right_depth=right_depth,
        name=name,
    )


@dataclass(frozen=True)
class _Layout:
    """File names of one Middlebury edition inside a scene folder."""

    edition: str
    left: str
    right: str
    disparity: str
    right_disparity: str | None
    disparity_scale: float


_LAYOUTS = (
    _Layout("2014", "im0.png", "im1.png", "disp0.pfm", "disp1.pfm", 1.0),
    _Layout("2014", "im0.png", "im1.png", "disp0GT.pfm", "disp1GT.pfm", 1.0),
    _Layout("2005", "view1.png", "view5.png", "disp1.png", "disp5.png", 1.0),
    _Layout("2003", "im2.png", "im6.png", "disp2.png", "disp6.png", 4.0),
    _Layout("2001", "im2.ppm", "im6.ppm", "disp2.pgm", "disp6.pgm", 8.0),
)


@dataclass(frozen=True)
class _Scene:
    folder: Path
    layout: _Layout
    left: Path
    right: Path
    disparity: Path


def _find_scene(folder: Path) -> _Scene | None:
    for layout in _LAYOUTS:
        paths = [folder / name for name in (layout.left, layout.right, layout.disparity)]
        if all(path.is_file() for path in paths):
            return _Scene(folder, layout, *paths)
    # OpenCV's copy of the 2006 scenes: NAMEL.jpg, NAMER.jpg, NAMEGT.png (full size).
    for truth in sorted(folder.glob("*GT.png")):
        stem = truth.name[: -len("GT.png")]
        for suffix in (".png", ".jpg"):
            left, right = folder / f"{stem}L{suffix}", folder / f"{stem}R{suffix}"
            if left.is_file() and right.is_file():
                return _Scene(folder, _Layout("2006", "", "", "", None, 1.0), left, right, truth)
    return None


class MiddleburyDataset(FrameDataset[_Scene]):
    """Every Middlebury scene in ``root`` (a scene folder, or a folder of scene folders).

    2014 scenes are metric through their ``calib.txt``. Scenes of 2001-2006 have no calibration:
    their depth is ``focal * baseline / (d / disparity_scale)`` with the :data:`LEGACY_FOCAL`,
    :data:`LEGACY_BASELINE` rig unless given, and ``disparity_scale`` defaults to the edition's
    (2001: 8, 2003: 4, 2005/2006: 1); the principal point is the image centre.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        focal: float = LEGACY_FOCAL,
        baseline: float = LEGACY_BASELINE,
        disparity_scale: float | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"Middlebury folder {self.root} does not exist")
        if disparity_scale is not None and not disparity_scale > 0:
            raise ValueError(f"disparity_scale must be positive, got {disparity_scale}")
        self.focal, self.baseline, self.disparity_scale = focal, baseline, disparity_scale
        folders = [self.root, *sorted(path for path in self.root.iterdir() if path.is_dir())]
        scenes = [scene for scene in map(_find_scene, folders) if scene is not None]
        if not scenes:
            raise DatasetError(
                f"no Middlebury scene in {self.root}: expected im0.png + im1.png + disp0.pfm + "
                "calib.txt (2014), view1/view5 + disp1.png (2005/2006), im2/im6 + disp2 "
                "(2001/2003) or NAMEL/NAMER + NAMEGT.png"
            )
        super().__init__(scenes)

    def load(self, item: _Scene) -> Frame:
        layout = item.layout
        left, right = read_rgb(item.left), read_rgb(item.right)
        height, width = left.shape[:2]
        name = f"middlebury{layout.edition}/{item.folder.name}"
        right_path = item.folder / layout.right_disparity if layout.right_disparity else None
        if right_path is not None and not right_path.is_file():
            right_path = None
        if layout.edition == "2014":
            calibration = read_calib(item.folder / "calib.txt")
            return stereo_frame(
                left,
                right,
                read_pfm(item.disparity),
                calibration,
                name,
                read_pfm(right_path) if right_path else None,
            )
        scale = self.disparity_scale or layout.disparity_scale
        calibration = MiddleburyCalibration(
            self.focal, self.focal, (width - 1) / 2, (height - 1) / 2, 0.0, self.baseline
        )
        return stereo_frame(
            left,
            right,
            read_scaled_png(item.disparity, scale),
            calibration,
            name,
            read_scaled_png(right_path, scale) if right_path else None,
        )


class MotorcycleDataset(FrameDataset[str]):
    """The one real stereo pair with metric ground truth that is always installed:
    ``skimage.data.stereo_motorcycle()`` with :data:`MOTORCYCLE_CALIBRATION` (741 x 500)."""

    def __init__(self) -> None:
        super().__init__(["motorcycle"])

    def load(self, item: str) -> Frame:
        from skimage import data

        left, right, disparity = data.stereo_motorcycle()
        name = f"middlebury2014/{item}"
        return stereo_frame(left, right, disparity.astype(np.float32), MOTORCYCLE_CALIBRATION, name)
