"""depth_node under a burst at several times its capacity: bounded latency, memory, counted drops.

Starts the node as ``soak.py`` does, measures its capacity lock-step (the next pair goes out once
the previous pair's depth arrived), then publishes at ``--factor`` (default 5) times that rate for
``--seconds``. The newest pair wins in the node, so the frames it delivers must stay as fresh as
in lock-step (latency bounded by about two frame times) while the rest are dropped and counted in
``/diagnostics``, and its memory must not grow with the backlog that it refuses to keep::

    .venv/bin/python benchmarks/burst.py --factor 5 --seconds 30 --json burst.json
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from report import emit, machine
from soak import add_node_arguments, node_under_load, rss_mb

__all__: list[str] = []


def _percentiles(seconds: list[float]) -> dict[str, float]:
    milliseconds = 1e3 * np.asarray(seconds)
    return {"p50_ms": float(np.percentile(milliseconds, 50)),
            "p95_ms": float(np.percentile(milliseconds, 95)),
            "max_ms": float(milliseconds.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_node_arguments(parser)
    parser.add_argument("--factor", type=float, default=5.0, help="burst rate / capacity")
    parser.add_argument("--seconds", type=float, default=30.0, help="burst duration")
    parser.add_argument("--lockstep", type=int, default=20, help="frames to measure capacity")
    args = parser.parse_args()

    with node_under_load(args) as (node, driver):
        lockstep = []
        for _ in range(args.lockstep + 3):
            arrived = driver.wait_both(driver.publish(), timeout_s=30.0)
            if arrived is not None:
                lockstep.append(max(arrived.values()))
        lockstep = lockstep[3:]  # the first frames pay for lazy set-up
        capacity_hz = 1.0 / float(np.median(lockstep))
        rate = args.factor * capacity_hz
        busy_before = int(driver.diagnostics.get("drops: busy", 0))
        rss_before = rss_mb(node.pid)

        sent: list[int] = []
        rss = [rss_before]
        start = time.monotonic()
        while time.monotonic() - start < args.seconds:
            sent.append(driver.publish())
            if len(sent) % max(1, round(rate / 2)) == 0:
                rss.append(rss_mb(node.pid))
            time.sleep(max(0.0, start + len(sent) / rate - time.monotonic()))
        time.sleep(3.0)  # the last frame's output and two diagnostics periods
        rss_after = rss_mb(node.pid)
        with driver.lock:
            arrivals = dict(driver.arrivals["depth"])
        diagnostics = dict(driver.diagnostics)

    delivered = [arrivals[stamp] - stamp * 1e-9 for stamp in sent if stamp in arrivals]
    lockstep_latency = _percentiles(lockstep)
    burst_latency = _percentiles(delivered)
    result: dict[str, Any] = {
        "input": f"{args.width}x{args.height} rgb8 stereo",
        "backend": diagnostics.get("backend"),
        "model": f"{diagnostics.get('variant')} {diagnostics.get('input')}",
        "capacity_hz": capacity_hz,
        "lockstep_latency": lockstep_latency,
        "burst": {
            "rate_hz": rate,
            "seconds": args.seconds,
            "sent": len(sent),
            "delivered": len(delivered),
            "latency": burst_latency,
            "node_busy_drops": int(diagnostics.get("drops: busy", 0)) - busy_before,
            "lost_elsewhere": len(sent) - len(delivered)
            - (int(diagnostics.get("drops: busy", 0)) - busy_before),
        },
        "rss_mb": {"before": rss_before, "max": max(rss), "after": rss_after},
        "latency_bounded": burst_latency["p95_ms"] < 3 * lockstep_latency["p50_ms"],
        "machine": machine(),
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
