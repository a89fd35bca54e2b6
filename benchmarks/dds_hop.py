"""One DDS hop between two Python processes: what moving one message costs before any node works.

``node_latency.py``'s end to end crosses two such hops (driver -> depth_node with the images,
depth_node -> listener with depth and cloud), so their latency is the floor under the node's
overhead. This benchmark times the hop alone, with the node's payloads: a 640x480 rgb8 image
(what a camera driver sends), a 32FC1 depth image and an xyz+rgb cloud of the same size (what
depth_node sends). A publisher process stamps each message just before ``publish``; a listener
process, spinning a ``SingleThreadedExecutor`` as depth_node does, notes when the callback
runs. Each payload goes out on two topics, one taken as a Python message (what a Python node
pays) and one as raw CDR bytes (``raw=True``: no deserialisation, about what a C++ subscriber
pays), one message at a time with a pause between, so no message waits behind another. Both
processes keep freed buffers as depth_node does (``ros/malloc_tuning.py``).

    FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA .venv/bin/python benchmarks/dds_hop.py --json hop.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from report import emit, machine

# name -> (message type, bytes per pixel): the node's input image, depth image and cloud.
PAYLOADS = {"image_rgb8": ("Image", 3), "depth_32fc1": ("Image", 4), "cloud_xyzrgb": ("Cloud", 16)}
TAKES = ("message", "raw")
START_S = 30.0  # discovery between the two processes
WARMUP = 10  # messages per topic not timed


def _messages(width: int, height: int) -> dict[str, Any]:
    from sensor_msgs.msg import Image, PointCloud2, PointField

    def data(size: int) -> bytes:
        return np.random.default_rng(0).integers(0, 256, size, np.uint8).tobytes()

    image = Image(height=height, width=width, encoding="rgb8", step=3 * width,
                  data=data(3 * width * height))
    depth = Image(height=height, width=width, encoding="32FC1", step=4 * width,
                  data=data(4 * width * height))
    fields = [PointField(name=name, offset=4 * index, datatype=PointField.FLOAT32, count=1)
              for index, name in enumerate(("x", "y", "z", "rgb"))]
    cloud = PointCloud2(height=height, width=width, fields=fields, point_step=16,
                        row_step=16 * width, data=data(16 * width * height))
    return {"image_rgb8": image, "depth_32fc1": depth, "cloud_xyzrgb": cloud}


def _message_type(name: str) -> type:
    from sensor_msgs.msg import Image, PointCloud2

    return Image if PAYLOADS[name][0] == "Image" else PointCloud2


def _topic(payload: str, take: str) -> str:
    return f"hop/{payload}/{take}"


def _stamp_ns(msg: Any) -> int:
    """The header stamp of a message, or of raw CDR (encapsulation, then sec and nanosec)."""
    if isinstance(msg, bytes):
        sec, nanosec = np.frombuffer(msg, "<i4" if msg[1] & 1 else ">i4", 2, 4)
        return int(sec) * 10**9 + int(np.uint32(nanosec))
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def _listen() -> None:
    """The listener process: every topic in both takes, until its standard input closes; then
    prints ``{topic: {stamp: latency ms}}`` as JSON."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from cnd_depth_ros.ros.qos import subscription_qos

    rclpy.init()
    node = rclpy.create_node("dds_hop_listener")
    latencies: dict[str, dict[int, float]] = {_topic(p, t): {} for p in PAYLOADS for t in TAKES}

    def record(topic: str) -> Any:
        def callback(msg: Any) -> None:
            stamp = _stamp_ns(msg)
            latencies[topic][stamp] = (time.time_ns() - stamp) * 1e-6

        return callback

    for payload in PAYLOADS:
        for take in TAKES:
            topic = _topic(payload, take)
            node.create_subscription(_message_type(payload), topic, record(topic),
                                     subscription_qos(), raw=take == "raw")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinning = threading.Thread(target=executor.spin, daemon=True)
    spinning.start()
    sys.stdin.read()  # the publisher is done
    executor.shutdown(timeout_sec=2.0)
    json.dump(latencies, sys.stdout)
    rclpy.shutdown()


def _summary(latencies: dict[str, float], stamps: list[int]) -> dict[str, float | int]:
    """p50/p95 over the messages stamped ``stamps`` (JSON keys are strings); lost ones counted."""
    values = [latencies[str(stamp)] for stamp in stamps if str(stamp) in latencies]
    return {"p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95)),
            "received": len(values), "sent": len(stamps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--messages", type=int, default=100, help="per payload and take")
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between messages")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--listen", action="store_true", help=argparse.SUPPRESS)  # child's role
    args = parser.parse_args()
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))

    from cnd_depth_ros.ros.malloc_tuning import keep_freed_buffers

    keep_freed_buffers()
    if args.listen:
        _listen()
        return

    import rclpy

    from cnd_depth_ros.ros.qos import subscription_qos

    listener = subprocess.Popen([sys.executable, __file__, "--listen"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    rclpy.init()
    node = rclpy.create_node("dds_hop_publisher")
    messages = _messages(args.width, args.height)
    publishers = {
        (payload, take): node.create_publisher(_message_type(payload), _topic(payload, take),
                                               subscription_qos())
        for payload in PAYLOADS for take in TAKES
    }
    deadline = time.monotonic() + START_S
    while any(p.get_subscription_count() == 0 for p in publishers.values()):
        if time.monotonic() > deadline:
            listener.kill()
            raise SystemExit("the listener process did not subscribe in time")
        time.sleep(0.1)
    time.sleep(1.0)  # let the listener see every publisher too
    stamps: dict[str, list[int]] = {_topic(p, t): [] for p, t in publishers}
    for _ in range(WARMUP + args.messages):
        for (payload, take), publisher in publishers.items():
            msg = messages[payload]
            now_ns = time.time_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now_ns, 10**9)
            publisher.publish(msg)
            stamps[_topic(payload, take)].append(now_ns)
            time.sleep(args.gap)
    time.sleep(1.0)  # the last messages in flight
    node.destroy_node()
    rclpy.shutdown()
    output, _ = listener.communicate(input="", timeout=30)
    latencies = json.loads(output)
    result = {
        "transports": os.environ["FASTDDS_BUILTIN_TRANSPORTS"],
        "size": f"{args.width}x{args.height}",
        "bytes": {payload: len(messages[payload].data) for payload in PAYLOADS},
        "hops": {
            payload: {take: _summary(latencies[topic := _topic(payload, take)],
                                     stamps[topic][WARMUP:])
                      for take in TAKES}
            for payload in PAYLOADS
        },
        "machine": machine(),
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
