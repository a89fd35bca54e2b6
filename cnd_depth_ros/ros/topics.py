"""The camera topics depth_node subscribes to, resolved as image_transport resolves them.

image_pipeline (5.x) derives a camera's ``camera_info`` topic from its image topic:
``/cam/left/image_rect`` pairs with ``/cam/left/camera_info``, so remapping ``left/image_rect``
alone moves both, and a compressed transport adds ``/compressed`` to the remapped image topic.
An explicit remap of ``left/camera_info`` (or of ``left/image_rect/compressed``) still wins,
so launch files that remap every topic keep working.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rclpy.node import Node

__all__ = ["CameraTopics", "camera_topics", "info_topic_for"]

#: image_transport's suffix of each transport's topic, after the image topic.
TRANSPORT_SUFFIX = {"raw": "", "compressed": "/compressed"}


@dataclass(frozen=True)
class CameraTopics:
    """One camera's resolved topics."""

    side: str
    image: str
    camera_info: str


def info_topic_for(image_topic: str) -> str:
    """``camera_info`` beside a resolved image topic (image_transport's getCameraInfoTopic).

    :raises ValueError: ``image_topic`` is not fully qualified or has no parent namespace part
        to put ``camera_info`` beside (``/image_rect`` pairs with ``/camera_info``).
    """
    if not image_topic.startswith("/"):
        raise ValueError(f"image topic {image_topic!r} is not fully qualified")
    parent = image_topic.rstrip("/").rsplit("/", 1)[0]
    return f"{parent}/camera_info"


def _remapped(node: Node, name: str) -> str | None:
    """Where an explicit remap rule sends ``name``, or None without one."""
    resolved = node.resolve_topic_name(name)
    return resolved if resolved != node.resolve_topic_name(name, only_expand=True) else None


def camera_topics(node: Node, sides: Sequence[str], transport: str) -> list[CameraTopics]:
    """The image and camera_info topics of each side (``left``, ``right``) for ``transport``.

    :raises ValueError: an unknown transport.
    """
    if transport not in TRANSPORT_SUFFIX:
        raise ValueError(f"image transport must be one of {sorted(TRANSPORT_SUFFIX)}, "
                         f"got {transport!r}")
    topics = []
    for side in sides:
        base = node.resolve_topic_name(f"{side}/image_rect")
        suffix = TRANSPORT_SUFFIX[transport]
        image = (_remapped(node, f"{side}/image_rect{suffix}") if suffix else None) or (
            base + suffix
        )
        info = _remapped(node, f"{side}/camera_info") or info_topic_for(base)
        topics.append(CameraTopics(side=side, image=image, camera_info=info))
    return topics
