"""Pipeline diagnostics: rates, latency percentiles, drops, and the OK/WARN/ERROR verdict."""

import threading

import pytest
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from fixtures.ros import Inbox, rclpy_init_fixture, ros_executor_fixture, spin_until  # noqa: F401
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile

from cnd_depth_ros.ros.diagnostics import PipelineDiagnostics, hardware_id, status_name


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


TOPICS = ["/left/image_rect", "/left/camera_info", "/right/image_rect", "/right/camera_info"]


def _listening(clock: _Clock, **kwargs) -> PipelineDiagnostics:
    diagnostics = PipelineDiagnostics("depth_node: depth", clock=clock, **kwargs)
    diagnostics.set_state("active")
    diagnostics.listen(TOPICS)
    return diagnostics


def _camera(diagnostics: PipelineDiagnostics, clock: _Clock, seconds: float, hz: float,
            topics: list[str], synchronised: bool = True) -> None:
    """Messages on ``topics`` at ``hz``; each round makes a set (and an output) when asked."""
    for _ in range(round(seconds * hz)):
        clock.now += 1.0 / hz
        for topic in topics:
            diagnostics.record_message(None, topic)
        if synchronised:
            diagnostics.record_input()
            diagnostics.record_output(0.02)


@pytest.mark.parametrize(
    ("state", "listening", "message"),
    [
        ("unconfigured", False, "unconfigured"),
        ("inactive", False, "inactive"),
        ("active", False, "waiting for a subscriber to an output"),
    ],
)
def test_idle_is_ok_however_long(state: str, listening: bool, message: str) -> None:
    """No subscriber (the node does not even subscribe to the cameras) or not active: OK."""
    clock = _Clock()
    diagnostics = PipelineDiagnostics("p", clock=clock)
    diagnostics.set_state(state)
    diagnostics.listen(TOPICS if listening else None)
    clock.now += 3600.0
    status, frequency = diagnostics.to_message(Time()).status
    assert (status.level, status.message) == (DiagnosticStatus.OK, message)
    assert (frequency.level, frequency.message) == (DiagnosticStatus.OK,
                                                    "No events expected (idle).")
    assert _values(status)["state"] == state


def test_silence_counts_from_the_subscription() -> None:
    clock = _Clock()
    diagnostics = PipelineDiagnostics("p", clock=clock, input_timeout_s=2.0)
    diagnostics.set_state("active")
    diagnostics.listen(None)
    clock.now += 100.0
    diagnostics.listen(TOPICS)
    clock.now += 1.5
    assert diagnostics.status().level == DiagnosticStatus.OK
    clock.now += 1.0
    status = diagnostics.status()
    assert (status.level, status.message) == (DiagnosticStatus.WARN, "no input for 2.5 s")


def test_a_silent_camera_is_named() -> None:
    clock = _Clock()
    diagnostics = _listening(clock)
    _camera(diagnostics, clock, 3.0, 10.0, TOPICS)
    _camera(diagnostics, clock, 10.0, 10.0, TOPICS[:2], synchronised=False)  # right stops
    status = diagnostics.status()
    assert status.level == DiagnosticStatus.WARN
    assert status.message == (
        "no messages on /right/image_rect (10.0 s), /right/camera_info (10.0 s); the other "
        "inputs arrive"
    )
    values = _values(status)
    assert values["last message age (s): /right/image_rect"] == "10.0"
    assert values["last message age (s): /left/image_rect"] == "0.0"
    _camera(diagnostics, clock, 1.0, 10.0, TOPICS)  # it comes back
    assert diagnostics.status().level == DiagnosticStatus.OK


def test_inputs_that_never_synchronise_warn() -> None:
    """Unsynchronised cameras with exact sync: every topic arrives, no set is ever made."""
    clock = _Clock()
    diagnostics = _listening(clock)
    _camera(diagnostics, clock, 3.0, 10.0, TOPICS, synchronised=False)
    status = diagnostics.status()
    assert status.level == DiagnosticStatus.WARN
    assert status.message.startswith("every input arrives but none synchronised for 3.0 s")
    assert "approximate_sync" in status.message


def test_failing_inference_is_an_error() -> None:
    clock = _Clock()
    diagnostics = _listening(clock, max_drop_ratio=1.0)
    _camera(diagnostics, clock, 3.0, 10.0, TOPICS)
    diagnostics.record_drop("inference error")
    status = diagnostics.status()
    assert status.level == DiagnosticStatus.ERROR
    assert status.message == "inference failing: 1 in the last 5 s"
    clock.now += 5.1
    _camera(diagnostics, clock, 1.0, 10.0, TOPICS)
    assert diagnostics.status().level == DiagnosticStatus.OK


def test_frequency_status_as_diagnostic_updater_reports_it() -> None:
    clock = _Clock()
    diagnostics = _listening(clock, min_rate_hz=15.0, max_rate_hz=30.0)
    _camera(diagnostics, clock, 1.0, 16.0, TOPICS)
    status, frequency = diagnostics.to_message(Time()).status
    # Less than a window since subscribing: no verdict on the rate yet.
    assert (frequency.level, frequency.message) == (DiagnosticStatus.OK, "Desired frequency met")
    _camera(diagnostics, clock, 5.0, 8.0, TOPICS)
    status, frequency = diagnostics.to_message(Time()).status
    values = _values(frequency)
    assert frequency.name == "depth_node: depth/image topic status"
    assert frequency.level == status.level == DiagnosticStatus.WARN
    assert frequency.message == "Frequency too low: output 8.0 Hz, expected at least 15 Hz"
    assert frequency.message in status.message
    assert values["Events in window"] == "40" and values["Events since startup"] == "56"
    assert values["Actual frequency (Hz)"] == "8.000000"
    assert values["Minimum acceptable frequency (Hz)"] == "13.500000"
    assert values["Maximum acceptable frequency (Hz)"] == "33.000000"
    _camera(diagnostics, clock, 5.0, 20.0, TOPICS)
    assert diagnostics.frequency_status().level == DiagnosticStatus.OK
    diagnostics.listen(TOPICS)
    clock.now += 6.0
    assert diagnostics.frequency_status().message == "No events recorded."
    with pytest.raises(ValueError, match=r"expected output rate range \[5.0, 1.0\] Hz"):
        PipelineDiagnostics("p", min_rate_hz=5.0, max_rate_hz=1.0)


def test_names_and_hardware_id_as_diagnostic_updater() -> None:
    assert status_name("/depth_node", "depth") == "depth_node: depth"
    assert status_name("/robot/front/depth_node", "depth") == "robot/front/depth_node: depth"
    assert hardware_id({"device": "cpu"}) == "cpu"
    assert hardware_id({"device": "cuda:0", "gpu": "NVIDIA H100"}) == "NVIDIA H100"
    assert PipelineDiagnostics("p").status().hardware_id == "none"


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
    status, frequency = received.status
    assert (status.name, status.level) == ("depth_node: pipeline", DiagnosticStatus.OK)
    assert _values(status)["backend"] == "torch"
    assert frequency.name == "depth_node: depth/image topic status"
