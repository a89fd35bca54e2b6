"""sensor_msgs/CameraInfo <-> :class:`PinholeCamera`, with the checks that keep depth metric.

The node works on rectified images, so the intrinsics come from the projection matrix ``P`` (not
``K``), and the stereo baseline from the right camera's ``P[0, 3] = -fx * B`` (REP 104 and the
image_pipeline convention). Camera infos that cannot give metric depth raise
:class:`CameraInfoError` naming the camera and the value, so the node can log and skip the pair.

This is the one reading of a camera_info: the node, replay, the rosbag dataset (training,
fine-tuning, evaluation) and the bag writers all use it, so every command sees the same camera
in the same bag. Nothing here imports rclpy (rosbags' decoded messages have the same fields), and
``sensor_msgs`` only when a message is built.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.errors import CndDepthError
from cnd_depth_ros.messages.builders import message_class

if TYPE_CHECKING:
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

__all__ = ["CameraInfoError", "camera_from_info", "camera_info_for", "check_image_size"]

# Relative difference beyond which a left and right focal length do not form a rectified pair.
_RECTIFIED_TOLERANCE = 1e-3


class CameraInfoError(CndDepthError, ValueError):
    """A CameraInfo cannot describe the rectified camera; the message names the value."""


def _describe(info: CameraInfo, side: str) -> str:
    return f"{side} camera_info (frame {info.header.frame_id!r})"


def _projection(info: CameraInfo, side: str) -> np.ndarray:
    projection = np.asarray(info.p, dtype=np.float64).reshape(3, 4)
    fx, fy = projection[0, 0], projection[1, 1]
    if not (math.isfinite(fx) and math.isfinite(fy) and fx > 0 and fy > 0):
        raise CameraInfoError(
            f"{_describe(info, side)} has focal length fx={fx}, fy={fy} in P; "
            "is the camera calibrated?"
        )
    if not np.isfinite(projection).all():
        raise CameraInfoError(f"{_describe(info, side)} has a non-finite value in P")
    return projection


def _single_camera(info: CameraInfo, side: str) -> PinholeCamera:
    """The rectified camera of one CameraInfo, at the (binned) image size."""
    if info.width == 0 or info.height == 0:
        raise CameraInfoError(
            f"{_describe(info, side)} has an empty image size {info.width}x{info.height}"
        )
    roi = info.roi
    if (roi.width, roi.height) not in ((0, 0), (info.width, info.height)):
        raise CameraInfoError(
            f"{_describe(info, side)} has a region of interest {roi.width}x{roi.height} at "
            f"({roi.x_offset}, {roi.y_offset}); only full frames are supported"
        )
    projection = _projection(info, side)
    camera = PinholeCamera(
        width=info.width,
        height=info.height,
        fx=float(projection[0, 0]),
        fy=float(projection[1, 1]),
        cx=float(projection[0, 2]),
        cy=float(projection[1, 2]),
    )
    binning_x, binning_y = max(info.binning_x, 1), max(info.binning_y, 1)
    if (binning_x, binning_y) == (1, 1):
        return camera
    return camera.resized(info.width // binning_x, info.height // binning_y)


def camera_from_info(left: CameraInfo, right: CameraInfo | None = None) -> PinholeCamera:
    """The rectified left camera, with the baseline from ``right`` when given (stereo).

    Binning is applied (the camera describes the published, binned image).

    :raises CameraInfoError: zero, negative or non-finite focal length, an empty size, a partial
        region of interest, a right camera whose size or focal length differs from the left's
        (not a rectified pair), or a right camera with no baseline in ``P[0, 3]``.
    """
    camera = _single_camera(left, "left")
    if right is None:
        return camera
    right_camera = _single_camera(right, "right")
    if (right_camera.width, right_camera.height) != (camera.width, camera.height):
        raise CameraInfoError(
            f"{_describe(right, 'right')} is {right_camera.width}x{right_camera.height} but the "
            f"left is {camera.width}x{camera.height}"
        )
    for name in ("fx", "fy"):
        left_value, right_value = getattr(camera, name), getattr(right_camera, name)
        if abs(left_value - right_value) > _RECTIFIED_TOLERANCE * left_value:
            raise CameraInfoError(
                f"left {name}={left_value} and right {name}={right_value} differ: "
                "not a rectified stereo pair"
            )
    tx = float(right.p[3])
    baseline = -tx / float(right.p[0])  # both in unbinned pixels
    if not baseline > 0:
        meaning = "no baseline" if tx == 0 else f"baseline {baseline:.4g} m"
        raise CameraInfoError(
            f"{_describe(right, 'right')} has P[0,3]={tx}: {meaning}; a right camera has "
            "P[0,3] = -fx * baseline < 0"
        )
    return PinholeCamera(
        width=camera.width,
        height=camera.height,
        fx=camera.fx,
        fy=camera.fy,
        cx=camera.cx,
        cy=camera.cy,
        baseline=float(baseline),
    )


def check_image_size(camera: PinholeCamera, width: int, height: int, frame_id: str) -> None:
    """Reject an image (``width`` x ``height``, in ``frame_id``) whose size is not its
    camera_info's.

    :raises CameraInfoError: naming both sizes and the image's frame.
    """
    if (width, height) != (camera.width, camera.height):
        raise CameraInfoError(
            f"image {width}x{height} (frame {frame_id!r}) does not match its camera_info "
            f"{camera.width}x{camera.height}"
        )


def camera_info_for(
    camera: PinholeCamera,
    header: Header,
    *,
    size: tuple[int, int] | None = None,
    right: bool = False,
    typestore: Any | None = None,
) -> CameraInfo:
    """The CameraInfo of a rectified image seen by ``camera``, resized to ``size`` (width, height):
    rclpy's, or with ``typestore`` a ``rosbags`` one (:mod:`~cnd_depth_ros.messages.builders`).

    With ``right=True`` it describes the right camera of the pair (``P[0, 3] = -fx * B``), as a
    stereo driver publishes it; otherwise ``P[0, 3] = 0``, which is what ``depth/camera_info``
    needs since the depth image is registered to the left camera.

    :raises ValueError: ``right=True`` for a camera without a baseline.
    """
    if size is not None:
        camera = camera.resized(*size)
    if right and camera.baseline is None:
        raise ValueError("a right camera_info needs a stereo camera, this one has no baseline")
    tx = -camera.fx * camera.baseline if right and camera.baseline is not None else 0.0
    roi = message_class("sensor_msgs/msg/RegionOfInterest", typestore)(
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    return message_class("sensor_msgs/msg/CameraInfo", typestore)(
        header=header,
        width=camera.width,
        height=camera.height,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=camera.K.reshape(-1),
        r=np.eye(3).reshape(-1),
        p=np.array(
            [camera.fx, 0.0, camera.cx, tx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        ),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )
