"""The one bag writer (``messages.bag.BagWriter``) and the message builders it is fed with: the
node's rclpy messages and a bag's rosbags messages come from the same builders and hold the same
values; a bag appears at its path only once it is complete."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml
from rclpy.serialization import serialize_message

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.messages.bag import (
    CAMERA_INFO,
    IMAGE,
    TF_MESSAGE,
    BagReader,
    BagWriteError,
    BagWriter,
    deserialize_cdr,
)
from cnd_depth_ros.messages.builders import make_header
from cnd_depth_ros.messages.camera_info import camera_from_info, camera_info_for
from cnd_depth_ros.messages.image import array_to_image, image_to_array
from cnd_depth_ros.messages.tf_static import StaticTransform, StaticTransforms, tf_message

CAMERA = PinholeCamera(width=6, height=4, fx=5.0, fy=5.5, cx=2.5, cy=1.5, baseline=0.3)
STAMP_NS = 1_700_000_000_123_456_789
TRANSFORM = StaticTransform("base_link", "left", (0.1, 0.2, 1.5), (0.5, -0.5, 0.5, -0.5))


def _built(typestore: object | None) -> dict[str, object]:
    """The same messages, rclpy's (``typestore`` None; without tf2_msgs where it is not
    installed) or a type store's."""
    header = make_header(STAMP_NS, "left", typestore)
    pixels = np.arange(CAMERA.height * CAMERA.width * 3, dtype=np.uint8).reshape(4, 6, 3)
    depth = np.linspace(0.5, 9.0, CAMERA.height * CAMERA.width, dtype=np.float32).reshape(4, 6)
    depth[0, 0] = np.nan
    built = {
        IMAGE: array_to_image(pixels, "rgb8", header, typestore=typestore),
        "32FC1": array_to_image(depth, "32FC1", header, typestore=typestore),
        CAMERA_INFO: camera_info_for(CAMERA, header, right=True, typestore=typestore),
    }
    if typestore is not None or importlib.util.find_spec("tf2_msgs") is not None:
        built[TF_MESSAGE] = tf_message([TRANSFORM], STAMP_NS, typestore)
    return built


@pytest.mark.parametrize("distro", ["humble", "jazzy", "kilted"])
def test_rclpy_and_bag_messages_are_the_same_bytes(tmp_path: Path, distro: str) -> None:
    with BagWriter(tmp_path / "bag", distro=distro) as bag:
        for_bag = _built(bag.typestore)
    store = bag.typestore
    for name, message in _built(None).items():
        msgtype = IMAGE if name == "32FC1" else name
        # rclpy's bytes read by rosbags and written again: CDR padding bytes are left as they
        # are in rclpy's buffer, zeros in rosbags'.
        from_rclpy = store.deserialize_cdr(serialize_message(message), msgtype)
        assert bytes(store.serialize_cdr(from_rclpy, msgtype)) == bytes(
            store.serialize_cdr(for_bag[name], msgtype)
        ), name


def test_a_written_bag_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "out" / "bag"  # the parent folder is made
    with BagWriter(path, "mcap", "humble") as bag:
        messages = _built(bag.typestore)
        bag.write_message("/tf_static", STAMP_NS, messages[TF_MESSAGE], latched=True)
        bag.write_message("/left/camera_info", STAMP_NS, messages[CAMERA_INFO])
        bag.write_message("/left/image_rect", STAMP_NS, messages[IMAGE])
        bag.write_message("/left/image_rect", STAMP_NS + 1, messages[IMAGE])
    assert bag.count == 4 and sorted(p.name for p in path.parent.iterdir()) == ["bag"]
    metadata = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["version"] == 8
    latched = next(t["topic_metadata"] for t in metadata["topics_with_message_count"]
                   if t["topic_metadata"]["name"] == "/tf_static")
    assert "durability: 1" in latched["offered_qos_profiles"]  # transient local, as tf2 latches

    with BagReader(path) as reader:
        assert {name: topic.count for name, topic in reader.topics.items()} == {
            "/tf_static": 1, "/left/camera_info": 1, "/left/image_rect": 2,
        }
        ((_, _, raw),) = reader.messages(["/left/camera_info"])
        assert camera_from_info(reader.deserialize("/left/camera_info", raw)) == \
            PinholeCamera(6, 4, 5.0, 5.5, 2.5, 1.5)
        image = next(reader.messages(["/left/image_rect"]))[2]
        np.testing.assert_array_equal(image_to_array(deserialize_cdr(image, IMAGE)),
                                      image_to_array(messages[IMAGE]))  # type: ignore[arg-type]
        pose = StaticTransforms(reader).lookup("base_link", "left")
    np.testing.assert_allclose(pose[:3, 3], TRANSFORM.translation)


def test_an_unfinished_bag_leaves_nothing(tmp_path: Path) -> None:
    """An exception while writing, or an abort: neither the bag nor its hidden folder is left."""
    with pytest.raises(KeyboardInterrupt), BagWriter(tmp_path / "bag") as bag:
        bag.write_message("/left/image_rect", STAMP_NS, _built(bag.typestore)[IMAGE])
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    bag = BagWriter(tmp_path / "bag", "mcap")
    bag.abort()
    bag.close()  # after an abort: nothing to finalise
    assert list(tmp_path.iterdir()) == []


def test_a_bag_is_never_written_over(tmp_path: Path) -> None:
    (tmp_path / "bag").mkdir()
    with pytest.raises(BagWriteError, match="exists already"):
        BagWriter(tmp_path / "bag")
    (tmp_path / "file").touch()
    with pytest.raises(BagWriteError, match="cannot write the bag"):
        BagWriter(tmp_path / "file" / "bag")
    with pytest.raises(ValueError, match="storage must be one of"):
        BagWriter(tmp_path / "other", "rosbag1")
    with pytest.raises(ValueError, match="distro must be one of"):
        BagWriter(tmp_path / "other", distro="foxy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag", "file"]
