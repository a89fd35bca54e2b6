"""NYU Depth v2, labelled subset: ``nyu_depth_v2_labeled.mat`` (1449 aligned RGB-D frames).

The file is MATLAB v7.3, i.e. HDF5 (read with h5py). MATLAB stores arrays column-major, so h5py
sees them transposed: ``images`` is N x 3 x W x H uint8 and ``depths`` N x W x H float32 metres
(inpainted, so dense). Intrinsics are those of the RGB camera from the NYU toolbox's
``camera_params.m`` (Silberman et al., ECCV 2012), which uses 1-based pixel coordinates; they
are converted to this package's 0-based centres here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.data.base import FrameDataset
from cnd_depth_ros.data.frame import Frame
from cnd_depth_ros.errors import DatasetError

__all__ = ["NYU_CAMERA", "NyuV2Dataset"]

#: The Kinect RGB camera at 640 x 480 (``fx_rgb``, ``fy_rgb``, ``cx_rgb - 1``, ``cy_rgb - 1``).
NYU_CAMERA = PinholeCamera(
    width=640,
    height=480,
    fx=518.8579,
    fy=519.4696,
    cx=325.5824 - 1.0,
    cy=253.7362 - 1.0,
)


class NyuV2Dataset(FrameDataset[int]):
    """Mono frames of the labelled NYU Depth v2 ``.mat`` file at ``path``.

    The file is opened per read, so the dataset pickles into DataLoader workers. A file whose
    frames are not 640 x 480 (a re-saved subset) gets :data:`NYU_CAMERA` scaled to its size.
    """

    def __init__(self, path: str | Path) -> None:
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"NYU Depth v2 file {self.path} does not exist")
        try:
            with h5py.File(self.path, "r") as mat:
                images, depths = mat["images"], mat["depths"]
                if (
                    images.ndim != 4
                    or images.shape[1] != 3
                    or depths.shape
                    != (
                        images.shape[0],
                        *images.shape[2:],
                    )
                ):
                    raise DatasetError(
                        f"{self.path}: expected images N x 3 x W x H and depths N x W x H, got "
                        f"{images.shape} and {depths.shape}"
                    )
                count = images.shape[0]
        except (OSError, KeyError) as error:
            raise DatasetError(
                f"{self.path} is not the labelled NYU Depth v2 .mat (v7.3/HDF5 with 'images' "
                f"and 'depths'): {error}"
            ) from error
        super().__init__(range(count))

    def load(self, item: int) -> Frame:
        import h5py

        with h5py.File(self.path, "r") as mat:
            image = np.ascontiguousarray(mat["images"][item].transpose(2, 1, 0))
            depth = np.ascontiguousarray(mat["depths"][item].T, dtype=np.float32)
        depth[~(depth > 0)] = np.nan
        height, width = depth.shape
        camera = NYU_CAMERA
        if (width, height) != (camera.width, camera.height):
            camera = camera.resized(width, height)
        return Frame(left=image, camera=camera, depth=depth, name=f"nyu_v2/{item:04d}")
