"""ApolloScape scene parsing: a road folder with ColorImage/ and Depth/ written by the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.dataset_files import write_rgb, write_uint16

from cnd_depth_ros.data.apolloscape import APOLLO_CAMERAS, ApolloScapeDataset
from cnd_depth_ros.errors import DatasetError

WIDTH, HEIGHT = 338, 271  # the 3384 x 2710 frames at 1/10


def write_frame(root: Path, name: str, depth_mm5: np.ndarray | None) -> None:
    camera = name.rsplit("_", 2)[-2:]
    folder = Path("Record001") / f"{camera[0]} {camera[1]}"
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[..., 0] = 200  # red, so a BGR/RGB mix-up shows even through JPEG
    write_rgb(root / "ColorImage" / folder / f"{name}.jpg", image)
    if depth_mm5 is not None:
        write_uint16(root / "Depth" / folder / f"{name}.png", depth_mm5)


def test_road_folder_frames_are_metric_with_scaled_intrinsics(tmp_path: Path) -> None:
    depth = np.zeros((HEIGHT, WIDTH), np.uint16)
    depth[100:, :] = 200 * 12  # 12 m of road
    depth[10, 10] = 200 * 300 + 100  # 300.5 m
    write_frame(tmp_path, "170908_061502408_Camera_5", depth)
    write_frame(tmp_path, "170908_061502408_Camera_6", depth)
    write_frame(tmp_path, "170908_061503000_Camera_5", None)  # no depth: skipped

    dataset = ApolloScapeDataset(tmp_path)
    assert len(dataset) == 2
    frame = dataset[0]
    assert frame.name == "apolloscape/170908_061502408_Camera_5" and frame.right is None
    assert abs(int(frame.left[50, 50, 0]) - 200) < 8 and frame.left[50, 50, 2] < 8
    assert frame.depth[10, 10] == 300.5 and (frame.depth[100:] == 12.0).all()
    assert np.isnan(frame.depth[:100]).sum() == 100 * WIDTH - 1
    assert frame.camera == APOLLO_CAMERAS["Camera_5"].resized(WIDTH, HEIGHT)
    assert frame.camera.fx == pytest.approx(230.2, abs=0.1)
    assert dataset[1].camera == APOLLO_CAMERAS["Camera_6"].resized(WIDTH, HEIGHT)


def test_not_a_road_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="ColorImage"):
        ApolloScapeDataset(tmp_path)
    with pytest.raises(ValueError, match="depth_scale"):
        ApolloScapeDataset(tmp_path, depth_scale=0.0)
