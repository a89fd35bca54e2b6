"""The launch file, parameter files and rviz2 config, checked against the node.

``launch`` and ``launch_ros`` are not on PyPI, so the launch file is read as Python source (its
module-level tables are literals) and the node is checked live; the last test runs the launch
file with ``ros2 launch`` and is skipped where ROS 2's launch tools are not installed.
"""

from __future__ import annotations

import ast
import shutil
import signal
import subprocess
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.ros import rclpy_init_fixture  # noqa: F401
from test_depth_node import WAIT_S, Harness, save_tiny_artifact

from cnd_depth_ros.ros.depth_node import _CHOICES, PARAMETERS, DepthNode

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILE = ROOT / "launch" / "cnd_depth.launch.py"
RVIZ_FILE = ROOT / "config" / "cnd_depth.rviz"
BUILT_IN_PARAMETERS = {"use_sim_time", "start_type_description_service"}


def _launch_source() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def _launch_tables() -> dict[str, Any]:
    """The launch file's module-level constants."""
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in _launch_source().body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }


def _calls(name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(_launch_source())
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name
    ]


def test_depth_node_is_a_console_script() -> None:
    scripts = {script.name: script.value for script in entry_points(group="console_scripts")}
    assert scripts["depth_node"] == "cnd_depth_ros.ros.depth_node:main"
    # ros2 run looks for executables in lib/<package>.
    assert "install_scripts=$base/lib/cnd_depth_ros" in (ROOT / "setup.cfg").read_text()


def test_launch_arguments_and_environment() -> None:
    arguments = _launch_tables()["ARGUMENTS"]
    assert set(arguments) == {
        "mode", "model_path", "backend", "image_transport", "namespace", "left_namespace",
        "right_namespace", "params_file", "use_rviz", "fastdds_transports",
    }
    assert set(arguments["image_transport"][2]) == {"", *_CHOICES["image_transport"]}
    for name, (default, description, choices) in arguments.items():
        assert description.strip(), f"launch argument {name} has no description"
        assert choices is None or default in choices
    assert set(arguments["mode"][2]) == set(_launch_tables()["CONFIG_FILES"])
    (environment,) = _calls("SetEnvironmentVariable")
    name, value = environment.args
    assert ast.literal_eval(name) == "FASTDDS_BUILTIN_TRANSPORTS"
    assert isinstance(value, ast.Call) and getattr(value.func, "id", None) == "LaunchConfiguration"
    assert [ast.literal_eval(argument) for argument in value.args] == ["fastdds_transports"]
    assert arguments["fastdds_transports"][0] == "LARGE_DATA"
    executables = [
        ast.literal_eval(keyword.value)
        for call in _calls("Node")
        for keyword in call.keywords
        if keyword.arg == "executable"
    ]
    assert executables == ["depth_node", "rviz2"]


def test_referenced_files_exist_and_are_installed() -> None:
    tables = _launch_tables()
    setup = (ROOT / "setup.py").read_text()
    for name in [*tables["CONFIG_FILES"].values(), tables["RVIZ_CONFIG"]]:
        path = ROOT / "config" / name
        assert path.is_file(), f"{path} is referenced by the launch file but missing"
        assert f'glob("config/*{path.suffix}")' in setup, f"{name} would not be installed"
    assert 'glob("launch/*.launch.py")' in setup


@pytest.mark.parametrize("mode", ["stereo", "mono"])
def test_parameter_files_match_the_node(mode: str) -> None:
    """Every parameter in the YAML is declared by the node and vice versa, and the node
    accepts every value (types, ranges, choices)."""
    path = ROOT / "config" / _launch_tables()["CONFIG_FILES"][mode]
    values = yaml.safe_load(path.read_text())["/**"]["ros__parameters"]
    assert set(values) == set(PARAMETERS)
    assert values["mode"] == mode
    node = DepthNode(cli_args=["--ros-args", "--params-file", str(path), "-p", "autostart:=false"])
    try:
        declared = {
            name: parameter.value
            for name, parameter in node.get_parameters_by_prefix("").items()
            if name not in BUILT_IN_PARAMETERS
        }
    finally:
        node.destroy_node()
    assert declared == {**values, "autostart": False}


def test_rviz_shows_the_node_topics(tmp_path: Path) -> None:
    rviz = yaml.safe_load(RVIZ_FILE.read_text())["Visualization Manager"]
    displays = {display["Topic"]["Value"]: display for display in rviz["Displays"]}
    assert set(displays) == set(_launch_tables()["RVIZ_TOPICS"])
    assert rviz["Global Options"]["Fixed Frame"] == "left_camera_optical_frame"
    assert displays["/left/image_rect"]["Topic"]["Reliability Policy"] == "Best Effort"

    node = DepthNode(
        cli_args=["--ros-args", "-p", f"model_path:={save_tiny_artifact('cnd_stereo', tmp_path)}",
                  "-p", "backend:=torch", "-p", "threads:=1"]
    )
    try:
        published = dict(node.get_publisher_names_and_types_by_node(node.get_name(), "/"))
    finally:
        node.destroy_node()
    classes = {"sensor_msgs/msg/Image": "Image", "sensor_msgs/msg/PointCloud2": "PointCloud2"}
    for topic, display in displays.items():
        if topic == "/left/image_rect":  # the node's input, from the camera driver
            continue
        assert topic in published, f"rviz shows {topic}, which depth_node does not publish"
        assert display["Class"] == f"rviz_default_plugins/{classes[published[topic][0]]}"
        assert display["Topic"]["Reliability Policy"] == "Reliable"


def test_launch_file_starts_the_node(tmp_path: Path) -> None:
    pytest.importorskip("launch_ros", reason="launch_ros is not on PyPI; needs a ROS 2 install")
    ros2 = shutil.which("ros2")
    if ros2 is None:
        pytest.skip("the ros2 command is not installed")
    artifact = save_tiny_artifact("cnd_stereo", tmp_path)
    command = [
        ros2, "launch", "cnd_depth_ros", "cnd_depth.launch.py", f"model_path:={artifact}",
        "backend:=torch", "namespace:=launched", "left_namespace:=/launched/left",
    ]
    process = subprocess.Popen(command)
    harness = None
    try:
        harness = Harness("launched")
        harness.wait_connected()
        depth = harness.wait_for(harness.depth, harness.send())
        assert depth.encoding == "32FC1"
    finally:
        if harness is not None:
            harness.close()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=WAIT_S)

