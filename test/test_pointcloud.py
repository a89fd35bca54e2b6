"""Point-cloud packing: layout rviz2 reads, z equal to depth, NaN holes, colour, stride."""

import math

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from fixtures.ros import Inbox, rclpy_init_fixture, ros_executor_fixture, spin_until  # noqa: F401
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.geometry import backproject
from cnd_depth_ros.messages.pointcloud import (
    POINT_STEP,
    depth_to_pointcloud2,
    pointcloud2_to_rgb,
    pointcloud2_to_xyz,
)
from cnd_depth_ros.ros.qos import publisher_qos

CAMERA = PinholeCamera(width=12, height=8, fx=10.0, fy=11.0, cx=5.5, cy=3.0, baseline=0.1)
HEADER = Header(stamp=Time(sec=3, nanosec=14), frame_id="left_camera_optical_frame")


def _depth() -> np.ndarray:
    depth = np.random.uniform(0.5, 40.0, (CAMERA.height, CAMERA.width)).astype(np.float32)
    holes = {(0, 0): np.nan, (1, 2): 0.0, (2, 3): -1.0, (3, 4): np.inf, (4, 5): -0.0}
    for pixel, invalid in holes.items():
        depth[pixel] = invalid
    return depth


def _valid(depth: np.ndarray) -> np.ndarray:
    return np.isfinite(depth) & (depth > 0)


def test_layout_rviz_reads() -> None:
    msg = depth_to_pointcloud2(_depth(), CAMERA, HEADER)
    assert msg.header.frame_id == "left_camera_optical_frame"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (3, 14)
    assert (msg.height, msg.width) == (8, 12)
    assert msg.point_step == POINT_STEP == 16
    assert msg.row_step == 12 * 16
    assert len(msg.data) == 8 * 12 * 16
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1),
        ("y", 4, PointField.FLOAT32, 1),
        ("z", 8, PointField.FLOAT32, 1),
    ]
    assert msg.is_bigendian == (np.dtype(np.float32).byteorder == ">")
    assert not msg.is_dense


def test_z_is_depth_and_xy_back_project() -> None:
    depth = _depth()
    xyz = pointcloud2_to_xyz(depth_to_pointcloud2(depth, CAMERA, HEADER))
    valid = _valid(depth)
    np.testing.assert_array_equal(xyz[..., 2][valid], depth[valid])
    assert np.isnan(xyz[~valid]).all()
    np.testing.assert_allclose(xyz, backproject(depth, CAMERA), rtol=1e-6, equal_nan=True)
    # A pixel on the principal row and one column right of the centre, worked by hand.
    assert xyz[3, 7, 1] == 0.0
    assert math.isclose(xyz[3, 7, 0], (7 - 5.5) / 10.0 * depth[3, 7], rel_tol=1e-6)


def test_dense_when_every_depth_is_valid() -> None:
    depth = np.full((CAMERA.height, CAMERA.width), 2.5, np.float64)
    msg = depth_to_pointcloud2(depth, CAMERA, HEADER)
    assert msg.is_dense
    assert np.isfinite(pointcloud2_to_xyz(msg)).all()


def test_rgb_is_packed_as_rviz_expects() -> None:
    rgb = np.random.randint(0, 256, (CAMERA.height, CAMERA.width, 3), dtype=np.uint8)
    msg = depth_to_pointcloud2(_depth(), CAMERA, HEADER, rgb=rgb)
    assert [(f.name, f.offset, f.datatype) for f in msg.fields][3] == ("rgb", 12, 7)
    packed = np.frombuffer(msg.data, dtype=np.uint32).reshape(8, 12, 4)[..., 3]
    expected = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8)
    np.testing.assert_array_equal(packed, expected | rgb[..., 2])
    np.testing.assert_array_equal(pointcloud2_to_rgb(msg), rgb)


@pytest.mark.parametrize("stride", [2, 3, 5])
def test_stride_keeps_pixel_coordinates(stride: int) -> None:
    depth = _depth()
    rgb = np.random.randint(0, 256, (CAMERA.height, CAMERA.width, 3), dtype=np.uint8)
    msg = depth_to_pointcloud2(depth, CAMERA, HEADER, rgb=rgb, stride=stride)
    rows, cols = math.ceil(8 / stride), math.ceil(12 / stride)
    assert (msg.height, msg.width, msg.row_step) == (rows, cols, cols * 16)
    full = backproject(depth, CAMERA)[::stride, ::stride]
    np.testing.assert_allclose(pointcloud2_to_xyz(msg), full, rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(pointcloud2_to_rgb(msg), rgb[::stride, ::stride])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": np.ones((8, 11), np.float32)}, r"shape \(8, 11\) does not match the 12x8"),
        ({"depth": np.ones((8, 12), np.uint16)}, "float array in metres, got uint16"),
        ({"rgb": np.zeros((8, 12, 4), np.uint8)}, r"uint8 of shape \(8, 12, 3\)"),
        ({"rgb": np.zeros((8, 12, 3), np.float32)}, "got float32"),
        ({"stride": 0}, "positive integer, got 0"),
        ({"stride": 1.5}, "positive integer, got 1.5"),
        ({"stride": True}, "positive integer, got True"),
    ],
)
def test_bad_arguments_name_the_value(kwargs: dict, match: str) -> None:
    arguments = {"depth": _depth(), "camera": CAMERA, "header": HEADER, **kwargs}
    with pytest.raises(ValueError, match=match):
        depth_to_pointcloud2(**arguments)


def test_reading_rejects_foreign_clouds() -> None:
    msg = depth_to_pointcloud2(_depth(), CAMERA, HEADER)
    with pytest.raises(ValueError, match=r"no 'rgb' field \(fields: \['x', 'y', 'z'\]\)"):
        pointcloud2_to_rgb(msg)
    msg.fields[2].datatype = PointField.FLOAT64
    with pytest.raises(ValueError, match="'z' is not a single float32"):
        pointcloud2_to_xyz(msg)
    msg.fields[2].datatype = PointField.FLOAT32
    msg.data = msg.data[:-1]
    with pytest.raises(ValueError, match="expected height \\* row_step = 1536"):
        pointcloud2_to_xyz(msg)


@pytest.mark.ros
def test_cloud_survives_dds(ros_executor: SingleThreadedExecutor) -> None:
    """Published with the node's QoS and read by an rviz2-like reliable subscription."""
    node = rclpy.create_node("pointcloud_test")
    ros_executor.add_node(node)
    inbox = Inbox(node, PointCloud2, "points", QoSProfile(depth=5))
    publisher = node.create_publisher(PointCloud2, "points", publisher_qos())
    assert spin_until(ros_executor, lambda: publisher.get_subscription_count() == 1, 10.0)
    depth = _depth()
    rgb = np.random.randint(0, 256, (CAMERA.height, CAMERA.width, 3), dtype=np.uint8)
    sent = depth_to_pointcloud2(depth, CAMERA, HEADER, rgb=rgb)
    publisher.publish(sent)
    (received,) = inbox.wait_for(ros_executor, 1, timeout_s=10.0)
    assert received.header == sent.header
    assert (received.point_step, received.row_step, received.is_dense) == (16, 192, False)
    assert [f.name for f in received.fields] == ["x", "y", "z", "rgb"]
    np.testing.assert_array_equal(pointcloud2_to_xyz(received), pointcloud2_to_xyz(sent))
    np.testing.assert_array_equal(pointcloud2_to_rgb(received), rgb)
