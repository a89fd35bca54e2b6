"""Camera topics resolved as image_pipeline resolves them: camera_info beside the image topic."""

from __future__ import annotations

import pytest
import rclpy
from fixtures.ros import rclpy_init_fixture  # noqa: F401

from cnd_depth_ros.ros.topics import CameraTopics, camera_topics, info_topic_for


def _topics(*remaps: str, namespace: str = "", transport: str = "raw") -> list[CameraTopics]:
    args = ["--ros-args", *(arg for remap in remaps for arg in ("-r", remap))]
    node = rclpy.create_node("topics_test", namespace=namespace, cli_args=args)
    try:
        return camera_topics(node, ("left", "right"), transport)
    finally:
        node.destroy_node()


def test_defaults_are_stereo_image_procs() -> None:
    left, right = _topics(namespace="/stereo")
    assert (left.image, left.camera_info) == ("/stereo/left/image_rect", "/stereo/left/camera_info")
    assert (right.image, right.camera_info) == ("/stereo/right/image_rect",
                                                "/stereo/right/camera_info")


def test_camera_info_follows_the_image_remap() -> None:
    left, right = _topics("left/image_rect:=/front/left/image_rect_color")
    assert (left.image, left.camera_info) == ("/front/left/image_rect_color",
                                              "/front/left/camera_info")
    assert right.camera_info == "/right/camera_info"
    (left, _) = _topics("left/image_rect:=/cam/image_rect", transport="compressed")
    assert (left.image, left.camera_info) == ("/cam/image_rect/compressed", "/cam/camera_info")


def test_an_explicit_camera_info_remap_wins() -> None:
    left, _ = _topics("left/image_rect:=/front/left/image_rect",
                      "left/camera_info:=/calibration/left")
    assert (left.image, left.camera_info) == ("/front/left/image_rect", "/calibration/left")
    left, _ = _topics("left/image_rect/compressed:=/jpeg/left", transport="compressed")
    assert left.image == "/jpeg/left"


def test_bad_names_are_refused() -> None:
    assert info_topic_for("/image_rect") == "/camera_info"
    with pytest.raises(ValueError, match="not fully qualified"):
        info_topic_for("left/image_rect")
    node = rclpy.create_node("topics_bad")
    try:
        with pytest.raises(ValueError, match="image transport must be one of"):
            camera_topics(node, ("left",), "theora")
    finally:
        node.destroy_node()
