"""The classical baseline: OpenCV's semi-global block matcher, what stereo_image_proc runs.

:class:`SgbmMatcher` has the backends' ``infer(left, right, *, camera) -> depth`` so evaluation
and benchmarks treat it like a network. By default (preset ``tuned``) two things differ from
stereo_image_proc's defaults, both so that the comparison with the networks is fair:

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
from cnd_depth_ros.inference.camera_images import check_camera_images

__all__ = ["PRESETS", "STEREO_IMAGE_PROC_SGBM", "SgbmMatcher", "fill_disparity_holes"]

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


class SgbmMatcher:
    """OpenCV ``StereoSGBM`` on rectified pairs, returning metric depth like the backends.

    :param max_disparity: search range in pixels at the working size; default a quarter of the
        image width (covers objects down to ``4 * baseline * fx / width`` away).
    :param block_size: matching window (odd); 5 suits the small images the networks run at.
    :param working_size: ``(width, height)`` to match at (images are resized and depth is resized
        back); default the images' own size.
    :param fill_holes: fill invalid pixels (see the module docstring); ``False`` leaves NaN.
    :param preset: ``tuned`` (the parameters above), or ``stereo_image_proc``
        (:data:`STEREO_IMAGE_PROC_SGBM`, which ignores ``max_disparity`` and ``block_size``).
    :raises ValueError: an even or non-positive block size, a non-positive range, or an unknown
        preset.
    """

    name = "sgbm"

    def __init__(
        self,
        *,
        max_disparity: int | None = None,
        block_size: int = 5,
        working_size: tuple[int, int] | None = None,
        fill_holes: bool = True,
        preset: str = "tuned",
    ) -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown SGBM preset {preset!r}; known: {', '.join(PRESETS)}")
        if block_size < 1 or block_size % 2 == 0:
            raise ValueError(f"block_size must be odd and positive, got {block_size}")
        if max_disparity is not None and max_disparity < 1:
            raise ValueError(f"max_disparity must be positive, got {max_disparity}")
        self.max_disparity = max_disparity
        self.block_size = block_size
        self.working_size = working_size
        self.fill_holes = fill_holes
        self.preset = preset
        self._matchers: dict[tuple[int, int], cv2.StereoSGBM] = {}

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

    def infer(
        self,
        left: np.ndarray,
        right: np.ndarray | None = None,
        *,
        camera: PinholeCamera,
        output_size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Metric depth (H x W float32 metres, NaN where invalid) for a rectified stereo pair
        seen by ``camera``; the same contract as ``DepthBackend.infer``.

        :raises ValueError: a missing right image, mismatched images, or a camera without baseline.
        """
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
        out_width, out_height = output_size or (camera.width, camera.height)
        if (out_width, out_height) != (width, height):
            depth = cv2.resize(depth, (out_width, out_height), interpolation=cv2.INTER_NEAREST)
        return depth

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "preset": self.preset,
            "max_disparity": self.max_disparity,
            "block_size": self.block_size,
            "working_size": self.working_size,
            "fill_holes": self.fill_holes,
        }

    def close(self) -> None:
        self._matchers.clear()
