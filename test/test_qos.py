"""depth_node's QoS: sensor-data in, reliable out that rviz2 sees, overridable per topic."""

import numpy as np
import pytest
import rclpy
from fixtures.ros import Inbox, rclpy_init_fixture, ros_executor_fixture, spin_until  # noqa: F401
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import (
    QoSCompatibility,
    QoSProfile,
    ReliabilityPolicy,
    qos_check_compatible,
    qos_profile_sensor_data,
    qos_profile_system_default,
)
from rclpy.qos_overriding_options import InvalidQosOverridesError
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from cnd_depth_ros.messages.image import array_to_image, image_to_array
from cnd_depth_ros.ros.qos import (
    large_sample_warning,
    overriding_options,
    publisher_qos,
    subscription_qos,
)

# What rviz2's displays request unless the user changes them: reliable, volatile, keep last 5.
RVIZ_DEFAULT = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)


def test_profiles() -> None:
    assert subscription_qos() == qos_profile_sensor_data
    assert subscription_qos(use_system_default=True) == qos_profile_system_default
    assert publisher_qos(use_system_default=True) == qos_profile_system_default
    out = publisher_qos()
    assert (out.reliability, out.depth) == (ReliabilityPolicy.RELIABLE, 1)
    assert publisher_qos(depth=3).depth == 3
    assert subscription_qos() is not subscription_qos()


def test_rviz_defaults_see_the_outputs() -> None:
    """A reliable publisher serves rviz2's reliable default; a best-effort one would not."""
    # WARNING only says that the system-default liveliness on both sides cannot be checked.
    for subscriber in (RVIZ_DEFAULT, subscription_qos()):
        compatibility, reason = qos_check_compatible(publisher_qos(), subscriber)
        assert compatibility != QoSCompatibility.ERROR, reason
    compatibility, reason = qos_check_compatible(qos_profile_sensor_data, RVIZ_DEFAULT)
    assert compatibility == QoSCompatibility.ERROR, reason


def test_publisher_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1, got 0"):
        publisher_qos(depth=0)


def test_parameters_override_a_topic() -> None:
    node = rclpy.create_node(
        "qos_override_test",
        parameter_overrides=[
            Parameter("qos_overrides./points.publisher.reliability", value="best_effort"),
            Parameter("qos_overrides./left/image_rect.subscription.depth", value=2),
        ],
    )
    try:
        publisher = node.create_publisher(
            Image, "points", publisher_qos(), qos_overriding_options=overriding_options()
        )
        subscription = node.create_subscription(
            Image,
            "left/image_rect",
            lambda msg: None,
            subscription_qos(),
            qos_overriding_options=overriding_options(),
        )
        assert publisher.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        assert subscription.qos_profile.depth == 2
        assert publisher_qos().reliability == ReliabilityPolicy.RELIABLE
        assert subscription_qos().depth == 5
    finally:
        node.destroy_node()


def test_keep_all_override_is_rejected() -> None:
    node = rclpy.create_node(
        "qos_keep_all_test",
        parameter_overrides=[
            Parameter("qos_overrides./points.publisher.history", value="keep_all")
        ],
    )
    try:
        with pytest.raises(InvalidQosOverridesError, match="keep_all would queue images"):
            node.create_publisher(
                Image, "points", publisher_qos(), qos_overriding_options=overriding_options()
            )
    finally:
        node.destroy_node()


@pytest.mark.ros
def test_large_image_reaches_rviz_and_sensor_subscribers(
    ros_executor: SingleThreadedExecutor,
) -> None:
    """640x480 rgb8 with the node's publisher QoS, read with rviz2's default and sensor data."""
    node = rclpy.create_node("qos_delivery_test")
    ros_executor.add_node(node)
    rviz = Inbox(node, Image, "depth/colored", RVIZ_DEFAULT)
    sensor = Inbox(node, Image, "depth/colored", subscription_qos())
    publisher = node.create_publisher(Image, "depth/colored", publisher_qos())
    assert spin_until(ros_executor, lambda: publisher.get_subscription_count() == 2, 10.0)
    image = np.random.randint(0, 256, (480, 640, 3), dtype=np.uint8)
    publisher.publish(array_to_image(image, "rgb8", Header(frame_id="left_optical")))
    for inbox in (rviz, sensor):
        (received,) = inbox.wait_for(ros_executor, 1, timeout_s=10.0)
        np.testing.assert_array_equal(image_to_array(received), image)


@pytest.mark.parametrize(
    ("rmw", "environ", "warned"),
    [
        ("rmw_fastrtps_cpp", {}, True),
        ("rmw_fastrtps_cpp", {"FASTDDS_BUILTIN_TRANSPORTS": "DEFAULT"}, True),
        ("rmw_fastrtps_dynamic_cpp", {"FASTDDS_BUILTIN_TRANSPORTS": "udpv4"}, True),
        ("rmw_fastrtps_cpp", {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}, False),
        ("rmw_fastrtps_cpp", {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA?max_msg_size=1MB"}, False),
        ("rmw_fastrtps_cpp", {"FASTDDS_BUILTIN_TRANSPORTS": "SHM?max_msg_size=8MB"}, False),
        ("rmw_fastrtps_cpp", {"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/fastdds.xml"}, False),
        ("rmw_cyclonedds_cpp", {}, False),
    ],
)
def test_large_sample_warning_names_the_setting(
    rmw: str, environ: dict[str, str], warned: bool
) -> None:
    warning = large_sample_warning(rmw, environ)
    assert (warning is not None) == warned
    if warning is not None:
        assert "FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA" in warning
        assert environ.get("FASTDDS_BUILTIN_TRANSPORTS", "unset") in warning


def test_the_node_warns_at_start_when_images_would_be_lost(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The check reads the environment when the node starts (this process's own participant
    keeps the transports it was created with: only the warning is under test)."""
    from cnd_depth_ros.ros.depth_node import DepthNode

    autostart_off = [Parameter("autostart", value=False)]
    for transports, warned in (("DEFAULT", True), ("LARGE_DATA", False)):
        monkeypatch.setenv("FASTDDS_BUILTIN_TRANSPORTS", transports)
        node = DepthNode(parameter_overrides=autostart_off)
        node.destroy_node()
        assert ("FASTDDS_BUILTIN_TRANSPORTS DEFAULT" in capfd.readouterr().err) == warned
