"""Fuzzing depth_node's inputs through real DDS: hundreds of malformed messages from a seed.

The node runs as its own process (``python -m cnd_depth_ros.ros.depth_node``), as on a robot, so
"it never exits" is checked on a real process. A fixture camera driver in the test process sends
sets from a seeded generator that breaks every field of Image and CameraInfo (encodings,
height/width/step against the data, byte order, empty and huge claimed sizes, NaN/inf/zero
intrinsics, a right camera without baseline, left/right size mismatch, regions of interest,
binning), sets whose stamps lie in the future, go backwards or repeat, and unpaired messages,
interleaved with valid pairs in every camera encoding. Every valid pair is awaited and its depth
compared with the same artifact run here.

Pass: the process is still running; every valid pair gave the right depth with its stamp; each
kind of bad input (the check that rejects it) is logged at least once and at most once per
throttling period, never per message; ``/diagnostics`` counts every bad set as a drop and every
odd stamp as a warning; nothing reached the worker's catch-all for unanticipated errors.
The camera topics are overridden to reliable QoS so that no set is lost on the way and the
counts are exact; the node's handling of content does not depend on the QoS.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from fixtures.artifacts import SMALL, make_artifact
from fixtures.node_process import DepthNodeProcess
from fixtures.node_rig import NodeRig, status_values
from fixtures.ros import rclpy_init_fixture  # noqa: F401
from fixtures.stereo_publisher import pattern
from sensor_msgs.msg import CameraInfo, Image, RegionOfInterest
from std_msgs.msg import Header

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.inference.planned_backend import PlannedBackend
from cnd_depth_ros.messages.camera_info import camera_info_for
from cnd_depth_ros.messages.image import array_to_image, image_to_rgb

pytestmark = pytest.mark.ros

CAMERA = PinholeCamera(width=96, height=64, fx=80.0, fy=80.0, cx=47.5, cy=31.5, baseline=0.12)
FRAME = "left_camera_optical_frame"
NAMESPACE = "fuzz"
SEED = 7
ROUNDS = 50  # each: a few broken sets, then one valid (or oddly stamped) pair, awaited
THROTTLE_S = 5.0  # the node's log period per kind of bad input
WAIT_S = 20.0
START_S = 120.0  # a process importing torch on a loaded 2-core machine


@dataclass(frozen=True)
class Broken:
    """A set the node must skip: ``pair`` goes to ``publish_pair``; ``logged`` is the part of
    the node's log line that names the check rejecting it."""

    logged: str
    pair: dict[str, Any]


def _info(camera: PinholeCamera = CAMERA, *, right: bool = False) -> CameraInfo:
    return camera_info_for(camera, Header(), right=right)


def _image(rgb: np.ndarray, encoding: str = "rgb8") -> Image:
    return array_to_image(rgb, encoding, Header())


def _raw(width: int, height: int, encoding: str, step: int, size: int, bigendian: int = 0) -> Image:
    """An Image whose fields say whatever the fuzzer wants, with ``size`` bytes of data."""
    msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=bigendian)
    msg.data = bytes(size)
    return msg


def _broken_image(rng: random.Random) -> Broken:
    row = 3 * CAMERA.width
    full = row * CAMERA.height
    side = rng.choice(["left", "right"])
    choice = rng.randrange(7)
    if choice == 0:
        encoding = rng.choice(["yuv422", "", "RGB8", "bayer_rggb8", "8UC3", "rgb 8", "x" * 300,
                               "mönö8"])
        return Broken("unsupported image encoding",
                      {side: _raw(CAMERA.width, CAMERA.height, encoding, row, full)})
    if choice == 1:
        encoding = rng.choice(["32FC1", "16UC1"])
        return Broken("is a depth encoding",
                      {side: _raw(CAMERA.width, CAMERA.height, encoding, row, full)})
    if choice == 2:
        step = rng.randrange(0, row)
        return Broken("is shorter than a row",
                      {side: _raw(CAMERA.width, CAMERA.height, "rgb8", step, full)})
    if choice == 3:
        return Broken("expected height * step",
                      {side: _raw(CAMERA.width, CAMERA.height, "rgb8", row,
                                  rng.randrange(0, full))})
    if choice == 4:  # huge claimed sizes, camera_infos agreeing, a few bytes of data
        width, height = rng.choice([(1 << 20, 1 << 11), (1 << 30, 1), (4000, 3000)])
        huge = replace(CAMERA, width=width, height=height)
        return Broken("expected height * step", {
            "left": _raw(width, height, "rgb8", 3 * width, rng.randrange(0, 4096),
                         rng.randrange(2)),
            "right": _raw(width, height, "rgb8", 3 * width, 0),
            "left_info": _info(huge),
            "right_info": _info(huge, right=True),
        })
    if choice == 5:  # size claimed differs from the camera_info's, or is empty
        width, height = rng.choice([(0, 0), (0, CAMERA.height), (CAMERA.width, 0),
                                    (CAMERA.width + 1, CAMERA.height), (2**32 - 1, 2**32 - 1)])
        return Broken("does not match its camera_info",
                      {side: _raw(width, height, "rgb8", 3 * width % 2**32, 0)})
    empty = replace(CAMERA, width=1, height=1)
    info = _info(empty, right=side == "right")
    info.width = info.height = 0
    return Broken("has an empty image size",
                  {side: _raw(0, 0, "rgb8", 0, 0), f"{side}_info": info})


def _broken_info(rng: random.Random) -> Broken:
    side = rng.choice(["left", "right"])
    right = side == "right"
    info = _info(right=right)
    key = f"{side}_info"
    choice = rng.randrange(6)
    if choice == 0:
        index = rng.choice([0, 5])  # fx, fy in P
        info.p[index] = rng.choice([0.0, -80.0, math.nan, math.inf, -math.inf])
        return Broken("has focal length", {key: info})
    if choice == 1:
        info.p[rng.choice([2, 6, 10])] = rng.choice([math.nan, math.inf])
        return Broken("non-finite value in P", {key: info})
    if choice == 2:
        info.roi = RegionOfInterest(x_offset=4, y_offset=2, width=32, height=16)
        return Broken("region of interest", {key: info})
    if choice == 3:
        info.binning_x = rng.choice([1000, 2**32 - 1])
        return Broken("camera size must be positive", {key: info})
    if choice == 4:  # the right camera's P[0, 3] = -fx * B: zero or of the wrong sign
        right_info = _info(right=True)
        right_info.p[3] = rng.choice([0.0, -right_info.p[3]])
        return Broken("a right camera has P[0,3]", {"right_info": right_info})
    right_info = _info(replace(CAMERA, fx=1.5 * CAMERA.fx, fy=1.5 * CAMERA.fy), right=True)
    return Broken("not a rectified stereo pair", {"right_info": right_info})


def _broken_pair(rng: random.Random) -> Broken:
    """Left and right disagree in size, both self-consistent."""
    small = replace(CAMERA, width=48, height=32, cx=23.5, cy=15.5)
    return Broken("but the left is", {
        "right": _image(pattern(small)), "right_info": _info(small, right=True),
    })


BROKEN: tuple[Callable[[random.Random], Broken], ...] = (_broken_image, _broken_info,
                                                         _broken_pair)


_FROM_RGB = {"bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA,
             "bgra8": cv2.COLOR_RGB2BGRA, "mono8": cv2.COLOR_RGB2GRAY}


def _encoded(rgb: np.ndarray, encoding: str, bigendian: bool) -> Image:
    """``rgb`` in ``encoding``; mono16 optionally written big-endian (is_bigendian = 1)."""
    if encoding == "rgb8":
        return _image(rgb)
    if encoding != "mono16":
        return _image(cv2.cvtColor(rgb, _FROM_RGB[encoding]), encoding)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    if not bigendian:
        return _image(grey, "mono16")
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="mono16", is_bigendian=1,
                step=2 * rgb.shape[1])
    msg.data = grey.astype(">u2").tobytes()
    return msg


def _valid_pair(rng: random.Random, shift: int) -> dict[str, Any]:
    """A correct pair in a random camera encoding, sometimes row-padded or big-endian."""
    encoding = rng.choice(["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"])
    bigendian = rng.random() < 0.5
    images = {}
    for side, offset in (("left", shift), ("right", shift + 4)):
        image = _encoded(pattern(CAMERA, offset), encoding, bigendian)
        if rng.random() < 0.3:
            image = _padded(image, rng.randrange(1, 17))
        images[side] = image
    return images


def _padded(image: Image, extra: int) -> Image:
    rows = np.frombuffer(bytes(image.data), np.uint8).reshape(image.height, image.step)
    padded = np.concatenate([rows, np.full((image.height, extra), 0xAB, np.uint8)], axis=1)
    msg = Image(height=image.height, width=image.width, encoding=image.encoding,
                is_bigendian=image.is_bigendian, step=image.step + extra)
    msg.data = padded.tobytes()
    return msg


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("fuzz"), "cnd_stereo", **SMALL)


@pytest.fixture
def depth_node(artifact: Path, tmp_path: Path) -> Iterator[DepthNodeProcess]:
    """The node, not started yet (the test starts it once its camera is up), stopped after."""
    reliable = {
        f"qos_overrides./{NAMESPACE}/{topic}.subscription.{policy}": value
        for topic in ("left/image_rect", "left/camera_info", "right/image_rect",
                      "right/camera_info")
        for policy, value in (("reliability", "reliable"), ("depth", "20"))
    }
    node = DepthNodeProcess(
        tmp_path / "depth_node.log", NAMESPACE,
        {"model_path": str(artifact), "backend": "torch", "threads": "1",
         "diagnostic_updater.period": "0.2", "queue_size": "20", **reliable},
    )
    try:
        yield node
    finally:
        node.stop(WAIT_S)


def test_fuzzed_inputs_never_stop_the_node(depth_node: DepthNodeProcess, artifact: Path) -> None:
    log = depth_node.log
    reference = PlannedBackend("torch", artifact, threads=1, camera=CAMERA)  # as the node plans
    rng = random.Random(SEED)
    rig = NodeRig(CAMERA, NAMESPACE, outputs=("depth", "diagnostics"), wait_s=WAIT_S,
                  frame_id=FRAME, node_name="fuzzer")

    def depth_count(stamp: Time) -> int:
        return sum(msg.header.stamp == stamp for msg in rig.messages("depth"))

    def node_status() -> dict[str, str]:
        """The node's latest /diagnostics values."""
        return status_values(rig.status(f"{NAMESPACE}/depth_node: depth"))

    try:
        rig.start(depth_node, START_S)
        process = depth_node.process
        assert process is not None
        started = time.monotonic()
        sent_broken: Counter[str] = Counter()
        odd_stamps: Counter[str] = Counter()
        base = int(time.time()) - 3600  # an hour ago: neither future nor past the node's clock
        stamps = iter(range(10**6))

        def stamp() -> Time:
            return Time(sec=base, nanosec=1000 * next(stamps) + 1)

        def check_pair(round_: int, pair_stamp: Time, pair: dict[str, Image]) -> None:
            """Send a valid pair, wait for its depth, compare with the reference."""
            answered = depth_count(pair_stamp)
            rig.driver.publish_pair(pair_stamp, **pair)
            if not rig.spin(lambda: depth_count(pair_stamp) > answered):
                pytest.fail(f"round {round_}: no depth for the valid pair {pair_stamp}; node "
                            f"{'running' if process.poll() is None else 'exited'}:\n"
                            f"{log.read_text()[-3000:]}")
            depth = [m for m in rig.messages("depth") if m.header.stamp == pair_stamp][-1]
            got = np.frombuffer(bytes(depth.data), np.float32).reshape(depth.height, depth.width)
            expected = reference.infer(image_to_rgb(pair["left"]), image_to_rgb(pair["right"]),
                                       camera=CAMERA)
            np.testing.assert_allclose(got, expected, rtol=1e-4, equal_nan=True,
                                       err_msg=f"round {round_} ({pair['left'].encoding})")

        for round_ in range(ROUNDS):
            for _ in range(rng.randrange(4, 9)):
                if rng.random() < 0.15:  # unpaired: one message the synchroniser can never match
                    topic = rng.choice(list(rig.driver.image_publishers))
                    msg = _image(pattern(CAMERA))
                    msg.header = Header(stamp=stamp(), frame_id=FRAME)
                    rig.driver.image_publishers[topic].publish(msg)
                    continue
                broken = rng.choice(BROKEN)(rng)
                sent_broken[broken.logged] += 1
                rig.driver.publish_pair(stamp(), **broken.pair)
                rig.spin(lambda: False, 0.005)  # a camera's pace, not a flood

            kind = rng.choice(["valid"] * 5 + ["future", "backwards", "repeated"])
            pair_stamp = stamp()
            if kind == "future":
                ahead = rng.choice([60, 86400, 2**31 - 1 - int(time.time())])
                pair_stamp = Time(sec=int(time.time()) + ahead)
                odd_stamps["stamp in the future"] += 1
            elif kind == "backwards":
                pair_stamp = Time(sec=base - rng.randrange(1, 10**6), nanosec=rng.randrange(10**9))
                odd_stamps["stamp went backwards"] += 1
            elif kind == "repeated":  # the same stamp on consecutive pairs
                odd_stamps["stamp repeated"] += 1
            for _ in range(2 if kind == "repeated" else 1):
                pair = _valid_pair(rng, shift=round_ % 7)
                check_pair(round_, pair_stamp, pair)
        elapsed = time.monotonic() - started

        total_broken = sum(sent_broken.values())

        def all_counted() -> bool:
            status = node_status()
            return int(status.get("drops (total)", -1)) >= total_broken

        assert rig.spin(all_counted), f"diagnostics {node_status()}, sent {total_broken}"
        assert process.poll() is None, "depth_node exited"
    finally:
        rig.close()
        reference.close()

    status = node_status()
    assert int(status["drops (total)"]) == total_broken, status
    assert int(status.get("drops: bad input", 0)) + int(status.get("drops: busy", 0)) \
        == total_broken, status
    assert int(status.get("drops: bad input", 0)) > 0.5 * total_broken, status
    for reason, count in odd_stamps.items():
        assert int(status.get(f"warnings: {reason}", 0)) >= count, (reason, status)

    text = log.read_text()
    assert "internal error" not in text and "Traceback" not in text, text[-3000:]
    skipped = [line for line in text.splitlines() if "skipping input:" in line]
    stamp_lines = [line for line in text.splitlines() if "input stamp " in line]
    periods = math.ceil(elapsed / THROTTLE_S) + 1
    assert total_broken >= 200
    for logged, count in sent_broken.items():
        lines = [line for line in skipped if logged in line]
        assert 1 <= len(lines) <= periods, (logged, count, len(lines), periods)
    unexplained = [line for line in skipped if not any(logged in line for logged in sent_broken)]
    assert not unexplained, unexplained
    assert len(skipped) < total_broken / 3, "bad input is logged per message, not throttled"
    for reason in odd_stamps:
        assert 1 <= sum(reason in line for line in stamp_lines) <= periods, reason
