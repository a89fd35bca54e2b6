"""Rigid transforms between sensor frames, from a bag's ``/tf_static`` or given by hand.

A LiDAR's ground truth is compared in the left camera's optical frame, so its points need the
transform from the cloud's ``frame_id`` to the image's. tf2 stores a tree of parent -> child
transforms; this walks the tree of the static ones recorded in a bag, so the two frames may be
linked through others (``base_link`` is the usual common parent). The bag writers publish
theirs with :func:`tf_message`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from cnd_depth_ros.messages.bag import TF_MESSAGE, BagError, BagReader
from cnd_depth_ros.messages.builders import make_header, message_class

__all__ = ["StaticTransform", "StaticTransforms", "tf_message", "transform_matrix"]


def transform_matrix(translation: Sequence[float], quaternion: Sequence[float]) -> np.ndarray:
    """The 4 x 4 matrix of a translation ``x, y, z`` and a rotation quaternion ``x, y, z, w``.

    :raises ValueError: the quaternion has zero length or a value is not finite.
    """
    values = np.asarray([*translation, *quaternion], dtype=np.float64)
    if values.shape != (7,) or not np.isfinite(values).all():
        raise ValueError(f"a transform is x y z qx qy qz qw (7 finite numbers), got {values}")
    if not np.linalg.norm(values[3:]) > 1e-9:
        raise ValueError("the transform's quaternion has zero length")
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_quat(values[3:]).as_matrix()
    matrix[:3, 3] = values[:3]
    return matrix


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


def tf_message(
    transforms: Iterable[StaticTransform], stamp_ns: int, typestore: Any | None = None
) -> Any:
    """All ``transforms`` in one ``tf2_msgs/TFMessage`` stamped ``stamp_ns``, as tf2's static
    broadcaster sends them: rclpy's, or with ``typestore`` a ``rosbags`` one
    (:mod:`~cnd_depth_ros.messages.builders`)."""

    def build(msgtype: str, **fields: Any) -> Any:
        return message_class(f"geometry_msgs/msg/{msgtype}", typestore)(**fields)

    def values(names: str, numbers: Sequence[float]) -> dict[str, float]:
        return dict(zip(names, numbers, strict=True))

    return message_class(TF_MESSAGE, typestore)(
        transforms=[
            build(
                "TransformStamped",
                header=make_header(stamp_ns, transform.parent, typestore),
                child_frame_id=transform.child,
                transform=build(
                    "Transform",
                    translation=build("Vector3", **values("xyz", transform.translation)),
                    rotation=build("Quaternion", **values("xyzw", transform.rotation)),
                ),
            )
            for transform in transforms
        ]
    )


def _matrix_of(transform: Any) -> np.ndarray:
    t, q = transform.translation, transform.rotation
    return transform_matrix((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))


class StaticTransforms:
    """The tree of static transforms in ``topic`` of a bag (the last one wins for a child)."""

    def __init__(self, reader: BagReader, topic: str = "/tf_static") -> None:
        reader.require(topic, TF_MESSAGE, "static transform")
        self.source = f"{topic} in {reader.path}"
        # child frame -> (parent frame, pose of the child in the parent)
        self.parents: dict[str, tuple[str, np.ndarray]] = {}
        for _, _, raw in reader.messages([topic]):
            for transform in reader.deserialize(topic, raw).transforms:
                child = transform.child_frame_id.lstrip("/")
                parent = transform.header.frame_id.lstrip("/")
                self.parents[child] = (parent, _matrix_of(transform.transform))

    def _to_root(self, frame: str) -> tuple[str, np.ndarray]:
        """The root of ``frame``'s tree and the pose of ``frame`` in it."""
        pose = np.eye(4)
        seen = {frame}
        while frame in self.parents:
            frame, step = self.parents[frame]
            pose = step @ pose
            if frame in seen:
                raise BagError(f"{self.source} has a cycle through frame {frame!r}")
            seen.add(frame)
        return frame, pose

    def lookup(self, target: str, source: str) -> np.ndarray:
        """The 4 x 4 transform taking points in ``source`` to ``target`` coordinates.

        :raises BagError: the two frames are not linked by the recorded transforms.
        """
        target, source = target.lstrip("/"), source.lstrip("/")
        target_root, target_pose = self._to_root(target)
        source_root, source_pose = self._to_root(source)
        if target_root != source_root:
            frames = sorted({*self.parents, *(parent for parent, _ in self.parents.values())})
            raise BagError(
                f"{self.source} does not link frame {source!r} to {target!r}; its frames: "
                f"{', '.join(frames) or 'none'}"
            )
        return np.linalg.inv(target_pose) @ source_pose
