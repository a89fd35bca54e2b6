"""depth_node's parameters: each declared with a default and a descriptor, checked on start-up and
on every live change, and read back with their defaults resolved.

One table (:data:`PARAMETERS`) is the schema; config/*.yaml list the same names (a test checks).
Ranges are rclpy's to enforce (the descriptors carry them); choices and combinations are checked
here, so a value is refused with a reason naming it, at start-up and by ``ros2 param set``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

__all__ = [
    "CHOICES",
    "PARAMETERS",
    "check_change",
    "declare_parameters",
    "inference_threads",
    "model_path",
    "parameter_values",
]

#: The parameters whose value is one of a few strings, and those strings.
CHOICES: dict[str, tuple[str, ...]] = {
    "mode": ("stereo", "mono"),
    "image_transport": ("raw", "compressed"),
    # Backend specs (inference.registry): sgbm is OpenCV's matcher, stereo_image_proc's algorithm.
    "backend": ("auto", "torch", "onnxruntime", "tensorrt", "sgbm", "sgbm:stereo_image_proc"),
    "fallback_backend": ("", "torch", "onnxruntime"),
    "precision": ("", "fp32", "fp16", "int8"),
    "output_encoding": ("32FC1", "16UC1"),
    "output_resolution": ("input", "network"),
}
# The model an empty model_path stands for, by mode.
_SHIPPED = {"stereo": "cnd_stereo", "mono": "cnd_mono"}


@dataclass(frozen=True)
class _Spec:
    """One parameter: default (which fixes its type), description, range, restart needed."""

    default: Any
    description: str
    read_only: bool = False
    low: float | None = None
    high: float | None = None

    def descriptor(self, name: str) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(
            name=name, description=self.description, read_only=self.read_only
        )
        if name in CHOICES:
            descriptor.additional_constraints = "one of: " + ", ".join(
                repr(choice) for choice in CHOICES[name]
            )
        if self.low is None or self.high is None:
            return descriptor
        if isinstance(self.default, float):
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=self.low, to_value=self.high, step=0.0)
            ]
        elif isinstance(self.default, int) and not isinstance(self.default, bool):
            descriptor.integer_range = [
                IntegerRange(from_value=int(self.low), to_value=int(self.high), step=1)
            ]
        return descriptor


#: Every parameter the node declares (config/*.yaml lists the same names; a test checks).
PARAMETERS: dict[str, _Spec] = {
    "autostart": _Spec(True, "configure and activate on start-up; false: wait for lifecycle "
                             "transitions", read_only=True),
    "mode": _Spec("stereo", "stereo (left + right cameras) or mono (left only)", read_only=True),
    "image_transport": _Spec("raw", "camera images as raw sensor_msgs/Image on "
                                    "<side>/image_rect, or compressed: CompressedImage (JPEG, "
                                    "PNG) on <side>/image_rect/compressed, as image_transport "
                                    "publishes them", read_only=True),
    "model_path": _Spec("", "model artifact, .onnx or engine; empty: the shipped model for the "
                            "mode (cnd_stereo / cnd_mono)", read_only=True),
    "backend": _Spec("auto", "inference backend; auto picks the fastest network backend this "
                             "machine runs; sgbm is OpenCV's StereoSGBM without a model "
                             "(sgbm:stereo_image_proc with stereo_image_proc's own settings)",
                     read_only=True),
    "fallback_backend": _Spec("", "CPU backend (torch or onnxruntime), loaded at configure, "
                                  "that takes over for good when the backend fails at run time; "
                                  "empty: none", read_only=True),
    "device": _Spec("", "cpu, cuda or cuda:N; empty: the backend's default", read_only=True),
    "precision": _Spec("", "fp32, fp16 or int8; empty: the backend's default", read_only=True),
    "calibration_data": _Spec("", "with precision int8: the frames its activation ranges are "
                                  "calibrated on at start-up, KIND:ROOT as cnd-depth eval "
                                  "--data takes it (e.g. rosbag:/data/my_drive for the robot's "
                                  "own camera); empty: the Middlebury motorcycle pair "
                                  "scikit-image ships", read_only=True),
    "threads": _Spec(0, "CPU threads for the inference runtime; 0: one less than the cores this "
                        "process may use (at least 1), leaving a core to DDS and the executor",
                     read_only=True, low=0, high=256),
    "pixel_budget": _Spec(0, "network input pixels per frame, planned per camera with its aspect "
                             "ratio kept; 0: 76800 (320x240) on a CPU, 307200 on a GPU",
                          read_only=True, low=0, high=4096 * 4096),
    "disparity_refinement": _Spec(True, "stereo nets: refine the net's disparity against the "
                                        "camera images at their own resolution (sharper edges, "
                                        "sub-pixel depth; docs/inference.md); false: the net's "
                                        "disparity upsampled as it is, cheaper",
                                  read_only=True),
    "queue_size": _Spec(5, "messages kept per input by the synchroniser", read_only=True,
                        low=1, high=100),
    "approximate_sync": _Spec(False, "pair images whose stamps differ (cameras that are not "
                                     "hardware-synchronised); exact stamps otherwise",
                              read_only=True),
    "approximate_sync_tolerance_seconds": _Spec(0.0, "with approximate_sync: 0 pairs the "
                                                     "nearest stamps with no limit, more pairs "
                                                     "stamps within this many seconds (as "
                                                     "stereo_image_proc)",
                                                read_only=True, low=0.0, high=10.0),
    "use_system_default_qos": _Spec(False, "middleware default QoS on every topic instead of "
                                           "sensor-data in, reliable out", read_only=True),
    "diagnostic_updater.period": _Spec(1.0, "seconds between /diagnostics messages",
                                       read_only=True, low=0.1, high=60.0),
    "min_expected_rate": _Spec(0.0, "Hz; /diagnostics warns when depth comes out slower while "
                                    "subscribed; 0: not checked", read_only=True,
                               low=0.0, high=1000.0),
    "max_expected_rate": _Spec(0.0, "Hz; /diagnostics warns when depth comes out faster; 0: "
                                    "not checked", read_only=True, low=0.0, high=1000.0),
    "output_encoding": _Spec("32FC1", "depth/image encoding: 32FC1 metres with NaN invalid, or "
                                      "16UC1 millimetres with 0 invalid (REP 118)"),
    "output_resolution": _Spec("input", "size of every output: input (the camera's) or "
                                        "network (the model's, cheaper)"),
    "min_depth": _Spec(0.0, "metres; nearer depth is marked invalid, and the stereo network "
                            "input is planned small enough to match it", low=0.0, high=10000.0),
    "max_depth": _Spec(100.0, "metres; farther depth is marked invalid", low=0.0, high=10000.0),
    "confidence_threshold": _Spec(0.0, "pixels whose matcher confidence (depth/confidence, "
                                       "stereo models) is below this are marked invalid in "
                                       "depth, disparity and points; 0: keep every pixel",
                                  low=0.0, high=1.0),
    "publish_points": _Spec(True, "publish the organised point cloud on points"),
    "points_color": _Spec(True, "add the left image's colour (rgb field) to the points"),
    "points_stride": _Spec(1, "keep every n-th pixel in each direction in the point cloud",
                           low=1, high=64),
    "publish_disparity": _Spec(False, "publish stereo_msgs/DisparityImage on disparity "
                                      "(stereo mode only)"),
    "publish_colored": _Spec(True, "publish a colour-mapped depth image (rgb8) on "
                                   "depth/colored for viewing"),
}


def _invalid_value(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for ``name`` (ranges are checked by rclpy), or None."""
    if name in CHOICES and value not in CHOICES[name]:
        return f"{name} must be one of {', '.join(map(repr, CHOICES[name]))}, got {value!r}"
    return None


def _invalid_combination(values: dict[str, Any]) -> str | None:
    """Why a set of parameter values cannot work together, or None."""
    if values["max_depth"] <= values["min_depth"]:
        return (
            f"max_depth ({values['max_depth']} m) must be greater than min_depth "
            f"({values['min_depth']} m)"
        )
    if values["mode"] == "mono" and values["publish_disparity"]:
        return "publish_disparity needs mode stereo: a mono camera has no baseline"
    if 0 < values["max_expected_rate"] < values["min_expected_rate"]:
        return (f"max_expected_rate ({values['max_expected_rate']} Hz) must not be below "
                f"min_expected_rate ({values['min_expected_rate']} Hz)")
    return None


def parameter_values(node: Node) -> dict[str, Any]:
    """The node's current value of every parameter of :data:`PARAMETERS`."""
    return {name: node.get_parameter(name).value for name in PARAMETERS}


def declare_parameters(node: Node) -> dict[str, Any]:
    """Declare every parameter on ``node`` (overrides applied) and return their values.

    :raises InvalidParameterValueException: an override outside its range (rclpy's check).
    :raises ValueError: overrides that are invalid or do not work together, with the reason.
    """
    node.declare_parameters(
        "", [(name, spec.default, spec.descriptor(name)) for name, spec in PARAMETERS.items()]
    )
    values = parameter_values(node)
    reason = next(
        filter(None, (_invalid_value(name, value) for name, value in values.items())), None
    ) or _invalid_combination(values)
    if reason is not None:
        raise ValueError(f"{node.get_name()}: {reason}")
    return values


def check_change(
    values: dict[str, Any], parameters: list[Parameter[Any]]
) -> SetParametersResult:
    """Whether ``parameters`` may replace the current ``values``, with the reason if not (for
    an on-set callback, before rclpy applies the change; ranges are rclpy's)."""
    values = dict(values)
    for parameter in parameters:
        if parameter.name not in PARAMETERS:
            continue
        reason = _invalid_value(parameter.name, parameter.value)
        if reason is not None:
            return SetParametersResult(successful=False, reason=reason)
        values[parameter.name] = parameter.value
    reason = _invalid_combination(values)
    return SetParametersResult(successful=reason is None, reason=reason or "")


def model_path(values: dict[str, Any]) -> str:
    """The model to load: ``model_path``, or the shipped model for the mode when it is empty."""
    return values["model_path"] or _SHIPPED[values["mode"]]


def inference_threads(values: dict[str, Any]) -> int:
    """CPU threads for the inference runtime. ``threads`` 0 means all cores this process may use
    but one: the executor, DDS and output publishing need a core of their own. On two cores,
    ONNX Runtime with one thread gave 11.7 depth images/s from a 640x480 camera, with two 7.0
    (docs/benchmarks.md, "depth_node at the default settings")."""
    return values["threads"] or max(1, len(os.sched_getaffinity(0)) - 1)
