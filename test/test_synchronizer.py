"""The built-in message_filters fallback: exact and approximate policies, bounded queues.

The policy tests drive the synchronisers through ``SimpleFilter`` sources (the filter API
itself); the ROS tests run them behind real rclpy subscriptions fed by the stereo fixture
publisher over Fast DDS.
"""

import importlib.util

import pytest
import rclpy
from builtin_interfaces.msg import Time
from fixtures.ros import rclpy_init_fixture, ros_executor_fixture, spin_until  # noqa: F401
from fixtures.stereo_publisher import StereoFixturePublisher
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header, String

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.ros import synchronizer
from cnd_depth_ros.ros.synchronizer import (
    IMPLEMENTATION,
    ApproximateTimeSynchronizer,
    SimpleFilter,
    Subscriber,
    TimeSynchronizer,
    make_synchronizer,
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
    assert type(exact).__name__ == "TimeSynchronizer"
    assert type(approximate).__name__ == "ApproximateTimeSynchronizer"


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


def test_approximate_matches_within_slop() -> None:
    (left, right), _, sets = _wired(ApproximateTimeSynchronizer, queue_size=5, slop=0.05)
    left.signalMessage(_msg(1.000, "L"))
    right.signalMessage(_msg(1.030, "R"))
    left.signalMessage(_msg(2.000, "L"))
    right.signalMessage(_msg(2.050, "R"))  # exactly the slop still matches
    assert sets.sets == [(("L", 1.0), ("R", 1.03)), (("L", 2.0), ("R", 2.05))]


def test_approximate_never_matches_beyond_slop() -> None:
    (left, right), sync, sets = _wired(ApproximateTimeSynchronizer, queue_size=5, slop=0.05)
    for k in range(10):
        left.signalMessage(_msg(k, "L"))
        right.signalMessage(_msg(k + 0.06, "R"))
    assert sets.sets == []
    assert [len(q) for q in sync.queues] == [5, 5]


def test_approximate_picks_the_tightest_set() -> None:
    """Three inputs: the new message could join two sets; the one of smallest span wins."""
    (a, b, c), _, sets = _wired(ApproximateTimeSynchronizer, n=3, queue_size=5, slop=0.1)
    a.signalMessage(_msg(1.00, "a"))
    a.signalMessage(_msg(1.06, "a"))
    b.signalMessage(_msg(0.98, "b"))
    b.signalMessage(_msg(1.07, "b"))
    c.signalMessage(_msg(1.05, "c"))
    assert sets.sets == [(("a", 1.06), ("b", 1.07), ("c", 1.05))]


def test_messages_older_than_a_set_are_discarded() -> None:
    (left, right), sync, sets = _wired(ApproximateTimeSynchronizer, queue_size=10, slop=0.01)
    for k in range(5):
        left.signalMessage(_msg(k, "L"))
    right.signalMessage(_msg(3.005, "R"))
    assert sets.sets == [(("L", 3.0), ("R", 3.005))]
    assert [sorted(q) for q in sync.queues] == [[4_000_000_000], []]


@pytest.mark.parametrize("policy", [TimeSynchronizer, ApproximateTimeSynchronizer])
def test_unmatched_flood_stays_bounded(policy: type) -> None:
    kwargs = {"slop": 0.01} if policy is ApproximateTimeSynchronizer else {}
    (left, right), sync, sets = _wired(policy, queue_size=4, **kwargs)
    for k in range(1000):
        left.signalMessage(_msg(k * 0.1))
    assert [len(q) for q in sync.queues] == [4, 0]
    right.signalMessage(_msg(99.9, "R"))  # the newest survived, so it still pairs
    assert len(sets.sets) == 1


def test_headerless_messages() -> None:
    (left, right), _, sets = _wired(ApproximateTimeSynchronizer, queue_size=3, slop=0.5)
    left.signalMessage(String(data="no header"))
    assert sets.sets == []
    calls: list[tuple] = []
    sync = ApproximateTimeSynchronizer([left, right], 3, 0.5, allow_headerless=True)
    sync.registerCallback(lambda *msgs: calls.append(msgs))
    left.signalMessage(String(data="a"))
    right.signalMessage(String(data="b"))
    assert [(m1.data, m2.data) for m1, m2 in calls] == [("a", "b")]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda fs: TimeSynchronizer(fs, 0), "queue_size must be at least 1, got 0"),
        (lambda fs: ApproximateTimeSynchronizer(fs, 5, -0.1), "slop must not be negative"),
    ],
)
def test_bad_settings_are_rejected(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make([SimpleFilter(), SimpleFilter()])


def _stereo_inputs(node, policy, **kwargs) -> tuple[list[Subscriber], object, list]:
    topics = [
        (Image, "left/image_rect"),
        (CameraInfo, "left/camera_info"),
        (Image, "right/image_rect"),
        (CameraInfo, "right/camera_info"),
    ]
    subscribers = [
        Subscriber(node, t, topic, qos_profile=qos_profile_sensor_data) for t, topic in topics
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
def test_exact_sync_over_dds(ros_executor: SingleThreadedExecutor) -> None:
    node = rclpy.create_node("sync_test")
    camera_node = StereoFixturePublisher(CAMERA)
    ros_executor.add_node(node)
    ros_executor.add_node(camera_node)
    subscribers, _, pairs = _stereo_inputs(node, TimeSynchronizer, queue_size=5)
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
def test_approximate_sync_over_dds(ros_executor: SingleThreadedExecutor) -> None:
    """The right camera lags 20 ms: paired within a 50 ms slop, never within 10 ms."""
    node = rclpy.create_node("approx_sync_test")
    left_node = StereoFixturePublisher(CAMERA, mono=True, node_name="left_camera")
    right_node = StereoFixturePublisher(CAMERA, mono=True, namespace="right", node_name="right")
    for n in (node, left_node, right_node):
        ros_executor.add_node(n)
    loose = [Subscriber(node, Image, t) for t in ("left/image_rect", "right/left/image_rect")]
    tight = [Subscriber(node, Image, t) for t in ("left/image_rect", "right/left/image_rect")]
    loose_pairs: list[tuple] = []
    tight_pairs: list[tuple] = []
    ApproximateTimeSynchronizer(loose, 5, 0.05).registerCallback(lambda *m: loose_pairs.append(m))
    ApproximateTimeSynchronizer(tight, 5, 0.01).registerCallback(lambda *m: tight_pairs.append(m))
    publishers = [c.image_publishers["left"] for c in (left_node, right_node)]
    ready = spin_until(
        ros_executor, lambda: all(p.get_subscription_count() == 2 for p in publishers), 10.0
    )
    assert ready, "no discovery in 10 s"
    for k in range(4):
        left_node.publish_pair(_stamp(200 + k))
        right_node.publish_pair(_stamp(200 + k + 0.02))
    assert spin_until(ros_executor, lambda: len(loose_pairs) == 4, 10.0), f"{len(loose_pairs)}/4"
    lags = [round(_seconds(right) - _seconds(left), 3) for left, right in loose_pairs]
    assert lags == [0.02] * 4
    assert tight_pairs == []


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
