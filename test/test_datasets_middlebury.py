"""Middlebury loaders: PFM decoding, 2014 and 2003 fixtures, the scikit-image motorcycle pair
(metric, and photometrically consistent once the right view is shifted by doffs), and the
shared 2006 Aloe sample."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures.dataset_files import write_rgb

from cnd_depth_ros.data.middlebury import (
    LEGACY_BASELINE,
    LEGACY_FOCAL,
    MOTORCYCLE_CALIBRATION,
    MiddleburyDataset,
    MotorcycleDataset,
    read_calib,
)
from cnd_depth_ros.data.readers import read_pfm
from cnd_depth_ros.errors import DatasetError

SHARED_ALOE = Path(__file__).resolve().parents[2] / "shared" / "data" / "middlebury2006_aloe"
WIDTH, HEIGHT = 20, 8


def write_pfm(path: Path, values: np.ndarray, little_endian: bool = True) -> None:
    """A Portable Float Map as Middlebury writes it: rows bottom to top, scale sign = order."""
    header = f"Pf\n{values.shape[1]} {values.shape[0]}\n{-1.0 if little_endian else 1.0}\n"
    data = values[::-1].astype("<f4" if little_endian else ">f4").tobytes()
    path.write_bytes(header.encode() + data)


def texture(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


@pytest.mark.parametrize("little_endian", [True, False])
def test_read_pfm_rows_and_byte_order(tmp_path: Path, little_endian: bool) -> None:
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    values[1, 2] = np.inf
    write_pfm(tmp_path / "d.pfm", values, little_endian)
    np.testing.assert_array_equal(read_pfm(tmp_path / "d.pfm"), values)


def test_read_pfm_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "d.pfm").write_bytes(b"P5\n2 2\n255\n\0\0\0\0")
    with pytest.raises(DatasetError, match="not a PFM"):
        read_pfm(tmp_path / "d.pfm")


def test_2014_scene_is_metric_with_a_common_principal_point(tmp_path: Path) -> None:
    scene = tmp_path / "Toy-perfect"
    scene.mkdir()
    (scene / "calib.txt").write_text(
        "cam0=[1000.5 0 9.5; 0 1000.5 3.5; 0 0 1]\ncam1=[1000.5 0 12.5; 0 1000.5 3.5; 0 0 1]\n"
        "doffs=3\nbaseline=150.0\nwidth=20\nheight=8\nndisp=64\nvmin=5\nvmax=40\n"
    )
    left, right = texture(0), texture(1)
    write_rgb(scene / "im0.png", left)
    write_rgb(scene / "im1.png", right)
    disparity = np.full((HEIGHT, WIDTH), 27.0, np.float32)
    disparity[0, :5] = np.inf
    write_pfm(scene / "disp0.pfm", disparity)
    write_pfm(scene / "disp1.pfm", disparity + 7.0, little_endian=False)

    dataset = MiddleburyDataset(tmp_path)
    assert len(dataset) == 1
    frame = dataset[0]
    assert frame.name == "middlebury2014/Toy-perfect"
    assert frame.camera.fx == 1000.5 and frame.camera.cx == 9.5
    assert frame.camera.baseline == pytest.approx(0.150)
    assert frame.depth is not None and frame.right_depth is not None and frame.right is not None
    assert np.isnan(frame.depth[0, :5]).all()
    np.testing.assert_allclose(frame.depth[1:], 1000.5 * 0.150 / 30.0, rtol=1e-6)
    np.testing.assert_allclose(frame.right_depth[1:, :-3], 1000.5 * 0.150 / 37.0, rtol=1e-6)
    # The right view moves left by doffs (3 px), so disparity becomes fx * B / Z = d + doffs.
    np.testing.assert_array_equal(frame.right[:, :-3], right[:, 3:])
    assert (frame.right[:, -3:] == 0).all()
    np.testing.assert_array_equal(frame.left, left)


def test_2003_scene_uses_its_disparity_scale_and_the_legacy_rig(tmp_path: Path) -> None:
    write_rgb(tmp_path / "im2.png", texture(2))
    write_rgb(tmp_path / "im6.png", texture(3))
    encoded = np.full((HEIGHT, WIDTH), 4 * 25, np.uint8)
    encoded[3, 3] = 0
    assert cv2.imwrite(str(tmp_path / "disp2.png"), encoded)

    frame = MiddleburyDataset(tmp_path)[0]
    assert frame.name == f"middlebury2003/{tmp_path.name}"
    assert np.isnan(frame.depth[3, 3]) and frame.valid.sum() == HEIGHT * WIDTH - 1
    np.testing.assert_allclose(frame.depth[0, 0], LEGACY_FOCAL * LEGACY_BASELINE / 25.0)
    assert frame.right_depth is None
    scaled = MiddleburyDataset(tmp_path, focal=500.0, baseline=0.1, disparity_scale=2.0)[0]
    np.testing.assert_allclose(scaled.depth[0, 0], 500.0 * 0.1 / 50.0)


def test_calibration_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "calib.txt").write_text("cam0=[1 0 0; 0 1 0; 0 0 1]\n")
    with pytest.raises(DatasetError, match=r"calib\.txt"):
        read_calib(tmp_path / "calib.txt")
    with pytest.raises(DatasetError, match="no Middlebury scene"):
        MiddleburyDataset(tmp_path)


def test_motorcycle_pair_is_metric_and_consistent() -> None:
    dataset = MotorcycleDataset()
    frame = dataset[0]
    camera = frame.camera
    assert (camera.width, camera.height) == (741, 500)
    assert camera.fx == MOTORCYCLE_CALIBRATION.fx == 994.978
    assert camera.baseline == pytest.approx(0.193001)
    from skimage import data

    _, right, disparity = data.stereo_motorcycle()
    valid = np.isfinite(disparity)
    np.testing.assert_array_equal(frame.valid, valid)
    expected = 994.978 * 0.193001 / (disparity[valid] + 31.086)
    np.testing.assert_allclose(frame.depth[valid], expected, rtol=1e-5)
    assert frame.depth[valid].min() > 2.0 and frame.depth[valid].max() < 5.1  # a room-size scene

    # The package's rule d = fx * B / Z must map left pixels onto their right-view twins.
    left = frame.left.astype(np.float32).mean(axis=2)
    rows, cols = np.nonzero(valid)

    def photometric_error(right_view: np.ndarray) -> float:
        grey = right_view.astype(np.float32).mean(axis=2)
        target = np.round(cols - camera.fx * camera.baseline / frame.depth[rows, cols])
        inside = target >= 0
        return float(
            np.abs(
                left[rows[inside], cols[inside]] - grey[rows[inside], target[inside].astype(int)]
            ).mean()
        )

    assert frame.right is not None
    shifted, unshifted = photometric_error(frame.right), photometric_error(right)
    assert shifted < 10.0 and shifted < 0.5 * unshifted


@pytest.mark.skipif(not SHARED_ALOE.is_dir(), reason=f"shared Aloe sample not at {SHARED_ALOE}")
def test_shared_2006_aloe_sample() -> None:
    frame = MiddleburyDataset(SHARED_ALOE)[0]
    assert frame.name == "middlebury2006/middlebury2006_aloe"
    assert frame.left.shape == (1110, 1282, 3) and frame.right is not None
    assert 0.9 < frame.valid.mean() < 1.0
    truth = cv2.imread(str(SHARED_ALOE / "aloeGT.png"), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    np.testing.assert_allclose(
        frame.depth[truth > 0], LEGACY_FOCAL * LEGACY_BASELINE / truth[truth > 0], rtol=1e-6
    )
