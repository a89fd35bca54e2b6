"""KITTI loaders against tiny fixtures written in the KITTI formats, and the shared 2012 sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.dataset_files import write_rgb, write_uint16

from cnd_depth_ros.data.kitti import (
    DEFAULT_BASELINE,
    DEFAULT_FX,
    KittiDepthDataset,
    KittiStereoDataset,
)
from cnd_depth_ros.errors import DatasetError

SHARED_KITTI = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti2012_stereo"
WIDTH, HEIGHT = 24, 10
FX, CX, CY = 700.0, 11.5, 4.25
# P_rect_02 / P_rect_03 of a rig with baseline 0.5 m: P[0, 3] = -fx * (camera x offset).
P2 = [FX, 0, CX, 35.0, 0, FX, CY, 0.2, 0, 0, 1, 0.004]
P3 = [FX, 0, CX, 35.0 - FX * 0.5, 0, FX, CY, 0.2, 0, 0, 1, 0.004]


def colour(value: int) -> np.ndarray:
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = value, 20, 200  # R differs from B: order shows
    return image


def disparity_png() -> tuple[np.ndarray, np.ndarray]:
    """KITTI's encoding (value / 256, 0 = none) and the disparity it holds."""
    disparity = np.tile(np.linspace(5.0, 60.0, WIDTH, dtype=np.float32), (HEIGHT, 1))
    encoded = np.round(disparity * 256).astype(np.uint16)
    encoded[:3, :4] = 0
    return encoded, encoded.astype(np.float32) / 256


def calibration_text(prefix: str) -> str:
    numbers = {2: P2, 3: P3}
    lines = ["calib_time: 09-Jan-2012 13:57:47", "corner_dist: 9.950000e-02"]
    lines += [f"{prefix}{i}: " + " ".join(f"{v:.6e}" for v in numbers[i]) for i in (2, 3)]
    return "\n".join(lines) + "\n"


def test_stereo_2015_layout(tmp_path: Path) -> None:
    encoded, disparity = disparity_png()
    write_rgb(tmp_path / "image_2" / "000000_10.png", colour(100))
    write_rgb(tmp_path / "image_3" / "000000_10.png", colour(50))
    write_uint16(tmp_path / "disp_occ_0" / "000000_10.png", encoded)
    write_uint16(tmp_path / "disp_occ_0" / "000000_11.png", encoded)  # no image: not a frame
    (tmp_path / "calib_cam_to_cam").mkdir()
    (tmp_path / "calib_cam_to_cam" / "000000.txt").write_text(calibration_text("P_rect_0"))

    dataset = KittiStereoDataset(tmp_path)
    assert len(dataset) == 1 and dataset.layout == "2015"
    frame = dataset[0]
    assert frame.name == "kitti2015/000000_10"
    assert frame.right is not None and frame.depth is not None
    np.testing.assert_array_equal(frame.left[0, 0], [100, 20, 200])
    np.testing.assert_array_equal(frame.right[0, 0], [50, 20, 200])
    camera = frame.camera
    assert (camera.fx, camera.cx, camera.cy) == (FX, CX, CY)
    assert camera.baseline == pytest.approx(0.5)
    assert np.isnan(frame.depth[:3, :4]).all()
    valid = encoded > 0
    np.testing.assert_allclose(frame.depth[valid], FX * 0.5 / disparity[valid], rtol=1e-6)


def test_stereo_2012_layout_with_defaults_and_options(tmp_path: Path) -> None:
    encoded, disparity = disparity_png()
    for name in ("000003_10.png", "000004_10.png"):
        write_rgb(tmp_path / "colored_0" / name, colour(10))
        write_rgb(tmp_path / "colored_1" / name, colour(20))
        write_uint16(tmp_path / "disp_noc" / name, encoded)
    write_uint16(tmp_path / "disp_occ" / "000003_10.png", encoded)
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "000004.txt").write_text(calibration_text("P"))

    assert len(KittiStereoDataset(tmp_path)) == 1
    noc = KittiStereoDataset(tmp_path, occluded=False)
    assert [frame.name for frame in noc] == ["kitti2012/000003_10", "kitti2012/000004_10"]
    uncalibrated, calibrated = noc[0], noc[1]
    assert uncalibrated.camera.fx == DEFAULT_FX
    assert uncalibrated.camera.baseline == DEFAULT_BASELINE
    assert uncalibrated.camera.cx == (WIDTH - 1) / 2
    assert calibrated.camera.fx == FX and calibrated.camera.baseline == pytest.approx(0.5)
    valid = encoded > 0
    custom = KittiStereoDataset(tmp_path, occluded=False, fx=800.0, baseline=0.25)[0]
    np.testing.assert_allclose(custom.depth[valid], 800.0 * 0.25 / disparity[valid], rtol=1e-6)


def test_raw_with_depth_annotations(tmp_path: Path) -> None:
    raw, annotations = tmp_path / "raw", tmp_path / "annotated"
    date, drive = "2011_09_26", "2011_09_26_drive_0002_sync"
    (raw / date).mkdir(parents=True)
    (raw / date / "calib_cam_to_cam.txt").write_text(calibration_text("P_rect_0"))
    depth = np.full((HEIGHT, WIDTH), 0, np.uint16)
    depth[2, 3], depth[7, 20] = 256 * 10, 256 * 42 + 128  # 10 m and 42.5 m
    for frame_id in ("0000000005", "0000000006"):
        write_rgb(raw / date / drive / "image_02" / "data" / f"{frame_id}.png", colour(1))
        write_rgb(raw / date / drive / "image_03" / "data" / f"{frame_id}.png", colour(2))
    gt = annotations / "train" / drive / "proj_depth" / "groundtruth"
    write_uint16(gt / "image_02" / "0000000005.png", depth)
    write_uint16(gt / "image_03" / "0000000005.png", depth * 2)

    dataset = KittiDepthDataset(raw, annotations)
    assert len(dataset) == 1  # frame 6 has no annotation
    frame = dataset[0]
    assert frame.name == f"kitti_raw/{drive}/0000000005"
    assert frame.depth is not None and frame.right_depth is not None
    assert frame.depth[2, 3] == 10.0 and frame.depth[7, 20] == 42.5
    assert np.isfinite(frame.depth).sum() == 2
    assert frame.right_depth[7, 20] == 85.0
    assert frame.camera.baseline == pytest.approx(0.5)


def test_missing_layout_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="image_2/ or colored_0/"):
        KittiStereoDataset(tmp_path)
    with pytest.raises(DatasetError, match="no depth annotations"):
        KittiDepthDataset(tmp_path)


@pytest.mark.skipif(not SHARED_KITTI.is_dir(), reason=f"shared KITTI sample not at {SHARED_KITTI}")
def test_shared_kitti2012_sample() -> None:
    dataset = KittiStereoDataset(SHARED_KITTI)
    assert len(dataset) == 2
    frame = dataset[0]
    assert frame.left.shape == (370, 1226, 3) and frame.right is not None
    valid = frame.valid
    assert 0.2 < valid.mean() < 0.4  # sparse LiDAR
    depth = frame.depth[valid]
    assert depth.min() > 3.0 and depth.max() < 120.0  # metres: a street seen from a car
