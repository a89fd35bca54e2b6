"""The ``depth_node`` executable: the ROS 2 distribution checked before the node is imported.

On a distribution older than Jazzy, importing the node would fail with a traceback about some
rclpy module; this entry point logs one line naming the distribution and what is missing, and
exits with code 1 (:mod:`cnd_depth_ros.ros.distro`).
"""

from __future__ import annotations

import logging

from cnd_depth_ros.ros.distro import unsupported

__all__ = ["main"]


def main(args: list[str] | None = None) -> int:
    """``ros2 run cnd_depth_ros depth_node [--ros-args ...]``."""
    problem = unsupported()
    if problem is not None:
        try:
            from rclpy.logging import get_logger
        except ImportError:  # not even rclpy: Python's logging is what is left
            logging.basicConfig(format="[FATAL] [depth_node]: %(message)s")
            logging.getLogger("depth_node").critical(problem)
        else:
            get_logger("depth_node").fatal(problem)
        return 1
    from cnd_depth_ros.ros.depth_node import main as node_main

    return node_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
