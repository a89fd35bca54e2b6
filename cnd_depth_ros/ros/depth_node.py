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
import threading
import time
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
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, LifecyclePublisher, LifecycleState
from rclpy.lifecycle import TransitionCallbackReturn as Result
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.time import Time
from rclpy.timer import Timer
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from stereo_msgs.msg import DisparityImage

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.errors import CndDepthError
from cnd_depth_ros.inference.backend import DepthBackend
from cnd_depth_ros.ros import qos
from cnd_depth_ros.ros.camera_info import camera_from_info, camera_info_for, check_image_size
from cnd_depth_ros.ros.diagnostics import PipelineDiagnostics
from cnd_depth_ros.ros.image_codec import array_to_image, image_to_rgb
from cnd_depth_ros.ros.pointcloud import depth_to_pointcloud2
from cnd_depth_ros.ros.synchronizer import IMPLEMENTATION, filters, make_synchronizer

__all__ = ["PARAMETERS", "DepthNode", "main"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "mode": ("stereo", "mono"),
    "backend": ("auto", "torch", "onnxruntime", "tensorrt"),
    "precision": ("", "fp32", "fp16", "int8"),
    "output_encoding": ("32FC1", "16UC1"),
    "output_resolution": ("input", "network"),
}
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
    "model_path": _Spec("", "model artifact, .onnx or engine; empty: the shipped model for the "
                            "mode (cnd_stereo / cnd_mono)", read_only=True),
    "backend": _Spec("auto", "inference backend; auto picks the fastest this machine runs",
                     read_only=True),
    "device": _Spec("", "cpu, cuda or cuda:N; empty: the backend's default", read_only=True),
    "precision": _Spec("", "fp32, fp16 or int8; empty: the backend's default", read_only=True),
    "threads": _Spec(0, "CPU threads for the inference runtime; 0: the runtime's default",
                     read_only=True, low=0, high=256),
    "queue_size": _Spec(5, "messages kept per input by the synchroniser", read_only=True,
                        low=1, high=100),
    "approximate_sync": _Spec(False, "pair images whose stamps differ by up to the tolerance "
                                     "(exact stamps otherwise)", read_only=True),
    "approximate_sync_tolerance_seconds": _Spec(0.0, "largest stamp difference of an "
                                                     "approximately synchronised set",
                                                read_only=True, low=0.0, high=10.0),
    "use_system_default_qos": _Spec(False, "middleware default QoS on every topic instead of "
                                           "sensor-data in, reliable out", read_only=True),
    "diagnostic_period": _Spec(1.0, "seconds between /diagnostics messages", read_only=True,
                               low=0.1, high=60.0),
    "output_encoding": _Spec("32FC1", "depth/image encoding: 32FC1 metres with NaN invalid, or "
                                      "16UC1 millimetres with 0 invalid (REP 118)"),
    "output_resolution": _Spec("input", "size of every output: input (the camera's) or "
                                        "network (the model's, cheaper)"),
    "min_depth": _Spec(0.0, "metres; nearer depth is marked invalid", low=0.0, high=10000.0),
    "max_depth": _Spec(100.0, "metres; farther depth is marked invalid", low=0.0, high=10000.0),
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
    return None


@dataclass(frozen=True)
class _Outputs:
    """The live-changeable output settings, replaced as a whole when a parameter changes."""

    output_encoding: str
    output_resolution: str
    min_depth: float
    max_depth: float
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


def _millimetres(depth: np.ndarray) -> np.ndarray:
    """REP 118 16UC1: depth in millimetres, 0 where invalid or beyond 65.535 m."""
    millimetres = np.rint(depth * 1000.0)
    valid = np.isfinite(millimetres) & (millimetres >= 1) & (millimetres <= np.iinfo(np.uint16).max)
    return np.where(valid, millimetres, 0).astype(np.uint16)


def _colorize(depth: np.ndarray) -> np.ndarray:
    """Inverse depth through the turbo colour map, scaled to the frame's range; invalid: black."""
    valid = np.isfinite(depth)
    inverse = np.zeros(depth.shape, np.float32)
    np.divide(1.0, depth, out=inverse, where=valid)
    if valid.any():
        low, high = inverse[valid].min(), inverse[valid].max()
        inverse = (inverse - low) * (255.0 / max(high - low, 1e-6))
    rgb = cv2.applyColorMap(np.clip(inverse, 0, 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    rgb = cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB)
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
        self.backend: DepthBackend | None = None
        self._output_publishers: dict[str, LifecyclePublisher[Any]] = {}
        self._subscribers: list[Any] = []
        self._synchronizer: Any = None
        self._inputs_lock = threading.Lock()
        self._active = False
        self._slot: _NewestSlot | None = None
        self._worker: threading.Thread | None = None
        self._inference_s: collections.deque[float] = collections.deque(maxlen=200)

        self.diagnostics = PipelineDiagnostics(f"{self.get_fully_qualified_name()}: depth")
        self.diagnostics.set_info("mode", self.mode)
        self.diagnostics.set_info("synchronizer", IMPLEMENTATION)
        self.diagnostics.set_info("state", "unconfigured")
        self._diagnostics_publisher: Publisher[DiagnosticArray] = self.create_publisher(
            DiagnosticArray, "/diagnostics", 10
        )
        self._diagnostics_timer: Timer = self.create_timer(
            values["diagnostic_period"], self._publish_diagnostics
        )

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

    # ---- lifecycle ---------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> Result:
        """Load the model (and warm it up) and create the output publishers."""
        from cnd_depth_ros.inference.registry import create_backend

        values = self._values()
        model = values["model_path"] or _SHIPPED[self.mode]
        options: dict[str, Any] = {
            key: values[key] for key in ("device", "precision", "threads") if values[key]
        }
        started = time.monotonic()
        try:
            backend = create_backend(values["backend"], model, **options)
        except (CndDepthError, ValueError) as error:
            self.get_logger().error(f"cannot load model {model!r}: {error}")
            return Result.FAILURE
        if backend.metadata.stereo != (self.mode == "stereo"):
            kind = "stereo" if backend.metadata.stereo else "mono"
            self.get_logger().error(
                f"model {model!r} is a {kind} model ({backend.metadata.variant}) but mode is "
                f"{self.mode!r}"
            )
            backend.close()
            return Result.FAILURE
        try:
            backend.warmup()
        except (CndDepthError, RuntimeError) as error:
            self.get_logger().error(f"model {model!r} failed its warm-up run: {error}")
            backend.close()
            return Result.FAILURE
        self.backend = backend
        info = backend.info()
        for key, value in info.items():
            self.diagnostics.set_info(key, value)
        self.get_logger().info(
            f"loaded {info['model']} ({info['variant']}, {info['input']}) on {info['backend']} "
            f"in {time.monotonic() - started:.1f} s"
        )
        self._create_publishers(values["use_system_default_qos"])
        self.diagnostics.set_info("state", "inactive")
        return super().on_configure(state)

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
        self.diagnostics.set_info("state", "active")
        return result

    def on_deactivate(self, state: LifecycleState) -> Result:
        self._stop()
        self.diagnostics.set_info("state", "inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> Result:
        self._release()
        self.diagnostics.set_info("state", "unconfigured")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> Result:
        self._stop()
        self._release()
        self.diagnostics.set_info("state", "finalized")
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
            self._worker.join()
        self._slot = self._worker = None

    def _release(self) -> None:
        """Destroy the publishers and free the model. Safe to call in any state."""
        for publisher in self._output_publishers.values():
            self.destroy_lifecycle_publisher(publisher)
        self._output_publishers = {}
        if self.backend is not None:
            self.backend.close()
            self.backend = None

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
                self.get_logger().info("no subscriber left: camera subscriptions closed")

    def _subscribe(self) -> None:
        values = self._values()
        sides = ("left", "right") if self.mode == "stereo" else ("left",)
        for side in sides:
            for msg_type, topic in ((Image, f"{side}/image_rect"), (CameraInfo,
                                                                    f"{side}/camera_info")):
                self._subscribers.append(
                    filters.Subscriber(
                        self,
                        msg_type,
                        topic,
                        qos_profile=qos.subscription_qos(values["use_system_default_qos"]),
                        qos_overriding_options=qos.overriding_options(),
                    )
                )
        self._synchronizer = make_synchronizer(
            self._subscribers,
            queue_size=values["queue_size"],
            approximate=values["approximate_sync"],
            slop=values["approximate_sync_tolerance_seconds"],
        )
        self._synchronizer.registerCallback(self._on_synchronised)
        topics = ", ".join(s.sub.topic_name for s in self._subscribers)
        self.get_logger().info(f"an output has a subscriber: subscribed to {topics}")

    def _on_synchronised(self, *msgs: Any) -> None:
        """Executor thread: hand the set to the worker; a set still waiting there is dropped."""
        self.diagnostics.record_input()
        slot = self._slot
        if slot is not None and slot.put(msgs):
            self.diagnostics.record_drop("busy")

    # ---- inference worker --------------------------------------------------------------------

    def _work(self, slot: _NewestSlot) -> None:
        while (msgs := slot.take()) is not None:
            try:
                self._process(*msgs)
            except _rclpy.RCLError:
                if self.context.ok():
                    raise
                return  # Ctrl-C shut the context down while this frame was being published

    def _process(
        self,
        left_image: Image,
        left_info: CameraInfo,
        right_image: Image | None = None,
        right_info: CameraInfo | None = None,
    ) -> None:
        backend, outputs = self.backend, self._outputs
        if backend is None:
            return
        try:
            camera = camera_from_info(left_info, right_info)
            check_image_size(camera, left_image)
            left = image_to_rgb(left_image)
            right = None
            if right_image is not None:
                check_image_size(camera, right_image)
                right = image_to_rgb(right_image)
        except (CndDepthError, ValueError) as error:
            self.get_logger().warning(f"skipping input: {error}", throttle_duration_sec=5.0)
            self.diagnostics.record_drop("bad input")
            return

        if outputs.output_resolution == "network":
            camera_out = camera.resized(*backend.input_size)
            colors = cv2.resize(left, backend.input_size, interpolation=cv2.INTER_AREA)
        else:
            camera_out, colors = camera, left
        started = time.perf_counter()
        try:
            depth = backend.infer(
                left, right, camera=camera, output_size=(camera_out.width, camera_out.height)
            )
        except (CndDepthError, RuntimeError) as error:
            self.get_logger().error(f"inference failed: {error}", throttle_duration_sec=5.0)
            self.diagnostics.record_drop("inference error")
            return
        self._inference_s.append(time.perf_counter() - started)
        depth[~((depth >= outputs.min_depth) & (depth <= outputs.max_depth))] = np.nan

        header = Header(stamp=left_image.header.stamp, frame_id=left_image.header.frame_id)
        self._publish(depth, colors, camera_out, header, outputs)
        latency = self.get_clock().now() - Time.from_msg(header.stamp)
        self.diagnostics.record_output(latency.nanoseconds * 1e-9)

    def _publish(
        self,
        depth: np.ndarray,
        colors: np.ndarray,
        camera: PinholeCamera,
        header: Header,
        outputs: _Outputs,
    ) -> None:
        """Every output that is enabled and has a subscriber, depth and camera_info always."""
        publishers = self._output_publishers

        def wanted(key: str) -> bool:
            return key in publishers and publishers[key].get_subscription_count() > 0

        image = depth if outputs.output_encoding == "32FC1" else _millimetres(depth)
        publishers["depth"].publish(array_to_image(image, outputs.output_encoding, header))
        publishers["info"].publish(camera_info_for(camera, header))
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
        if outputs.publish_colored and wanted("colored"):
            publishers["colored"].publish(array_to_image(_colorize(depth), "rgb8", header))
        if outputs.publish_disparity and wanted("disparity") and camera.baseline is not None:
            publishers["disparity"].publish(self._disparity(depth, camera, header, outputs))

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
        times = list(self._inference_s)
        if times:
            self.diagnostics.set_info("inference p50 (ms)", f"{1e3 * np.median(times):.2f}")
        self._diagnostics_publisher.publish(
            self.diagnostics.to_message(self.get_clock().now().to_msg())
        )


def main(args: list[str] | None = None) -> int:
    """``ros2 run cnd_depth_ros depth_node [--ros-args -p mode:=mono ...]``."""
    try:
        rclpy.init(args=args)
    except _rclpy.RCLError as error:  # malformed --ros-args; rcl has logged which
        rclpy.logging.get_logger("depth_node").fatal(f"cannot start: {error}")
        return 2
    node: DepthNode | None = None
    try:
        node = DepthNode()
        rclpy.spin(node)
    except (InvalidParameterValueException, ValueError) as error:
        rclpy.logging.get_logger("depth_node").fatal(str(error))
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
