"""The classes the message builders construct: rclpy's generated ones, or a ``rosbags`` store's.

The node publishes rclpy messages; the bag writers build the same messages from the type store of
the ROS 2 distro they write for, on machines without ROS. Each builder of this package
(:func:`~cnd_depth_ros.messages.image.array_to_image`,
:func:`~cnd_depth_ros.messages.camera_info.camera_info_for`,
:func:`~cnd_depth_ros.messages.tf_static.tf_message`, :func:`make_header`) takes an optional
``typestore`` and fills every field either way, so both kinds hold the same values and serialise
to the same bytes.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["make_header", "message_class"]


def message_class(msgtype: str, typestore: Any | None = None) -> Any:
    """The class of ``msgtype`` (``"sensor_msgs/msg/Image"``): from ``typestore`` when given,
    else rclpy's generated module (imported only then)."""
    if typestore is not None:
        return typestore.types[msgtype]
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def make_header(stamp_ns: int, frame_id: str, typestore: Any | None = None) -> Any:
    """A ``std_msgs/Header`` stamped ``stamp_ns`` (nanoseconds) in ``frame_id``."""
    stamp = message_class("builtin_interfaces/msg/Time", typestore)(
        sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9
    )
    return message_class("std_msgs/msg/Header", typestore)(stamp=stamp, frame_id=frame_id)
