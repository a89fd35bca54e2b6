"""rosbag2 dataset: real sqlite3 and MCAP bags written with ``rosbags``, read back as frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from cnd_depth_ros.data.rosbag import RosbagDataset
from cnd_depth_ros.data.sources import DataSpec, open_frames
from cnd_depth_ros.errors import DatasetError
from cnd_depth_ros.messages.topics import DEFAULT_TOPICS

WIDTH, HEIGHT, FX, BASELINE = 8, 6, 50.0, 0.12
TYPESTORE = get_typestore(Stores.LATEST)
Image = TYPESTORE.types["sensor_msgs/msg/Image"]
CameraInfo = TYPESTORE.types["sensor_msgs/msg/CameraInfo"]
Header = TYPESTORE.types["std_msgs/msg/Header"]
Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
RegionOfInterest = TYPESTORE.types["sensor_msgs/msg/RegionOfInterest"]


def header(stamp: int) -> Any:
    return Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="left_optical")


def image(stamp: int, encoding: str, pixels: np.ndarray, pad: int = 0) -> Any:
    """An Image message with ``pad`` bytes of row padding."""
    rows = pixels.reshape(HEIGHT, -1).view(np.uint8)
    step = rows.shape[1] + pad
    data = np.zeros((HEIGHT, step), np.uint8)
    data[:, : rows.shape[1]] = rows
    return Image(
        header=header(stamp),
        height=HEIGHT,
        width=WIDTH,
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=data.reshape(-1),
    )


def camera_info(stamp: int, tx: float) -> Any:
    return CameraInfo(
        header=header(stamp),
        height=HEIGHT,
        width=WIDTH,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=np.array([FX, 0, 3.5, 0, FX, 2.5, 0, 0, 1], dtype=np.float64),
        r=np.eye(3).reshape(-1),
        p=np.array([FX, 0, 3.5, tx, 0, FX, 2.5, 0, 0, 0, 1, 0], dtype=np.float64),
        binning_x=0,
        binning_y=0,
        roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def rgb(value: int) -> np.ndarray:
    pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    pixels[..., 0], pixels[..., 2] = value, 255 - value
    return pixels


def depth_mm(stamp_index: int) -> np.ndarray:
    depth = np.full((HEIGHT, WIDTH), 1000 + 250 * stamp_index, np.uint16)
    depth[0, 0] = 0
    return depth


def write_bag(path: Path, storage: StoragePlugin, *, depth_topic: str = "/ground_truth/depth"):
    """Three stereo frames 0.1 s apart; the last has no depth. Right images are bgr8 with row
    padding, depth alternates 16UC1 millimetres and 32FC1 metres."""
    with Writer(path, version=9, storage_plugin=storage) as writer:
        connections = {
            topic: writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            for topic, msgtype in (
                (DEFAULT_TOPICS["left_topic"], Image.__msgtype__),
                (DEFAULT_TOPICS["right_topic"], Image.__msgtype__),
                (DEFAULT_TOPICS["left_info_topic"], CameraInfo.__msgtype__),
                (DEFAULT_TOPICS["right_info_topic"], CameraInfo.__msgtype__),
                (depth_topic, Image.__msgtype__),
            )
        }

        def write(topic: str, log_time: int, message: Any) -> None:
            data = TYPESTORE.serialize_cdr(message, message.__msgtype__)
            writer.write(connections[topic], log_time, data)

        for index in range(3):
            stamp = 1_700_000_000 * 10**9 + index * 100_000_000
            log_time = stamp + 5_000_000  # recorded a little after capture
            write(DEFAULT_TOPICS["left_topic"], log_time, image(stamp, "rgb8", rgb(10 * index)))
            bgr = rgb(10 * index + 1)[..., ::-1].copy()
            write(DEFAULT_TOPICS["right_topic"], log_time + 1, image(stamp, "bgr8", bgr, pad=4))
            write(DEFAULT_TOPICS["left_info_topic"], log_time, camera_info(stamp, 0.0))
            write(DEFAULT_TOPICS["right_info_topic"], log_time, camera_info(stamp, -FX * BASELINE))
            if index == 0:
                write(depth_topic, log_time, image(stamp, "16UC1", depth_mm(index)))
            elif index == 1:
                metres = depth_mm(index).astype(np.float32) / 1000
                write(depth_topic, log_time, image(stamp, "32FC1", metres))


@pytest.mark.parametrize("storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP])
def test_stereo_frames_matched_by_stamp(tmp_path: Path, storage: StoragePlugin) -> None:
    write_bag(tmp_path / "bag", storage)
    dataset = RosbagDataset(tmp_path / "bag")
    assert len(dataset) == 2  # the third frame has no depth
    for index, frame in enumerate(dataset):
        assert frame.right is not None and frame.depth is not None
        np.testing.assert_array_equal(frame.left, rgb(10 * index))
        np.testing.assert_array_equal(frame.right, rgb(10 * index + 1))
        assert np.isnan(frame.depth[0, 0])
        np.testing.assert_allclose(frame.depth[1:], 1.0 + 0.25 * index)
        assert frame.camera.fx == FX and frame.camera.cx == 3.5
        assert frame.camera.baseline == pytest.approx(BASELINE)
    assert dataset[1].name == "bag/1700000000100000000"


def test_mono_and_custom_topics(tmp_path: Path) -> None:
    write_bag(tmp_path / "bag", StoragePlugin.SQLITE3, depth_topic="/sim/depth")
    dataset = RosbagDataset(tmp_path / "bag", right_topic=None, depth_topic="/sim/depth")
    frame = dataset[0]
    assert len(dataset) == 2 and frame.right is None and frame.camera.baseline is None


def test_missing_topics_are_named(tmp_path: Path) -> None:
    write_bag(tmp_path / "bag", StoragePlugin.MCAP)
    with pytest.raises(DatasetError, match="lacks topics") as error:
        RosbagDataset(tmp_path / "bag", depth_topic="/nope/depth", right_topic="/nope/right")
    assert "/nope/depth" in str(error.value) and "/nope/right" in str(error.value)


def test_slop_matches_nearby_stamps(tmp_path: Path) -> None:
    write_bag(tmp_path / "bag", StoragePlugin.SQLITE3)
    with pytest.raises(ValueError, match="slop"):
        RosbagDataset(tmp_path / "bag", slop=-1.0)
    # 0.15 s reaches the neighbouring frame's depth, so the third left image gets one too.
    assert len(RosbagDataset(tmp_path / "bag", slop=0.15)) == 3


def test_not_a_bag(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read rosbag"):
        RosbagDataset(tmp_path)


def test_data_specs_carry_loader_options(tmp_path: Path) -> None:
    """``--data rosbag:BAG,NAME=VALUE,...`` (train, finetune, calibration): a bag with its own
    topic names, values read as numbers or None where they are, and a bad option named."""
    write_bag(tmp_path / "bag", StoragePlugin.SQLITE3, depth_topic="/sim/depth")
    text = f"rosbag:{tmp_path / 'bag'},depth_topic=/sim/depth,right_topic=none,slop=0.15"
    spec = DataSpec.parse(text)
    assert spec.options == (("depth_topic", "/sim/depth"), ("right_topic", None), ("slop", 0.15))
    assert DataSpec.parse(str(spec)) == spec
    frames = open_frames([spec], stereo=False)
    assert len(frames) == 3 and frames[0].right is None  # mono, and the slop reached frame 3
    with pytest.raises(ValueError, match="must be NAME=VALUE"):
        DataSpec.parse(f"rosbag:{tmp_path / 'bag'},left_topic")
    with pytest.raises(ValueError, match=r"bad options \['left_topics'\]"):
        open_frames([DataSpec.parse(f"rosbag:{tmp_path / 'bag'},left_topics=/x")], stereo=False)
