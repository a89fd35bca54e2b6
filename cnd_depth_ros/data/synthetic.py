"""The synthetic stereo folders that ``cnd-depth synth`` writes (format: docs/data.md).

Ground truth is exact and dense: depth everywhere but the sky (``inf`` on disk, NaN in the
:class:`Frame`), normals from the renderer, and the right view's depth for the flip augmentation.
Each frame carries its own camera where the set's rig varies (``NNNNNN_camera.json``), else the
set's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.data.base import FrameDataset
from cnd_depth_ros.data.frame import Frame
from cnd_depth_ros.data.readers import read_rgb
from cnd_depth_ros.data.synthetic_layout import (
    CAMERA_FILE,
    frame_path,
    frame_stems,
    read_camera,
    read_frame_camera,
)
from cnd_depth_ros.errors import DatasetError

__all__ = ["SyntheticDataset"]


def _read_map(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 ``.npy`` ground-truth map of the expected shape; non-finite values become NaN."""
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DatasetError(f"cannot read {path}: {error}") from error
    if values.shape != shape:
        raise DatasetError(f"{path}: shape {values.shape}, expected {shape}")
    values = values.astype(np.float32)
    values[~np.isfinite(values)] = np.nan
    return values


class SyntheticDataset(FrameDataset[int]):
    """Complete frames of a synthetic folder, in frame order; items are frame indices.
    ``camera`` is the set's (``camera.json``); a frame's own camera, where it has one, is in the
    :class:`Frame`.

    :raises DatasetError: if ``root`` has no readable ``camera.json`` or no complete frame.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        try:
            self.camera: PinholeCamera = read_camera(self.root)
        except OSError as error:
            raise DatasetError(
                f"{self.root} is not a synthetic dataset: cannot read {CAMERA_FILE} ({error})"
            ) from error
        except ValueError as error:
            raise DatasetError(str(error)) from error
        if self.camera.baseline is None:
            raise DatasetError(f"{self.root / CAMERA_FILE} has no stereo baseline")
        indices = [int(stem) for stem in frame_stems(self.root)]
        if not indices:
            raise DatasetError(f"{self.root} holds no complete frame (no NNNNNN_left.png)")
        super().__init__(indices)

    def load(self, item: int) -> Frame:
        height, width = self.camera.height, self.camera.width
        try:
            camera = read_frame_camera(self.root, item, self.camera)
        except (OSError, ValueError) as error:
            raise DatasetError(f"cannot read the camera of frame {item}: {error}") from error
        if camera.baseline is None:
            raise DatasetError(f"the camera of frame {item} in {self.root} has no stereo baseline")
        left = read_rgb(frame_path(self.root, item, "left.png"))
        if left.shape[:2] != (height, width):
            raise DatasetError(
                f"{frame_path(self.root, item, 'left.png')} is {left.shape[1]}x{left.shape[0]}, "
                f"but {CAMERA_FILE} says {width}x{height}"
            )
        return Frame(
            left=left,
            right=read_rgb(frame_path(self.root, item, "right.png")),
            depth=_read_map(frame_path(self.root, item, "depth.npy"), (height, width)),
            right_depth=_read_map(frame_path(self.root, item, "right_depth.npy"), (height, width)),
            normals=_read_map(frame_path(self.root, item, "normals.npy"), (height, width, 3)),
            camera=camera,
            name=f"{self.root.name}/{item:06d}",
        )
