"""TUM RGB-D, SUN RGB-D and raw NYU Depth v2 pairs: each depth encoding on tiny written files,
then the three shared samples (skipped when ``../shared/data`` is absent) and `cnd-depth eval`
on one of them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures.artifacts import SMALL, make_artifact
from fixtures.shared import SHARED
from fixtures.training import one_torch_thread  # noqa: F401

from cnd_depth_ros import cli
from cnd_depth_ros.data.nyu import NYU_CAMERA
from cnd_depth_ros.data.registry import open_dataset
from cnd_depth_ros.data.rgbd import (
    NYU_RAW_INVALID,
    TUM_CAMERA,
    read_nyu_raw_pgm,
)
from cnd_depth_ros.errors import DatasetError

WIDTH, HEIGHT = 8, 6
DATA = SHARED / "data"


def write_colour(path: Path, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), rgb[..., ::-1])
    return rgb


def write_pgm(path: Path, raw: np.ndarray, byte_order: str) -> None:
    """A 16-bit binary PGM whose samples are written in ``byte_order`` ('<' as NYU's are)."""
    height, width = raw.shape
    header = f"P5 {width} {height} 65535\n".encode()
    path.write_bytes(header + raw.astype(f"{byte_order}u2").tobytes())


def test_tum_depth_is_value_over_5000_with_0_invalid(tmp_path: Path) -> None:
    rgb = write_colour(tmp_path / "a_color.png")
    raw = np.full((HEIGHT, WIDTH), 5000, np.uint16)
    raw[0, 0], raw[1, 2] = 0, 12500
    cv2.imwrite(str(tmp_path / "a_depth.png"), raw)
    frame = open_dataset("tum_rgbd", tmp_path)[0]
    assert frame.name == "tum_rgbd/a" and frame.right is None
    np.testing.assert_array_equal(frame.left, rgb)
    assert np.isnan(frame.depth[0, 0]) and frame.depth[1, 2] == pytest.approx(2.5)
    assert frame.depth[5, 7] == pytest.approx(1.0)
    assert frame.camera == TUM_CAMERA.resized(WIDTH, HEIGHT)


def test_sun_depth_undoes_the_bit_rotation(tmp_path: Path) -> None:
    write_colour(tmp_path / "b_color.jpg")
    millimetres = np.array([[0, 500, 2723, 9870, 8191, 1]] * HEIGHT, np.uint16)
    millimetres = np.tile(millimetres, (1, 2))[:, :WIDTH]
    stored = (millimetres << 3) | (millimetres >> 13)  # how SUN RGB-D writes them
    cv2.imwrite(str(tmp_path / "b_depth.png"), stored)
    frame = open_dataset("sun_rgbd", tmp_path)[0]
    expected = millimetres.astype(np.float32) / 1000
    expected[millimetres == 0] = np.nan
    np.testing.assert_allclose(frame.depth, expected, rtol=1e-6)
    assert frame.camera == NYU_CAMERA.resized(WIDTH, HEIGHT)


@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_nyu_raw_disparity_in_either_byte_order(tmp_path: Path, byte_order: str) -> None:
    write_colour(tmp_path / "c_color.ppm")
    raw = np.full((HEIGHT, WIDTH), 1000, np.uint16)
    raw[0, 0], raw[0, 1], raw[0, 2] = NYU_RAW_INVALID, 1092, 840
    write_pgm(tmp_path / "c_depth.pgm", raw, byte_order)
    np.testing.assert_array_equal(read_nyu_raw_pgm(tmp_path / "c_depth.pgm"), raw)
    depth = open_dataset("nyu_raw", tmp_path)[0].depth
    assert np.isnan(depth[0, 0])
    assert np.isnan(depth[0, 1])  # 351.3 / 0.5 = 703 m: beyond the toolbox's 10 m
    assert depth[0, 2] == pytest.approx(351.3 / 252.5)
    assert depth[3, 3] == pytest.approx(351.3 / 92.5)


def test_bad_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a folder"):
        open_dataset("tum_rgbd", tmp_path / "missing")
    with pytest.raises(DatasetError, match="no NAME_color"):
        open_dataset("sun_rgbd", tmp_path)
    cv2.imwrite(str(tmp_path / "x_depth.png"), np.ones((HEIGHT, WIDTH), np.uint16))
    with pytest.raises(DatasetError, match="has no colour image x_color"):
        open_dataset("tum_rgbd", tmp_path)
    write_colour(tmp_path / "x_color.png", WIDTH + 1)
    with pytest.raises(DatasetError, match=r"differs from x_color\.png"):
        open_dataset("tum_rgbd", tmp_path)[0]
    write_pgm(tmp_path / "y_depth.pgm", np.full((2, 2), 0x0F0F, np.uint16), "<")
    with pytest.raises(DatasetError, match="11 bits"):
        read_nyu_raw_pgm(tmp_path / "y_depth.pgm")


# kind, folder, camera, least and greatest share of pixels with depth (measured: 0.81, 0.82, 0.93)
SAMPLES = [
    ("tum_rgbd", "tum_rgbd_sample", TUM_CAMERA, 0.75, 0.9),
    ("sun_rgbd", "sun_rgbd_sample", NYU_CAMERA, 0.75, 0.9),
    ("nyu_raw", "nyu_v2_raw_sample", NYU_CAMERA, 0.85, 0.98),
]


@pytest.mark.parametrize(("kind", "folder", "camera", "least", "most"), SAMPLES)
def test_shared_sample(kind: str, folder: str, camera, least: float, most: float) -> None:
    root = DATA / folder
    if not root.is_dir():
        pytest.skip(f"shared RGB-D sample not at {root}")
    dataset = open_dataset(kind, root)
    assert len(dataset) == 1
    frame = dataset[0]
    assert frame.left.shape == (480, 640, 3) and frame.depth.shape == (480, 640)
    assert frame.camera == camera
    valid = frame.valid
    assert least < valid.mean() < most
    assert np.isnan(frame.depth[~valid]).all()
    # A room: nothing nearer than the Kinect's range, nothing beyond 10 m, the middle 1.5-5 m
    # (a wrong scale or an unrotated SUN map would put it at tens of metres).
    depth = frame.depth[valid]
    assert depth.min() > 0.5 and depth.max() < 10.0
    assert 1.5 < np.median(depth) < 5.0


@pytest.mark.usefixtures("one_torch_thread")
def test_eval_scores_a_sample(tmp_path: Path) -> None:
    root = DATA / "tum_rgbd_sample"
    if not root.is_dir():
        pytest.skip(f"shared RGB-D sample not at {root}")
    artifact = make_artifact(tmp_path, "cnd_mono", **SMALL)
    result_path = tmp_path / "eval.json"
    code = cli.main(["eval", "--model", str(artifact), "--data", "tum_rgbd", "--data-root",
                     str(root), "--device", "cpu", "--no-progress", "--json", str(result_path)])
    assert code == 0
    result = json.loads(result_path.read_text())
    assert result["frames"] == 1
    assert result["data"] == {"kind": "tum_rgbd", "root": str(root)}
    assert all(math.isfinite(value) for value in result["metrics"].values())
