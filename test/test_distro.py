"""Supported ROS 2 distributions: this one passes; an older one gets one clear line at start.

Humble cannot be installed here (no ``ros-humble-*`` wheels exist), so the older distribution
is made by hiding what Jazzy added from a child process (a meta path finder refusing
``rclpy.event_handler``), which then runs the real ``depth_node`` entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from cnd_depth_ros.ros.distro import SUPPORTED, unsupported

HUMBLE = textwrap.dedent(
    """
    import sys
    from importlib.abc import MetaPathFinder

    class Humble(MetaPathFinder):  # rclpy 3.3 has rclpy.qos_event, not rclpy.event_handler
        def find_spec(self, name, path=None, target=None):
            if name == "rclpy.event_handler":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Humble())
    from cnd_depth_ros.ros.start import main
    raise SystemExit(main(["depth_node"]))
    """
)


def test_this_distribution_is_supported() -> None:
    assert unsupported() is None
    assert SUPPORTED == ("jazzy", "kilted")


def test_an_older_distribution_gets_one_clear_error() -> None:
    env = {**os.environ, "ROS_DISTRO": "humble", "RCUTILS_LOGGING_BUFFERED_STREAM": "0"}
    result = subprocess.run([sys.executable, "-c", HUMBLE], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 1, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "[FATAL]" in lines[0] and "ROS 2 Humble is not supported" in lines[0]
    assert "needs ROS 2 Jazzy or Kilted (or newer)" in lines[0]
    assert "rclpy.event_handler (Iron), publisher matched events (Jazzy)" in lines[0]
    assert "Traceback" not in result.stderr
