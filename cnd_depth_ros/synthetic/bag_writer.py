"""Write a synthetic drive (down a street, or across a room) as a rosbag2 (``cnd-depth synth
--bag``): replay input with exact depth.

Topics are the node's inputs as a stereo driver plus image_proc publish them, and the ground truth
the rosbag dataset and ``cnd-depth replay`` read (``DEFAULT_TOPICS``): rectified ``rgb8`` images,
camera_info for both cameras (the right one with ``P[0, 3] = -fx * B``), depth along the optical
axis as ``32FC1`` metres (REP 118: ``+inf`` where the ray meets only sky), and ``/tf_static`` from
``base_link`` to both optical frames, offered transient-local as tf2 latches it. Messages are
serialised with ``rosbags`` and the type definitions of the chosen distro; Humble gets metadata
version 8, whose QoS profiles Humble's parser reads, later distros version 9.

The bag is written into a hidden temporary folder next to ``path`` and renamed when complete, so a
bag at ``path`` is never half written.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.errors import CndDepthError
from cnd_depth_ros.synthetic.scene import CameraPose
from cnd_depth_ros.synthetic.sequence import render_sequence
from cnd_depth_ros.synthetic.worlds import Style
from cnd_depth_ros.training.datasets.rosbag_dataset import DEFAULT_TOPICS

__all__ = [
    "DISTROS",
    "FRAME_IDS",
    "STORAGES",
    "BagWriteError",
    "BagWriteSummary",
    "write_sequence_bag",
]

_LOGGER = logging.getLogger(__name__)

#: ROS 2 distro -> (rosbags type store, rosbag2 metadata version).
DISTROS: dict[str, tuple[str, Literal[8, 9]]] = {
    "humble": ("ros2_humble", 8),
    "jazzy": ("ros2_jazzy", 9),
    "kilted": ("ros2_kilted", 9),
}
STORAGES = ("sqlite3", "mcap")
FRAME_IDS = {
    "base": "base_link",
    "left": "left_camera_optical_frame",
    "right": "right_camera_optical_frame",
}
#: Recorded times start here (2024-01-01T00:00:00Z): fixed, so a bag is a function of its seed.
START_NS = 1_704_067_200 * 10**9
#: World (x right, y down, z along the street or room) -> base_link (x forward, y left, z up).
_BASE_FROM_WORLD = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


class BagWriteError(CndDepthError, OSError):
    """The synthetic bag cannot be written (target exists, or the disk refused); names the path."""


@dataclass(frozen=True)
class BagWriteSummary:
    """What :func:`write_sequence_bag` wrote."""

    path: Path
    frames: int
    messages: int
    duration_s: float
    seconds: float


class _Messages:
    """Builds the bag's messages from one distro's type store."""

    def __init__(self, typestore: Any) -> None:
        self.store = typestore
        self.types = typestore.types

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        stamp = self.types["builtin_interfaces/msg/Time"](
            sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9
        )
        return self.types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def image(self, header: Any, pixels: np.ndarray, encoding: str) -> Any:
        height, width = pixels.shape[:2]
        data = np.ascontiguousarray(pixels).reshape(-1).view(np.uint8)
        return self.types["sensor_msgs/msg/Image"](
            header=header,
            height=height,
            width=width,
            encoding=encoding,
            is_bigendian=0,
            step=data.size // height,
            data=data,
        )

    def camera_info(self, header: Any, camera: PinholeCamera, right: bool) -> Any:
        tx = -camera.fx * camera.baseline if right and camera.baseline is not None else 0.0
        roi = self.types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        return self.types["sensor_msgs/msg/CameraInfo"](
            header=header,
            height=camera.height,
            width=camera.width,
            distortion_model="plumb_bob",
            d=np.zeros(5),
            k=camera.K.reshape(-1),
            r=np.eye(3).reshape(-1),
            p=np.array(
                [camera.fx, 0, camera.cx, tx, 0, camera.fy, camera.cy, 0, 0, 0, 1, 0], np.float64
            ),
            binning_x=0,
            binning_y=0,
            roi=roi,
        )

    def transform(
        self, header: Any, child: str, translation: np.ndarray, rotation: np.ndarray
    ) -> Any:
        types = self.types
        x, y, z, w = Rotation.from_matrix(rotation).as_quat()
        return types["geometry_msgs/msg/TransformStamped"](
            header=header,
            child_frame_id=child,
            transform=types["geometry_msgs/msg/Transform"](
                translation=types["geometry_msgs/msg/Vector3"](*map(float, translation)),
                rotation=types["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w),
            ),
        )

    def tf_static(self, stamp_ns: int, camera: PinholeCamera, pose: CameraPose) -> Any:
        """base_link on the ground below the first left camera, axes along the drive; the right
        optical frame ``baseline`` along the left's x axis."""
        assert camera.baseline is not None
        left = self.transform(
            self.header(stamp_ns, FRAME_IDS["base"]),
            FRAME_IDS["left"],
            np.array([0.0, 0.0, -pose.position[1]]),
            _BASE_FROM_WORLD @ pose.rotation,
        )
        right = self.transform(
            self.header(stamp_ns, FRAME_IDS["left"]),
            FRAME_IDS["right"],
            np.array([camera.baseline, 0.0, 0.0]),
            np.eye(3),
        )
        return self.types["tf2_msgs/msg/TFMessage"](transforms=[left, right])

    def serialize(self, message: Any) -> memoryview:
        return self.store.serialize_cdr(message, message.__msgtype__)


def _latched_qos() -> Any:
    """The QoS tf2's static broadcaster offers: reliable, transient local, keep last 1."""
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    never = QosTime(sec=0, nsec=0)
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=1,
        reliability=QosReliability.RELIABLE,
        durability=QosDurability.TRANSIENT_LOCAL,
        deadline=never,
        lifespan=never,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=never,
        avoid_ros_namespace_conventions=False,
    )


def write_sequence_bag(
    path: Path,
    camera: PinholeCamera,
    frames: int,
    *,
    seed: int = 0,
    rate: float = 10.0,
    speed: float | None = None,
    storage: str = "sqlite3",
    distro: str = "jazzy",
    style: Style | None = None,
    progress: bool = True,
) -> BagWriteSummary:
    """Render :func:`~cnd_depth_ros.synthetic.sequence.render_sequence` (the style picks the
    world, street by default; ``speed`` defaults to the world's) into the rosbag2 ``path``.

    Every message is logged at its header stamp, ``START_NS`` plus the frame's time.

    :raises ValueError: an unknown ``storage`` or ``distro``, or bad sequence arguments.
    :raises BagWriteError: ``path`` exists, or writing failed (nothing is left at ``path``).
    """
    from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
    from rosbags.typesys import Stores, get_typestore

    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    if distro not in DISTROS:
        raise ValueError(f"distro must be one of {', '.join(DISTROS)}, got {distro!r}")
    path = Path(path)
    if path.exists():
        raise BagWriteError(f"{path} exists already; choose a new bag path")
    store_name, version = DISTROS[distro]
    messages = _Messages(get_typestore(Stores(store_name)))
    sequence = render_sequence(camera, frames, seed=seed, rate=rate, speed=speed, style=style)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    partial = scratch / path.name
    started = time.perf_counter()
    count = 0
    try:
        writer = Writer(partial, version=version, storage_plugin=StoragePlugin[storage.upper()])
        with writer:
            topics = {
                "left": ("sensor_msgs/msg/Image", DEFAULT_TOPICS["left_topic"]),
                "left_info": ("sensor_msgs/msg/CameraInfo", DEFAULT_TOPICS["left_info_topic"]),
                "right": ("sensor_msgs/msg/Image", DEFAULT_TOPICS["right_topic"]),
                "right_info": ("sensor_msgs/msg/CameraInfo", DEFAULT_TOPICS["right_info_topic"]),
                "depth": ("sensor_msgs/msg/Image", DEFAULT_TOPICS["depth_topic"]),
            }
            connections = {
                role: writer.add_connection(topic, msgtype, typestore=messages.store)
                for role, (msgtype, topic) in topics.items()
            }
            tf_static = writer.add_connection(
                "/tf_static",
                "tf2_msgs/msg/TFMessage",
                typestore=messages.store,
                offered_qos_profiles=[_latched_qos()],
            )
            for frame in tqdm(sequence, total=frames, unit="frame", disable=not progress):
                stamp = START_NS + round(frame.time_s * 1e9)
                if frame.index == 0:
                    tf = messages.tf_static(stamp, camera, frame.pose)
                    writer.write(tf_static, stamp, messages.serialize(tf))
                    count += 1
                left = messages.header(stamp, FRAME_IDS["left"])
                right = messages.header(stamp, FRAME_IDS["right"])
                rendering = frame.rendering
                for role, message in (
                    ("left", messages.image(left, rendering.left, "rgb8")),
                    ("left_info", messages.camera_info(left, camera, right=False)),
                    ("right", messages.image(right, rendering.right, "rgb8")),
                    ("right_info", messages.camera_info(right, camera, right=True)),
                    ("depth", messages.image(left, rendering.depth.astype(np.float32), "32FC1")),
                ):
                    writer.write(connections[role], stamp, messages.serialize(message))
                    count += 1
        partial.rename(path)
    except (OSError, WriterError) as error:
        raise BagWriteError(f"cannot write the bag {path}: {error}") from error
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _LOGGER.info("%s: %d frames, %d messages", path, frames, count)
    return BagWriteSummary(
        path=path,
        frames=frames,
        messages=count,
        duration_s=(frames - 1) / rate,
        seconds=time.perf_counter() - started,
    )
