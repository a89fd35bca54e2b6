"""Which ROS 2 distributions depth_node runs on, and one clear error on the others.

Supported: Jazzy (LTS) and Kilted, and newer. The node uses rclpy APIs that Humble and Iron lack;
there it would fail at import with a traceback about some module. Instead :func:`unsupported`
names the distribution and what is missing, and ``depth_node`` logs that one line and exits.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from collections.abc import Callable, Mapping

__all__ = ["SUPPORTED", "unsupported"]

#: The distributions the package is tested on (README, package.xml).
SUPPORTED = ("jazzy", "kilted")


def _has_module(name: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package missing, or a blocked module
            return False

    return check


def _has_matched_events() -> bool:
    try:
        from rclpy.event_handler import PublisherEventCallbacks
    except ImportError:
        return False
    return "matched" in inspect.signature(PublisherEventCallbacks).parameters


def _has_post_set_callback() -> bool:
    try:
        from rclpy.node import Node
    except ImportError:
        return False
    return hasattr(Node, "add_post_set_parameters_callback")


#: What depth_node needs from rclpy, and where it first appeared.
REQUIREMENTS: dict[str, tuple[Callable[[], bool], str]] = {
    "rclpy": (_has_module("rclpy"), "a ROS 2 installation (source its setup.bash)"),
    "rclpy.event_handler": (_has_module("rclpy.event_handler"), "Iron"),
    "publisher matched events": (_has_matched_events, "Jazzy"),
    "post-set parameter callbacks": (_has_post_set_callback, "Iron"),
    "rclpy.lifecycle": (_has_module("rclpy.lifecycle"), "Humble"),
}


def unsupported(environ: Mapping[str, str] = os.environ) -> str | None:
    """Why depth_node cannot run on this ROS 2 installation (naming the distribution and what
    is missing), or ``None`` where it can."""
    missing = [f"{name} ({since})" for name, (present, since) in REQUIREMENTS.items()
               if not present()]
    if not missing:
        return None
    distro = environ.get("ROS_DISTRO", "")
    installed = f"ROS 2 {distro.capitalize()}" if distro else "this ROS 2 installation"
    return (
        f"{installed} is not supported: cnd_depth_ros needs ROS 2 "
        f"{' or '.join(name.capitalize() for name in SUPPORTED)} (or newer); missing here: "
        f"{', '.join(missing)}"
    )
