"""The check every depth estimator makes on the camera images it is given.

The networks (:meth:`~cnd_depth_ros.inference.backend.DepthBackend.estimate`) and the SGBM
backend take the same input, H x W x 3 uint8 RGB at the camera's size, so they reject the same
mistakes with the same messages and callers (node, eval, bench) meet one set of errors.
"""

from __future__ import annotations

import numpy as np

from cnd_depth_ros.camera import PinholeCamera

__all__ = ["check_camera_images"]


def check_camera_images(
    left: np.ndarray,
    right: np.ndarray | None,
    camera: PinholeCamera,
    *,
    stereo: bool,
    name: str,
) -> None:
    """Check ``left`` (and, when ``stereo``, ``right`` and the camera's baseline) before use.

    :param name: the estimator, for messages (a model variant, ``SGBM``).
    :raises ValueError: an image that is not H x W x 3 uint8 or not the camera's size, or, for a
        stereo estimator, a missing right image or a camera without a baseline.
    """
    _check_image("left", left, camera)
    if not stereo:
        return
    if right is None:
        raise ValueError(f"{name} is a stereo model: a right image is needed")
    _check_image("right", right, camera)
    if camera.baseline is None:
        raise ValueError(f"{name} is a stereo model: camera has no baseline")


def _check_image(which: str, image: np.ndarray, camera: PinholeCamera) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"{which} image must be HxWx3 uint8 RGB, got {shape} {dtype}")
    if image.shape[:2] != (camera.height, camera.width):
        raise ValueError(
            f"{which} image is {image.shape[1]}x{image.shape[0]} but the camera is "
            f"{camera.width}x{camera.height}"
        )
