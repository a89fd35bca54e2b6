"""Synchronisation as stereo_image_proc does it: exact, nearest and epsilon policies, bounded
queues, time jumping back; the built-in message_filters fallback and the real message_filters.

The policy tests drive the synchronisers through ``SimpleFilter`` sources (the filter API
itself); the ROS tests run them behind real rclpy subscriptions fed by the stereo fixture
publisher over Fast DDS, once with the built-in ``Subscriber`` and ``TimeSynchronizer`` and once
with message_filters' where it is installed (``make venv`` installs it from ../shared/wheels).
"""

import importlib
import importlib.util
import random
from types import ModuleType

import pytest
import rclpy
from builtin_interfaces.msg import Time
from fixtures.ros import rclpy_init_fixture, ros_executor_fixture, spin_until  # noqa: F401
from fixtures.stereo_publisher import StereoFixturePublisher
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.ros import synchronizer
from cnd_depth_ros.ros.synchronizer import (
    IMPLEMENTATION,
    EpsilonTimeSynchronizer,
    NearestTimeSynchronizer,
    SimpleFilter,
    Subscriber,
    TimeSynchronizer,
    make_synchronizer,
)


def _implementations() -> list[ModuleType]:
    modules = [synchronizer]
    if importlib.util.find_spec("message_filters") is not None:
        modules.append(importlib.import_module("message_filters"))
    return modules


IMPLEMENTATIONS = pytest.mark.parametrize(
    "filters", _implementations(), ids=lambda module: module.__name__.rsplit(".", 1)[-1]
)

CAMERA = PinholeCamera(width=16, height=12, fx=20.0, fy=20.0, cx=8.0, cy=6.0, baseline=0.1)


def _msg(seconds: float, frame: str = "") -> CameraInfo:
    nanoseconds = round(seconds * 1e9)
    stamp = Time(sec=nanoseconds // 10**9, nanosec=nanoseconds % 10**9)
    return CameraInfo(header=Header(stamp=stamp, frame_id=frame))


def _seconds(msg: CameraInfo) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


class _Sets:
    """The sets a synchroniser emitted, as tuples of (frame, stamp in seconds)."""

    def __init__(self) -> None:
        self.sets: list[tuple[tuple[str, float], ...]] = []

    def __call__(self, *msgs: CameraInfo) -> None:
        self.sets.append(tuple((m.header.frame_id, round(_seconds(m), 6)) for m in msgs))


def _wired(policy: type, n: int = 2, **kwargs: object) -> tuple[list[SimpleFilter], object, _Sets]:
    sources = [SimpleFilter() for _ in range(n)]
    sync = policy(sources, **kwargs)
    sets = _Sets()
    sync.registerCallback(sets)
    return sources, sync, sets


def test_filters_is_message_filters_where_installed() -> None:
    installed = importlib.util.find_spec("message_filters") is not None
    expected = "message_filters" if installed else synchronizer.__name__
    assert expected == IMPLEMENTATION
    exact = make_synchronizer(
        [SimpleFilter(), SimpleFilter()], queue_size=3, approximate=False, slop=0.1
    )
    approximate = make_synchronizer(
        [SimpleFilter(), SimpleFilter()], queue_size=3, approximate=True, slop=0.1
    )
    nearest = make_synchronizer(
        [SimpleFilter(), SimpleFilter()], queue_size=3, approximate=True, slop=0.0
    )
    assert type(exact).__module__.split(".")[0] == IMPLEMENTATION.split(".")[0]
    assert type(exact).__name__ == "TimeSynchronizer"
    assert isinstance(approximate, EpsilonTimeSynchronizer) and approximate.epsilon == 0.1
    assert isinstance(nearest, NearestTimeSynchronizer)
    with pytest.raises(ValueError, match="approximate_sync_tolerance_seconds must not be"):
        make_synchronizer([SimpleFilter()], queue_size=3, approximate=True, slop=-1.0)


def test_exact_matches_equal_stamps_in_input_order() -> None:
    (left, right), _, sets = _wired(TimeSynchronizer, queue_size=5)
    right.signalMessage(_msg(1.0, "R"))
    left.signalMessage(_msg(2.0, "L"))
    assert sets.sets == []
    left.signalMessage(_msg(1.0, "L"))
    right.signalMessage(_msg(2.0, "R"))
    right.signalMessage(_msg(3.0, "R"))
    assert sets.sets == [(("L", 1.0), ("R", 1.0)), (("L", 2.0), ("R", 2.0))]


def test_exact_ignores_nearly_equal_stamps() -> None:
    (left, right), _, sets = _wired(TimeSynchronizer, queue_size=5)
    left.signalMessage(_msg(1.0))
    right.signalMessage(_msg(1.000000001))
    assert sets.sets == []


def test_callback_gets_registered_arguments() -> None:
    (left, right), sync, _ = _wired(TimeSynchronizer, queue_size=2)
    calls: list[tuple] = []
    sync.registerCallback(lambda a, b, *extra: calls.append(extra), "tag", 7)
    left.signalMessage(_msg(1.0))
    right.signalMessage(_msg(1.0))
    assert calls == [("tag", 7)]


def _unsynchronised(
    sources: list[SimpleFilter], frames: int, lag: float, jitter: float = 0.003
) -> None:
    """Two free-running 30 Hz cameras: the right one ``lag`` s behind, +-``jitter`` s, each
    camera's image and camera_info sharing its stamp (as a driver sends them)."""
    rng = random.Random(0)
    left_image, left_info, right_image, right_info = sources
    for k in range(frames):
        left = 10 + k / 30
        right = left + lag + rng.uniform(-jitter, jitter)
        left_image.signalMessage(_msg(left, "L"))
        left_info.signalMessage(_msg(left, "l"))
        right_image.signalMessage(_msg(right, "R"))
        right_info.signalMessage(_msg(right, "r"))


@pytest.mark.parametrize("lag", [0.0, 0.013, -0.013])
def test_nearest_pairs_unsynchronised_cameras_frame_by_frame(lag: float) -> None:
    """stereo_image_proc's approximate_sync with tolerance 0: every left frame gets the right
    frame nearest to it, whatever the offset, one frame late at most."""
    sources, _, sets = _wired(NearestTimeSynchronizer, n=4, queue_size=5)
    _unsynchronised(sources, 30, lag)
    assert len(sets.sets) >= 29
    for (left, left_stamp), info, (right, right_stamp), right_info in sets.sets:
        assert (left, info[0], right, right_info[0]) == ("L", "l", "R", "r")
        assert info[1] == left_stamp and right_info[1] == right_stamp
        assert abs(right_stamp - left_stamp - lag) <= 0.0031
    lefts = [s[0][1] for s in sets.sets]
    assert lefts == sorted(set(lefts))  # each frame once, in order


@pytest.mark.parametrize(
    ("policy", "kwargs"),
    [(NearestTimeSynchronizer, {}), (EpsilonTimeSynchronizer, {"epsilon": 0.1})],
)
def test_a_message_older_than_a_waiting_one_starts_afresh(policy: type, kwargs: dict) -> None:
    """A short bag looped (time back by less than TIME_JUMP_S) or two reordered messages:
    what waits is forgotten rather than blocking the input for good."""
    (left, right), sync, sets = _wired(policy, queue_size=5, **kwargs)
    left.signalMessage(_msg(5.0, "L"))
    left.signalMessage(_msg(4.5, "L"))
    assert [len(q) for q in sync.queues] == [1, 0]
    right.signalMessage(_msg(4.5, "R"))
    right.signalMessage(_msg(4.6, "R"))
    left.signalMessage(_msg(4.7, "L"))
    assert sets.sets[0] == (("L", 4.5), ("R", 4.5))


def test_nearest_has_no_limit_but_prefers_the_nearest() -> None:
    (left, right), _, sets = _wired(NearestTimeSynchronizer, queue_size=5)
    left.signalMessage(_msg(1.0, "L"))
    right.signalMessage(_msg(3.0, "R"))  # 2 s apart: still a set, once nothing nearer can come
    left.signalMessage(_msg(3.1, "L"))
    assert sets.sets == [(("L", 3.1), ("R", 3.0))] or sets.sets == []
    right.signalMessage(_msg(3.2, "R"))
    left.signalMessage(_msg(3.3, "L"))
    assert sets.sets[0] == (("L", 3.1), ("R", 3.0))  # 1.0 lost to the nearer 3.1


@pytest.mark.parametrize("tolerance", [0.02, 0.005])
def test_epsilon_pairs_within_the_tolerance_only(tolerance: float) -> None:
    """stereo_image_proc with approximate_sync_tolerance_seconds: cameras 13 +- 3 ms apart."""
    lag = 0.013
    sources, sync, sets = _wired(EpsilonTimeSynchronizer, n=4, queue_size=5, epsilon=tolerance)
    _unsynchronised(sources, 30, lag)
    if tolerance < lag - 0.003:
        assert sets.sets == []
        assert all(len(queue) <= 5 for queue in sync.queues)
        return
    assert len(sets.sets) == 30
    assert all(abs(s[2][1] - s[0][1] - lag) <= 0.0031 for s in sets.sets)


@pytest.mark.parametrize(
    ("policy", "kwargs"),
    [(TimeSynchronizer, {}), (NearestTimeSynchronizer, {}),
     (EpsilonTimeSynchronizer, {"epsilon": 0.05})],
)
def test_unmatched_flood_stays_bounded(policy: type, kwargs: dict) -> None:
    (left, right), sync, sets = _wired(policy, queue_size=4, **kwargs)
    for k in range(1000):
        left.signalMessage(_msg(k * 0.1))
    assert [len(q) for q in sync.queues] == [4, 0]
    right.signalMessage(_msg(99.9, "R"))  # the newest survived, so it still pairs
    right.signalMessage(_msg(100.5, "R"))
    assert len(sets.sets) == 1 and sets.sets[0][0][1] == 99.9


@pytest.mark.parametrize("approximate", [(False, 0.0), (True, 0.0), (True, 0.02)])
def test_time_jumping_back_resets_every_policy(approximate: tuple[bool, float]) -> None:
    """A bag played in a loop: what waited from before the jump is forgotten and the sets after
    it pair at once; the caller is told how far time went back."""
    sources = [SimpleFilter() for _ in range(4)]
    jumps: list[float] = []
    sync = make_synchronizer(sources, queue_size=5, approximate=approximate[0],
                             slop=approximate[1], on_time_jump=jumps.append)
    sets = _Sets()
    sync.registerCallback(sets)
    lag, jitter = (0.013, 0.003) if approximate[0] else (0.0, 0.0)
    _unsynchronised(sources, 10, lag, jitter)
    assert len(sets.sets) >= 9
    sources[0].signalMessage(_msg(20.0, "L"))  # a left image whose partners never come
    before = len(sets.sets)
    _unsynchronised(sources, 10, lag, jitter)  # the loop starts again at 10 s
    assert jumps and jumps[0] == pytest.approx(10.0)
    assert len(sets.sets) - before >= 9
    assert all(s[0][1] < 11 for s in sets.sets[before:])


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda fs: TimeSynchronizer(fs, 0), "queue_size must be at least 1, got 0"),
        (lambda fs: EpsilonTimeSynchronizer(fs, 5, 0.0), "epsilon must be positive"),
        (lambda fs: NearestTimeSynchronizer(fs, 0), "queue_size must be at least 1, got 0"),
    ],
)
def test_bad_settings_are_rejected(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make([SimpleFilter(), SimpleFilter()])


def _stereo_inputs(node, filters, policy, **kwargs) -> tuple[list[Subscriber], object, list]:
    topics = [
        (Image, "left/image_rect"),
        (CameraInfo, "left/camera_info"),
        (Image, "right/image_rect"),
        (CameraInfo, "right/camera_info"),
    ]
    subscribers = [
        filters.Subscriber(node, t, topic, qos_profile=qos_profile_sensor_data)
        for t, topic in topics
    ]
    sync = policy(subscribers, **kwargs)
    pairs: list[tuple] = []
    sync.registerCallback(lambda *msgs: pairs.append(msgs))
    return subscribers, sync, pairs


def _ready(executor: SingleThreadedExecutor, camera_node: StereoFixturePublisher) -> None:
    assert spin_until(executor, camera_node.subscribers_ready, 10.0), "no discovery in 10 s"


def _stamp(seconds: float) -> Time:
    return _msg(seconds).header.stamp


@pytest.mark.ros
@IMPLEMENTATIONS
def test_exact_sync_over_dds(ros_executor: SingleThreadedExecutor, filters: ModuleType) -> None:
    node = rclpy.create_node("sync_test")
    camera_node = StereoFixturePublisher(CAMERA)
    ros_executor.add_node(node)
    ros_executor.add_node(camera_node)
    subscribers, _, pairs = _stereo_inputs(node, filters, filters.TimeSynchronizer, queue_size=5)
    assert subscribers[0].getTopic() == "left/image_rect"
    _ready(ros_executor, camera_node)
    sent = [camera_node.publish_pair(_stamp(100 + k / 10)) for k in range(5)]
    assert spin_until(ros_executor, lambda: len(pairs) == 5, 10.0), f"{len(pairs)} of 5 pairs"
    for stamp, (left, left_info, right, right_info) in zip(sent, pairs, strict=True):
        assert {m.header.stamp.nanosec for m in (left, left_info, right, right_info)} == {
            stamp.nanosec
        }
        assert (left.encoding, left.width, left.height) == ("rgb8", 16, 12)
        assert right_info.p[3] == pytest.approx(-20.0 * 0.1)
        assert left.header.frame_id == "left_camera_optical_frame"


@pytest.mark.ros
@IMPLEMENTATIONS
def test_unsynchronised_cameras_over_dds(
    ros_executor: SingleThreadedExecutor, filters: ModuleType
) -> None:
    """Two cameras that are not hardware-synchronised (the right 13 ms late), through
    subscriptions of either implementation: approximate_sync pairs every frame with its
    nearest; exact sync pairs none."""
    node = rclpy.create_node("approx_sync_test")
    camera_node = StereoFixturePublisher(CAMERA)
    ros_executor.add_node(node)
    ros_executor.add_node(camera_node)
    _, _, nearest = _stereo_inputs(node, filters, make_synchronizer, queue_size=5,
                                   approximate=True, slop=0.0)
    _, _, exact = _stereo_inputs(node, filters, make_synchronizer, queue_size=5,
                                 approximate=False, slop=0.0)
    _ready(ros_executor, camera_node)
    sent = []
    for k in range(6):
        left = _stamp(300 + k / 30)
        right = _stamp(300 + k / 30 + 0.013)
        sent.append(camera_node.publish_pair(left, right_stamp=right))
        spin_until(ros_executor, lambda: False, 0.02)
    assert spin_until(ros_executor, lambda: len(nearest) >= 5, 10.0), f"{len(nearest)} of 5"
    for left, _, right, right_info in nearest:
        assert round(_seconds(right) - _seconds(left), 3) == 0.013
        assert right_info.header.stamp == right.header.stamp
    assert [m[0].header.stamp for m in nearest] == sent[: len(nearest)]
    assert exact == []


@pytest.mark.ros
def test_flood_over_dds_keeps_queues_bounded(ros_executor: SingleThreadedExecutor) -> None:
    """Left camera_info floods with no right partner: the queue never exceeds queue_size."""
    node = rclpy.create_node("flood_test")
    ros_executor.add_node(node)
    publisher = node.create_publisher(CameraInfo, "left/camera_info", 100)
    inputs = [Subscriber(node, CameraInfo, t) for t in ("left/camera_info", "right/camera_info")]
    sync = TimeSynchronizer(inputs, 3)
    received: list[CameraInfo] = []
    inputs[0].registerCallback(received.append)
    assert spin_until(ros_executor, lambda: publisher.get_subscription_count() == 1, 10.0)
    stamps = iter(range(300))

    def publish_next() -> None:
        k = next(stamps, None)
        if k is not None:
            publisher.publish(_msg(k * 0.01))

    node.create_timer(0.001, publish_next)
    assert spin_until(ros_executor, lambda: len(received) >= 100, 10.0), f"{len(received)}"
    assert [len(q) for q in sync.queues] == [3, 0]
