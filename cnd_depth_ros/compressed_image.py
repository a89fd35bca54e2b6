"""sensor_msgs/CompressedImage -> H x W x 3 uint8 RGB, for cameras seen through image_transport.

image_transport's ``compressed`` plugin publishes ``<image topic>/compressed`` with JPEG or PNG
bytes and a ``format`` such as ``"rgb8; jpeg compressed bgr8"`` (the original encoding, then
what the bytes hold; older drivers write only ``"jpeg"``). Whatever the original encoding, the
bytes decode (OpenCV) to BGR or grey, so the network's RGB follows from one conversion. No ROS
import: rclpy messages and rosbags' decoded messages both work, so the node, replay and the
rosbag dataset share this decoder.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from cnd_depth_ros.errors import CndDepthError

__all__ = ["CompressedImageError", "compressed_to_rgb"]


class CompressedImageError(CndDepthError, ValueError):
    """A CompressedImage that is not a decodable camera image; the message says why."""


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """The camera image of a ``sensor_msgs/CompressedImage`` (JPEG or PNG) as contiguous
    ``H x W x 3`` uint8 RGB; 16-bit PNGs are scaled to 8 bit.

    :raises CompressedImageError: a ``compressedDepth`` message (a depth map, not a camera
        image), empty data, or bytes OpenCV cannot decode.
    """
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower():
        raise CompressedImageError(
            f"compressed image format {fmt!r} is image_transport's compressedDepth, a depth map, "
            "not a camera image"
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise CompressedImageError(f"compressed image ({fmt!r}) has no data")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise CompressedImageError(
            f"compressed image ({fmt!r}, {data.size} bytes) is not a JPEG or PNG OpenCV can decode"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
