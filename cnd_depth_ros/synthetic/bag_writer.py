"""Write stereo frames as a rosbag2 that ``cnd-depth replay`` plays into depth_node: a synthetic
drive (down a street, or across a room; ``cnd-depth synth --bag``) or the frames of any dataset
the package reads (``cnd-depth bag``).

Topics are the node's inputs as a stereo driver plus image_proc publish them, and the ground truth
the rosbag dataset and ``cnd-depth replay`` read (``DEFAULT_TOPICS``): rectified ``rgb8`` images,
camera_info for both cameras at each image's own size (the right one with ``P[0, 3] = -fx * B``),
depth along the optical axis as ``32FC1`` metres (REP 118: NaN where unknown, ``+inf`` where the
ray meets only sky), and ``/tf_static`` with the optical frames, offered transient-local as tf2
latches it. Messages are serialised with ``rosbags`` and the type definitions of the chosen
distro; Humble gets metadata version 8, whose QoS profiles Humble's parser reads, later distros
version 9. One loop (:func:`_write_bag`) writes every bag; the public functions only say what
each frame holds (:class:`BagFrame`).

The bag is written into a hidden temporary folder next to ``path`` and renamed when complete, so a
bag at ``path`` is never half written.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.errors import CndDepthError
from cnd_depth_ros.messages.topics import DEFAULT_TOPICS
from cnd_depth_ros.synthetic.sequence import SequenceFrame, render_sequence
from cnd_depth_ros.synthetic.worlds import Style

if TYPE_CHECKING:
    from cnd_depth_ros.data.frame import Frame

__all__ = [
    "DISTROS",
    "FRAME_IDS",
    "START_NS",
    "STORAGES",
    "BagFrame",
    "BagWriteError",
    "BagWriteSummary",
    "StaticTransform",
    "write_frames_bag",
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
    """The bag cannot be written (target exists, or the disk refused); names the path."""


@dataclass(frozen=True)
class BagWriteSummary:
    """What :func:`write_sequence_bag` or :func:`write_frames_bag` wrote: ``frames`` frames of
    ``messages`` messages in all, ``duration_s`` from the first stamp to the last, ``cameras``
    the distinct left cameras in order of appearance, in ``seconds``."""

    path: Path
    frames: int
    messages: int
    duration_s: float
    seconds: float
    cameras: tuple[PinholeCamera, ...] = ()


@dataclass(frozen=True)
class StaticTransform:
    """The fixed pose of frame ``child`` in frame ``parent`` (one tf2 static transform):
    translation in metres, rotation as a quaternion ``x, y, z, w``."""

    parent: str
    child: str
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]

    @classmethod
    def from_matrix(
        cls, parent: str, child: str, translation: np.ndarray, rotation: np.ndarray
    ) -> StaticTransform:
        """From a translation vector and a 3 x 3 rotation matrix."""
        x, y, z = map(float, translation)
        qx, qy, qz, qw = map(float, Rotation.from_matrix(rotation).as_quat())
        return cls(parent, child, (x, y, z), (qx, qy, qz, qw))


@dataclass(frozen=True)
class BagFrame:
    """One frame as the bag holds it, every message stamped (and logged at) ``stamp_ns``.

    ``left``/``right``: H x W x 3 uint8 RGB (``right`` ``None``: a mono frame); ``camera``: the
    left camera at this image size, with the baseline for a stereo frame; ``depth``: H x W
    float32 metres of the left view as written (REP 118: NaN unknown, ``+inf`` too far), or
    ``None``; ``transforms``: static transforms besides the one between the optical frames
    (which comes from the baseline), published from this frame on.

    :raises ValueError: images and camera of different sizes, or a right image without a
        stereo baseline.
    """

    stamp_ns: int
    camera: PinholeCamera
    left: np.ndarray
    right: np.ndarray | None = None
    depth: np.ndarray | None = None
    transforms: tuple[StaticTransform, ...] = ()

    def __post_init__(self) -> None:
        size = (self.camera.height, self.camera.width)
        for name in ("left", "right", "depth"):
            pixels = getattr(self, name)
            if pixels is not None and pixels.shape[:2] != size:
                raise ValueError(
                    f"{name} image {pixels.shape[1]}x{pixels.shape[0]} does not match its "
                    f"camera {self.camera.width}x{self.camera.height}"
                )
        if self.right is not None and self.camera.baseline is None:
            raise ValueError("a stereo frame needs a camera with a baseline (it has none)")


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

    def tf_static(self, stamp_ns: int, transforms: Iterable[StaticTransform]) -> Any:
        """All ``transforms`` in one message, as tf2's static broadcaster sends them."""
        types = self.types
        return types["tf2_msgs/msg/TFMessage"](
            transforms=[
                types["geometry_msgs/msg/TransformStamped"](
                    header=self.header(stamp_ns, transform.parent),
                    child_frame_id=transform.child,
                    transform=types["geometry_msgs/msg/Transform"](
                        translation=types["geometry_msgs/msg/Vector3"](*transform.translation),
                        rotation=types["geometry_msgs/msg/Quaternion"](*transform.rotation),
                    ),
                )
                for transform in transforms
            ]
        )

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


def _optical_frames(baseline: float) -> StaticTransform:
    """The right optical frame ``baseline`` metres along the left one's x axis."""
    return StaticTransform(FRAME_IDS["left"], FRAME_IDS["right"], (baseline, 0.0, 0.0),
                           (0.0, 0.0, 0.0, 1.0))


def _write_bag(
    path: Path,
    frames: Callable[[], Iterable[BagFrame]],
    *,
    total: int,
    storage: str,
    distro: str,
    progress: bool,
) -> BagWriteSummary:
    """Write the frames ``frames()`` gives into the rosbag2 ``path`` (the one writing loop).

    Arguments and ``path`` are checked before ``frames()`` is called. A topic is added when its
    first message comes (a mono bag has no right topics, one without ground truth no depth
    topic). ``/tf_static`` is written when a frame adds or moves a static transform (the
    optical frames' one follows the camera's baseline), holding all of them, as tf2's static
    broadcaster latches them. ``total`` is for the progress bar.

    :raises ValueError: an unknown ``storage`` or ``distro``, or what ``frames`` raises.
    :raises BagWriteError: ``path`` exists, or writing failed. Whatever fails, nothing is left
        at ``path``.
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
    frame_source = frames()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(
            tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        )
    except OSError as error:
        raise BagWriteError(f"cannot write the bag {path}: {error}") from error
    partial = scratch / path.name
    started = time.perf_counter()
    count = written = 0
    stamps: list[int] = []
    cameras: dict[PinholeCamera, None] = {}
    static: dict[str, StaticTransform] = {}
    try:
        writer = Writer(partial, version=version, storage_plugin=StoragePlugin[storage.upper()])
        with writer:
            connections: dict[str, Any] = {}

            def write(topic: str, msgtype: str, stamp: int, message: Any, **qos: Any) -> None:
                nonlocal count
                if topic not in connections:
                    connections[topic] = writer.add_connection(
                        topic, msgtype, typestore=messages.store, **qos
                    )
                writer.write(connections[topic], stamp, messages.serialize(message))
                count += 1

            image, info = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"
            for frame in tqdm(frame_source, total=total, unit="frame", disable=not progress):
                stamp, camera = frame.stamp_ns, frame.camera
                added = list(frame.transforms)
                if frame.right is not None:
                    assert camera.baseline is not None  # BagFrame checks it
                    added.append(_optical_frames(camera.baseline))
                if any(static.get(transform.child) != transform for transform in added):
                    static.update((transform.child, transform) for transform in added)
                    write("/tf_static", "tf2_msgs/msg/TFMessage", stamp,
                          messages.tf_static(stamp, static.values()),
                          offered_qos_profiles=[_latched_qos()])
                left = messages.header(stamp, FRAME_IDS["left"])
                write(DEFAULT_TOPICS["left_topic"], image, stamp,
                      messages.image(left, frame.left, "rgb8"))
                write(DEFAULT_TOPICS["left_info_topic"], info, stamp,
                      messages.camera_info(left, camera, right=False))
                if frame.right is not None:
                    right = messages.header(stamp, FRAME_IDS["right"])
                    write(DEFAULT_TOPICS["right_topic"], image, stamp,
                          messages.image(right, frame.right, "rgb8"))
                    write(DEFAULT_TOPICS["right_info_topic"], info, stamp,
                          messages.camera_info(right, camera, right=True))
                if frame.depth is not None:
                    write(DEFAULT_TOPICS["depth_topic"], image, stamp,
                          messages.image(left, frame.depth.astype(np.float32), "32FC1"))
                stamps.append(stamp)
                cameras[camera] = None
                written += 1
        partial.rename(path)
    except (OSError, WriterError) as error:
        raise BagWriteError(f"cannot write the bag {path}: {error}") from error
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _LOGGER.info("%s: %d frames, %d messages", path, written, count)
    return BagWriteSummary(
        path=path,
        frames=written,
        messages=count,
        duration_s=(stamps[-1] - stamps[0]) / 1e9 if stamps else 0.0,
        seconds=time.perf_counter() - started,
        cameras=tuple(cameras),
    )


def _drive_frame(camera: PinholeCamera, frame: SequenceFrame) -> BagFrame:
    """Frame ``frame`` of a drive; the first places base_link on the ground below the left
    camera, axes along the drive."""
    transforms: tuple[StaticTransform, ...] = ()
    if frame.index == 0:
        transforms = (StaticTransform.from_matrix(
            FRAME_IDS["base"], FRAME_IDS["left"],
            np.array([0.0, 0.0, -frame.pose.position[1]]),
            _BASE_FROM_WORLD @ frame.pose.rotation,
        ),)
    rendering = frame.rendering
    return BagFrame(START_NS + round(frame.time_s * 1e9), camera, rendering.left, rendering.right,
                    rendering.depth, transforms)


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
    world, street by default; ``speed`` defaults to the world's) into the rosbag2 ``path``, with
    ``/tf_static`` from ``base_link`` (on the ground below the first left camera, axes along the
    drive) to both optical frames.

    Every message is logged at its header stamp, ``START_NS`` plus the frame's time.

    :raises ValueError: an unknown ``storage`` or ``distro``, or bad sequence arguments.
    :raises BagWriteError: ``path`` exists, or writing failed (nothing is left at ``path``).
    """

    def bag_frames() -> Iterable[BagFrame]:
        # Checks the arguments and draws the scene now; frames render as the loop asks.
        sequence = render_sequence(camera, frames, seed=seed, rate=rate, speed=speed, style=style)
        return (_drive_frame(camera, frame) for frame in sequence)

    return _write_bag(path, bag_frames, total=frames, storage=storage, distro=distro,
                      progress=progress)


def write_frames_bag(
    path: Path,
    frames: Sequence[Frame],
    *,
    rate: float = 10.0,
    repeat: int = 1,
    max_frames: int | None = None,
    storage: str = "sqlite3",
    distro: str = "jazzy",
    progress: bool = True,
) -> BagWriteSummary:
    """Write dataset frames (any loader of :mod:`cnd_depth_ros.data`) into the
    rosbag2 ``path``, for ``cnd-depth replay``.

    The first ``max_frames`` frames (default all), each ``repeat`` times in a row, are written
    ``1 / rate`` s apart from ``START_NS``; frames are read one at a time. Each frame's
    camera_info is its own camera at its own size, so frames of different sizes or rigs may
    share a bag. Depth is NaN wherever the frame has no ground truth (:attr:`Frame.valid`);
    frames without depth or a right image give a bag without that topic. ``/tf_static`` holds
    the right optical frame ``baseline`` along the left one's x axis, written again when the
    baseline changes.

    :raises ValueError: a ``rate`` that is not positive and finite, ``repeat`` or ``max_frames``
        below 1, no frames, an unknown ``storage`` or ``distro``, a stereo frame without a
        baseline.
    :raises DatasetError: a frame cannot be read.
    :raises BagWriteError: ``path`` exists, or writing failed. Whatever fails, nothing is left
        at ``path``.
    """
    if not 0 < rate < np.inf:
        raise ValueError(f"rate must be positive and finite, got {rate} Hz")
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    count = len(frames) if max_frames is None else min(max_frames, len(frames))
    if count == 0:
        raise ValueError("no frames to write")

    def bag_frames() -> Iterable[BagFrame]:
        for index in range(count):
            frame = frames[index]
            depth = None
            if frame.depth is not None:
                depth = np.where(frame.valid, frame.depth, np.nan).astype(np.float32)
            for copy in range(repeat):
                stamp = START_NS + round((index * repeat + copy) * 1e9 / rate)
                try:
                    bag_frame = BagFrame(stamp, frame.camera, frame.left, frame.right, depth)
                except ValueError as error:
                    raise ValueError(f"frame {frame.name or index}: {error}") from error
                yield bag_frame

    return _write_bag(path, bag_frames, total=count * repeat, storage=storage, distro=distro,
                      progress=progress)
