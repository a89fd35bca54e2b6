"""NYU Depth v2 labelled .mat: a tiny HDF5 file laid out as MATLAB v7.3 writes it."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from cnd_depth_ros.data.nyu import NYU_CAMERA, NyuV2Dataset
from cnd_depth_ros.errors import DatasetError

WIDTH, HEIGHT = 16, 12


def write_mat(path: Path, images: np.ndarray, depths: np.ndarray) -> None:
    """``images`` N x H x W x 3 and ``depths`` N x H x W, stored column-major as MATLAB does
    (h5py then reads N x 3 x W x H and N x W x H)."""
    with h5py.File(path, "w") as mat:
        mat["images"] = images.transpose(0, 3, 2, 1)
        mat["depths"] = depths.transpose(0, 2, 1)
        mat["labels"] = np.zeros((len(images), WIDTH, HEIGHT), np.uint16)


def test_frames_come_back_untransposed_and_metric(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, HEIGHT, WIDTH, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 9.5, (2, HEIGHT, WIDTH)).astype(np.float32)
    depths[1, 4, 7] = 0.0
    write_mat(tmp_path / "nyu.mat", images, depths)

    dataset = NyuV2Dataset(tmp_path / "nyu.mat")
    assert len(dataset) == 2
    frame = dataset[1]
    assert frame.name == "nyu_v2/0001" and frame.right is None
    np.testing.assert_array_equal(frame.left, images[1])
    expected = depths[1].copy()
    expected[4, 7] = np.nan
    np.testing.assert_array_equal(frame.depth, expected)
    assert frame.camera == NYU_CAMERA.resized(WIDTH, HEIGHT)


def test_nyu_camera_is_the_toolbox_rgb_camera_in_zero_based_pixels() -> None:
    assert (NYU_CAMERA.width, NYU_CAMERA.height) == (640, 480)
    assert NYU_CAMERA.fx == pytest.approx(518.858, abs=1e-3)
    assert NYU_CAMERA.cx == pytest.approx(324.582, abs=1e-3)  # cx_rgb = 325.582 is 1-based


def test_wrong_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        NyuV2Dataset(tmp_path / "missing.mat")
    with h5py.File(tmp_path / "other.mat", "w") as mat:
        mat["rawDepths"] = np.zeros((1, 4, 3), np.float32)
    with pytest.raises(DatasetError, match="'images'"):
        NyuV2Dataset(tmp_path / "other.mat")
    (tmp_path / "text.mat").write_text("MATLAB 5.0 MAT-file")
    with pytest.raises(DatasetError, match=r"v7\.3"):
        NyuV2Dataset(tmp_path / "text.mat")
