"""depth_node for a long time at camera rate: does its memory stay flat?

Starts ``python -m cnd_depth_ros.ros.depth_node`` as a separate process and plays the camera
driver of ``node_latency.py`` (640x480 rgb8 stereo pairs with camera_info, best effort, Fast DDS
large-data transports) at ``--rate`` Hz for ``--minutes``, listening to ``depth/image`` and
``points``. The node's resident memory (``VmRSS`` of ``/proc/PID/status``) is sampled every
``--sample-s`` seconds. Pass: RSS grows less than ``--max-growth-mb`` (default 20 MB) from the end
of the warm-up (``--warmup-minutes``) to the end of the run::

    .venv/bin/python benchmarks/soak.py --minutes 30 --rate 10 --json soak.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from node_latency import NODE_START_S, _Driver, _random_artifact  # benchmarks/ is sys.path[0]
from report import emit, machine

__all__ = ["add_node_arguments", "node_under_load", "rss_mb"]


def rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid} has no VmRSS (not running?)")


@contextmanager
def node_under_load(
    args: argparse.Namespace, *extra: str
) -> Iterator[tuple[subprocess.Popen[bytes], _Driver]]:
    """depth_node in its own process with a connected camera driver; both stopped on exit."""
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    import rclpy

    with tempfile.TemporaryDirectory() as folder:
        model = args.model or _random_artifact(Path(folder), 256, 160)
        command = [
            sys.executable, "-m", "cnd_depth_ros.ros.depth_node", "--ros-args",
            "-p", f"model_path:={model}", "-p", f"backend:={args.backend}",
            "-p", f"threads:={args.threads}", "-p", "diagnostic_updater.period:=1.0", *extra,
        ]
        node = subprocess.Popen(command)
        rclpy.init()
        driver = _Driver(args.width, args.height, ("depth", "points"))
        try:
            deadline = time.monotonic() + NODE_START_S
            while not driver.connected():
                if time.monotonic() > deadline or node.poll() is not None:
                    raise SystemExit("depth_node did not subscribe to the cameras")
                time.sleep(0.1)
            yield node, driver
        finally:
            driver.close()
            rclpy.try_shutdown()
            node.terminate()
            node.wait(timeout=30)


def add_node_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="artifact or .onnx (default: random cnd_stereo 256x160)")
    parser.add_argument("--backend", default="onnxruntime", help="auto, torch, onnxruntime, ...")
    parser.add_argument("--threads", type=int, default=0, help="inference threads (0: default)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--json", type=Path, help="write the results here")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_node_arguments(parser)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup-minutes", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=10.0, help="camera rate, Hz")
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--max-growth-mb", type=float, default=20.0)
    args = parser.parse_args()

    samples: list[tuple[float, float]] = []  # (seconds since start, RSS MiB)
    sent = 0
    with node_under_load(args) as (node, driver):
        start = time.monotonic()
        next_sample = start
        while (elapsed := time.monotonic() - start) < 60.0 * args.minutes:
            if node.poll() is not None:
                raise SystemExit(f"depth_node exited with {node.returncode} after {elapsed:.0f} s")
            driver.publish()
            sent += 1
            if time.monotonic() >= next_sample:
                samples.append((elapsed, rss_mb(node.pid)))
                next_sample += args.sample_s
            time.sleep(max(0.0, start + sent / args.rate - time.monotonic()))
        time.sleep(2.0)
        with driver.lock:
            answered = len(driver.arrivals["depth"])
        diagnostics = dict(driver.diagnostics)

    times, rss = np.array(samples).T
    after = rss[times >= 60.0 * args.warmup_minutes]
    growth = float(after[-1] - after[0]) if len(after) > 1 else float("nan")
    slope = float(np.polyfit(times[times >= 60.0 * args.warmup_minutes] / 3600.0, after, 1)[0]) \
        if len(after) > 2 else float("nan")
    result: dict[str, Any] = {
        "input": f"{args.width}x{args.height} rgb8 stereo at {args.rate} Hz",
        "minutes": args.minutes,
        "backend": diagnostics.get("backend"),
        "model": f"{diagnostics.get('variant')} {diagnostics.get('input')}",
        "sent": sent,
        "answered": answered,
        "node_drops": diagnostics.get("drops (total)"),
        "rss_mb": {"start": float(rss[0]), "after_warmup": float(after[0]) if len(after) else None,
                   "end": float(rss[-1]), "max": float(rss.max())},
        "growth_after_warmup_mb": growth,
        "trend_mb_per_hour": slope,
        "passed": bool(growth < args.max_growth_mb),
        "samples": [[round(t, 1), round(r, 2)] for t, r in samples],
        "machine": machine(),
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
