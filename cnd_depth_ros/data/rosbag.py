"""A rosbag2 recording as a dataset: rectified stereo (or mono) images, camera_info, and a
ground-truth depth image topic, matched by header stamp.

Bags are read with ``rosbags`` (pure Python; sqlite3 and MCAP storage alike), so no ROS
installation is needed to train on them. Images, camera_infos, depth images and point clouds are
decoded by :mod:`cnd_depth_ros.messages`, as in the node and in replay: every command reads the
same camera and the same pixels from the same bag.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.data.base import FrameDataset
from cnd_depth_ros.data.frame import Frame
from cnd_depth_ros.errors import DatasetError
from cnd_depth_ros.geometry import project_points
from cnd_depth_ros.messages.bag import BagError, BagReader, cdr_header_stamp
from cnd_depth_ros.messages.camera_info import CameraInfoError, camera_from_info
from cnd_depth_ros.messages.image import (
    CompressedImageError,
    ImageCodecError,
    camera_image_to_rgb,
    depth_image_to_metres,
)
from cnd_depth_ros.messages.pointcloud import pointcloud2_to_xyz
from cnd_depth_ros.messages.tf_static import StaticTransforms
from cnd_depth_ros.messages.topics import DEFAULT_TOPICS, TF_STATIC

__all__ = ["RosbagDataset"]


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
    a stamp within ``slop`` seconds (0: exact match). The camera comes from the camera_infos
    nearest in time, read as the node reads them (the rectified ``P``, binning, the baseline from
    the right one's ``P[0, 3] = -fx * B``; a partial ROI or an unrectified pair is an error),
    scaled to the image size. ``right_topic=None`` reads a mono bag; ``depth_topic=None`` an
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
        tf_topic: str = TF_STATIC,
        slop: float = 0.0,
    ) -> None:
        if not slop >= 0:
            raise ValueError(f"slop must be >= 0 seconds, got {slop}")
        self.path = Path(path)
        self.topics = {"left": left_topic, "left_info": left_info_topic}
        if points_topic is not None or depth_topic is not None:
            self.topics["depth"] = points_topic or depth_topic
        self.lidar = points_topic is not None
        self.tf_topic = tf_topic
        self._cloud_to_camera: dict[str, np.ndarray] = {}
        self._cameras: dict[tuple[int, int], PinholeCamera] = {}
        if right_topic is not None:
            self.topics["right"] = right_topic
            self.topics["right_info"] = right_info_topic or DEFAULT_TOPICS["right_info_topic"]
        messages: dict[str, list[_Message]] = {role: [] for role in self.topics}
        infos: dict[str, list[tuple[int, Any]]] = {"left_info": [], "right_info": []}
        role_of = {topic: role for role, topic in self.topics.items()}
        try:
            with BagReader(self.path) as reader:
                present = set(reader.topics)
                missing = sorted(set(self.topics.values()) - present)
                if missing:
                    raise DatasetError(
                        f"rosbag {self.path} lacks topics {missing}; it has {sorted(present)}"
                    )
                for topic, log_time, raw in reader.messages(role_of):
                    role = role_of[topic]
                    if role in infos:
                        infos[role].append((cdr_header_stamp(raw), reader.deserialize(topic, raw)))
                    else:
                        messages[role].append(_Message(cdr_header_stamp(raw), log_time))
        except BagError as error:
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
        """The camera of the camera_infos nearest in time to ``stamp``, read as the node reads
        it (:func:`~cnd_depth_ros.messages.camera_info.camera_from_info`)."""
        def nearest(role: str) -> Any:
            if not infos[role]:
                raise DatasetError(f"rosbag {self.path}: no message on {self.topics[role]}")
            return min(infos[role], key=lambda entry: abs(entry[0] - stamp))[1]

        left = nearest("left_info")
        right = nearest("right_info") if "right_info" in self.topics else None
        key = (id(left), id(right))
        if key not in self._cameras:
            try:
                self._cameras[key] = camera_from_info(left, right)
            except CameraInfoError as error:
                raise DatasetError(f"rosbag {self.path}: {error}") from error
        return self._cameras[key]

    def load(self, item: _Item) -> Frame:
        wanted = {"left": item.left}
        if item.right is not None:
            wanted["right"] = item.right
        if item.depth is not None:
            wanted["depth"] = item.depth
        try:
            with BagReader(self.path) as reader:
                decoded = {role: self._message(reader, role, message)
                           for role, message in wanted.items()}
            left = camera_image_to_rgb(decoded["left"])
            right = camera_image_to_rgb(decoded["right"]) if "right" in decoded else None
        except (BagError, ImageCodecError, CompressedImageError) as error:
            raise DatasetError(f"rosbag {self.path}: {error}") from error
        height, width = left.shape[:2]
        camera = item.camera
        if (camera.width, camera.height) != (width, height):
            camera = camera.resized(width, height)
        depth = None
        if "depth" in decoded:
            truth = decoded["depth"]
            depth = self._lidar_depth(truth, camera) if self.lidar else self._depth(truth)
        return Frame(
            left=left,
            right=right,
            camera=camera,
            depth=depth,
            name=f"{self.path.name}/{item.stamp}",
        )

    def _message(self, reader: BagReader, role: str, message: _Message) -> Any:
        """The message of ``role`` that the index located."""
        topic = self.topics[role]
        for _, _, raw in reader.messages([topic], message.log_time, message.log_time + 1):
            if cdr_header_stamp(raw) == message.stamp:
                return reader.deserialize(topic, raw)
        raise DatasetError(f"rosbag {self.path} changed: {role} message gone")

    def _depth(self, image: Any) -> np.ndarray:
        try:
            return depth_image_to_metres(image)
        except ImageCodecError as error:
            raise DatasetError(f"rosbag {self.path}, {self.topics['depth']}: {error}") from error

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
            try:
                with BagReader(self.path) as reader:
                    transforms = StaticTransforms(reader, self.tf_topic)
                    self._cloud_to_camera[cloud_frame] = transforms.lookup(
                        self._camera_frame, cloud_frame
                    )
            except BagError as error:
                raise DatasetError(f"rosbag {self.path}: {error}") from error
        return self._cloud_to_camera[cloud_frame]
