"""The classical baseline: OpenCV's semi-global block matcher, what stereo_image_proc runs.

:class:`SgbmBackend` is the backend ``sgbm`` of the registry (``sgbm:stereo_image_proc`` for the
other preset): the node, evaluation and benchmarks run it as they run a network, without a model
file, at the camera's size (or the ``width`` x ``height`` asked for). By default (preset
``tuned``) two things differ from stereo_image_proc's defaults, both so that the comparison with
the networks is fair:

* the parameters follow the image size (disparity range, speckle window), where
  stereo_image_proc's are fixed for one camera, and suit small images (a 5-pixel block, the
  faster 3-way dynamic programming) where stereo_image_proc's 15-pixel block is made for VGA;
* holes (occlusions, texture-less areas, the left border the search range cannot reach) are filled
  along each row with the farther of the two neighbouring valid disparities, the background
  interpolation of the KITTI stereo devkit, so every ground-truth pixel gets an estimate and the
  metrics are computed on the same pixels as the networks'.

Preset ``stereo_image_proc`` is its disparity_node as shipped, with ``stereo_algorithm:=1``
(:data:`STEREO_IMAGE_PROC_SGBM`): what a robot running stereo_image_proc's SGBM computes, for
the speed comparison. Holes are filled in both presets.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.inference.backend import DepthEstimator
from cnd_depth_ros.inference.camera_images import check_camera_images
from cnd_depth_ros.inference.depth_estimate import DepthEstimate
from cnd_depth_ros.inference.devices import parse_device
from cnd_depth_ros.inference.disparity_refinement import DisparityRefinement

__all__ = ["PRESETS", "STEREO_IMAGE_PROC_SGBM", "SgbmBackend", "fill_disparity_holes"]

#: ``cv2.StereoSGBM.create`` arguments of stereo_image_proc's disparity_node with
#: ``stereo_algorithm:=1`` and every other parameter at its default, as image_pipeline declares
#: them (disparity_node.cpp, stereo_processor.hpp): correlation_window_size 15, disparity_range
#: 64, P1 200, P2 400, full_dp false (MODE_SGBM), disp12_max_diff 0, prefilter_cap 31,
#: uniqueness_ratio 15, speckle_size 100, speckle_range 4.
STEREO_IMAGE_PROC_SGBM: dict[str, int] = {
    "minDisparity": 0,
    "numDisparities": 64,
    "blockSize": 15,
    "P1": 200,
    "P2": 400,
    "disp12MaxDiff": 0,
    "preFilterCap": 31,
    "uniquenessRatio": 15,
    "speckleWindowSize": 100,
    "speckleRange": 4,
    "mode": cv2.STEREO_SGBM_MODE_SGBM,
}
PRESETS = ("tuned", "stereo_image_proc")


def fill_disparity_holes(disparity: np.ndarray) -> np.ndarray:
    """Fill NaN holes row by row with the smaller (farther) of the nearest valid disparities to
    the left and right; a row without any valid pixel takes the image's smallest disparity.
    All-NaN input stays NaN."""
    valid = np.isfinite(disparity)
    if valid.all() or not valid.any():
        return disparity
    columns = np.arange(disparity.shape[1])

    def nearest(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Each pixel's nearest valid value to its left (NaN if none)."""
        index = np.maximum.accumulate(np.where(mask, columns, 0), axis=1)
        found = np.logical_or.accumulate(mask, axis=1)
        return np.where(found, np.take_along_axis(values, index, axis=1), np.nan)

    from_left = nearest(disparity, valid)
    from_right = nearest(disparity[:, ::-1], valid[:, ::-1])[:, ::-1]
    with np.errstate(invalid="ignore"):
        filled = np.fmin(from_left, from_right)
    filled[~valid.any(axis=1)] = np.nanmin(disparity)
    return np.where(valid, disparity, filled).astype(np.float32)


class SgbmBackend(DepthEstimator):
    """OpenCV ``StereoSGBM`` on rectified pairs, returning metric depth like the networks.

    Takes the registry's options (:mod:`~cnd_depth_ros.inference.registry`) that mean something
    for it, and its own:

    :param preset: ``tuned`` (sized for the image, ``max_disparity`` and ``block_size`` below),
        or ``stereo_image_proc`` (:data:`STEREO_IMAGE_PROC_SGBM`, which ignores
        ``max_disparity`` and ``block_size``).
    :param device: checked, then ignored: OpenCV's SGBM runs on the CPU whatever the device (so
        ``bench --device cuda`` times it beside the GPU backends).
    :param threads: OpenCV's threads (``cv2.setNumThreads``, for the whole process); ``None``:
        OpenCV's default.
    :param height: with ``width``, the size to match at (images are resized and depth is resized
        back); default each camera's own size.
    :param width: see ``height``.
    :param max_disparity: search range in pixels at the matching size; default a quarter of the
        image width (covers objects down to ``4 * baseline * fx / width`` away).
    :param block_size: matching window (odd); 5 suits the small images the networks run at.
    :param fill_holes: fill invalid pixels (see the module docstring); ``False`` leaves NaN.
    :raises ValueError: an unknown preset, a bad device, ``height`` without ``width`` (or the
        reverse), an even or non-positive block size, or a non-positive range or thread count.
    """

    name = "sgbm"

    def __init__(
        self,
        *,
        preset: str = "tuned",
        device: str = "cpu",
        threads: int | None = None,
        height: int | None = None,
        width: int | None = None,
        max_disparity: int | None = None,
        block_size: int = 5,
        fill_holes: bool = True,
    ) -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown SGBM preset {preset!r}; known: {', '.join(PRESETS)}")
        parse_device(device)  # for its error on a misspelt device; SGBM runs on the CPU
        if (height is None) != (width is None):
            raise ValueError(f"sgbm: give both height and width or neither, got {height}, {width}")
        if block_size < 1 or block_size % 2 == 0:
            raise ValueError(f"block_size must be odd and positive, got {block_size}")
        if max_disparity is not None and max_disparity < 1:
            raise ValueError(f"max_disparity must be positive, got {max_disparity}")
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be at least 1, got {threads}")
            cv2.setNumThreads(threads)
        self.preset = preset
        self.max_disparity = max_disparity
        self.block_size = block_size
        self.working_size = None if width is None or height is None else (width, height)
        self.fill_holes = fill_holes
        self._matchers: dict[tuple[int, int], cv2.StereoSGBM] = {}

    @property
    def stereo(self) -> bool:
        return True

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The size it matches at; ``None``: each camera's own."""
        return self.working_size

    def _matcher(self, width: int, height: int) -> cv2.StereoSGBM:
        """A matcher for this image size (cached: creating one is not free)."""
        key = (width, height)
        if key not in self._matchers:
            self._matchers[key] = cv2.StereoSGBM.create(**self._parameters(width, height))
        return self._matchers[key]

    def _parameters(self, width: int, height: int) -> dict[str, int]:
        """``cv2.StereoSGBM.create`` arguments: the preset's, for this image size."""
        if self.preset == "stereo_image_proc":
            return STEREO_IMAGE_PROC_SGBM
        search = self.max_disparity or width // 4
        # OpenCV wants a multiple of 16; the usual P1/P2 are 8 and 32 * channels * block^2.
        area = self.block_size * self.block_size
        return {
            "minDisparity": 0,
            "numDisparities": max(16, 16 * math.ceil(search / 16)),
            "blockSize": self.block_size,
            "P1": 8 * area,
            "P2": 32 * area,
            "disp12MaxDiff": 1,
            "preFilterCap": 63,
            "uniquenessRatio": 10,
            # 100 pixels at VGA, scaled with the image area.
            "speckleWindowSize": max(20, round(100 * width * height / (640 * 480))),
            "speckleRange": 2,
            "mode": cv2.STEREO_SGBM_MODE_SGBM_3WAY,
        }

    def disparity(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Disparity in pixels of two H x W x 3 uint8 RGB images at their size; NaN holes unless
        ``fill_holes``."""
        gray = [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in (left, right)]
        height, width = gray[0].shape
        fixed_point = self._matcher(width, height).compute(gray[0], gray[1])
        disparity = fixed_point.astype(np.float32) / 16.0
        disparity[fixed_point <= 0] = np.nan
        return fill_disparity_holes(disparity) if self.fill_holes else disparity

    def _estimate(self, left: np.ndarray, right: np.ndarray | None, camera: PinholeCamera,
                  output: PinholeCamera, refinement: DisparityRefinement | None) -> DepthEstimate:
        """:meth:`DepthEstimator.estimate` by matching ``left`` against ``right``; no confidence,
        and no ``refinement`` (there is no network output to refine)."""
        check_camera_images(left, right, camera, stereo=True, name="SGBM")
        assert right is not None and camera.baseline is not None  # checked just above
        width, height = self.working_size or (camera.width, camera.height)
        if (width, height) != (camera.width, camera.height):
            left, right = (
                cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
                for image in (left, right)
            )
        disparity = self.disparity(left, right)
        working = camera.resized(width, height)
        with np.errstate(divide="ignore", invalid="ignore"):
            depth: np.ndarray = (working.fx * camera.baseline / disparity).astype(np.float32)
        if (output.width, output.height) != (width, height):
            depth = cv2.resize(depth, (output.width, output.height),
                               interpolation=cv2.INTER_NEAREST)
            return DepthEstimate(depth, camera=output)
        # Matched at the output size: the left image as matched (area-averaged) is at it too.
        return DepthEstimate(depth, camera=output, image=left)

    def info(self) -> dict[str, Any]:
        size = self.working_size
        return {
            "backend": self.name,
            "model": "OpenCV StereoSGBM",
            "variant": self.preset,
            "input": "the camera's size" if size is None else f"{size[0]}x{size[1]}",
            "preset": self.preset,
            "max_disparity": self.max_disparity,
            "block_size": self.block_size,
            "fill_holes": self.fill_holes,
        }

    def close(self) -> None:
        self._matchers.clear()
