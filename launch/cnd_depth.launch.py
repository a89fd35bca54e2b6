"""Metric depth and point clouds from a rectified stereo pair (or one camera), optionally in rviz2.

    ros2 launch cnd_depth_ros cnd_depth.launch.py
    ros2 launch cnd_depth_ros cnd_depth.launch.py mode:=mono left_namespace:=/camera use_rviz:=true
    ros2 launch cnd_depth_ros cnd_depth.launch.py use_sim_time:=true   # with ros2 bag play --clock

Parameters come from config/cnd_<mode>.yaml in the package share directory (or ``params_file``);
``mode``, ``use_sim_time``, and ``model_path`` / ``backend`` when given, override the file. Fast
DDS's large-data transports are switched on for the processes started here unless the user chose
transports already (``FASTDDS_BUILTIN_TRANSPORTS`` or an XML profile in the environment, or
``fastdds_transports``): without them 640x480 images over best-effort QoS between processes are
lost (docs/node.md). The camera driver needs the same.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ament_index_python.packages import (
    PackageNotFoundError,
    get_package_prefix,
    get_package_share_directory,
)
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.launch_context import LaunchContext
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "cnd_depth_ros"
CONFIG_FILES = {"stereo": "cnd_stereo.yaml", "mono": "cnd_mono.yaml"}
RVIZ_CONFIG = "cnd_depth.rviz"
# The topics config/cnd_depth.rviz shows, as written there (the node's, without a namespace).
RVIZ_TOPICS = ("/depth/image", "/depth/colored", "/points", "/left/image_rect")

# name: (default, description, allowed values or None)
ARGUMENTS = {
    "mode": ("stereo", "stereo (left and right cameras) or mono (left only)", ["stereo", "mono"]),
    "model_path": ("", "model artifact, .onnx or engine; empty: the params file's (by default the "
                       "shipped model for the mode)", None),
    "backend": ("", "auto, torch, onnxruntime, tensorrt or sgbm (OpenCV StereoSGBM, no model); "
                    "empty: the params file's (auto)",
                ["", "auto", "torch", "onnxruntime", "tensorrt", "sgbm", "sgbm:stereo_image_proc"]),
    "image_transport": ("", "raw (sensor_msgs/Image on image_rect) or compressed (JPEG or PNG "
                            "on image_rect/compressed); empty: the params file's (raw)",
                        ["", "raw", "compressed"]),
    "namespace": ("", "namespace of depth_node and its outputs", None),
    "left_namespace": ("left", "where the left camera publishes image_rect and camera_info "
                               "(relative names resolve in the namespace above)", None),
    "right_namespace": ("right", "where the right camera publishes image_rect and camera_info",
                        None),
    "params_file": ("", "depth_node parameter YAML; empty: config/cnd_<mode>.yaml of this "
                        "package", None),
    "use_sim_time": ("false", "use the /clock topic as time (ros2 bag play --clock)",
                     ["true", "false"]),
    "log_level": ("info", "depth_node's log level", ["debug", "info", "warn", "error", "fatal"]),
    "respawn": ("false", "start depth_node again when it exits (after respawn_delay)",
                ["true", "false"]),
    "respawn_delay": ("2.0", "seconds before depth_node is started again with respawn", None),
    "use_rviz": ("false", "start rviz2 with config/cnd_depth.rviz (rviz2 is not a dependency "
                          "of this package: install it where you want to see depth)",
                 ["true", "false"]),
    "rviz_fixed_frame": ("left_camera_optical_frame", "rviz2's fixed frame: your left camera's "
                                                      "optical frame (the outputs' frame_id)",
                         None),
    "fastdds_transports": (
        "", "FASTDDS_BUILTIN_TRANSPORTS for the processes started here (the camera driver needs "
        "the same); empty: yours where the environment sets it (or an XML profile), else "
        "LARGE_DATA, which moves data through shared memory on this host and TCP to others; "
        "SHM?max_msg_size=8MB&sockets_size=16MB moves each message whole through shared memory, "
        "faster, but no other host sees the topics (docs/node.md)", None),
}
#: What the processes get when neither the argument nor the environment chose transports.
DEFAULT_TRANSPORTS = "LARGE_DATA"


def _absolute(namespace: str, name: str) -> str:
    """``name`` resolved in ``namespace`` as ROS resolves a relative topic."""
    if name.startswith("/"):
        return name
    return "/" + "/".join(part for part in (namespace.strip("/"), name) if part)


def fastdds_environment(argument: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The Fast DDS variables to give the processes started: the argument's transports, none
    where the user's environment chose transports already, else the large-data ones."""
    if argument:
        return {"FASTDDS_BUILTIN_TRANSPORTS": argument}
    chosen = ("FASTDDS_BUILTIN_TRANSPORTS", "FASTDDS_DEFAULT_PROFILES_FILE",
              "FASTRTPS_DEFAULT_PROFILES_FILE")
    if any(environ.get(name) for name in chosen):
        return {}
    return {"FASTDDS_BUILTIN_TRANSPORTS": DEFAULT_TRANSPORTS}


def _launch_setup(context: LaunchContext) -> list[Node | LogInfo]:
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    share = get_package_share_directory(PACKAGE)
    mode = value["mode"]
    params_file = value["params_file"] or os.path.join(share, "config", CONFIG_FILES[mode])
    try:
        respawn_delay = float(value["respawn_delay"])
    except ValueError:
        raise ValueError(f"respawn_delay must be a number of seconds, got "
                         f"{value['respawn_delay']!r}") from None
    use_sim_time = value["use_sim_time"] == "true"
    environment = fastdds_environment(value["fastdds_transports"], os.environ)
    overrides: dict[str, object] = {"mode": mode, "use_sim_time": use_sim_time}
    overrides.update(
        {key: value[key] for key in ("model_path", "backend", "image_transport") if value[key]}
    )
    sides = ("left", "right") if mode == "stereo" else ("left",)
    inputs = {
        f"{side}/{topic}": f"{value[f'{side}_namespace']}/{topic}"
        for side in sides
        for topic in ("image_rect", "image_rect/compressed", "camera_info")
    }
    nodes: list[Node | LogInfo] = [
        Node(
            package=PACKAGE,
            executable="depth_node",
            name="depth_node",
            namespace=value["namespace"],
            parameters=[params_file, overrides],
            remappings=list(inputs.items()),
            ros_arguments=["--log-level", value["log_level"]],
            respawn=value["respawn"] == "true",
            respawn_delay=respawn_delay,
            additional_env=environment,
            output="screen",
            emulate_tty=True,
        )
    ]
    if value["use_rviz"] == "true" and not _installed("rviz2"):
        nodes.append(LogInfo(msg="use_rviz:=true, but rviz2 is not installed here (it is not a "
                                 "dependency of cnd_depth_ros: apt install "
                                 "ros-$ROS_DISTRO-rviz2); depth_node runs without it"))
    elif value["use_rviz"] == "true":
        namespace = value["namespace"]
        resolved = {
            "/depth/image": _absolute(namespace, "depth/image"),
            "/depth/colored": _absolute(namespace, "depth/colored"),
            "/points": _absolute(namespace, "points"),
            "/left/image_rect": _absolute(namespace, inputs["left/image_rect"]),
        }
        nodes.append(
            Node(
                package="rviz2",
                executable="rviz2",
                arguments=["-d", os.path.join(share, "config", RVIZ_CONFIG),
                           "--fixed-frame", value["rviz_fixed_frame"]],
                parameters=[{"use_sim_time": use_sim_time}],
                remappings=[(topic, resolved[topic]) for topic in RVIZ_TOPICS],
                additional_env=environment,
                output="screen",
            )
        )
    return nodes


def _installed(package: str) -> bool:
    try:
        get_package_prefix(package)
    except PackageNotFoundError:
        return False
    return True


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            *(
                DeclareLaunchArgument(
                    name, default_value=default, description=description, choices=choices
                )
                for name, (default, description, choices) in ARGUMENTS.items()
            ),
            OpaqueFunction(function=_launch_setup),
        ]
    )
