"""``depth_node``: synchronised rectified stereo (or mono) images in, metric depth and clouds out.

A managed (lifecycle) node, like stereo_image_proc's ``point_cloud_node`` with a network in the
middle: ``configure`` loads the model (slow: seconds, an engine build minutes), ``activate``
starts the inference worker and subscribes to the cameras, but only while some output has a
subscriber, so the GPU idles when nobody listens. With ``autostart`` (the default) it configures
and activates itself, so a plain ``ros2 run cnd_depth_ros depth_node`` works. Topics, parameters
and QoS are described in docs/node.md.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState
from rclpy.lifecycle import TransitionCallbackReturn as Result
from rclpy.logging import LoggingSeverity
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.timer import Timer
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.errors import CndDepthError
from cnd_depth_ros.inference.planned_backend import PlannedBackend
from cnd_depth_ros.messages.camera_info import camera_from_info, check_image_size
from cnd_depth_ros.messages.image import GreyInputNotice, compressed_to_rgb, image_to_rgb
from cnd_depth_ros.ros import qos
from cnd_depth_ros.ros.backend_loading import load_backend
from cnd_depth_ros.ros.diagnostics import PipelineDiagnostics, hardware_id, status_name
from cnd_depth_ros.ros.log_throttle import KindThrottle, raise_site
from cnd_depth_ros.ros.newest_slot import NewestSlot
from cnd_depth_ros.ros.outputs import OutputPublishers, OutputSettings
from cnd_depth_ros.ros.parameters import (
    check_change,
    declare_parameters,
    inference_threads,
    parameter_values,
)
from cnd_depth_ros.ros.process import run_node
from cnd_depth_ros.ros.stage_timing import StageTimes
from cnd_depth_ros.ros.synchronizer import IMPLEMENTATION, filters, make_synchronizer
from cnd_depth_ros.ros.topics import camera_topics

__all__ = ["DepthNode", "main"]

# image_transport -> the camera image's type (its topic: ros/topics.py).
_IMAGE_TRANSPORTS = {"raw": Image, "compressed": CompressedImage}
# Each kind of bad input (the check that rejected it) is logged at most once per period.
_LOG_PERIOD_S = 5.0
# Stamps further ahead of this node's clock are reported: camera and node clocks disagree.
_FUTURE_STAMP_NS = 1_000_000_000
# How long stopping waits for the frame in inference (a hung GPU must not hang shutdown).
_WORKER_JOIN_S = 10.0


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


class DepthNode(LifecycleNode):
    """Metric depth, point clouds and disparity from a CND network; see the module docstring.

    Threading: the executor runs the subscription, synchroniser, timer, parameter and lifecycle
    callbacks; one worker thread runs inference and publishes. They meet in two places only:
    ``NewestSlot`` (its own lock) and ``self._settings``, an immutable settings object that the
    parameter callback replaces by assignment (atomic under the GIL). rclpy publishers may be
    used from any thread. Inputs are created and destroyed under ``_inputs_lock`` because
    publisher matched events and lifecycle transitions may come from different threads.

    :raises InvalidParameterValueException: a parameter override outside its range.
    :raises ValueError: parameter overrides that are invalid or do not work together.
    """

    def __init__(self, node_name: str = "depth_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        values = declare_parameters(self)
        self._settings = OutputSettings.from_values(values)
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        self.mode: str = values["mode"]
        self.backend: PlannedBackend | None = None
        self.fallback: PlannedBackend | None = None
        self._outputs: OutputPublishers | None = None
        self._subscribers: list[Any] = []
        self._synchronizer: Any = None
        self._inputs_lock = threading.Lock()
        self._active = False
        self._slot: NewestSlot | None = None
        self._worker: threading.Thread | None = None
        self._timing = StageTimes()
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

    def _check_parameters(self, parameters: list[Parameter[Any]]) -> SetParametersResult:
        """Reject a change with the reason, before rclpy applies it."""
        return check_change(parameter_values(self), parameters)

    def _apply_parameters(self, parameters: list[Parameter[Any]]) -> None:
        self._settings = OutputSettings.from_values(parameter_values(self))
        for backend in (self.backend, self.fallback):
            if backend is not None:  # the worker plans again on its next frame
                backend.min_depth = self._settings.min_depth

    # ---- lifecycle ---------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> Result:
        """Load the model (and the fallback backend's copy), warm up, create the publishers."""
        values = parameter_values(self)
        threads = inference_threads(values)
        options: dict[str, Any] = {
            key: values[key] for key in ("device", "precision") if values[key]
        }
        backend = load_backend(self, values["backend"], values, {**options, "threads": threads})
        if backend is None:
            return Result.FAILURE
        if values["fallback_backend"]:
            # Loaded now, not when the GPU fails: a fallback that cannot work is a configuration
            # error to report at start-up, and it runs the very file the backend loaded.
            self.fallback = load_backend(self, values["fallback_backend"], values,
                                         {"threads": threads}, "fallback ")
            if self.fallback is None:
                backend.close()
                return Result.FAILURE
        self.backend = backend
        self._report_backend(backend)
        self._outputs = OutputPublishers(
            self, stereo=self.mode == "stereo",
            use_system_default_qos=values["use_system_default_qos"], on_matched=self._on_matched,
        )
        self.diagnostics.set_state("inactive")
        return super().on_configure(state)

    def _report_backend(self, backend: PlannedBackend) -> None:
        info = backend.info()
        for key, value in info.items():
            self.diagnostics.set_info(key, value)
        self.diagnostics.hardware_id = hardware_id(info)

    def on_activate(self, state: LifecycleState) -> Result:
        """Start the worker, then subscribe to the cameras if an output is listened to."""
        result = super().on_activate(state)
        self._slot = NewestSlot()
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
        if self._outputs is not None:
            self._outputs.destroy()
        self._outputs = None
        for backend in (self.backend, self.fallback):
            if backend is not None:
                backend.close()
        self.backend = self.fallback = None

    # ---- topics ------------------------------------------------------------------------------

    def _on_matched(self, _status: Any) -> None:
        self._update_inputs()

    def _update_inputs(self) -> None:
        """Subscribe to the cameras while active and listened to, unsubscribe otherwise."""
        with self._inputs_lock:
            wanted = self._active and self._outputs is not None and self._outputs.listened()
            if wanted and not self._subscribers:
                self._subscribe()
            elif not wanted and self._subscribers:
                for subscriber in self._subscribers:
                    self.destroy_subscription(subscriber.sub)
                self._subscribers, self._synchronizer = [], None
                self.diagnostics.listen(None)
                self.get_logger().info("no subscriber left: camera subscriptions closed")

    def _subscribe(self) -> None:
        values = parameter_values(self)
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
        self._timing.record("input", age_ns * 1e-9)
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

    def _work(self, slot: NewestSlot) -> None:
        while (item := slot.take()) is not None:
            synchronised, msgs = item
            self._timing.start_frame()
            self._timing.lap("queue", synchronised)
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
        backend, outputs, settings = self.backend, self._outputs, self._settings
        if backend is None or outputs is None:
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

        started = self._timing.lap("decode", lap)
        try:
            self._plan_input(backend, camera)
            # The one decision on the outputs' size; the backend resizes the depth to it and
            # the outputs follow the estimate's camera.
            network = settings.output_resolution == "network"
            estimate = backend.estimate(
                left, right, camera=camera,
                output_size=backend.input_size if network else None,
            )
        except (CndDepthError, RuntimeError, ValueError) as error:
            self.diagnostics.record_drop("inference error")
            self._warn(raise_site(error), f"inference failed on {backend.name}: {error}",
                       error=True)
            self._fall_back(backend, error)
            return
        lap = self._timing.lap("inference", started)
        header = Header(stamp=left_image.header.stamp, frame_id=left_image.header.frame_id)
        outputs.publish(estimate, left, header, settings, self._timing, lap)
        stamp_ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
        self.diagnostics.record_output((self.get_clock().now().nanoseconds - stamp_ns) * 1e-9)
        if self.get_logger().is_enabled_for(LoggingSeverity.DEBUG):  # benchmarks read this line
            self.get_logger().debug(f"frame {header.stamp.sec}.{header.stamp.nanosec:09d} took "
                                    f"(ms): {self._timing.frame_ms()}")

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

    # ---- diagnostics -------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        for stage, median_ms in self._timing.medians_ms().items():
            self.diagnostics.set_info(f"{stage} p50 (ms)", f"{median_ms:.2f}")
        self._diagnostics_publisher.publish(
            self.diagnostics.to_message(self.get_clock().now().to_msg())
        )


def main(args: list[str] | None = None) -> int:
    """``ros2 run cnd_depth_ros depth_node [--ros-args -p mode:=mono ...]``."""
    return run_node(DepthNode, "depth_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
