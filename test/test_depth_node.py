"""depth_node through the real middleware: rclpy, Fast DDS, lifecycle services, a subprocess.

One stereo node serves most tests (its start costs a model load and discovery); tests that need
another configuration start their own in a namespace of their own. Models are random-initialised
tiny artifacts (64x48 input): the tests check the node's plumbing and geometry, which do not
depend on what the weights predict. Every wait has a deadline.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import rclpy
from fixtures.node_process import DepthNodeProcess
from fixtures.node_rig import NodeRig, depth_node, drops, next_stamp
from fixtures.stereo_publisher import pattern
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.inference.sgbm import SgbmBackend
from cnd_depth_ros.messages.camera_info import camera_info_for
from cnd_depth_ros.messages.image import array_to_image, image_to_array
from cnd_depth_ros.messages.pointcloud import (
    POINT_STEP,
    depth_to_pointcloud2,
    pointcloud2_to_rgb,
    pointcloud2_to_xyz,
)
from cnd_depth_ros.models import ModelMetadata, build_model, save_artifact
from cnd_depth_ros.ros.depth_node import DepthNode
from cnd_depth_ros.ros.outputs import colorize

pytestmark = pytest.mark.ros

NETWORK = (64, 48)  # tiny artifacts: width, height
# The nodes' pixel budget: CAMERA (4:3) runs at NETWORK, the largest 4:3 input within it.
PIXEL_BUDGET = 64 * 48
CAMERA = PinholeCamera(width=128, height=96, fx=100.0, fy=100.0, cx=63.5, cy=47.5, baseline=0.12)
FRAME = "left_camera_optical_frame"
WAIT_S = 15.0


def save_tiny_artifact(name: str, path: Path) -> str:
    """A random-initialised tiny ``name`` network at 64x48 saved as an artifact in ``path``."""
    model = build_model(
        name, width_mult=0.35, aspp_channels=16, decoder_channels=(16, 16, 16, 8), skip_channels=8
    )
    width, height = NETWORK
    camera = PinholeCamera(
        width=width, height=height, fx=50.0, fy=50.0, cx=31.5, cy=23.5,
        baseline=0.1 if model.is_stereo else None,
    )
    metadata = ModelMetadata(
        variant=name,
        input_height=height,
        input_width=width,
        output=model.output_kind,
        training_camera=camera,
        stereo=model.is_stereo,
        model_config=asdict(model.config),
    )
    return str(save_artifact(model.eval(), metadata, path / name))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("models")
    return {name: save_tiny_artifact(name, folder) for name in ("cnd_stereo", "cnd_mono")}


@pytest.fixture(scope="module", autouse=True)
def _rclpy_module() -> Iterator[None]:
    """rclpy's default context for the whole module, so nodes can be shared between tests."""
    rclpy.init()
    try:
        yield
    finally:
        rclpy.try_shutdown()


class Spinning:
    """A node spun by its own executor on a background thread, as ``ros2 run`` would spin it."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()


def _depth_node(artifact: str, **overrides: Any) -> DepthNode:
    return depth_node(artifact, **{"pixel_budget": PIXEL_BUDGET, **overrides})


def _rig(namespace: str = "", **driver: Any) -> NodeRig:
    return NodeRig(CAMERA, namespace, wait_s=WAIT_S, frame_id=FRAME, **driver)


@pytest.fixture(scope="module")
def stereo(artifacts: dict[str, str]) -> Iterator[DepthNode]:
    spinning = Spinning(_depth_node(artifacts["cnd_stereo"], **{"diagnostic_updater.period": 0.2}))
    try:
        yield spinning.node
    finally:
        spinning.close()


@pytest.fixture(scope="module")
def rig(stereo: DepthNode) -> Iterator[NodeRig]:
    rig = _rig()
    rig.wait_connected()
    try:
        yield rig
    finally:
        rig.close()


@pytest.fixture
def parameters(stereo: DepthNode) -> Iterator[Callable[..., None]]:
    """Set live parameters on the shared node; the test's changes are undone after it."""
    changed: dict[str, Any] = {}

    def set_parameters(**values: Any) -> None:
        for name in values:
            changed.setdefault(name, stereo.get_parameter(name).value)
        results = stereo.set_parameters([Parameter(n, value=v) for n, v in values.items()])
        assert all(result.successful for result in results), results

    yield set_parameters
    stereo.set_parameters([Parameter(n, value=v) for n, v in changed.items()])


def _depth(msg: Image) -> np.ndarray:
    return np.array(image_to_array(msg), dtype=np.float32)


def test_outputs_carry_the_left_stamp_frame_and_size(stereo: DepthNode, rig: NodeRig) -> None:
    stamp = rig.send()
    depth = rig.wait_for("depth", stamp)
    info = rig.wait_for("info", stamp)
    points = rig.wait_for("points", stamp)
    colored = rig.wait_for("colored", stamp)

    for msg in (depth, info, points, colored):
        assert msg.header.frame_id == FRAME
    assert (depth.encoding, depth.width, depth.height) == ("32FC1", CAMERA.width, CAMERA.height)
    assert (colored.encoding, colored.width, colored.height) == ("rgb8", CAMERA.width,
                                                                 CAMERA.height)
    assert (info.width, info.height) == (CAMERA.width, CAMERA.height)
    assert info.p[0] == pytest.approx(CAMERA.fx) and info.p[3] == 0.0
    assert (points.width, points.height, points.point_step) == (CAMERA.width, CAMERA.height,
                                                               POINT_STEP)
    assert [field.name for field in points.fields] == ["x", "y", "z", "rgb"]

    metres = _depth(depth)
    assert np.isfinite(metres).mean() > 0.5
    # The node's depth is the backend's for this camera, and the cloud's z is that depth.
    expected = stereo.backend.infer(pattern(CAMERA), pattern(CAMERA, 4), camera=CAMERA)
    np.testing.assert_array_equal(metres, expected)
    xyz = pointcloud2_to_xyz(points)
    np.testing.assert_array_equal(xyz[..., 2], metres)
    u = np.arange(CAMERA.width)
    np.testing.assert_allclose(xyz[0, :, 0], (u - CAMERA.cx) / CAMERA.fx * metres[0], rtol=1e-6)
    np.testing.assert_array_equal(pointcloud2_to_rgb(points), pattern(CAMERA))


def test_diagnostics_time_every_stage(stereo: DepthNode, rig: NodeRig) -> None:
    """The per-frame breakdown that benchmarks/node_latency.py reports (docs/benchmarks.md)."""
    rig.wait_for("points", rig.send())
    stages = ("input", "queue", "decode", "inference", "depth", "points", "colored")

    def timed() -> dict[str, float] | None:
        for msg in reversed(rig.messages("diagnostics")):
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                if status.name == stereo.diagnostics.name and all(
                    f"{stage} p50 (ms)" in values for stage in stages
                ):
                    return {stage: float(values[f"{stage} p50 (ms)"]) for stage in stages}
        return None

    if not rig.spin(lambda: timed() is not None):
        pytest.fail("/diagnostics did not report every stage")
    p50_ms = timed()
    assert p50_ms is not None and p50_ms["inference"] > 0
    # "input" is the age of the stamp, which the fixture sets in 1970: left out here.
    assert all(0 <= p50_ms[stage] < 1e3 * WAIT_S for stage in stages[1:]), p50_ms


def test_a_new_camera_size_is_planned_again(stereo: DepthNode, rig: NodeRig) -> None:
    """Images and camera_info of another size mid-stream: the node plans the network input for
    that camera (its 1:1 aspect kept within the budget), reports the plan in /diagnostics,
    publishes at the new size, and plans the first camera again when it returns."""
    square = PinholeCamera(width=96, height=96, fx=90.0, fy=90.0, cx=47.5, cy=47.5,
                           baseline=0.12)
    stamp = rig.send(
        left=array_to_image(pattern(square), "rgb8", Header()),
        right=array_to_image(pattern(square, 4), "rgb8", Header()),
        left_info=camera_info_for(square, Header()),
        right_info=camera_info_for(square, Header(), right=True),
    )
    depth = rig.wait_for("depth", stamp)
    assert (depth.width, depth.height) == (96, 96)
    assert stereo.backend is not None and stereo.backend.backend.input_size == (48, 48)
    plan = "camera 96x96 -> network input 48x48"

    def reported() -> bool:
        return rig.reported(stereo.diagnostics.name,
                            lambda values: values.get("input plan", "").startswith(plan))

    if not rig.spin(reported):
        pytest.fail(f"/diagnostics did not report the plan {plan!r}")
    depth = rig.wait_for("depth", rig.send())
    assert (depth.width, depth.height) == (CAMERA.width, CAMERA.height)
    assert stereo.backend.backend.input_size == NETWORK


def test_confidence_is_published_and_its_threshold_masks_every_output(
    stereo: DepthNode, rig: NodeRig, parameters: Callable[..., None]
) -> None:
    """depth/confidence: the matcher's confidence (32FC1 in [0, 1], the depth's header and
    size); confidence_threshold marks the less confident pixels invalid in depth and points."""
    stamp = rig.send()
    confidence_msg = rig.wait_for("confidence", stamp)
    depth_msg = rig.wait_for("depth", stamp)
    assert confidence_msg.header == depth_msg.header
    assert (confidence_msg.encoding, confidence_msg.width, confidence_msg.height) == (
        "32FC1", CAMERA.width, CAMERA.height)
    confidence = image_to_array(confidence_msg)
    assert stereo.backend is not None
    expected = stereo.backend.estimate(pattern(CAMERA), pattern(CAMERA, 4), camera=CAMERA)
    assert expected.confidence is not None
    np.testing.assert_array_equal(confidence, expected.confidence)
    assert confidence.min() >= 0.0 and confidence.max() <= 1.0 and confidence.std() > 0

    threshold = float(np.median(confidence))
    parameters(confidence_threshold=threshold, max_depth=10000.0)
    stamp = rig.send()
    masked = rig.depth_for(stamp)
    z = pointcloud2_to_xyz(rig.wait_for("points", stamp))[..., 2]
    unsure = confidence < threshold
    assert unsure.any() and not unsure.all()
    assert np.isnan(masked[unsure]).all() and np.isnan(z[unsure]).all()
    np.testing.assert_array_equal(masked[~unsure], expected.depth[~unsure])


def test_colored_depth_runs_near_to_far_through_turbo() -> None:
    """Nearest pixel: turbo's last colour (dark red), farthest: its first (dark blue), in RGB
    order; invalid pixels black."""
    depth = np.array([[1.0, 2.0, np.nan], [4.0, 0.0, 8.0]], np.float32)
    rgb = colorize(depth).astype(int)
    assert rgb.shape == (2, 3, 3)
    red, _, blue = rgb[0, 0]
    assert red > 100 > 10 > blue  # near
    red, _, blue = rgb[1, 2]
    assert blue > red + 5  # far
    np.testing.assert_array_equal(rgb[0, 2], 0)
    np.testing.assert_array_equal(rgb[1, 1], 0)
    np.testing.assert_array_equal(colorize(np.full((2, 2), np.nan, np.float32)), 0)


@pytest.mark.parametrize("scale", ["baseline", "focal_length"])
def test_depth_scales_with_the_live_camera_info(
    rig: NodeRig, parameters: Callable[..., None], scale: str
) -> None:
    """A disparity model's depth is fx * B / d: doubling either in camera_info doubles depth
    (no depth limit in the way of the doubled depth)."""
    parameters(max_depth=10000.0)
    reference = rig.wait_for("depth", rig.send())
    if scale == "baseline":
        changed = replace(CAMERA, baseline=2 * CAMERA.baseline)
    else:
        changed = replace(CAMERA, fx=2 * CAMERA.fx, fy=2 * CAMERA.fy)
    header = reference.header
    stamp = rig.send(
        left_info=camera_info_for(changed, header),
        right_info=camera_info_for(changed, header, right=True),
    )
    doubled = rig.wait_for("depth", stamp)
    np.testing.assert_allclose(_depth(doubled), 2 * _depth(reference), rtol=1e-6)


def test_millimetres_network_resolution_and_depth_limits(
    rig: NodeRig, parameters: Callable[..., None]
) -> None:
    metres = rig.depth_for(rig.send())
    limit = float(np.nanmedian(metres))
    parameters(output_encoding="16UC1", output_resolution="network", max_depth=limit)
    stamp = rig.send()
    depth = rig.wait_for("depth", stamp)
    info = rig.wait_for("info", stamp)
    points = rig.wait_for("points", stamp)

    width, height = NETWORK
    assert (depth.encoding, depth.width, depth.height) == ("16UC1", width, height)
    assert (info.width, info.height) == (width, height)
    assert info.p[0] == pytest.approx(CAMERA.fx * width / CAMERA.width)
    z = pointcloud2_to_xyz(points)[..., 2]
    assert np.nanmax(z) <= limit
    assert np.isnan(z).any()
    millimetres = image_to_array(depth)
    np.testing.assert_array_equal(millimetres == 0, np.isnan(z))
    np.testing.assert_allclose(millimetres[~np.isnan(z)], 1000 * z[~np.isnan(z)], atol=0.5)


def test_a_resized_output_is_in_the_estimates_camera_with_the_cloud_as_before(
    stereo: DepthNode, rig: NodeRig, parameters: Callable[..., None]
) -> None:
    """At network resolution the estimate says its camera and brings the left image the
    backend resized: the camera_info and the coloured cloud are those the node built before,
    from the camera resized to the depth's shape and the left image area-averaged to it."""
    assert stereo.backend is not None
    estimate = stereo.backend.estimate(pattern(CAMERA), pattern(CAMERA, 4), camera=CAMERA,
                                       output_size=NETWORK)
    width, height = NETWORK
    assert estimate.depth.shape == (height, width)
    assert estimate.camera == CAMERA.resized(width, height)
    assert estimate.image is not None
    old_colors = cv2.resize(pattern(CAMERA), NETWORK, interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(estimate.image, old_colors)

    parameters(output_resolution="network")
    stamp = rig.send()
    depth = rig.wait_for("depth", stamp)
    info = rig.wait_for("info", stamp)
    points = rig.wait_for("points", stamp)

    metres = _depth(depth)
    np.testing.assert_array_equal(metres, estimate.depth)
    old_camera = CAMERA.resized(metres.shape[1], metres.shape[0])
    expected_info = camera_info_for(old_camera, depth.header)
    assert (info.width, info.height) == (expected_info.width, expected_info.height)
    assert list(info.k) == list(expected_info.k) and list(info.p) == list(expected_info.p)
    expected = depth_to_pointcloud2(metres, old_camera, points.header, rgb=old_colors)
    assert points.header == depth.header
    assert (points.width, points.height, points.fields, points.is_dense) == (
        expected.width, expected.height, expected.fields, expected.is_dense)
    assert bytes(points.data) == bytes(expected.data)


def test_disparity_image(rig: NodeRig, parameters: Callable[..., None]) -> None:
    parameters(publish_disparity=True, min_depth=0.5)
    stamp = rig.send()
    disparity = rig.wait_for("disparity", stamp)
    metres = rig.depth_for(stamp)

    assert disparity.image.encoding == "32FC1"
    assert disparity.image.header.frame_id == FRAME
    assert (disparity.f, disparity.t) == pytest.approx((CAMERA.fx, CAMERA.baseline))
    assert disparity.max_disparity == pytest.approx(CAMERA.fx * CAMERA.baseline / 0.5)
    d = np.array(image_to_array(disparity.image))
    valid = np.isfinite(metres)
    np.testing.assert_allclose(d[valid] * metres[valid], CAMERA.fx * CAMERA.baseline, rtol=1e-5)
    assert (d[~valid] < disparity.min_disparity).all()


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"output_encoding": "bgr8"}, "output_encoding must be one of"),
        ({"output_resolution": "half"}, "output_resolution must be one of"),
        ({"max_depth": 0.1, "min_depth": 0.2}, "must be greater than min_depth"),
        ({"points_stride": 0}, ""),
        ({"min_depth": -1.0}, ""),
        ({"model_path": "other"}, "read-only"),
        ({"mode": "mono"}, "read-only"),
    ],
)
def test_invalid_parameters_are_rejected_with_a_reason(
    stereo: DepthNode, values: dict[str, Any], reason: str
) -> None:
    before = {name: stereo.get_parameter(name).value for name in values}
    result = stereo.set_parameters_atomically([Parameter(n, value=v) for n, v in values.items()])
    assert not result.successful
    assert reason in result.reason and result.reason
    assert {name: stereo.get_parameter(name).value for name in values} == before


def _bad_pairs() -> dict[str, dict[str, Any]]:
    """Pairs the node must skip; the fixture publisher gives each the pair's stamp and frame."""
    size = {"height": CAMERA.height, "width": CAMERA.width}
    good = array_to_image(pattern(CAMERA), "rgb8", Header())
    short = Image(**size, encoding="rgb8", step=good.step)
    short.data = bytes(good.data)[: good.step * (CAMERA.height - 1)]
    no_focal = camera_info_for(CAMERA, Header())
    no_focal.p[0] = 0.0
    no_baseline = camera_info_for(CAMERA, Header(), right=True)
    no_baseline.p[3] = 0.0
    small = replace(CAMERA, width=48, height=32, cx=23.5, cy=15.5)
    yuv_step = 2 * CAMERA.width
    return {
        "unsupported encoding": {
            "left": Image(**size, encoding="yuv422", step=yuv_step,
                          data=bytes(yuv_step * CAMERA.height))
        },
        "mismatched sizes": {"right": array_to_image(pattern(small), "rgb8", Header())},
        "data shorter than height*step": {"left": short},
        "zero-sized image": {"left": Image(encoding="rgb8")},
        "zero focal length": {"left_info": no_focal},
        "stereo without baseline": {"right_info": no_baseline},
    }


@pytest.mark.parametrize("case", list(_bad_pairs()))
def test_bad_messages_are_skipped_and_counted(
    stereo: DepthNode, rig: NodeRig, case: str
) -> None:
    before = drops(stereo, "bad input")
    bad = rig.send(**_bad_pairs()[case])
    counted = rig.spin(lambda: drops(stereo, "bad input") > before)
    assert counted, f"the {case} pair was not counted as a bad input"
    good = rig.send()
    depth = rig.wait_for("depth", good)
    assert np.isfinite(_depth(depth)).any()
    assert all(msg.header.stamp != bad for msg in rig.messages("depth"))
    assert drops(stereo, "bad input") == before + 1


def test_newest_pair_wins_when_inference_is_slower(stereo: DepthNode, rig: NodeRig) -> None:
    """A burst of pre-built pairs, far faster than inference: the node drops the pairs it had
    no time for, counts them in /diagnostics, and still answers the newest."""
    burst = 30
    messages = []
    for _ in range(burst):
        stamp = next_stamp()
        header = Header(stamp=stamp, frame_id=FRAME)
        images = {
            side: array_to_image(pattern(CAMERA, 4 * (side == "right")), "rgb8", header)
            for side in ("left", "right")
        }
        infos = {
            side: camera_info_for(CAMERA, header, right=side == "right")
            for side in ("left", "right")
        }
        messages.append((stamp, images, infos))
    busy = drops(stereo, "busy")
    publisher = rig.driver
    for _, images, infos in messages:
        for side in ("left", "right"):
            publisher.image_publishers[side].publish(images[side])
            publisher.info_publishers[side].publish(infos[side])
    last = messages[-1][0]
    rig.wait_for("depth", last)
    stamps = {msg.header.stamp.sec for msg in rig.messages("depth")}
    answered = sum(stamp.sec in stamps for stamp, _, _ in messages)
    assert answered < burst
    assert drops(stereo, "busy") > busy

    def reported() -> bool:
        return rig.reported(stereo.diagnostics.name,
                            lambda values: int(values.get("drops: busy", 0)) > busy)

    assert rig.spin(reported), "/diagnostics did not report the drops"


def _change_state(rig: NodeRig, client: Any, transition: int) -> bool:
    if not rig.spin(client.service_is_ready):
        pytest.fail(f"{client.srv_name} is not available")
    future = client.call_async(ChangeState.Request(transition=Transition(id=transition)))
    if not rig.spin(future.done):
        pytest.fail(f"{client.srv_name} did not answer transition {transition}")
    return bool(future.result().success)


def _camera_subscriptions(rig: NodeRig) -> int:
    return rig.driver.image_publishers["left"].get_subscription_count()


def test_lifecycle_transitions_and_lazy_subscription(artifacts: dict[str, str]) -> None:
    """Transitions through the lifecycle services: configure loads, activate subscribes (while
    an output is listened to), deactivate unsubscribes, cleanup releases the model."""
    node = _depth_node(artifacts["cnd_stereo"], autostart=False, namespace="lifecycle")
    spinning = Spinning(node)
    rig = _rig("lifecycle")
    change = rig.listener.create_client(ChangeState, "depth_node/change_state")
    try:
        assert node.backend is None
        assert _change_state(rig, change, Transition.TRANSITION_CONFIGURE)
        assert node.backend is not None
        assert not rig.spin(lambda: _camera_subscriptions(rig) > 0, 0.5)

        assert _change_state(rig, change, Transition.TRANSITION_ACTIVATE)
        rig.wait_connected()
        rig.wait_for("depth", rig.send())

        rig.unsubscribe("depth", "info", "points", "colored", "disparity", "confidence")
        assert rig.spin(lambda: _camera_subscriptions(rig) == 0)
        rig.subscribe("points")
        rig.wait_connected()
        rig.wait_for("points", rig.send())

        assert _change_state(rig, change, Transition.TRANSITION_DEACTIVATE)
        assert rig.spin(lambda: _camera_subscriptions(rig) == 0)
        assert _change_state(rig, change, Transition.TRANSITION_CLEANUP)
        assert node.backend is None
        assert _change_state(rig, change, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    finally:
        rig.close()
        spinning.close()


def test_a_lost_matched_event_only_delays_the_camera_subscriptions(
    artifacts: dict[str, str],
) -> None:
    """With no matched event at all, the node's periodic re-check still subscribes to the
    cameras once an output is listened to."""
    node = _depth_node(artifacts["cnd_stereo"], autostart=False, namespace="lost_event")
    node._on_matched = lambda _status: None  # the publishers' matched callback, made at configure
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    spinning = Spinning(node)
    rig = _rig("lost_event")
    try:
        rig.wait_connected()
        rig.wait_for("depth", rig.send())
    finally:
        rig.close()
        spinning.close()


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"model_path": "missing_model"}, "no such file"),
        ({"mode": "mono"}, "is a stereo model"),
        ({"backend": "onnxruntime", "precision": "int8", "calibration_data": "synthetic:/nowhere"},
         "calibration_data 'synthetic:/nowhere'"),
    ],
)
def test_configure_fails_on_an_unusable_model(
    artifacts: dict[str, str],
    capfd: pytest.CaptureFixture[str],
    overrides: dict[str, Any],
    why: str,
) -> None:
    """autostart's configure fails with the reason logged; the node stays unconfigured."""
    node = _depth_node(artifacts["cnd_stereo"], namespace="failing", **overrides)
    try:
        assert node._state_machine.current_state[1] == "unconfigured"
        assert node.backend is None
        assert why in capfd.readouterr().err
    finally:
        node.destroy_node()


def test_mono_mode(artifacts: dict[str, str]) -> None:
    spinning = Spinning(_depth_node(artifacts["cnd_mono"], mode="mono", namespace="mono"))
    rig = _rig("mono", mono=True)
    try:
        rig.wait_connected()
        assert rig.listener.count_subscribers("right/image_rect") == 0
        stamp = rig.send()
        depth = rig.wait_for("depth", stamp)
        points = rig.wait_for("points", stamp)
        assert (depth.header.frame_id, depth.width, depth.height) == (FRAME, CAMERA.width,
                                                                      CAMERA.height)
        np.testing.assert_array_equal(pointcloud2_to_xyz(points)[..., 2], _depth(depth))

        # Mono depth is focal-normalised: twice the focal length, twice the depth.
        longer = replace(CAMERA, fx=2 * CAMERA.fx, fy=2 * CAMERA.fy)
        doubled = rig.wait_for("depth", rig.send(left_info=camera_info_for(longer, depth.header)))
        np.testing.assert_allclose(_depth(doubled), 2 * _depth(depth), rtol=1e-6)

        result = spinning.node.set_parameters([Parameter("publish_disparity", value=True)])[0]
        assert not result.successful and "baseline" in result.reason
    finally:
        rig.close()
        spinning.close()


def test_sgbm_backend_needs_no_model(artifacts: dict[str, str]) -> None:
    """``backend:=sgbm``: OpenCV's matcher in the node, a stand-in for stereo_image_proc to
    compare with; ``model_path`` is ignored, and the depth is the backend's on the same pair."""
    spinning = Spinning(_depth_node(artifacts["cnd_stereo"], backend="sgbm", namespace="sgbm"))
    rig = _rig("sgbm")
    try:
        rig.wait_connected()
        rng = np.random.default_rng(0)
        texture = cv2.GaussianBlur(
            rng.integers(0, 256, (CAMERA.height, CAMERA.width + 8, 3), dtype=np.uint8), (3, 3), 0
        )
        left, right = texture[:, : CAMERA.width].copy(), texture[:, 8:].copy()
        depth = rig.depth_for(rig.send(left=left, right=right))
        expected = SgbmBackend().infer(left, right, camera=CAMERA)
        np.testing.assert_allclose(depth, expected, rtol=1e-6, equal_nan=True)
        assert np.nanmedian(depth) == pytest.approx(CAMERA.fx * 0.12 / 8, rel=1e-2)
    finally:
        rig.close()
        spinning.close()


def test_disparity_refinement_is_a_parameter(artifacts: dict[str, str], stereo: DepthNode) -> None:
    """``disparity_refinement:=false``: the depth is the net's disparity upsampled as it is,
    where the shared node (the default) refines it against the images and gets another depth."""
    spinning = Spinning(_depth_node(artifacts["cnd_stereo"], disparity_refinement=False,
                                    namespace="unrefined"))
    rig = _rig("unrefined")
    try:
        rig.wait_connected()
        depth = rig.depth_for(rig.send())
        unrefined, refined = (
            node.backend.infer(pattern(CAMERA), pattern(CAMERA, 4), camera=CAMERA)
            for node in (spinning.node, stereo)
        )
        assert spinning.node.backend.refinement is None
        assert stereo.backend.refinement is not None
        np.testing.assert_array_equal(depth, unrefined)
        assert not np.allclose(unrefined, refined, equal_nan=True)
    finally:
        rig.close()
        spinning.close()


def test_int8_is_calibrated_at_start_up(artifacts: dict[str, str]) -> None:
    """``precision:=int8`` on ONNX Runtime: calibrated at configure on the default frames (the
    motorcycle pair), then depth as from any backend."""
    spinning = Spinning(_depth_node(artifacts["cnd_stereo"], backend="onnxruntime",
                                    precision="int8", namespace="int8"))
    rig = _rig("int8")
    try:
        rig.wait_connected()
        depth = rig.depth_for(rig.send())
        assert spinning.node.backend.info()["precision"] == "int8"
        assert depth.shape == (CAMERA.height, CAMERA.width) and np.isfinite(depth).mean() > 0.5
    finally:
        rig.close()
        spinning.close()


def test_compressed_camera_images(artifacts: dict[str, str]) -> None:
    """image_transport:=compressed: CompressedImage on */image_rect/compressed (the raw topics
    are not subscribed). Lossless PNG gives exactly the depth of the decoded pair, JPEG a
    depth image of the right size; an undecodable, depth-map or wrongly sized message is
    skipped and counted while the next pair is answered."""
    spinning = Spinning(_depth_node(artifacts["cnd_stereo"], namespace="compressed",
                                    image_transport="compressed", max_depth=10000.0))
    png, jpeg = _rig("compressed", compression="png"), _rig("compressed", compression="jpeg")
    node = spinning.node
    try:
        png.wait_connected()
        assert png.listener.count_subscribers("left/image_rect") == 0
        depth = png.depth_for(png.send())
        assert node.backend is not None
        expected = node.backend.infer(pattern(CAMERA), pattern(CAMERA, 4), camera=CAMERA)
        np.testing.assert_array_equal(depth, expected)

        depth = jpeg.wait_for("depth", jpeg.send())
        assert (depth.width, depth.height, depth.header.frame_id) == (CAMERA.width,
                                                                      CAMERA.height, FRAME)
        small = cv2.imencode(".png", np.zeros((10, 10, 3), np.uint8))[1].tobytes()
        broken = {
            "undecodable": CompressedImage(data=b"\x89PNG but not really", format="png"),
            "depth map": CompressedImage(data=b"\0" * 16, format="32FC1; compressedDepth png"),
            "wrong size": CompressedImage(data=small, format="rgb8; png compressed bgr8"),
        }
        for case, message in broken.items():
            before = drops(node, "bad input")
            bad = png.send(left=message)
            counted = png.spin(lambda d=before: drops(node, "bad input") > d)
            assert counted, f"the {case} message was not counted as a bad input"
            good = png.send()
            png.wait_for("depth", good)
            assert all(msg.header.stamp != bad for msg in png.messages("depth"))
    finally:
        png.close()
        jpeg.close()
        spinning.close()


def _node_process(artifact: str, log: Path, **parameters: str) -> DepthNodeProcess:
    return DepthNodeProcess(log, "process", {"model_path": artifact, "backend": "torch",
                                             "threads": "1", **parameters})


def test_node_process_logs_bad_input_and_stops_on_sigint(
    artifacts: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "depth_node.log"
    node = _node_process(artifacts["cnd_stereo"], log)
    rig = _rig("process")
    try:
        rig.start(node)

        def logged() -> bool:
            return "'yuv422'" in log.read_text()

        # Sensor-data QoS is best effort: on a loaded machine one pair may be lost, so the bad
        # pair is sent again each second until the node reports it.
        bad = []
        for _ in range(int(WAIT_S)):
            bad.append(rig.send(**_bad_pairs()["unsupported encoding"]))
            if rig.spin(logged, 1.0):
                break
        assert logged(), "the unsupported encoding was not logged"
        assert "skipping input" in log.read_text()
        rig.wait_for("depth", rig.send())
        assert all(msg.header.stamp not in bad for msg in rig.messages("depth"))

        # SIGUSR1 writes every thread's stack into the log, and the node goes on.
        assert node.process is not None
        node.process.send_signal(signal.SIGUSR1)
        assert rig.spin(lambda: "_work" in log.read_text())
        assert "most recent call first" in log.read_text()
        rig.wait_for("depth", rig.send())
        assert node.stop(WAIT_S) == 0
    finally:
        rig.close()
        node.stop(WAIT_S)


def test_node_process_exits_with_the_reason_for_invalid_overrides(
    artifacts: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "depth_node.log"
    process = _node_process(artifacts["cnd_stereo"], log, output_encoding="bgr8").start()
    assert process.wait(timeout=60) == 1
    assert "output_encoding must be one of" in log.read_text()
