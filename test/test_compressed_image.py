"""CompressedImage decoding for the node, replay and rosbag datasets: real OpenCV codecs, rclpy
and rosbags messages alike."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CompressedImage

from cnd_depth_ros.messages.image import CompressedImageError, compressed_to_rgb

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)


def _compressed(image: np.ndarray, extension: str, fmt: str) -> CompressedImage:
    ok, data = cv2.imencode(extension, image)
    assert ok
    return CompressedImage(format=fmt, data=data.tobytes())


def test_png_decodes_to_the_exact_rgb() -> None:
    msg = _compressed(cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR), ".png", "rgb8; png compressed bgr8")
    rgb = compressed_to_rgb(msg)
    assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, RGB)


def test_grey_and_16_bit_images_become_three_8_bit_channels() -> None:
    grey = RGB[..., 0]
    rgb = compressed_to_rgb(_compressed(grey, ".png", "mono8; png compressed mono8"))
    np.testing.assert_array_equal(rgb, np.repeat(grey[..., None], 3, axis=2))
    wide = grey.astype(np.uint16) * 256 + 0x34  # the high byte is what survives
    rgb = compressed_to_rgb(_compressed(wide, ".png", "mono16; png compressed mono16"))
    np.testing.assert_array_equal(rgb[..., 1], grey)


def test_jpeg_decodes_close_to_the_original() -> None:
    smooth = cv2.GaussianBlur(RGB, (9, 9), 3)
    msg = _compressed(cv2.cvtColor(smooth, cv2.COLOR_RGB2BGR), ".jpg", "jpeg")
    difference = np.abs(compressed_to_rgb(msg).astype(int) - smooth.astype(int))
    assert difference.mean() < 4


def test_a_rosbags_message_decodes_too() -> None:
    """Replay and the rosbag dataset hand over rosbags' own message classes."""
    typestore = get_typestore(Stores.LATEST)
    message_class = typestore.types["sensor_msgs/msg/CompressedImage"]
    header_class = typestore.types["std_msgs/msg/Header"]
    time_class = typestore.types["builtin_interfaces/msg/Time"]
    data = np.frombuffer(_compressed(cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR), ".png", "").data,
                         np.uint8)
    msg = message_class(header=header_class(stamp=time_class(sec=1, nanosec=2), frame_id="cam"),
                        format="png", data=data)
    np.testing.assert_array_equal(compressed_to_rgb(msg), RGB)


@pytest.mark.parametrize(
    ("data", "fmt", "match"),
    [
        (b"", "jpeg", "has no data"),
        (b"\x89PNG\r\n\x1a\n but cut short", "png", "not a JPEG or PNG OpenCV can decode"),
        (b"\0" * 16, "32FC1; compressedDepth png", "compressedDepth, a depth map"),
    ],
)
def test_bad_messages_name_the_reason(data: bytes, fmt: str, match: str) -> None:
    with pytest.raises(CompressedImageError, match=match):
        compressed_to_rgb(CompressedImage(format=fmt, data=data))
