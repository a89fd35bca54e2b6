"""The QoS of depth_node's topics: sensor-data in, reliable out, both overridable.

Camera subscriptions are best effort (REP 2003 sensor data), which hears both best-effort and
reliable drivers; outputs are reliable with a small depth, which both rviz2's reliable default
and best-effort subscribers can read (a best-effort publisher is invisible to rviz2's default,
the most common complaint about image topics). ``use_system_default_qos`` switches both sides to
the middleware default, like stereo_image_proc. Every profile is a fresh object: rclpy applies
QoS overrides to the profile it is given in place.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
    qos_profile_system_default,
)
from rclpy.qos_overriding_options import QosCallbackResult, QoSOverridingOptions

__all__ = ["large_sample_warning", "overriding_options", "publisher_qos", "subscription_qos"]

#: ``FASTDDS_BUILTIN_TRANSPORTS`` settings (before any ``?options``) that carry every sample
#: between hosts over UDP datagrams: Fast DDS's default and the UDP-only ones.
_DATAGRAM_TRANSPORTS = frozenset({"", "DEFAULT", "DEFAULTV6", "UDPV4", "UDPV6"})


def subscription_qos(use_system_default: bool = False) -> QoSProfile:
    """Camera image and camera_info subscriptions: sensor data (best effort, keep last 5)."""
    return copy.copy(qos_profile_system_default if use_system_default else qos_profile_sensor_data)


def publisher_qos(use_system_default: bool = False, depth: int = 1) -> QoSProfile:
    """Output publishers: reliable, volatile, keep the last ``depth`` messages.

    :raises ValueError: ``depth`` is not positive.
    """
    if depth < 1:
        raise ValueError(f"publisher queue depth must be at least 1, got {depth}")
    if use_system_default:
        return copy.copy(qos_profile_system_default)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def _bounded_history(qos: QoSProfile) -> QosCallbackResult:
    """Reject overrides that would let queues of images grow without bound."""
    if qos.history == HistoryPolicy.KEEP_ALL:
        return QosCallbackResult(
            successful=False, reason="history keep_all would queue images without bound"
        )
    return QosCallbackResult(successful=True)


def overriding_options(entity_id: str | None = None) -> QoSOverridingOptions:
    """Let users override history, depth and reliability per topic with parameters such as
    ``qos_overrides./ns/points.publisher.reliability`` (read at creation, rclpy's convention);
    ``keep_all`` history is rejected. ``entity_id`` tells apart two entities on one topic.
    """
    return QoSOverridingOptions.with_default_policies(
        callback=_bounded_history, entity_id=entity_id
    )


def large_sample_warning(rmw: str, environ: Mapping[str, str]) -> str | None:
    """Why camera images may never arrive with this middleware setup, or ``None``.

    Fast DDS with its default transports splits a best-effort sample larger than a datagram
    into fragments and loses the whole image with any one of them: 0 of 50 640x480 rgb8 images
    arrived between two processes here, 50 of 50 with ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA``
    (docs/node.md). An XML profile file means the user chose the transports; other RMWs are
    not judged.
    """
    if not rmw.startswith("rmw_fastrtps"):
        return None
    if any(environ.get(f"{name}_DEFAULT_PROFILES_FILE") for name in ("FASTDDS", "FASTRTPS")):
        return None
    transports = environ.get("FASTDDS_BUILTIN_TRANSPORTS", "")
    if transports.split("?", 1)[0].strip().upper() not in _DATAGRAM_TRANSPORTS:
        return None
    return (
        f"Fast DDS runs with FASTDDS_BUILTIN_TRANSPORTS {transports or 'unset'}: camera images "
        "over best-effort QoS are lost whenever one of their datagram fragments is (0 of 50 "
        "640x480 images arrived in a test); set FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA for every "
        "process on the image path, the camera driver included (cnd_depth.launch.py does)"
    )

