"""Ground truth for a predicted depth image, found by header stamp in a bag.

Two sources: a depth image topic (REP 118, e.g. a simulator's or the synthetic bag's
``/ground_truth/depth``), compared at its own resolution; or a LiDAR ``PointCloud2`` topic, whose
points are moved into the left camera's optical frame (a given transform, or the bag's
``/tf_static``) and projected into the prediction's pixels, nearest point winning, giving sparse
ground truth. Matching is by header stamp, the one clock every output of the node carries: the
nearest ground-truth stamp within ``slop`` (0: exact).
"""

from __future__ import annotations

import bisect
from typing import Any, Protocol

import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.geometry import project_points
from cnd_depth_ros.messages.bag import (
    CAMERA_INFO,
    IMAGE,
    POINT_CLOUD,
    BagError,
    BagReader,
    stamp_ns,
)
from cnd_depth_ros.messages.camera_info import camera_from_info
from cnd_depth_ros.messages.image import ImageCodecError, depth_image_to_metres
from cnd_depth_ros.messages.pointcloud import pointcloud2_to_xyz
from cnd_depth_ros.messages.tf_static import StaticTransforms

__all__ = [
    "DepthTopicTruth",
    "GroundTruth",
    "PointCloudTruth",
    "StampIndex",
    "decode_depth_message",
]


def decode_depth_message(message: Any, where: str) -> np.ndarray:
    """H x W float32 metres of a 32FC1 / 16UC1 depth image, NaN where unknown.

    :raises BagError: another encoding or a short buffer, naming ``where`` it came from.
    """
    try:
        return depth_image_to_metres(message)
    except ImageCodecError as error:
        raise BagError(f"{where}: {error}") from error


class StampIndex:
    """Header stamp -> log time of every message on one topic, for lookups by stamp."""

    def __init__(self, reader: BagReader, topic: str) -> None:
        self.topic = topic
        entries = sorted(
            (stamp_ns(reader.deserialize(topic, raw)), log_time)
            for _, log_time, raw in reader.messages([topic])
        )
        self.stamps = [stamp for stamp, _ in entries]
        self.log_times = [log_time for _, log_time in entries]

    def __len__(self) -> int:
        return len(self.stamps)

    def find(self, stamp: int, slop_ns: int = 0) -> int | None:
        """Log time of the message whose stamp is nearest ``stamp``, if within ``slop_ns``."""
        index = bisect.bisect_left(self.stamps, stamp)
        nearest = min(
            (i for i in (index - 1, index) if 0 <= i < len(self.stamps)),
            key=lambda i: abs(self.stamps[i] - stamp),
            default=None,
        )
        if nearest is None or abs(self.stamps[nearest] - stamp) > slop_ns:
            return None
        return self.log_times[nearest]


class GroundTruth(Protocol):
    """Where the ground truth of a predicted frame comes from."""

    def depth(self, stamp: int, shape: tuple[int, int]) -> np.ndarray | None:
        """Ground-truth depth (metres, NaN unknown) for the prediction of shape ``(H, W)`` with
        header ``stamp`` (ns), or ``None`` if no ground truth has a stamp near enough. The
        result may have another size; the prediction is then resized to it."""
        ...


class DepthTopicTruth:
    """Ground truth from a depth image topic.

    :raises BagError: the topic is missing, empty or not ``sensor_msgs/Image``.
    """

    def __init__(self, reader: BagReader, topic: str, slop_s: float = 0.0) -> None:
        reader.require(topic, IMAGE, "ground-truth depth")
        self.reader, self.topic = reader, topic
        self.index = StampIndex(reader, topic)
        self.slop_ns = round(slop_s * 1e9)

    def depth(self, stamp: int, shape: tuple[int, int]) -> np.ndarray | None:
        log_time = self.index.find(stamp, self.slop_ns)
        if log_time is None:
            return None
        return decode_depth_message(self.reader.at(self.topic, log_time), self.topic)


class PointCloudTruth:
    """Ground truth from a LiDAR ``PointCloud2`` topic, projected into the left camera.

    ``transform`` (4 x 4) takes cloud coordinates to the left optical frame; without it the
    transform is looked up in ``tf_topic`` between the cloud's and the camera_info's frames.

    :raises BagError: a topic is missing, empty or of another type.
    """

    def __init__(
        self,
        reader: BagReader,
        topic: str,
        info_topic: str,
        *,
        transform: np.ndarray | None = None,
        tf_topic: str = "/tf_static",
        slop_s: float = 0.0,
    ) -> None:
        reader.require(topic, POINT_CLOUD, "ground-truth point cloud")
        reader.require(info_topic, CAMERA_INFO, "left camera_info")
        self.reader, self.topic, self.info_topic = reader, topic, info_topic
        self.index = StampIndex(reader, topic)
        self.info_index = StampIndex(reader, info_topic)
        self.transform = transform
        self.tf_topic = tf_topic
        self._tree: StaticTransforms | None = None
        self.slop_ns = round(slop_s * 1e9)

    def _camera(self, stamp: int, shape: tuple[int, int]) -> tuple[PinholeCamera, str]:
        """The left camera at the prediction's size, and its optical frame."""
        log_time = self.info_index.find(stamp, slop_ns=2**62)
        assert log_time is not None  # the index is not empty: require() checked
        info = self.reader.at(self.info_topic, log_time)
        try:
            camera = camera_from_info(info)
        except ValueError as error:
            raise BagError(f"{self.info_topic} in {self.reader.path}: {error}") from error
        height, width = shape
        return camera.resized(width, height), info.header.frame_id

    def _cloud_to_camera(self, cloud_frame: str, camera_frame: str) -> np.ndarray:
        if self.transform is not None:
            return self.transform
        if self._tree is None:
            self._tree = StaticTransforms(self.reader, self.tf_topic)
        return self._tree.lookup(camera_frame, cloud_frame)

    def depth(self, stamp: int, shape: tuple[int, int]) -> np.ndarray | None:
        log_time = self.index.find(stamp, self.slop_ns)
        if log_time is None:
            return None
        cloud = self.reader.at(self.topic, log_time)
        try:
            points = pointcloud2_to_xyz(cloud).reshape(-1, 3).astype(np.float64)
        except ValueError as error:
            raise BagError(f"{self.topic} in {self.reader.path}: {error}") from error
        camera, camera_frame = self._camera(stamp, shape)
        return project_points(points, camera, self._cloud_to_camera(cloud.header.frame_id,
                                                                    camera_frame))
