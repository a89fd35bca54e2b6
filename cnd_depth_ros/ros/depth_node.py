"""``depth_node``: synchronised rectified stereo (or mono) images in, metric depth and clouds out.

A managed (lifecycle) node, like stereo_image_proc's ``point_cloud_node`` with a network in the
middle: ``configure`` loads the model (slow: seconds, an engine build minutes), ``activate``
starts the inference worker and subscribes to the cameras, but only while some output has a
subscriber, so the GPU idles when nobody listens. With ``autostart`` (the default) it configures
and activates itself, so a plain ``ros2 run cnd_depth_ros depth_node`` works. Topics, parameters
and QoS are described in docs/node.md.
"""

from __future__ import annotations

import collections
import faulthandler
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecyclePublisher, LifecycleState
from rclpy.lifecycle import TransitionCallbackReturn as Result
from rclpy.logging import LoggingSeverity
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.timer import Timer
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from stereo_msgs.msg import DisparityImage

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.errors import CndDepthError
from cnd_depth_ros.inference.depth_estimate import DepthEstimate
from cnd_depth_ros.inference.planned_backend import PlannedBackend
from cnd_depth_ros.messages.camera_info import camera_from_info, camera_info_for, check_image_size
from cnd_depth_ros.messages.image import (
    GreyInputNotice,
    array_to_image,
    compressed_to_rgb,
    depth_to_millimetres,
    image_to_rgb,
)
from cnd_depth_ros.messages.pointcloud import depth_to_pointcloud2
from cnd_depth_ros.ros import qos
from cnd_depth_ros.ros.diagnostics import PipelineDiagnostics, hardware_id, status_name
from cnd_depth_ros.ros.log_throttle import KindThrottle, raise_site
from cnd_depth_ros.ros.malloc_tuning import keep_freed_buffers
from cnd_depth_ros.ros.synchronizer import IMPLEMENTATION, filters, make_synchronizer
from cnd_depth_ros.ros.topics import camera_topics

__all__ = ["PARAMETERS", "DepthNode", "main"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "mode": ("stereo", "mono"),
    "image_transport": ("raw", "compressed"),
    "backend": ("auto", "torch", "onnxruntime", "tensorrt"),
    "fallback_backend": ("", "torch", "onnxruntime"),
    "precision": ("", "fp32", "fp16", "int8"),
    "output_encoding": ("32FC1", "16UC1"),
    "output_resolution": ("input", "network"),
}
_SHIPPED = {"stereo": "cnd_stereo", "mono": "cnd_mono"}
# image_transport -> the camera image's type (its topic: ros/topics.py).
_IMAGE_TRANSPORTS = {"raw": Image, "compressed": CompressedImage}
# The stages of a frame, in order, each timed and reported in /diagnostics as "<stage> p50 (ms)":
# input: left stamp -> synchronised set here (driver, transport, deserialisation, synchroniser);
# queue: waiting for the worker; decode: camera_info and image conversion; inference: the
# backend's infer (resize, network, metric depth, resize back); depth (with the depth limits),
# points, colored, confidence, disparity: building and publishing that output.
_STAGES = ("input", "queue", "decode", "inference", "depth", "points", "colored", "confidence",
           "disparity")
# Each kind of bad input (the check that rejected it) is logged at most once per period.
_LOG_PERIOD_S = 5.0
# Stamps further ahead of this node's clock are reported: camera and node clocks disagree.
_FUTURE_STAMP_NS = 1_000_000_000
# How long stopping waits for the frame in inference (a hung GPU must not hang shutdown).
_WORKER_JOIN_S = 10.0


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
        if name in _CHOICES:
            descriptor.additional_constraints = "one of: " + ", ".join(
                repr(choice) for choice in _CHOICES[name]
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
    "backend": _Spec("auto", "inference backend; auto picks the fastest this machine runs",
                     read_only=True),
    "fallback_backend": _Spec("", "CPU backend (torch or onnxruntime), loaded at configure, "
                                  "that takes over for good when the backend fails at run time; "
                                  "empty: none", read_only=True),
    "device": _Spec("", "cpu, cuda or cuda:N; empty: the backend's default", read_only=True),
    "precision": _Spec("", "fp32, fp16 or int8; empty: the backend's default", read_only=True),
    "threads": _Spec(0, "CPU threads for the inference runtime; 0: one less than the cores this "
                        "process may use (at least 1), leaving a core to DDS and the executor",
                     read_only=True, low=0, high=256),
    "pixel_budget": _Spec(0, "network input pixels per frame, planned per camera with its aspect "
                             "ratio kept; 0: 76800 (320x240) on a CPU, 307200 on a GPU",
                          read_only=True, low=0, high=4096 * 4096),
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


def _default_threads() -> int:
    """Inference threads when the ``threads`` parameter is 0: all cores this process may use but
    one. The executor, DDS and output publishing need a core of their own: on two cores, ONNX
    Runtime with one thread gave 11.7 depth images/s from a 640x480 camera, with two 7.0
    (docs/benchmarks.md, "depth_node at the default settings")."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


def _invalid_value(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for ``name`` (ranges are checked by rclpy), or None."""
    if name in _CHOICES and value not in _CHOICES[name]:
        return f"{name} must be one of {', '.join(map(repr, _CHOICES[name]))}, got {value!r}"
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


@dataclass(frozen=True)
class _Outputs:
    """The live-changeable output settings, replaced as a whole when a parameter changes."""

    output_encoding: str
    output_resolution: str
    min_depth: float
    max_depth: float
    confidence_threshold: float
    publish_points: bool
    points_color: bool
    points_stride: int
    publish_disparity: bool
    publish_colored: bool


class _NewestSlot:
    """A one-element queue where ``put`` replaces what is waiting: newest wins, nothing piles up.

    Filled by the executor's synchronised callback, emptied by the inference worker.
    """

    def __init__(self) -> None:
        self._item: Any = None
        self._closed = False
        self._ready = threading.Condition()

    def put(self, item: Any) -> bool:
        """Offer ``item``; ``True`` if it replaced one that was never taken (a drop)."""
        with self._ready:
            replaced = self._item is not None
            self._item = item
            self._ready.notify()
        return replaced

    def take(self) -> Any:
        """Wait for the next item; ``None`` once the slot is closed."""
        with self._ready:
            self._ready.wait_for(lambda: self._item is not None or self._closed)
            item, self._item = self._item, None
            return None if self._closed else item

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()


def _camera_image(msg: Image | CompressedImage, camera: PinholeCamera) -> np.ndarray:
    """The RGB array of a camera image of ``camera``'s size (a raw image is checked before it is
    decoded, a compressed one after).

    :raises CndDepthError: a size other than the camera_info's, or an undecodable image.
    """
    if isinstance(msg, Image):
        check_image_size(camera, msg.width, msg.height, msg.header.frame_id)
        return image_to_rgb(msg)
    rgb = compressed_to_rgb(msg)
    check_image_size(camera, rgb.shape[1], rgb.shape[0], msg.header.frame_id)
    return rgb


# OpenCV's turbo colour map in RGB order, so the coloured depth needs no BGR -> RGB pass.
_TURBO_RGB = cv2.cvtColor(
    cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, np.newaxis], cv2.COLORMAP_TURBO),
    cv2.COLOR_BGR2RGB,
)


def _colorize(depth: np.ndarray) -> np.ndarray:
    """Inverse depth through the turbo colour map, scaled to the frame's range; invalid: black.

    OpenCV passes instead of numpy ones (a masked min/max without copies, one scale-and-round
    to uint8): 1.6 instead of 2.6 ms of CPU at 640x480.
    """
    valid = depth > 0  # False for NaN
    inverse = np.zeros(depth.shape, np.float32)
    np.divide(1.0, depth, out=inverse, where=valid)
    low, high = 0.0, 1.0
    if valid.any():
        low, high, _, _ = cv2.minMaxLoc(inverse, mask=valid.view(np.uint8))
    scale = 255.0 / max(high - low, 1e-6)
    rgb = cv2.applyColorMap(cv2.convertScaleAbs(inverse, alpha=scale, beta=-low * scale),
                            _TURBO_RGB)
    rgb[~valid] = 0
    return rgb


class DepthNode(LifecycleNode):
    """Metric depth, point clouds and disparity from a CND network; see the module docstring.

    Threading: the executor runs the subscription, synchroniser, timer, parameter and lifecycle
    callbacks; one worker thread runs inference and publishes. They meet in two places only:
    ``_NewestSlot`` (its own lock) and ``self._outputs``, an immutable settings object that the
    parameter callback replaces by assignment (atomic under the GIL). rclpy publishers may be
    used from any thread. Inputs are created and destroyed under ``_inputs_lock`` because
    publisher matched events and lifecycle transitions may come from different threads.

    :raises InvalidParameterValueException: a parameter override outside its range.
    :raises ValueError: parameter overrides that are invalid or do not work together.
    """

    def __init__(self, node_name: str = "depth_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.declare_parameters(
            "", [(name, spec.default, spec.descriptor(name)) for name, spec in PARAMETERS.items()]
        )
        values = self._values()
        reason = next(
            filter(None, (_invalid_value(name, value) for name, value in values.items())),
            None,
        ) or _invalid_combination(values)
        if reason is not None:
            raise ValueError(f"{self.get_name()}: {reason}")
        self._outputs = self._read_outputs(values)
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        self.mode: str = values["mode"]
        self.backend: PlannedBackend | None = None
        self.fallback: PlannedBackend | None = None
        self._output_publishers: dict[str, LifecyclePublisher[Any]] = {}
        self._subscribers: list[Any] = []
        self._synchronizer: Any = None
        self._inputs_lock = threading.Lock()
        self._active = False
        self._slot: _NewestSlot | None = None
        self._worker: threading.Thread | None = None
        self._stage_s: dict[str, collections.deque[float]] = {
            stage: collections.deque(maxlen=200) for stage in _STAGES
        }
        self._frame_s: dict[str, float] = {}  # the worker's current frame, for the debug log
        self._log_throttle = KindThrottle(_LOG_PERIOD_S)
        self._last_stamp_ns: int | None = None

        self.diagnostics = PipelineDiagnostics(
            status_name(self.get_fully_qualified_name(), "depth"),
            min_rate_hz=values["min_expected_rate"],
            max_rate_hz=values["max_expected_rate"] or float("inf"),
        )
        self.diagnostics.set_info("mode", self.mode)
        self.diagnostics.set_info("synchronizer", IMPLEMENTATION)
        self.diagnostics.set_state("unconfigured")
        self._grey_notice = GreyInputNotice()
        if warning := qos.large_sample_warning(rclpy.get_rmw_implementation_identifier(),
                                               os.environ):
            self.get_logger().warning(warning)
        self._diagnostics_publisher: Publisher[DiagnosticArray] = self.create_publisher(
            DiagnosticArray, "/diagnostics", 10
        )
        self._diagnostics_timer: Timer = self.create_timer(
            values["diagnostic_updater.period"], self._publish_diagnostics
        )
        # Matched events open and close the camera subscriptions at once; this once-a-second
        # re-check covers an event the middleware coalesced or lost, where a listener would
        # otherwise wait for depth forever.
        self._inputs_timer: Timer = self.create_timer(1.0, self._update_inputs)

        if values["autostart"] and self.trigger_configure() == Result.SUCCESS:
            self.trigger_activate()

    # ---- parameters --------------------------------------------------------------------------

    def _values(self) -> dict[str, Any]:
        return {name: self.get_parameter(name).value for name in PARAMETERS}

    @staticmethod
    def _read_outputs(values: dict[str, Any]) -> _Outputs:
        return _Outputs(**{field.name: values[field.name] for field in fields(_Outputs)})

    def _check_parameters(self, parameters: list[Parameter[Any]]) -> SetParametersResult:
        """Reject a change with the reason, before rclpy applies it (ranges are rclpy's)."""
        values = self._values()
        for parameter in parameters:
            if parameter.name not in PARAMETERS:
                continue
            reason = _invalid_value(parameter.name, parameter.value)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
            values[parameter.name] = parameter.value
        reason = _invalid_combination(values)
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _apply_parameters(self, parameters: list[Parameter[Any]]) -> None:
        self._outputs = self._read_outputs(self._values())
        for backend in (self.backend, self.fallback):
            if backend is not None:  # the worker plans again on its next frame
                backend.min_depth = self._outputs.min_depth

    # ---- lifecycle ---------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> Result:
        """Load the model (and the fallback backend's copy), warm up, create the publishers."""
        values = self._values()
        threads = values["threads"] or _default_threads()
        options: dict[str, Any] = {
            key: values[key] for key in ("device", "precision") if values[key]
        }
        backend = self._load_backend(values["backend"], {**options, "threads": threads})
        if backend is None:
            return Result.FAILURE
        if values["fallback_backend"]:
            # Loaded now, not when the GPU fails: a fallback that cannot work is a configuration
            # error to report at start-up, and it runs the very file the backend loaded.
            self.fallback = self._load_backend(values["fallback_backend"], {"threads": threads},
                                               "fallback ")
            if self.fallback is None:
                backend.close()
                return Result.FAILURE
        self.backend = backend
        self._report_backend(backend)
        self._create_publishers(values["use_system_default_qos"])
        self.diagnostics.set_state("inactive")
        return super().on_configure(state)

    def _load_backend(
        self, name: str, options: dict[str, Any], role: str = ""
    ) -> PlannedBackend | None:
        """Backend ``name`` with the model loaded at its own input size (planned again for the
        first camera) and warmed up; ``None`` after logging why not."""
        values = self._values()
        model = values["model_path"] or _SHIPPED[self.mode]
        started = time.monotonic()
        try:
            backend = PlannedBackend(name, model, pixel_budget=values["pixel_budget"] or None,
                                     min_depth=values["min_depth"], **options)
        except (CndDepthError, ValueError) as error:
            self.get_logger().error(f"{role}backend {name!r} cannot load model {model!r}: {error}")
            return None
        if backend.metadata.stereo != (self.mode == "stereo"):
            kind = "stereo" if backend.metadata.stereo else "mono"
            self.get_logger().error(
                f"model {model!r} is a {kind} model ({backend.metadata.variant}) but mode is "
                f"{self.mode!r}"
            )
            backend.close()
            return None
        try:
            backend.warmup()
        except (CndDepthError, RuntimeError) as error:
            self.get_logger().error(f"model {model!r} failed its warm-up run on {role}backend "
                                    f"{backend.name!r}: {error}")
            backend.close()
            return None
        info = backend.info()
        self.get_logger().info(
            f"loaded {info['model']} ({info['variant']}, {info['input']}) on {role}backend "
            f"{info['backend']} in {time.monotonic() - started:.1f} s"
        )
        return backend

    def _report_backend(self, backend: PlannedBackend) -> None:
        info = backend.info()
        for key, value in info.items():
            self.diagnostics.set_info(key, value)
        self.diagnostics.hardware_id = hardware_id(info)

    def on_activate(self, state: LifecycleState) -> Result:
        """Start the worker, then subscribe to the cameras if an output is listened to."""
        result = super().on_activate(state)
        self._slot = _NewestSlot()
        self._worker = threading.Thread(
            target=self._work, args=(self._slot,), name="depth_inference", daemon=True
        )
        self._worker.start()
        self._active = True
        self._update_inputs()
        self.diagnostics.set_state("active")
        if not self._subscribers:
            self.get_logger().info("active; subscribing to the cameras once an output has a "
                                   "subscriber")
        return result

    def on_deactivate(self, state: LifecycleState) -> Result:
        self._stop()
        self.diagnostics.set_state("inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> Result:
        self._release()
        self.diagnostics.set_state("unconfigured")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> Result:
        self._stop()
        self._release()
        self.diagnostics.set_state("finalized")
        return super().on_shutdown(state)

    def destroy_node(self) -> None:
        self._stop()
        self._release()
        super().destroy_node()

    def _stop(self) -> None:
        """Unsubscribe and let the worker finish its frame. Safe to call in any state."""
        with self._inputs_lock:
            self._active = False
        self._update_inputs()
        if self._slot is not None:
            self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=_WORKER_JOIN_S)
            if self._worker.is_alive():  # a daemon thread: it cannot keep the process alive
                self.get_logger().error(
                    f"inference did not finish within {_WORKER_JOIN_S} s; stopping without it"
                )
        self._slot = self._worker = None

    def _release(self) -> None:
        """Destroy the publishers and free the model. Safe to call in any state."""
        for publisher in self._output_publishers.values():
            self.destroy_lifecycle_publisher(publisher)
        self._output_publishers = {}
        for backend in (self.backend, self.fallback):
            if backend is not None:
                backend.close()
        self.backend = self.fallback = None

    # ---- topics ------------------------------------------------------------------------------

    def _create_publishers(self, use_system_default_qos: bool) -> None:
        topics = {
            "depth": (Image, "depth/image"),
            "info": (CameraInfo, "depth/camera_info"),
            "points": (PointCloud2, "points"),
            "colored": (Image, "depth/colored"),
        }
        if self.mode == "stereo":
            topics["disparity"] = (DisparityImage, "disparity")
            topics["confidence"] = (Image, "depth/confidence")
        for key, (msg_type, topic) in topics.items():
            self._output_publishers[key] = self.create_lifecycle_publisher(
                msg_type,
                topic,
                qos.publisher_qos(use_system_default_qos),
                qos_overriding_options=qos.overriding_options(),
                event_callbacks=PublisherEventCallbacks(matched=self._on_matched),
            )

    def _on_matched(self, _status: Any) -> None:
        self._update_inputs()

    def _listened(self) -> bool:
        return any(p.get_subscription_count() > 0 for p in self._output_publishers.values())

    def _update_inputs(self) -> None:
        """Subscribe to the cameras while active and listened to, unsubscribe otherwise."""
        with self._inputs_lock:
            wanted = self._active and self._listened()
            if wanted and not self._subscribers:
                self._subscribe()
            elif not wanted and self._subscribers:
                for subscriber in self._subscribers:
                    self.destroy_subscription(subscriber.sub)
                self._subscribers, self._synchronizer = [], None
                self.diagnostics.listen(None)
                self.get_logger().info("no subscriber left: camera subscriptions closed")

    def _subscribe(self) -> None:
        values = self._values()
        sides = ("left", "right") if self.mode == "stereo" else ("left",)
        image_type = _IMAGE_TRANSPORTS[values["image_transport"]]
        for camera in camera_topics(self, sides, values["image_transport"]):
            for msg_type, topic in ((image_type, camera.image), (CameraInfo, camera.camera_info)):
                subscriber = filters.Subscriber(
                    self,
                    msg_type,
                    topic,
                    qos_profile=qos.subscription_qos(values["use_system_default_qos"]),
                    qos_overriding_options=qos.overriding_options(),
                )
                subscriber.registerCallback(self.diagnostics.record_message, topic)
                self._subscribers.append(subscriber)
        self._synchronizer = make_synchronizer(
            self._subscribers,
            queue_size=values["queue_size"],
            approximate=values["approximate_sync"],
            slop=values["approximate_sync_tolerance_seconds"],
            on_time_jump=self._on_time_jump,
        )
        self.diagnostics.listen([s.sub.topic_name for s in self._subscribers])
        self._synchronizer.registerCallback(self._on_synchronised)
        topics = ", ".join(s.sub.topic_name for s in self._subscribers)
        self.get_logger().info(f"an output has a subscriber: subscribed to {topics}")

    def _on_synchronised(self, *msgs: Any) -> None:
        """Executor thread: hand the set to the worker; a set still waiting there is dropped."""
        self.diagnostics.record_input()
        self._check_stamp(msgs[0].header.stamp)
        stamp = msgs[0].header.stamp
        age_ns = self.get_clock().now().nanoseconds - stamp.sec * 1_000_000_000 - stamp.nanosec
        self._stage_s["input"].append(age_ns * 1e-9)
        slot = self._slot
        if slot is not None and slot.put((time.perf_counter(), msgs)):
            self.diagnostics.record_drop("busy")

    def _on_time_jump(self, seconds: float) -> None:
        """Executor thread: an input's stamp went back (a bag loop); the synchroniser has
        forgotten every waiting message, so the sets after the jump pair again."""
        self.diagnostics.record_warning("time jumped back")
        self._warn("time jumped back", f"input time jumped back by {seconds:.3f} s (a bag played "
                                       "in a loop?): synchroniser reset")

    def _check_stamp(self, stamp: Any) -> None:
        """Report stamps that suggest a clock problem. The set is still used: depth does not
        depend on time, a replayed bag legitimately jumps back, and outputs keep the stamp."""
        stamp_ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
        ahead_ns = stamp_ns - self.get_clock().now().nanoseconds
        last, self._last_stamp_ns = self._last_stamp_ns, stamp_ns
        if ahead_ns > _FUTURE_STAMP_NS:
            reason = "stamp in the future"
            detail = f"{ahead_ns * 1e-9:.3f} s ahead of this node's clock"
        elif last is not None and stamp_ns < last:
            reason = "stamp went backwards"
            detail = f"{(last - stamp_ns) * 1e-9:.3f} s before the previous set (bag loop?)"
        elif stamp_ns == last:
            reason = "stamp repeated"
            detail = "the same as the previous set's"
        else:
            return
        self.diagnostics.record_warning(reason)
        self._warn(reason, f"input {reason}: {stamp.sec}.{stamp.nanosec:09d} is {detail}")

    def _warn(self, kind: str, message: str, *, error: bool = False) -> None:
        """Log ``message`` once per period for each ``kind``, with the count it stands for."""
        count = self._log_throttle.due(kind)
        if count == 0:
            return
        if count > 1:
            message += f" ({count} like it in the last {_LOG_PERIOD_S:g} s)"
        (self.get_logger().error if error else self.get_logger().warning)(message)

    # ---- inference worker --------------------------------------------------------------------

    def _work(self, slot: _NewestSlot) -> None:
        while (item := slot.take()) is not None:
            synchronised, msgs = item
            self._frame_s.clear()
            self._lap("queue", synchronised)
            try:
                self._process(*msgs)
            except Exception:  # a bug must cost one frame, not the worker thread
                if not self.context.ok():
                    return  # Ctrl-C shut the context down while this frame was being published
                self._internal_error()

    def _internal_error(self) -> None:
        """An error no check anticipated: logged with its traceback, counted, the frame skipped."""
        self.diagnostics.record_drop("internal error")
        self._warn("internal error", f"internal error, frame skipped:\n{traceback.format_exc()}",
                   error=True)

    def _process(
        self,
        left_image: Image | CompressedImage,
        left_info: CameraInfo,
        right_image: Image | CompressedImage | None = None,
        right_info: CameraInfo | None = None,
    ) -> None:
        backend, outputs = self.backend, self._outputs
        if backend is None:
            return
        lap = time.perf_counter()
        try:
            camera = camera_from_info(left_info, right_info)
            left = _camera_image(left_image, camera)
            right = None if right_image is None else _camera_image(right_image, camera)
            for side, msg in (("left", left_image), ("right", right_image)):
                encoding = getattr(msg, "encoding", None) or getattr(msg, "format", "")
                if msg is not None and (notice := self._grey_notice.check(side, encoding)):
                    self.get_logger().warning(notice)
        except (CndDepthError, ValueError) as error:
            self.diagnostics.record_drop("bad input")
            self._warn(raise_site(error), f"skipping input: {error}")
            return

        started = self._lap("decode", lap)
        try:
            self._plan_input(backend, camera)
            input_size = backend.backend.input_size
            if outputs.output_resolution == "network":
                camera_out = camera.resized(*input_size)
                colors = cv2.resize(left, input_size, interpolation=cv2.INTER_AREA)
            else:
                camera_out, colors = camera, left
            estimate = backend.estimate(
                left, right, camera=camera, output_size=(camera_out.width, camera_out.height)
            )
        except (CndDepthError, RuntimeError, ValueError) as error:
            self.diagnostics.record_drop("inference error")
            self._warn(raise_site(error), f"inference failed on {backend.name}: {error}",
                       error=True)
            self._fall_back(backend, error)
            return
        lap = self._lap("inference", started)
        header = Header(stamp=left_image.header.stamp, frame_id=left_image.header.frame_id)
        self._publish(estimate, colors, camera_out, header, outputs, lap)
        stamp_ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
        self.diagnostics.record_output((self.get_clock().now().nanoseconds - stamp_ns) * 1e-9)
        if self.get_logger().is_enabled_for(LoggingSeverity.DEBUG):  # benchmarks read this line
            stages = ", ".join(f"{stage} {1e3 * s:.3f}" for stage, s in self._frame_s.items())
            self.get_logger().debug(
                f"frame {header.stamp.sec}.{header.stamp.nanosec:09d} took (ms): {stages}"
            )

    def _plan_input(self, backend: PlannedBackend, camera: PinholeCamera) -> None:
        """Worker thread: plan the network input for ``camera`` (the first, or a new size or
        ``min_depth``); a new size loads the backend again, which takes seconds (ONNX Runtime)
        or minutes (a TensorRT engine not yet built: ``cnd-depth build-engine`` ahead of time).

        :raises CndDepthError: the backend cannot be loaded at the planned size.
        """
        plan = backend.prepare(camera)
        if plan is None:
            return
        self.get_logger().info(f"{plan.describe()} on {backend.name}")
        if backend.wanted is not None:
            wanted = backend.wanted
            self._warn("static input", (
                f"{backend.model} is compiled for {plan.width}x{plan.height}; this camera "
                f"would run at {wanted.width}x{wanted.height}: cnd-depth export --height "
                f"{wanted.height} --width {wanted.width} (or build-engine) makes that model"))
        self._report_backend(backend)

    def _fall_back(self, failed: PlannedBackend, error: Exception) -> None:
        """Worker thread: replace a backend that failed at run time by the fallback, for good (a
        GPU error usually leaves the device unusable until the process restarts)."""
        fallback = self.fallback
        if fallback is None:
            return
        self.backend, self.fallback = fallback, None
        try:
            failed.close()
        except (CndDepthError, RuntimeError) as close_error:
            self.get_logger().warning(f"closing the failed backend: {close_error}")
        self._report_backend(fallback)
        self.diagnostics.set_info("fell back from", f"{failed.name}: {error}")
        self.get_logger().error(
            f"backend {failed.name!r} failed at run time ({error}); "
            f"switched to the fallback backend {fallback.name!r}"
        )

    def _publish(
        self,
        estimate: DepthEstimate,
        colors: np.ndarray,
        camera: PinholeCamera,
        header: Header,
        outputs: _Outputs,
        lap: float,
    ) -> None:
        """Every output that is enabled and has a subscriber, depth and camera_info always.

        ``lap`` is when the network's depth came out (``time.perf_counter()``).
        """
        publishers = self._output_publishers

        def wanted(key: str) -> bool:
            return key in publishers and publishers[key].get_subscription_count() > 0

        depth, confidence = estimate.depth, estimate.confidence
        depth[~((depth >= outputs.min_depth) & (depth <= outputs.max_depth))] = np.nan
        if confidence is not None and outputs.confidence_threshold > 0.0:
            depth[confidence < outputs.confidence_threshold] = np.nan
        image = depth if outputs.output_encoding == "32FC1" else depth_to_millimetres(depth)
        publishers["depth"].publish(array_to_image(image, outputs.output_encoding, header))
        publishers["info"].publish(camera_info_for(camera, header))
        lap = self._lap("depth", lap)
        if outputs.publish_points and wanted("points"):
            publishers["points"].publish(
                depth_to_pointcloud2(
                    depth,
                    camera,
                    header,
                    rgb=colors if outputs.points_color else None,
                    stride=outputs.points_stride,
                )
            )
            lap = self._lap("points", lap)
        if outputs.publish_colored and wanted("colored"):
            publishers["colored"].publish(array_to_image(_colorize(depth), "rgb8", header))
            lap = self._lap("colored", lap)
        if confidence is not None and wanted("confidence"):
            publishers["confidence"].publish(array_to_image(confidence, "32FC1", header))
            lap = self._lap("confidence", lap)
        if outputs.publish_disparity and wanted("disparity") and camera.baseline is not None:
            publishers["disparity"].publish(self._disparity(depth, camera, header, outputs))
            self._lap("disparity", lap)

    def _lap(self, stage: str, since: float) -> float:
        """Record ``since`` -> now as one ``stage`` duration; return now, the next lap's start."""
        now = time.perf_counter()
        self._stage_s[stage].append(now - since)
        self._frame_s[stage] = now - since
        return now

    @staticmethod
    def _disparity(
        depth: np.ndarray, camera: PinholeCamera, header: Header, outputs: _Outputs
    ) -> DisparityImage:
        """The depth as stereo_msgs/DisparityImage (d = f T / Z); invalid pixels are -1, below
        ``min_disparity`` as the message defines."""
        assert camera.baseline is not None
        focal_baseline = camera.fx * camera.baseline
        disparity = np.full(depth.shape, -1.0, np.float32)
        np.divide(focal_baseline, depth, out=disparity, where=np.isfinite(depth))
        max_disparity = (
            focal_baseline / outputs.min_depth if outputs.min_depth > 0 else float(camera.width)
        )
        return DisparityImage(
            header=header,
            image=array_to_image(disparity, "32FC1", header),
            f=camera.fx,
            t=camera.baseline,
            min_disparity=focal_baseline / outputs.max_depth,
            max_disparity=max_disparity,
            delta_d=0.0,
        )

    # ---- diagnostics -------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        for stage, durations in self._stage_s.items():
            if times := list(durations):
                self.diagnostics.set_info(f"{stage} p50 (ms)", f"{1e3 * np.median(times):.2f}")
        self._diagnostics_publisher.publish(
            self.diagnostics.to_message(self.get_clock().now().to_msg())
        )


class _InterruptUntilSpinning:
    """Python's SIGINT handler, installed before ``rclpy.init`` so that rclpy's own handler
    (which shuts the context down and wakes the executor) calls it after its work: a
    ``KeyboardInterrupt`` while the node starts (a model load or an engine build can take
    minutes), nothing once it spins, where ``spin`` then ends on the shutdown. A
    ``KeyboardInterrupt`` during spin lands wherever the main thread is, even half-way through
    rclpy building a ``Task``, whose ``__del__`` then prints a traceback on the way out."""

    def __init__(self) -> None:
        self.spinning = False
        signal.signal(signal.SIGINT, self)

    def __call__(self, signum: int, frame: object) -> None:
        if not self.spinning:
            raise KeyboardInterrupt


def main(args: list[str] | None = None) -> int:
    """``ros2 run cnd_depth_ros depth_node [--ros-args -p mode:=mono ...]``."""
    keep_freed_buffers()  # every frame's message buffers, without page faults
    # `kill -USR1 <pid>` writes every thread's Python stack to stderr: where a node that no
    # longer answers or will not stop is stuck, without stopping it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    interrupts = _InterruptUntilSpinning()
    try:
        rclpy.init(args=args)
    except Exception as error:  # rcl's error for malformed --ros-args; rcl has logged which
        rclpy.logging.get_logger("depth_node").fatal(f"cannot start: {error}")
        return 2
    node: DepthNode | None = None
    try:
        node = DepthNode()
        interrupts.spinning = True
        rclpy.spin(node)
    except (InvalidParameterValueException, ValueError) as error:
        rclpy.logging.get_logger("depth_node").fatal(str(error))
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # A signal shut the context down while the executor was building its wait set on it
        # (rcl's error, which rclpy does not export publicly).
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
