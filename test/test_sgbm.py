"""The StereoSGBM baseline: hole filling, metric depth on a pair with known disparity, accuracy on
the real Middlebury motorcycle pair, and bad input."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
from fixtures.artifacts import motorcycle

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.inference.sgbm import SgbmMatcher, fill_disparity_holes

NAN = np.nan


def test_holes_take_the_farther_neighbour() -> None:
    disparity = np.array(
        [
            [NAN, 5.0, NAN, NAN, 2.0, NAN],  # left border, gap between 5 and 2, right border
            [NAN, NAN, NAN, NAN, NAN, NAN],  # no valid pixel: the image's smallest disparity
            [3.0, 3.0, 3.0, 3.0, 3.0, 3.0],
        ],
        dtype=np.float32,
    )
    filled = fill_disparity_holes(disparity)
    np.testing.assert_array_equal(
        filled, [[5, 5, 2, 2, 2, 2], [2, 2, 2, 2, 2, 2], [3, 3, 3, 3, 3, 3]]
    )
    assert filled.dtype == np.float32


def test_nothing_to_fill_from_stays_nan() -> None:
    assert np.isnan(fill_disparity_holes(np.full((2, 3), NAN, np.float32))).all()


def test_known_shift_gives_metric_depth() -> None:
    """A random texture shifted by 8 px is a fronto-parallel plane at fx * B / 8."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (96, 200, 3), dtype=np.uint8), (3, 3), 0)
    left, right = texture[:, :128], texture[:, 8:136]
    camera = PinholeCamera(128, 96, 100.0, 100.0, 63.5, 47.5, baseline=0.2)
    depth = SgbmMatcher().infer(left, right, camera=camera)
    assert depth.shape == (96, 128) and np.isfinite(depth).all()
    inner = depth[8:-8, 40:-8]
    assert np.median(inner) == pytest.approx(100.0 * 0.2 / 8, rel=1e-3)
    assert np.mean(np.abs(inner - 2.5) < 0.1) > 0.95


@pytest.mark.parametrize("size", [(256, 160), None], ids=["network-size", "camera-size"])
def test_motorcycle_is_dense_and_accurate(size: tuple[int, int] | None) -> None:
    frame = motorcycle()
    matcher = SgbmMatcher(working_size=size)
    depth = matcher.infer(frame.left, frame.right, camera=frame.camera)
    valid = frame.valid
    assert depth.shape == frame.depth.shape
    assert np.isfinite(depth[valid]).all()  # every ground-truth pixel gets an estimate
    relative = np.abs(depth[valid] - frame.depth[valid]) / frame.depth[valid]
    assert np.median(relative) < 0.05
    assert np.mean(relative < 0.25) > 0.85


def test_the_stereo_image_proc_preset_is_its_disparity_node_as_shipped() -> None:
    """image_pipeline's disparity_node defaults with stereo_algorithm:=1, whatever the size,
    and still a usable depth map on the motorcycle."""
    frame = motorcycle()
    matcher = SgbmMatcher(preset="stereo_image_proc", working_size=(256, 160))
    depth = matcher.infer(frame.left, frame.right, camera=frame.camera)
    (created,) = matcher._matchers.values()
    assert (created.getBlockSize(), created.getNumDisparities(), created.getP1(),
            created.getP2()) == (15, 64, 200, 400)
    assert created.getMode() == cv2.STEREO_SGBM_MODE_SGBM
    assert (created.getUniquenessRatio(), created.getSpeckleWindowSize(),
            created.getSpeckleRange(), created.getPreFilterCap()) == (15, 100, 4, 31)
    relative = np.abs(depth[frame.valid] - frame.depth[frame.valid]) / frame.depth[frame.valid]
    assert np.median(relative) < 0.1
    assert matcher.info()["preset"] == "stereo_image_proc"
    with pytest.raises(ValueError, match="unknown SGBM preset 'stereo_proc'"):
        SgbmMatcher(preset="stereo_proc")


def test_without_filling_holes_are_nan() -> None:
    frame = motorcycle()
    depth = SgbmMatcher(fill_holes=False, working_size=(256, 160)).infer(
        frame.left, frame.right, camera=frame.camera
    )
    assert 0.05 < np.isnan(depth).mean() < 0.5


def test_bad_input_is_rejected() -> None:
    frame = motorcycle()
    with pytest.raises(ValueError, match="right image"):
        SgbmMatcher().infer(frame.left, camera=frame.camera)
    with pytest.raises(ValueError, match="baseline"):
        SgbmMatcher().infer(frame.left, frame.right, camera=replace(frame.camera, baseline=None))
    with pytest.raises(ValueError, match="right image must be HxWx3 uint8"):
        SgbmMatcher().infer(frame.left, frame.right[:, :, 0], camera=frame.camera)
    with pytest.raises(ValueError, match="right image is 741x400 but the camera is 741x500"):
        SgbmMatcher().infer(frame.left, frame.right[:400], camera=frame.camera)
    with pytest.raises(ValueError, match="block_size"):
        SgbmMatcher(block_size=4)
    with pytest.raises(ValueError, match="max_disparity"):
        SgbmMatcher(max_disparity=0)
