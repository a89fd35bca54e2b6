"""Pipeline diagnostics: rates, latency percentiles, drops, and the OK/WARN/ERROR verdict."""

import threading

import pytest
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from fixtures.ros import Inbox, rclpy_init_fixture, ros_executor_fixture, spin_until  # noqa: F401
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile

from cnd_depth_ros.ros.diagnostics import PipelineDiagnostics


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def _run(diagnostics: PipelineDiagnostics, clock: _Clock, seconds: float, hz: float, **kw) -> None:
    """Feed inputs at ``hz``; each gets an output with ``latency`` unless ``drop`` names a
    reason, in which case every ``drop_every``-th input is dropped instead."""
    latency, drop, drop_every = kw.get("latency"), kw.get("drop"), kw.get("drop_every", 1)
    for k in range(round(seconds * hz)):
        clock.now += 1.0 / hz
        diagnostics.record_input()
        if drop is not None and k % drop_every == 0:
            diagnostics.record_drop(drop)
        elif latency is not None:
            diagnostics.record_output(latency(k))


def test_steady_pipeline_is_ok() -> None:
    clock = _Clock()
    diagnostics = PipelineDiagnostics("depth_node: pipeline", hardware_id="cpu", clock=clock)
    diagnostics.set_info("backend", "onnxruntime")
    diagnostics.set_info("model", "cnd_stereo")
    # 16 Hz: event times are exact binary fractions, so none falls on the window's edge.
    _run(diagnostics, clock, seconds=10.0, hz=16.0, latency=lambda k: 0.010 + 0.001 * (k % 20))
    status = diagnostics.status()
    values = _values(status)
    assert status.level == DiagnosticStatus.OK
    assert (status.name, status.hardware_id, status.message) == (
        "depth_node: pipeline",
        "cpu",
        "ok",
    )
    assert values["input rate (Hz)"] == values["output rate (Hz)"] == "16.0"
    # The last 5 s hold 80 latencies, four of each of 10 ... 29 ms.
    assert values["latency p50 (ms)"] == "19.50"
    assert values["latency p95 (ms)"] == "28.05"
    assert values["drops (total)"] == "0"
    assert (values["backend"], values["model"]) == ("onnxruntime", "cnd_stereo")


def test_rates_count_only_the_window() -> None:
    clock = _Clock()
    diagnostics = PipelineDiagnostics("p", window_s=2.0, clock=clock)
    _run(diagnostics, clock, seconds=5.0, hz=64.0, latency=lambda k: 0.05)
    _run(diagnostics, clock, seconds=2.0, hz=8.0, latency=lambda k: 0.01)
    values = _values(diagnostics.status())
    assert values["input rate (Hz)"] == "8.0"
    assert values["latency p95 (ms)"] == "10.00"


def test_silence_warns() -> None:
    clock = _Clock()
    diagnostics = PipelineDiagnostics("p", input_timeout_s=2.0, clock=clock)
    assert diagnostics.status().level == DiagnosticStatus.OK
    clock.now += 2.5
    status = diagnostics.status()
    assert status.level == DiagnosticStatus.WARN
    assert status.message == "no input for 2.5 s"
    assert _values(status)["latency p50 (ms)"] == "n/a"


def test_input_without_output_is_an_error() -> None:
    clock = _Clock()
    diagnostics = PipelineDiagnostics("p", input_timeout_s=1.0, clock=clock)
    _run(diagnostics, clock, seconds=3.0, hz=8.0, drop="bad_message")
    status = diagnostics.status()
    assert status.level == DiagnosticStatus.ERROR
    assert status.message.startswith("input arrives but no output for 3.0 s; drops 100% > 50%")
    assert _values(status)["drops: bad_message"] == "24"


def test_drops_above_the_limit_warn_with_the_main_reason() -> None:
    clock = _Clock()
    diagnostics = PipelineDiagnostics("p", max_drop_ratio=0.25, clock=clock)
    _run(diagnostics, clock, 4.0, 32.0, latency=lambda k: 0.03, drop="busy", drop_every=4)
    diagnostics.record_drop("bad_message")
    status = diagnostics.status()
    values = _values(status)
    assert status.level == DiagnosticStatus.WARN
    assert status.message == "drops 26% > 25% (mostly busy)"
    assert (values["drops: busy"], values["drops: bad_message"]) == ("32", "1")
    assert values["drops (total)"] == "33"
    assert values["output rate (Hz)"] == "24.0"


def test_counts_survive_concurrent_recording() -> None:
    diagnostics = PipelineDiagnostics("p")

    def drop_many() -> None:
        for _ in range(5000):
            diagnostics.record_input()
            diagnostics.record_drop("busy")

    threads = [threading.Thread(target=drop_many) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30.0)
    assert _values(diagnostics.status())["drops: busy"] == "10000"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_s": 0.0}, r"window \(0.0 s\)"),
        ({"input_timeout_s": -1.0}, r"input timeout \(-1.0 s\)"),
        ({"max_drop_ratio": 1.5}, r"max_drop_ratio must lie in \[0, 1\], got 1.5"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PipelineDiagnostics("p", **kwargs)


@pytest.mark.ros
def test_published_on_diagnostics(ros_executor: SingleThreadedExecutor) -> None:
    node = rclpy.create_node("diagnostics_test")
    ros_executor.add_node(node)
    inbox = Inbox(node, DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
    publisher = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
    assert spin_until(ros_executor, lambda: publisher.get_subscription_count() == 1, 10.0)
    diagnostics = PipelineDiagnostics("depth_node: pipeline")
    diagnostics.set_info("backend", "torch")
    publisher.publish(diagnostics.to_message(Time(sec=42)))
    (received,) = inbox.wait_for(ros_executor, 1, timeout_s=10.0)
    assert received.header.stamp.sec == 42
    (status,) = received.status
    assert (status.name, status.level) == ("depth_node: pipeline", DiagnosticStatus.OK)
    assert _values(status)["backend"] == "torch"
