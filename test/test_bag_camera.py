"""The camera a bag yields is the same in every command: the rosbag dataset (train, finetune,
eval), replay's ground-truth matching (rosbags messages) and the node (rclpy messages) read one
real rosbag2 whose camera_infos carry binning and a ``K`` that differs from the rectified ``P``,
and agree on the camera, the pixels and the depth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.data.rosbag import RosbagDataset
from cnd_depth_ros.errors import DatasetError
from cnd_depth_ros.messages.bag import CAMERA_INFO, IMAGE, BagReader, BagRecorder
from cnd_depth_ros.messages.camera_info import camera_from_info, camera_info_for
from cnd_depth_ros.messages.image import array_to_image, depth_image_to_metres
from cnd_depth_ros.messages.topics import DEFAULT_TOPICS

#: The calibration (full sensor resolution) and the binned images the driver publishes.
FULL = PinholeCamera(width=128, height=96, fx=100.0, fy=101.0, cx=63.0, cy=47.0, baseline=0.2)
BINNING = 2
STAMP_NS = 1_700_000_000_123_456_789


def _info(right: bool, header: Header) -> CameraInfo:
    info = camera_info_for(FULL, header, right=right)
    info.k = [FULL.fx * 1.1, 0.0, 60.0, 0.0, FULL.fy * 1.1, 50.0, 0.0, 0.0, 1.0]  # unrectified
    info.binning_x = info.binning_y = BINNING
    return info


def _write_bag(path: Path) -> tuple[np.ndarray, np.ndarray]:
    header = Header(frame_id="left_optical")
    header.stamp.sec, header.stamp.nanosec = divmod(STAMP_NS, 10**9)
    height, width = FULL.height // BINNING, FULL.width // BINNING
    rng = np.random.default_rng(3)
    left = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    depth = rng.uniform(1.0, 20.0, (height, width)).astype(np.float32)
    depth[0] = np.nan
    right_bgr = left[:, ::-1, ::-1].copy()  # the mirrored view, stored as bgr8
    messages = {
        DEFAULT_TOPICS["left_topic"]: (IMAGE, array_to_image(left, "rgb8", header)),
        DEFAULT_TOPICS["right_topic"]: (IMAGE, array_to_image(right_bgr, "bgr8", header)),
        DEFAULT_TOPICS["left_info_topic"]: (CAMERA_INFO, _info(False, header)),
        DEFAULT_TOPICS["right_info_topic"]: (CAMERA_INFO, _info(True, header)),
        DEFAULT_TOPICS["depth_topic"]: (IMAGE, array_to_image(depth, "32FC1", header)),
    }
    recorder = BagRecorder(path)
    for topic, (msgtype, message) in messages.items():
        recorder.add_topic(topic, msgtype)
        recorder.write(topic, STAMP_NS, serialize_message(message))
    recorder.close()
    return left, depth


def test_every_reader_sees_the_same_camera(tmp_path: Path) -> None:
    left, depth = _write_bag(tmp_path / "bag")
    expected = FULL.resized(FULL.width // BINNING, FULL.height // BINNING)

    (frame,) = RosbagDataset(tmp_path / "bag")  # train, finetune, eval
    with BagReader(tmp_path / "bag") as reader:  # replay's matching: rosbags messages
        infos = [
            reader.deserialize(topic, raw)
            for topic, _, raw in reader.messages(
                [DEFAULT_TOPICS["left_info_topic"], DEFAULT_TOPICS["right_info_topic"]]
            )
        ]
        raw_infos = [
            raw for _, _, raw in reader.messages(
                [DEFAULT_TOPICS["left_info_topic"], DEFAULT_TOPICS["right_info_topic"]]
            )
        ]
    # Both infos share a stamp and a frame: the right one is the one with P[0, 3] < 0.
    left_info, right_info = sorted(infos, key=lambda info: -float(info.p[3]))
    node_left, node_right = sorted(
        (deserialize_message(raw, CameraInfo) for raw in raw_infos), key=lambda info: -info.p[3]
    )

    assert frame.camera == expected
    assert camera_from_info(left_info, right_info) == expected
    assert camera_from_info(node_left, node_right) == expected
    np.testing.assert_array_equal(frame.left, left)
    np.testing.assert_array_equal(frame.right, left[:, ::-1])
    np.testing.assert_array_equal(frame.depth, depth)


def test_a_camera_info_the_node_refuses_is_refused_by_the_dataset(tmp_path: Path) -> None:
    """A camera_info with a partial region of interest: the node skips the pair, and the
    dataset says which bag and why rather than reading another camera."""
    header = Header(frame_id="left_optical")
    header.stamp.sec, header.stamp.nanosec = divmod(STAMP_NS, 10**9)
    info = camera_info_for(FULL, header)
    info.roi.width, info.roi.height = 32, 32
    image = array_to_image(np.zeros((FULL.height, FULL.width, 3), np.uint8), "rgb8", header)
    recorder = BagRecorder(tmp_path / "bag")
    for topic, msgtype, message in (
        (DEFAULT_TOPICS["left_topic"], IMAGE, image),
        (DEFAULT_TOPICS["left_info_topic"], CAMERA_INFO, info),
    ):
        recorder.add_topic(topic, msgtype)
        recorder.write(topic, STAMP_NS, serialize_message(message))
    recorder.close()
    with pytest.raises(DatasetError, match="region of interest"):
        RosbagDataset(tmp_path / "bag", right_topic=None, depth_topic=None)


def test_depth_decoding_is_shared() -> None:
    """16UC1 millimetres and 32FC1 metres decode to the same metres, 0 and NaN as unknown."""
    metres = np.array([[0.0, 1.5, np.nan]], np.float32)
    millimetres = np.array([[0, 1500, 0]], np.uint16)
    header = Header()
    from_float = depth_image_to_metres(array_to_image(metres, "32FC1", header))
    from_mm = depth_image_to_metres(array_to_image(millimetres, "16UC1", header))
    np.testing.assert_array_equal(from_float, from_mm)
    assert np.isnan(from_float[0, 0]) and from_float[0, 1] == 1.5
