"""A rosbag2 recording as a dataset: rectified stereo (or mono) images, camera_info, and a
ground-truth depth image topic, matched by header stamp.

Bags are read with ``rosbags`` (pure Python; sqlite3 and MCAP storage alike), so no ROS
installation is needed to train on them. Depth follows REP 118: ``32FC1`` metres (NaN, inf or 0
where unknown) or ``16UC1`` millimetres (0 where unknown).
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.cloud_fields import pointcloud2_to_xyz
from cnd_depth_ros.compressed_image import CompressedImageError, compressed_to_rgb
from cnd_depth_ros.errors import DatasetError
from cnd_depth_ros.geometry import project_points
from cnd_depth_ros.training.datasets.base import FrameDataset
from cnd_depth_ros.training.datasets.frame import Frame

__all__ = ["DEFAULT_TOPICS", "RosbagDataset", "decode_depth", "decode_rgb"]

#: Topic defaults: the node's input names (stereo_image_proc's) plus a ground-truth depth topic.
DEFAULT_TOPICS = {
    "left_topic": "/left/image_rect",
    "left_info_topic": "/left/camera_info",
    "right_topic": "/right/image_rect",
    "right_info_topic": "/right/camera_info",
    "depth_topic": "/ground_truth/depth",
}

_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


def _pixels(msg: Any, dtype: np.dtype, channels: int) -> np.ndarray:
    """The H x W x C array of an Image message, honouring row padding and byte order."""
    dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    row = msg.width * channels * dtype.itemsize
    if msg.step < row or len(msg.data) < msg.step * msg.height:
        raise DatasetError(
            f"image message {msg.width}x{msg.height} {msg.encoding} has step {msg.step} and "
            f"{len(msg.data)} bytes: too few"
        )
    rows = np.frombuffer(msg.data, np.uint8, msg.step * msg.height).reshape(msg.height, msg.step)
    values = rows[:, :row].copy().view(dtype)
    return values.reshape(msg.height, msg.width, channels).astype(dtype.newbyteorder("="))


def decode_rgb(msg: Any) -> np.ndarray:
    """H x W x 3 uint8 RGB of a ``sensor_msgs/Image`` in rgb8, bgr8, rgba8, bgra8 or mono8, or
    of a ``sensor_msgs/CompressedImage`` (JPEG, PNG: a camera recorded through image_transport)."""
    if hasattr(msg, "format"):  # only CompressedImage has one
        try:
            return compressed_to_rgb(msg)
        except CompressedImageError as error:
            raise DatasetError(str(error)) from error
    channels = _CHANNELS.get(msg.encoding)
    if channels is None:
        raise DatasetError(
            f"unsupported image encoding {msg.encoding!r}; expected one of {sorted(_CHANNELS)}"
        )
    pixels = _pixels(msg, np.dtype(np.uint8), channels)
    if channels == 1:
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    if msg.encoding.startswith("bgr"):
        pixels = pixels[..., 2::-1]
    return np.ascontiguousarray(pixels[..., :3])


def decode_depth(msg: Any) -> np.ndarray:
    """H x W float32 metres of a 32FC1 (metres) or 16UC1 (millimetres) depth image, NaN where
    there is no depth."""
    if msg.encoding == "32FC1":
        depth = _pixels(msg, np.dtype(np.float32), 1)[..., 0]
    elif msg.encoding == "16UC1":
        depth = _pixels(msg, np.dtype(np.uint16), 1)[..., 0].astype(np.float32) / 1000.0
    else:
        raise DatasetError(f"unsupported depth encoding {msg.encoding!r}; use 32FC1 or 16UC1")
    depth = depth.astype(np.float32, copy=False)
    depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    return depth


def _header_stamp(raw: bytes | memoryview) -> int:
    """Header stamp in ns of a CDR-serialised message that starts with ``std_msgs/Header``
    (Image, CameraInfo), read without decoding the rest: a 4-byte encapsulation header whose
    second byte is 1 for little-endian, then ``int32 sec``, ``uint32 nanosec``."""
    order = "<" if raw[1] == 1 else ">"
    sec, nanosec = struct.unpack_from(f"{order}iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


@dataclass(frozen=True)
class _Message:
    """Where one message lies: its header stamp and its bag (log) time."""

    stamp: int
    log_time: int


@dataclass(frozen=True)
class _Item:
    stamp: int
    left: _Message
    right: _Message | None
    depth: _Message | None
    camera: PinholeCamera


class RosbagDataset(FrameDataset[_Item]):
    """Frames of the rosbag2 at ``path`` (a bag folder with ``metadata.yaml``).

    Each left image becomes a frame when the depth image (and, for stereo, the right image) has
    a stamp within ``slop`` seconds (0: exact match). Camera intrinsics come from the left
    camera_info nearest in time, scaled to the image size; the baseline from the right one
    (``P[0, 3] = -fx * B``). ``right_topic=None`` reads a mono bag; ``depth_topic=None`` an
    unlabeled one (frames without depth, for self-supervised fine-tuning). ``points_topic`` takes
    the ground truth from a LiDAR ``PointCloud2`` topic instead of a depth image: each cloud is
    moved into the left camera's optical frame through the bag's static transforms
    (``tf_topic``) and projected, nearest point per pixel, into sparse depth. Missing topics are
    an error that names them.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        left_topic: str = DEFAULT_TOPICS["left_topic"],
        left_info_topic: str = DEFAULT_TOPICS["left_info_topic"],
        right_topic: str | None = DEFAULT_TOPICS["right_topic"],
        right_info_topic: str | None = DEFAULT_TOPICS["right_info_topic"],
        depth_topic: str | None = DEFAULT_TOPICS["depth_topic"],
        points_topic: str | None = None,
        tf_topic: str = "/tf_static",
        slop: float = 0.0,
    ) -> None:
        from rosbags.rosbag2 import Reader, ReaderError
        from rosbags.typesys import Stores, get_typestore

        if not slop >= 0:
            raise ValueError(f"slop must be >= 0 seconds, got {slop}")
        self.path = Path(path)
        self.topics = {"left": left_topic, "left_info": left_info_topic}
        if points_topic is not None or depth_topic is not None:
            self.topics["depth"] = points_topic or depth_topic
        self.lidar = points_topic is not None
        self.tf_topic = tf_topic
        self._cloud_to_camera: dict[str, np.ndarray] = {}
        if right_topic is not None:
            self.topics["right"] = right_topic
            self.topics["right_info"] = right_info_topic or DEFAULT_TOPICS["right_info_topic"]
        typestore = get_typestore(Stores.LATEST)
        messages: dict[str, list[_Message]] = {role: [] for role in self.topics}
        infos: dict[str, list[tuple[int, Any]]] = {"left_info": [], "right_info": []}
        role_of = {topic: role for role, topic in self.topics.items()}
        try:
            with Reader(self.path) as reader:
                present = {connection.topic for connection in reader.connections}
                missing = sorted(set(self.topics.values()) - present)
                if missing:
                    raise DatasetError(
                        f"rosbag {self.path} lacks topics {missing}; it has {sorted(present)}"
                    )
                wanted = [c for c in reader.connections if c.topic in role_of]
                for connection, log_time, raw in reader.messages(connections=wanted):
                    role = role_of[connection.topic]
                    if role in infos:
                        info = typestore.deserialize_cdr(raw, connection.msgtype)
                        infos[role].append((_header_stamp(raw), info))
                    else:
                        messages[role].append(_Message(_header_stamp(raw), log_time))
        except (ReaderError, OSError) as error:
            raise DatasetError(f"cannot read rosbag {self.path}: {error}") from error
        self._camera_frame = infos["left_info"][0][1].header.frame_id if infos["left_info"] else ""
        items = self._match(messages, infos, round(slop * 1e9))
        if not items:
            counts = {self.topics[role]: len(found) for role, found in messages.items()}
            raise DatasetError(
                f"rosbag {self.path}: no left image has a matching stamp on every topic "
                f"(slop {slop} s); messages per topic: {counts}"
            )
        super().__init__(items)

    @staticmethod
    def _nearest(
        found: list[_Message], stamps: list[int], stamp: int, slop: int
    ) -> _Message | None:
        index = bisect.bisect_left(stamps, stamp)
        candidates = [found[i] for i in (index - 1, index) if 0 <= i < len(found)]
        best = min(candidates, key=lambda message: abs(message.stamp - stamp), default=None)
        return best if best is not None and abs(best.stamp - stamp) <= slop else None

    def _match(
        self,
        messages: dict[str, list[_Message]],
        infos: dict[str, list[tuple[int, Any]]],
        slop: int,
    ) -> list[_Item]:
        for found in messages.values():
            found.sort(key=lambda message: message.stamp)
        stamps = {role: [message.stamp for message in found] for role, found in messages.items()}
        items = []
        for left in messages["left"]:
            depth = None
            if "depth" in messages:
                depth = self._nearest(messages["depth"], stamps["depth"], left.stamp, slop)
                if depth is None:
                    continue
            right = None
            if "right" in messages:
                right = self._nearest(messages["right"], stamps["right"], left.stamp, slop)
                if right is None:
                    continue
            items.append(_Item(left.stamp, left, right, depth, self._camera(infos, left.stamp)))
        return items

    def _camera(self, infos: dict[str, list[tuple[int, Any]]], stamp: int) -> PinholeCamera:
        def nearest(role: str) -> Any:
            if not infos[role]:
                raise DatasetError(f"rosbag {self.path}: no message on {self.topics[role]}")
            return min(infos[role], key=lambda entry: abs(entry[0] - stamp))[1]

        left = nearest("left_info")
        fx, fy, cx, cy = (float(left.p[i]) for i in (0, 5, 2, 6))
        if fx <= 0:  # an unrectified camera_info: fall back on K
            fx, fy, cx, cy = (float(left.k[i]) for i in (0, 4, 2, 5))
        baseline = None
        if "right_info" in self.topics:
            right = nearest("right_info")
            if not right.p[0] > 0 or not -right.p[3] > 0:
                raise DatasetError(
                    f"rosbag {self.path}: {self.topics['right_info']} has no stereo baseline "
                    f"(P[0,3] = {right.p[3]}, want -fx * baseline < 0)"
                )
            baseline = -float(right.p[3]) / float(right.p[0])
        return PinholeCamera(int(left.width), int(left.height), fx, fy, cx, cy, baseline)

    def load(self, item: _Item) -> Frame:
        from rosbags.rosbag2 import Reader
        from rosbags.typesys import Stores, get_typestore

        typestore = get_typestore(Stores.LATEST)
        wanted = {"left": item.left}
        if item.right is not None:
            wanted["right"] = item.right
        if item.depth is not None:
            wanted["depth"] = item.depth
        decoded: dict[str, Any] = {}
        with Reader(self.path) as reader:
            for role, message in wanted.items():
                connections = [c for c in reader.connections if c.topic == self.topics[role]]
                for connection, _, raw in reader.messages(
                    connections, start=message.log_time, stop=message.log_time + 1
                ):
                    if _header_stamp(raw) == message.stamp:
                        decoded[role] = typestore.deserialize_cdr(raw, connection.msgtype)
                        break
                else:
                    raise DatasetError(f"rosbag {self.path} changed: {role} message gone")
        left = decode_rgb(decoded["left"])
        height, width = left.shape[:2]
        camera = item.camera
        if (camera.width, camera.height) != (width, height):
            camera = camera.resized(width, height)
        depth = None
        if "depth" in decoded:
            truth = decoded["depth"]
            depth = self._lidar_depth(truth, camera) if self.lidar else decode_depth(truth)
        return Frame(
            left=left,
            right=decode_rgb(decoded["right"]) if "right" in decoded else None,
            camera=camera,
            depth=depth,
            name=f"{self.path.name}/{item.stamp}",
        )

    def _lidar_depth(self, cloud: Any, camera: PinholeCamera) -> np.ndarray:
        """Sparse depth of a LiDAR cloud seen by ``camera`` (see the class docstring)."""
        try:
            points = pointcloud2_to_xyz(cloud).reshape(-1, 3).astype(np.float64)
        except ValueError as error:
            raise DatasetError(f"rosbag {self.path}, {self.topics['depth']}: {error}") from error
        return project_points(points, camera, self._transform(cloud.header.frame_id))

    def _transform(self, cloud_frame: str) -> np.ndarray:
        """The 4 x 4 transform from ``cloud_frame`` to the left optical frame, from the bag's
        static transforms (read once per frame name)."""
        if cloud_frame not in self._cloud_to_camera:
            # Imported here: evaluation's bag reading imports this module.
            from cnd_depth_ros.evaluation.bag_io import BagError, BagReader
            from cnd_depth_ros.evaluation.tf_static import StaticTransforms

            try:
                with BagReader(self.path) as reader:
                    transforms = StaticTransforms(reader, self.tf_topic)
                    self._cloud_to_camera[cloud_frame] = transforms.lookup(
                        self._camera_frame, cloud_frame
                    )
            except BagError as error:
                raise DatasetError(f"rosbag {self.path}: {error}") from error
        return self._cloud_to_camera[cloud_frame]
