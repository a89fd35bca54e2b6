"""A robot's day through real DDS: depth_node as its own process, as a robot runs it.

One node process (sim time, approximate sync, as a robot replaying bags with
``ros2 bag play --clock --loop`` and cameras that are not hardware-synchronised) serves the
module: a bag loop sending time back, one camera silent for 10 s, a camera_info whose
resolution changes mid-stream. (The node killed and respawned by launch is in test_launch.py.)
Every wait has a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from fixtures.node_process import DepthNodeProcess
from fixtures.node_rig import NodeRig, status_values
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock
from test_depth_node import CAMERA, WAIT_S, save_tiny_artifact

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NAMESPACE = "robot"
STATUS = f"{NAMESPACE}/depth_node: depth"
RIGHT_LAG_S = 0.013  # the right camera's frames come 13 ms after the left's


def _time(seconds: float) -> Time:
    nanoseconds = round(seconds * 1e9)
    return Time(sec=nanoseconds // 10**9, nanosec=nanoseconds % 10**9)


def _seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


@dataclass
class Robot:
    rig: NodeRig
    node: DepthNodeProcess
    clock: Any

    def send(self, seconds: float, **pair: Any) -> Time:
        """The bag's /clock at ``seconds``, then a stereo pair stamped from it (the right
        camera a little late)."""
        self.clock.publish(Clock(clock=_time(seconds)))
        stamp = _time(seconds)
        self.rig.send(stamp, right_stamp=_time(seconds + RIGHT_LAG_S), **pair)
        self.rig.spin(lambda: False, 0.05)  # about 20 Hz
        return stamp

    def depth_after(self, count: int, condition: Any, timeout_s: float = WAIT_S) -> Any:
        """The first depth image past the first ``count`` that satisfies ``condition``."""

        def found() -> Any:
            return next((m for m in self.rig.messages("depth")[count:] if condition(m)), None)

        if not self.rig.spin(lambda: found() is not None, timeout_s):
            pytest.fail(f"no such depth image within {timeout_s} s; node log:\n"
                        f"{self.node.log.read_text()[-3000:]}")
        return found()

    def status(self) -> DiagnosticStatus | None:
        """The node's latest pipeline status."""
        return self.rig.status(STATUS)


@pytest.fixture(scope="module")
def robot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Robot]:
    folder = tmp_path_factory.mktemp("robot")
    artifact = save_tiny_artifact("cnd_stereo", folder)
    rclpy.init()
    rig = NodeRig(CAMERA, NAMESPACE, wait_s=WAIT_S)
    node = DepthNodeProcess(folder / "depth_node.log", NAMESPACE, {
        "model_path": artifact, "backend": "torch", "threads": "1", "use_sim_time": "true",
        "approximate_sync": "true", "diagnostic_updater.period": "0.5",
    })
    try:
        clock = rig.listener.create_publisher(Clock, "/clock", QoSProfile(depth=10))
        rig.start(node)
        yield Robot(rig, node, clock)
    finally:
        rig.close()
        node.stop(WAIT_S)
        rclpy.try_shutdown()


def test_a_looped_bag_sends_time_back_and_depth_goes_on(robot: Robot) -> None:
    """``ros2 bag play --clock --loop``: stamps and /clock jump back 1.9 s at each loop; the node
    resets its synchroniser (saying so) and keeps publishing."""
    for k in range(20):
        robot.send(100 + 0.1 * k)
    robot.depth_after(0, lambda m: _seconds(m.header.stamp) > 101.4)
    before = len(robot.rig.messages("depth"))
    for k in range(20):
        robot.send(100 + 0.1 * k)  # the loop starts again
    robot.depth_after(before, lambda m: 100.5 < _seconds(m.header.stamp) < 101.0)
    robot.depth_after(before, lambda m: _seconds(m.header.stamp) > 101.4)
    log = robot.node.log.read_text()
    assert "input time jumped back by 1.9" in log and "synchroniser reset" in log
    assert robot.rig.spin(lambda: status_values(robot.status()).get(
        "warnings: time jumped back", "0") != "0", WAIT_S)


def test_one_camera_silent_for_ten_seconds(robot: Robot) -> None:
    """The right camera stops for 10 s: /diagnostics warns, naming its topics; it comes back
    and so do depth and an OK status."""
    start = 200.0
    for k in range(10):
        robot.send(start + 0.1 * k)
    robot.depth_after(0, lambda m: _seconds(m.header.stamp) >= start)
    silent_until = time.monotonic() + 10.0
    k = 10
    while time.monotonic() < silent_until:
        robot.send(start + 0.1 * k, sides=("left",))
        k += 1
    status = robot.status()
    assert status is not None and status.level == DiagnosticStatus.WARN, status
    assert f"no messages on /{NAMESPACE}/right/image_rect (" in status.message
    assert f"/{NAMESPACE}/right/camera_info (" in status.message
    assert "the other inputs arrive" in status.message
    silent_s = float(status.message.split("image_rect (", 1)[1].split(" s)", 1)[0])
    assert silent_s > 8.0
    before = len(robot.rig.messages("depth"))
    back = start + 0.1 * k
    for j in range(10):
        robot.send(back + 0.1 * j)
    robot.depth_after(before, lambda m: _seconds(m.header.stamp) >= back)

    def recovered() -> bool:
        status = robot.status()
        return status is not None and status.level == DiagnosticStatus.OK

    for j in range(10, 60):  # a camera at 20 Hz until the status is OK again
        robot.send(back + 0.1 * j)
        if recovered():
            break
    assert recovered(), robot.status()


def test_camera_info_resolution_changes_mid_stream(robot: Robot) -> None:
    """The camera switches to a larger mode (image and camera_info together): the node keeps
    running and either adapts (depth at the new size) or says clearly what it refuses."""
    camera = robot.rig.driver
    larger = CAMERA.resized(CAMERA.width * 2, CAMERA.height * 2)
    before = len(robot.rig.messages("depth"))
    camera.camera = larger
    try:
        start = 300.0
        for k in range(10):
            robot.send(start + 0.1 * k)
        adapted = robot.rig.spin(lambda: any(
            _seconds(m.header.stamp) >= start for m in robot.rig.messages("depth")[before:]
        ), WAIT_S)
        if adapted:
            depth = next(m for m in robot.rig.messages("depth")[before:]
                         if _seconds(m.header.stamp) >= start)
            assert (depth.width, depth.height) == (larger.width, larger.height)
        else:
            assert f"{larger.width}x{larger.height}" in robot.node.log.read_text()
    finally:
        camera.camera = CAMERA
    assert robot.node.process is not None and robot.node.process.poll() is None
    before = len(robot.rig.messages("depth"))
    for k in range(10):
        robot.send(400 + 0.1 * k)
    depth = robot.depth_after(before, lambda m: _seconds(m.header.stamp) >= 400)
    assert (depth.width, depth.height) == (CAMERA.width, CAMERA.height)


def test_the_log_has_no_traceback(robot: Robot) -> None:
    """After the day: no internal error, no traceback in the node's log."""
    log = Path(robot.node.log).read_text()
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
