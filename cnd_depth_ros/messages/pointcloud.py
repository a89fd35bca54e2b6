"""sensor_msgs/PointCloud2 <-> numpy: an organised cloud from a metric depth image, packed in one
vectorised pass, and a cloud's fields read back as arrays.

Each point is a 16-byte record ``x, y, z`` (float32, metres, optical frame) followed by either
padding or ``rgb``, the packed colour rviz2 reads (``0x00RRGGBB`` stored in a float32 field). The
record array is a numpy view of the ``array.array`` the message keeps, so the coordinates are
written straight into the message buffer: no per-point Python, no intermediate H x W x 3 array.
The maths is :func:`cnd_depth_ros.geometry.backproject`'s, which the tests compare against.

The readers (:func:`pointcloud2_to_xyz`, :func:`pointcloud2_to_rgb`) are zero-copy strided views
over the message's bytes (any point layout, either byte order), copied once into native float32;
rclpy messages and rosbags' decoded messages have the same fields, so the node's tests, replay's
LiDAR ground truth and the rosbag dataset share them. Nothing here imports rclpy, and
``sensor_msgs`` only when a cloud is built.
"""

from __future__ import annotations

import array
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from cnd_depth_ros.camera import PinholeCamera

if TYPE_CHECKING:
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

__all__ = ["POINT_STEP", "depth_to_pointcloud2", "pointcloud2_to_rgb", "pointcloud2_to_xyz"]

POINT_STEP = 16
_FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32
# (name, offset) of each float32 field of the 16-byte record; rgb is present with colours only.
_XYZ_FIELDS = (("x", 0), ("y", 4), ("z", 8))
_RGB_FIELD = ("rgb", 12)
_BIG_ENDIAN = sys.byteorder == "big"
# Where R, G and B of a native uint32 0x00RRGGBB lie in the 16-byte record.
_RGB_BYTES = [13, 14, 15] if _BIG_ENDIAN else [14, 13, 12]


def depth_to_pointcloud2(
    depth: np.ndarray,
    camera: PinholeCamera,
    header: Header,
    rgb: np.ndarray | None = None,
    stride: int = 1,
) -> PointCloud2:
    """An organised cloud of every ``stride``-th pixel of ``depth`` (H x W, metres).

    Pixels whose depth is not finite and positive become NaN points and make the cloud not
    dense. The header (stamp and the left optical frame) is the caller's. ``rgb`` (H x W x 3
    uint8) adds the ``rgb`` field.

    :raises ValueError: ``depth`` is not a 2-D float array of the camera's size, ``rgb`` does not
        match ``depth``, or ``stride`` is not a positive integer.
    """
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth must be a float array in metres, got {depth.dtype}")
    if depth.shape != (camera.height, camera.width):
        raise ValueError(
            f"depth of shape {depth.shape} does not match the {camera.width}x{camera.height} camera"
        )
    if rgb is not None and (rgb.shape != (*depth.shape, 3) or rgb.dtype != np.uint8):
        raise ValueError(
            f"point colours must be uint8 of shape {(*depth.shape, 3)}, got {rgb.dtype} {rgb.shape}"
        )
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"point cloud stride must be a positive integer, got {stride!r}")

    from sensor_msgs.msg import PointCloud2, PointField

    z = depth[::stride, ::stride]
    rows, cols = z.shape
    layout = _XYZ_FIELDS if rgb is None else (*_XYZ_FIELDS, _RGB_FIELD)
    msg = PointCloud2(
        header=header,
        height=rows,
        width=cols,
        fields=[
            PointField(name=name, offset=offset, datatype=PointField.FLOAT32, count=1)
            for name, offset in layout
        ],
        is_bigendian=_BIG_ENDIAN,
        point_step=POINT_STEP,
        row_step=cols * POINT_STEP,
    )
    # The points are written into the array the message ends up holding: an array.array passes
    # the data setter without a per-byte check, and filling it in place spares a copy into fresh
    # memory (page faults cost more than the arithmetic, see docs/benchmarks.md).
    msg.data = array.array("B", bytes(rows * cols * POINT_STEP))
    points = np.frombuffer(msg.data, dtype=np.float32).reshape(rows, cols, 4)

    valid = z > 0
    valid &= z < np.inf
    points[..., 2] = np.nan
    np.copyto(points[..., 2], z, where=valid)
    ray_x = ((np.arange(0, camera.width, stride) - camera.cx) / camera.fx).astype(np.float32)
    ray_y = ((np.arange(0, camera.height, stride) - camera.cy) / camera.fy).astype(np.float32)
    np.multiply(points[..., 2], ray_x, out=points[..., 0])
    np.multiply(points[..., 2], ray_y[:, np.newaxis], out=points[..., 1])
    if rgb is not None:
        record_bytes = points.view(np.uint8)
        record_bytes[..., _RGB_BYTES] = rgb[::stride, ::stride]
    msg.is_dense = bool(valid.all())
    return msg


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
