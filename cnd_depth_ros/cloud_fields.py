"""sensor_msgs/PointCloud2 fields as numpy arrays, without importing ROS.

Zero-copy strided views over the message's bytes (any point layout, either byte order), copied
once into native float32. rclpy messages and rosbags' decoded messages have the same fields, so
the node's tests, replay's LiDAR ground truth and the rosbag dataset share these readers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["pointcloud2_to_rgb", "pointcloud2_to_xyz"]

_FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32


def _field(msg: Any, name: str, dtype: np.dtype) -> np.ndarray:
    """Field ``name`` of every point as an H x W x 1 array of ``dtype``, native byte order.

    :raises ValueError: the field is missing, has another type, or the data is too short.
    """
    fields = {field.name: field for field in msg.fields}
    if name not in fields:
        raise ValueError(f"point cloud has no {name!r} field (fields: {sorted(fields)})")
    field = fields[name]
    if field.datatype != _FLOAT32 or field.count != 1:
        raise ValueError(f"point cloud field {name!r} is not a single float32")
    if len(msg.data) < msg.height * msg.row_step:
        raise ValueError(
            f"point cloud data has {len(msg.data)} bytes, expected height * row_step = "
            f"{msg.height * msg.row_step}"
        )
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    view = np.ndarray(
        shape=(msg.height, msg.width, 1),
        dtype=wire,
        buffer=msg.data,
        offset=field.offset,
        strides=(msg.row_step, msg.point_step, wire.itemsize),
    )
    return view.astype(dtype)


def pointcloud2_to_xyz(msg: Any) -> np.ndarray:
    """The points of a cloud with float32 ``x, y, z`` fields as H x W x 3 float32.

    :raises ValueError: a field is missing or not float32, or the data is shorter than declared.
    """
    return np.concatenate([_field(msg, name, np.dtype(np.float32)) for name in "xyz"], axis=2)


def pointcloud2_to_rgb(msg: Any) -> np.ndarray:
    """The colours of a cloud with a packed float32 ``rgb`` field as H x W x 3 uint8.

    :raises ValueError: the ``rgb`` field is missing or not float32, or the data is too short.
    """
    packed = _field(msg, "rgb", np.dtype(np.uint32))
    shifts = np.array([16, 8, 0], dtype=np.uint32)
    return ((packed >> shifts) & 0xFF).astype(np.uint8)
