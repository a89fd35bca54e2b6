"""depth_node end to end through real DDS: latency, output rate and the node's own overhead.

Starts ``python -m cnd_depth_ros.ros.depth_node`` as a separate process (Fast DDS large-data
transports on both ends), plays a camera driver publishing 640x480 rgb8 stereo pairs with
camera_info (best effort), and listens to ``depth/image`` and ``points`` with rviz2's QoS.

* End to end (lock-step: the next pair goes out once the outputs of the previous one arrived,
  so no frame waits behind another): from the left stamp, taken by the driver just before it
  publishes the pair, until ``depth/image`` and ``points`` have both reached the listener's
  Python callbacks.
* Overhead, per frame, then its p50: that frame's end to end minus that frame's inference, the
  backend's ``infer`` (resize, network, metric depth, resize back), which the node logs for
  each frame at debug level. Everything else counts: the driver publishing the pair,
  transport, the node's deserialisation, synchronisation, hand-off to the worker, decoding,
  the depth limits, building and publishing depth, camera_info and the cloud, and their
  transport to and deserialisation in the listener.
* Where it goes: the node's own per-stage p50s from ``/diagnostics`` (stamp -> synchronised,
  queue, decode, inference, depth, points, and stamp -> all published), the driver's publish
  time, and when each output reached the listener.
* Output rate: open loop at ``--rate`` Hz, newest pair wins in the node, drops counted.

The default model is a random-initialised cnd_stereo at 256x160 (weights do not change timing)::

    .venv/bin/python benchmarks/node_latency.py --backend onnxruntime --threads 1 --json node.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import numpy as np
from report import emit, machine

NODE_START_S = 300.0  # model load, ONNX export or engine build included
# depth_node's debug line for each frame: "frame SEC.NANOSEC took (ms): queue 0.41, ..."
_FRAME_LINE = re.compile(r"frame (?P<sec>\d+)\.(?P<nanosec>\d{9}) took \(ms\): (?P<stages>.*)$")


def _random_artifact(folder: Path, width: int, height: int) -> str:
    from cnd_depth_ros.camera import PinholeCamera
    from cnd_depth_ros.models import ModelMetadata, build_model, save_artifact

    model = build_model("cnd_stereo").eval()
    camera = PinholeCamera(width=width, height=height, fx=0.9 * width, fy=0.9 * width,
                           cx=(width - 1) / 2, cy=(height - 1) / 2, baseline=0.12)
    metadata = ModelMetadata(
        variant="cnd_stereo", input_height=height, input_width=width, output=model.output_kind,
        training_camera=camera, stereo=True, model_config=asdict(model.config),
    )
    return str(save_artifact(model, metadata, folder / "cnd_stereo"))


class _Driver:
    """The camera side and the listener side, in this process (spun on a background thread)."""

    def __init__(
        self, width: int, height: int, outputs: tuple[str, ...], *, raw: bool = False
    ) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from std_msgs.msg import Header

        from cnd_depth_ros.camera import PinholeCamera
        from cnd_depth_ros.messages.camera_info import camera_info_for
        from cnd_depth_ros.messages.image import array_to_image
        from cnd_depth_ros.ros.qos import publisher_qos, subscription_qos

        self.node = Node("node_latency_benchmark")
        camera = PinholeCamera(width=width, height=height, fx=0.9 * width, fy=0.9 * width,
                               cx=(width - 1) / 2, cy=(height - 1) / 2, baseline=0.12)
        rng = np.random.default_rng(0)
        header = Header(frame_id="left_camera_optical_frame")
        self.images = {
            side: array_to_image(rng.integers(0, 256, (height, width, 3), np.uint8), "rgb8",
                                 header)
            for side in ("left", "right")
        }
        self.infos = {
            side: camera_info_for(camera, header, right=side == "right")
            for side in ("left", "right")
        }
        camera_qos = subscription_qos()  # what a camera driver offers: sensor data, best effort
        self.image_publishers = {
            side: self.node.create_publisher(Image, f"{side}/image_rect", camera_qos)
            for side in ("left", "right")
        }
        self.info_publishers = {
            side: self.node.create_publisher(CameraInfo, f"{side}/camera_info", camera_qos)
            for side in ("left", "right")
        }
        self.publish_s: list[float] = []
        self.arrivals: dict[str, dict[int, float]] = {output: {} for output in outputs}
        self.lock = threading.Condition()
        listener_qos = publisher_qos(depth=5)
        self.node.create_subscription(Image, "depth/image", self._on("depth"), listener_qos,
                                      raw=raw)
        if "points" in outputs:  # without a subscriber the node builds no cloud
            self.node.create_subscription(PointCloud2, "points", self._on("points"), listener_qos,
                                          raw=raw)
        self.diagnostics: dict[str, str] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        with contextlib.suppress(ExternalShutdownException):
            self.executor.spin()

    def _on(self, output: str) -> Any:
        def record(msg: Any) -> None:
            now = time.time()
            if isinstance(msg, bytes):  # CDR: encapsulation, then header.stamp (sec, nanosec)
                sec, nanosec = struct.unpack_from("<iI" if msg[1] & 1 else ">iI", msg, 4)
            else:
                sec, nanosec = msg.header.stamp.sec, msg.header.stamp.nanosec
            stamp = sec * 10**9 + nanosec
            with self.lock:
                self.arrivals[output][stamp] = now
                self.lock.notify_all()

        return record

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.endswith("depth_node: depth"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def connected(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in self.image_publishers.values())

    def publish(self) -> int:
        """One pair stamped now; returns the stamp in nanoseconds."""
        now_ns = time.time_ns()
        for side in ("left", "right"):
            for msg in (self.images[side], self.infos[side]):
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now_ns, 10**9)
            self.image_publishers[side].publish(self.images[side])
            self.info_publishers[side].publish(self.infos[side])
        self.publish_s.append((time.time_ns() - now_ns) * 1e-9)
        return now_ns

    def wait_both(self, stamp: int, timeout_s: float) -> dict[str, float] | None:
        """Seconds from ``stamp`` until each output arrived; None on timeout."""
        with self.lock:
            done = self.lock.wait_for(
                lambda: all(stamp in arrivals for arrivals in self.arrivals.values()), timeout_s
            )
            if not done:
                return None
            return {output: arrivals[stamp] - stamp * 1e-9
                    for output, arrivals in self.arrivals.items()}

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()


def _read_node_log(stream: IO[str], frames: dict[int, dict[str, float]]) -> None:
    """Pass the node's log through, keeping its per-frame debug lines (stage -> ms) by stamp."""
    for line in stream:
        match = _FRAME_LINE.search(line)
        if match is None:
            sys.stderr.write(line)
            continue
        stamp = int(match["sec"]) * 10**9 + int(match["nanosec"])
        stages = (item.rsplit(" ", 1) for item in match["stages"].split(", "))
        frames[stamp] = {stage: float(ms) for stage, ms in stages}


def _percentiles(values: list[float]) -> dict[str, float]:
    milliseconds = 1e3 * np.asarray(values)
    return {"p50_ms": float(np.percentile(milliseconds, 50)),
            "p95_ms": float(np.percentile(milliseconds, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="artifact or .onnx (default: random cnd_stereo 256x160)")
    parser.add_argument("--backend", default="auto", help="auto, torch, onnxruntime, tensorrt")
    parser.add_argument("--device", default="", help="cpu, cuda (default: the backend's)")
    parser.add_argument("--threads", type=int, default=0, help="inference threads (0: default)")
    parser.add_argument("--pixel-budget", type=int, default=0,
                        help="the node's pixel_budget (0: its default for the device)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=100, help="lock-step frames timed")
    parser.add_argument("--warmup", type=int, default=10, help="lock-step frames not timed")
    parser.add_argument("--rate", type=float, default=30.0, help="open-loop camera rate, Hz")
    parser.add_argument("--seconds", type=float, default=10.0, help="open-loop duration")
    parser.add_argument("--points-stride", type=int, default=1)
    parser.add_argument("--no-points", action="store_true",
                        help="listen to depth/image only (the node then builds no cloud)")
    parser.add_argument("--page-faulting-listener", action="store_true",
                        help="glibc's malloc defaults in the listener: fresh pages per cloud")
    parser.add_argument("--raw-listener", action="store_true",
                        help="take the outputs as CDR bytes, not Python messages (as a C++ "
                             "subscriber would not pay for Python objects)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="another node parameter (repeatable), e.g. precision:=int8")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    # Both processes need Fast DDS's large-data transports (docs/node.md); a private domain.
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    import rclpy

    from cnd_depth_ros.ros.malloc_tuning import keep_freed_buffers

    if not args.page_faulting_listener:
        keep_freed_buffers()  # as the node does: receiving the cloud without page faults

    with tempfile.TemporaryDirectory() as folder:
        model = args.model or _random_artifact(Path(folder), 256, 160)
        command = [
            sys.executable, "-m", "cnd_depth_ros.ros.depth_node", "--ros-args",
            "-p", f"model_path:={model}", "-p", f"backend:={args.backend}",
            *(["-p", f"device:={args.device}"] if args.device else []),
            "-p", f"threads:={args.threads}", "-p", f"pixel_budget:={args.pixel_budget}",
            "-p", f"points_stride:={args.points_stride}", "-p", "diagnostic_updater.period:=0.5",
            "-p", "publish_colored:=false", "--log-level", "depth_node:=debug",
            *(arg for parameter in args.param for arg in ("-p", parameter)),
        ]
        node_process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        frames: dict[int, dict[str, float]] = {}  # stamp -> the node's per-frame stages (ms)
        reader = threading.Thread(target=_read_node_log, args=(node_process.stderr, frames),
                                  daemon=True)
        reader.start()
        rclpy.init()
        load_before = os.getloadavg()[0]
        driver = _Driver(args.width, args.height, ("depth",) if args.no_points else
                         ("depth", "points"), raw=args.raw_listener)
        try:
            deadline = time.monotonic() + NODE_START_S
            while not driver.connected():
                if time.monotonic() > deadline or node_process.poll() is not None:
                    raise SystemExit("depth_node did not subscribe to the cameras")
                time.sleep(0.1)
            arrivals: dict[int, dict[str, float]] = {}  # stamp -> seconds to each output
            for index in range(args.warmup + args.frames):
                stamp = driver.publish()
                arrival = driver.wait_both(stamp, timeout_s=10.0)
                if arrival is not None and index >= args.warmup:
                    arrivals[stamp] = arrival
            time.sleep(1.2)  # two diagnostics periods: stage p50s over the lock-step frames
            lock_step = dict(driver.diagnostics)
            driver_publish = _percentiles(driver.publish_s[args.warmup:])["p50_ms"]

            sent = []
            start = time.monotonic()
            while time.monotonic() - start < args.seconds:
                sent.append(driver.publish())
                time.sleep(max(0.0, start + len(sent) / args.rate - time.monotonic()))
            time.sleep(1.0)
            with driver.lock:
                answered = sum(stamp in driver.arrivals["depth"] for stamp in sent)
            diagnostics = dict(driver.diagnostics)
        finally:
            driver.close()
            rclpy.try_shutdown()
            node_process.terminate()
            node_process.wait(timeout=30)
            reader.join(timeout=5.0)

    end_to_end = _percentiles([max(arrival.values()) for arrival in arrivals.values()])
    inference_ms = float(lock_step.get("inference p50 (ms)", "nan"))
    # Per frame: that frame's end to end minus that frame's inference, so the network's jitter
    # (tens of ms on a loaded machine) does not leak into the overhead.
    overheads = [max(arrival.values()) - 1e-3 * frames[stamp]["inference"]
                 for stamp, arrival in arrivals.items() if "inference" in frames.get(stamp, {})]
    result = {
        "input": f"{args.width}x{args.height} rgb8 stereo",
        "backend": diagnostics.get("backend"),
        "model": f"{diagnostics.get('variant')} {diagnostics.get('input')}",
        "frames_timed": len(arrivals),
        "frames_lost": args.frames - len(arrivals),
        "end_to_end": end_to_end,
        "inference_p50_ms": inference_ms,
        "overhead": {**_percentiles(overheads), "frames": len(overheads)},
        "received_p50_ms": {
            output: _percentiles([arrival[output] for arrival in arrivals.values()])["p50_ms"]
            for output in driver.arrivals
        },
        "driver_publish_p50_ms": driver_publish,
        "node_p50_ms": {
            key.removesuffix(" p50 (ms)"): float(value)
            for key, value in lock_step.items() if key.endswith(" p50 (ms)")
        },
        "open_loop": {
            "camera_rate_hz": args.rate,
            "output_rate_hz": answered / args.seconds,
            "sent": len(sent),
            "answered": answered,
            "node_drops": diagnostics.get("drops (total)"),
        },
        "points": "none" if args.no_points else f"xyz+rgb, stride {args.points_stride}",
        "machine": machine(),
        "load_average_1min": [load_before, os.getloadavg()[0]],
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
