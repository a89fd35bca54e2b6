"""depth_node under faults: model files that vanish or change, a backend failing at run time,
a camera driver that restarts, and shutdown while inference runs.

Real rclpy, Fast DDS, lifecycle transitions, model files and a node process throughout. The one
mock: a GPU cannot fail on demand on a machine without one, so the failing backend's ``run`` is
replaced by one raising what a CUDA error surfaces as (:class:`BackendError`); the fallback that
takes over is a real second backend (torch on the CPU, as behind a torch-on-CUDA backend).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from fixtures.artifacts import SMALL, make_artifact
from fixtures.node_process import DepthNodeProcess
from fixtures.node_rig import NodeRig, depth_node, drops, status_values
from fixtures.ros import rclpy_init_fixture  # noqa: F401
from fixtures.stereo_publisher import pattern
from rclpy.lifecycle import TransitionCallbackReturn as Result

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.errors import BackendError
from cnd_depth_ros.inference.export import export_onnx
from cnd_depth_ros.models.artifact import artifact_paths

pytestmark = pytest.mark.ros

CAMERA = PinholeCamera(width=96, height=64, fx=80.0, fy=80.0, cx=47.5, cy=31.5, baseline=0.12)
WAIT_S = 20.0


class Rig(NodeRig):
    """depth_node, a camera driver and a depth listener in one executor spun by the test, so
    lifecycle transitions can be triggered between spins without racing the executor."""

    def __init__(self, artifact: Path, namespace: str, **parameters: Any) -> None:
        super().__init__(CAMERA, namespace, outputs=("depth",), wait_s=WAIT_S)
        self.node = depth_node(str(artifact), namespace,
                               **{"diagnostic_updater.period": 0.2, **parameters})
        self.add(self.node)

    def send(self, stamp: Time | None = None, **pair: Any) -> Time:
        """A pair, once the node listens to the camera."""
        self.wait_connected()
        return super().send(stamp, **pair)

    def depth_for_next_pair(self) -> np.ndarray:
        """Send a pair and return its depth; fails the test when none comes in time."""
        return self.depth_for(self.send())

    def failing_pair(self) -> None:
        """Send a pair, wait until the node counts its inference error; it has no depth."""
        errors = drops(self.node, "inference error")
        stamp = self.send()
        counted = self.spin(lambda: drops(self.node, "inference error") > errors)
        assert counted, "the failed inference was not counted"
        self.spin(lambda: False, 0.2)  # a depth image would have arrived by now
        assert self.answer("depth", stamp) is None

    def transition(self, *names: str) -> Result:
        """Trigger lifecycle transitions in order; the last one's result."""
        result = Result.SUCCESS
        for name in names:
            result = getattr(self.node, f"trigger_{name}")()
        return result


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("faults"), "cnd_stereo", **SMALL)


@pytest.fixture
def artifact(models: Path, tmp_path: Path) -> Path:
    """A private copy of the model, free to be damaged by the test."""
    for source in artifact_paths(models):
        shutil.copy(source, tmp_path / source.name)
    return tmp_path / models.name


@pytest.fixture
def rig(request: pytest.FixtureRequest, artifact: Path) -> Iterator[Rig]:
    parameters = getattr(request, "param", {})
    rig = Rig(artifact, f"faults_{request.node.name.split('[')[0][5:]}", **parameters)
    try:
        yield rig
    finally:
        rig.close()


def test_model_file_changed_under_a_running_node(
    rig: Rig, artifact: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The running node keeps the model it loaded; reconfiguring reports what is wrong with the
    file now, and works again once the file is good."""
    weights = artifact_paths(artifact)[0]
    reference = rig.depth_for_next_pair()
    assert np.isfinite(reference).any()
    good = weights.read_bytes()

    weights.write_bytes(good[: len(good) // 2])  # truncated mid-run
    np.testing.assert_array_equal(rig.depth_for_next_pair(), reference)
    other = make_artifact(artifact.parent / "other", "cnd_stereo", width_mult=0.35)
    shutil.copy(artifact_paths(other)[0], weights)  # replaced by a different network's weights
    np.testing.assert_array_equal(rig.depth_for_next_pair(), reference)

    capfd.readouterr()
    weights.write_bytes(good[: len(good) // 2])
    assert rig.transition("deactivate", "cleanup", "configure") == Result.FAILURE
    err = capfd.readouterr().err
    assert f"{weights}: unreadable weights" in err, err

    weights.unlink()
    assert rig.transition("configure") == Result.FAILURE
    assert f"{weights}: no such file" in capfd.readouterr().err

    weights.write_bytes(good)
    assert rig.transition("configure", "activate") == Result.SUCCESS
    np.testing.assert_array_equal(rig.depth_for_next_pair(), reference)


def test_camera_driver_restart(rig: Rig) -> None:
    """A camera driver that disappears and comes back is picked up without touching the node."""
    before = rig.depth_for_next_pair()
    rig.restart_camera()
    after = rig.depth_for_next_pair()
    np.testing.assert_array_equal(after, before)


def _fail_like_a_gpu(rig: Rig) -> None:
    """Mock: the configured backend's forward pass fails as a lost CUDA context does (the
    backend loaded for the camera planned by the pair before)."""
    assert rig.node.backend is not None

    def run(*_: Any) -> np.ndarray:
        raise BackendError("CUDA error: an illegal memory access was encountered")

    rig.node.backend.backend.run = run  # type: ignore[method-assign]


@pytest.mark.parametrize("rig", [{"fallback_backend": "torch"}], indirect=True)
def test_failing_backend_falls_back(rig: Rig, capfd: pytest.CaptureFixture[str]) -> None:
    reference = rig.depth_for_next_pair()
    assert rig.node.fallback is not None and rig.node.fallback is not rig.node.backend
    _fail_like_a_gpu(rig)

    rig.failing_pair()
    assert drops(rig.node, "inference error") == 1
    err = capfd.readouterr().err
    assert "switched to the fallback backend 'torch'" in err, err
    recovered = rig.depth_for_next_pair()
    np.testing.assert_array_equal(recovered, reference)
    info = status_values(rig.node.diagnostics.status())
    assert info["backend"] == "torch" and rig.node.fallback is None
    assert "illegal memory access" in info["fell back from"]


def test_failing_backend_without_fallback_keeps_the_node_up(rig: Rig) -> None:
    rig.depth_for_next_pair()
    _fail_like_a_gpu(rig)
    for _ in range(3):
        rig.failing_pair()
    assert drops(rig.node, "inference error") == 3
    assert rig.node.backend is not None and rig.node.backend.name == "torch"


def test_fallback_that_cannot_load_fails_configure(
    models: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A fallback is loaded at configure: one that cannot run the model (the torch backend and an
    ONNX file) is reported at start-up, not when the GPU fails."""
    onnx = export_onnx(models, tmp_path / "model.onnx")
    node = depth_node(str(onnx), "faults_bad_fallback", backend="onnxruntime",
                      fallback_backend="torch")
    try:
        assert node._state_machine.current_state[1] == "unconfigured"
        assert node.backend is None and node.fallback is None
        err = capfd.readouterr().err
        assert f"fallback backend 'torch' cannot load model '{onnx}'" in err, err
    finally:
        node.destroy_node()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_shutdown_during_inference(
    tmp_path: Path, signum: signal.Signals, rclpy_init: None
) -> None:
    """Pairs arrive faster than the node infers (a 320x240 network), so the worker is always in
    a forward pass; the signal must end the process cleanly, promptly, with exit code 0."""
    artifact = make_artifact(tmp_path, "cnd_stereo", width=320, height=240, **SMALL)
    log = tmp_path / "depth_node.log"
    namespace = f"shutdown_{signum.name.lower()}"
    node = DepthNodeProcess(
        log, namespace, {"model_path": str(artifact), "backend": "torch", "threads": "1"}
    )
    rig = NodeRig(CAMERA, namespace, outputs=("depth",), wait_s=WAIT_S)
    stop = threading.Event()
    try:
        rig.start(node)
        process = node.process
        assert process is not None

        left, right = pattern(CAMERA), pattern(CAMERA, 4)

        def stream() -> None:
            while not stop.is_set():
                rig.driver.publish_pair(left=left, right=right)
                time.sleep(0.01)

        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        rig.inboxes["depth"].wait_for(rig.executor, 2, WAIT_S)  # inference is running
        process.send_signal(signum)
        try:
            code = process.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGUSR1)  # where it is stuck: every stack, into its log
            time.sleep(2.0)
            pytest.fail(f"depth_node did not exit within {WAIT_S:.0f} s:\n{log.read_text()}")
        assert code == 0, log.read_text()
        stop.set()
        streamer.join(timeout=WAIT_S)
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        stop.set()
        rig.close()
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait(timeout=WAIT_S)
