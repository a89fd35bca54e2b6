"""open_dataset: one entry point for every format, with errors that list the valid choices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnd_depth_ros.data.kitti import KittiStereoDataset
from cnd_depth_ros.data.middlebury import MotorcycleDataset
from cnd_depth_ros.data.registry import DATASET_KINDS, open_dataset
from cnd_depth_ros.errors import DatasetError


def test_kinds_cover_every_format() -> None:
    assert {
        "synthetic", "kitti", "kitti_raw", "middlebury", "nyu", "nyu_raw", "sun_rgbd", "tum_rgbd",
        "apolloscape", "rosbag",
    } <= set(DATASET_KINDS)


def test_unknown_kind_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown dataset kind 'kiti'") as error:
        open_dataset("kiti", "/data")
    assert all(kind in str(error.value) for kind in DATASET_KINDS)


def test_options_reach_the_loader_and_bad_ones_are_named(tmp_path: Path) -> None:
    for folder in ("colored_0", "colored_1", "disp_occ"):
        (tmp_path / folder).mkdir()
    dataset = open_dataset("kitti", tmp_path, fx=700.0)
    assert isinstance(dataset, KittiStereoDataset) and dataset.fx == 700.0 and len(dataset) == 0
    with pytest.raises(ValueError, match="focal_length"):
        open_dataset("kitti", tmp_path, focal_length=700.0)


def test_root_is_required_except_for_the_motorcycle_pair(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a root"):
        open_dataset("middlebury")
    motorcycle = open_dataset("motorcycle")
    assert isinstance(motorcycle, MotorcycleDataset) and len(motorcycle) == 1
    assert np.isfinite(motorcycle[0].depth).any()


def test_format_errors_come_from_the_loader(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no Middlebury scene"):
        open_dataset("middlebury", tmp_path)


def test_open_frames_concatenates_sources_in_order() -> None:
    """Two sources read as one lazy sequence: lengths add, indices (negative too) and slices
    reach the right source's frame."""
    from cnd_depth_ros.data.sources import ConcatFrames, DataSpec, open_frames

    frames = open_frames([DataSpec.parse("motorcycle:-"), DataSpec.parse("motorcycle:-")],
                         stereo=True)
    assert isinstance(frames, ConcatFrames) and len(frames) == 2
    first, last = frames[0], frames[-1]
    np.testing.assert_array_equal(first.left, last.left)
    assert [frame.name for frame in frames[0:2]] == [first.name, last.name]
    with pytest.raises(IndexError):
        frames[2]
