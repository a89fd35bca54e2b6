"""CameraInfo <-> PinholeCamera: intrinsics from P, baseline from the right P, validation."""

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, RegionOfInterest
from std_msgs.msg import Header

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.messages.camera_info import (
    CameraInfoError,
    camera_from_info,
    camera_info_for,
    check_image_size,
)

CAMERA = PinholeCamera(width=640, height=480, fx=525.0, fy=520.0, cx=319.5, cy=239.5, baseline=0.12)
HEADER = Header(stamp=Time(sec=7, nanosec=8), frame_id="left_camera_optical_frame")


def _pair(camera: PinholeCamera = CAMERA) -> tuple[CameraInfo, CameraInfo]:
    """Left and right infos as a driver publishes them, after a trip through the rmw."""
    infos = camera_info_for(camera, HEADER), camera_info_for(camera, HEADER, right=True)
    return tuple(deserialize_message(serialize_message(i), CameraInfo) for i in infos)


def test_right_info_follows_the_ros_convention() -> None:
    left, right = _pair()
    assert right.p[3] == pytest.approx(-525.0 * 0.12)
    assert left.p[3] == 0.0
    assert (left.width, left.height, left.distortion_model) == (640, 480, "plumb_bob")
    assert left.header.frame_id == "left_camera_optical_frame"
    np.testing.assert_array_equal(np.reshape(left.k, (3, 3)), CAMERA.K)
    np.testing.assert_array_equal(np.reshape(left.r, (3, 3)), np.eye(3))


def test_stereo_round_trip() -> None:
    assert camera_from_info(*_pair()) == CAMERA


def test_mono_has_no_baseline() -> None:
    left, _ = _pair()
    camera = camera_from_info(left)
    assert camera.baseline is None
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == (525.0, 520.0, 319.5, 239.5)


def test_intrinsics_come_from_p_not_k() -> None:
    """Rectified images are described by P; K is the raw camera's."""
    left, right = _pair()
    left.k = [900.0, 0.0, 300.0, 0.0, 900.0, 200.0, 0.0, 0.0, 1.0]
    assert camera_from_info(left, right) == CAMERA


def test_baseline_scales_with_the_right_projection() -> None:
    left, right = _pair()
    right.p[3] = -525.0 * 0.3
    assert camera_from_info(left, right).baseline == pytest.approx(0.3)


def test_binning_describes_the_binned_image() -> None:
    left, right = _pair()
    for info in (left, right):
        info.binning_x = info.binning_y = 2
    camera = camera_from_info(left, right)
    assert camera == CAMERA.resized(320, 240)
    assert camera.baseline == CAMERA.baseline


def test_full_frame_roi_is_accepted() -> None:
    left, right = _pair()
    left.roi = RegionOfInterest(x_offset=0, y_offset=0, width=640, height=480)
    assert camera_from_info(left, right) == CAMERA


def _broken(side: str, **fields: object) -> tuple[CameraInfo, CameraInfo]:
    left, right = _pair()
    info = left if side == "left" else right
    for name, value in fields.items():
        if name.startswith("p"):
            info.p[int(name[1:])] = value
        else:
            setattr(info, name, value)
    return left, right


@pytest.mark.parametrize(
    ("infos", "match"),
    [
        (_broken("left", p0=0.0), r"left camera_info .* fx=0.0, fy=520.0 in P; is the camera"),
        (_broken("left", p5=np.nan), "fy=nan"),
        (_broken("right", p0=-525.0), "right camera_info .* fx=-525.0"),
        (_broken("left", p2=np.inf), "non-finite value in P"),
        (_broken("right", p3=0.0), r"P\[0,3\]=0.0: no baseline; a right camera has P"),
        (_broken("right", p3=63.0), r"P\[0,3\]=63.0: baseline -0.12 m"),
        (_broken("right", width=320, height=240), "right camera_info .* is 320x240 but the left"),
        (_broken("right", p0=600.0), "left fx=525.0 and right fx=600.0 differ"),
        (_broken("left", width=0), "empty image size 0x480"),
        (
            _broken("left", roi=RegionOfInterest(x_offset=10, y_offset=0, width=320, height=240)),
            r"region of interest 320x240 at \(10, 0\)",
        ),
    ],
    ids=[
        "zero-fx",
        "nan-fy",
        "negative-fx",
        "inf-cx",
        "no-baseline",
        "swapped-cameras",
        "size-mismatch",
        "not-rectified",
        "empty",
        "roi",
    ],
)
def test_unusable_infos_are_rejected(infos: tuple[CameraInfo, CameraInfo], match: str) -> None:
    with pytest.raises(CameraInfoError, match=match):
        camera_from_info(*infos)


def test_image_size_must_match() -> None:
    with pytest.raises(CameraInfoError, match=r"image 320x240 \(frame 'left_camera_optical"):
        check_image_size(CAMERA, 320, 240, HEADER.frame_id)
    check_image_size(CAMERA, 640, 480, HEADER.frame_id)


def test_depth_info_resized_to_the_output() -> None:
    info = camera_info_for(CAMERA, HEADER, size=(320, 240))
    assert (info.width, info.height) == (320, 240)
    resized = CAMERA.resized(320, 240)
    np.testing.assert_allclose(
        info.p, [resized.fx, 0, resized.cx, 0, 0, resized.fy, resized.cy, 0, 0, 0, 1, 0]
    )
    assert camera_from_info(info) == PinholeCamera(320, 240, 262.5, 260.0, 159.5, 119.5)


def test_right_info_needs_a_baseline() -> None:
    mono = PinholeCamera(width=64, height=48, fx=50.0, fy=50.0, cx=32.0, cy=24.0)
    with pytest.raises(ValueError, match="no baseline"):
        camera_info_for(mono, HEADER, right=True)
