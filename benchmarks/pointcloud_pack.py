"""How fast depth_node packs point clouds: million points per second at 640x480.

Times :func:`depth_to_pointcloud2` (xyz, xyz + rgb, and stride 2) on a random depth image with
holes, reporting the median wall and CPU time per cloud (CPU time is what an idle core takes; on
a shared machine the wall time also holds the neighbours' share). For reference it times
building the same message the two ways the design rules out: the points handed to the
constructor as ``bytes`` (copied twice into fresh memory: page faults) and ``bytes`` assigned to
``msg.data`` with rosidl's field checks on (a Python check per byte)::

    .venv/bin/python benchmarks/pointcloud_pack.py --json results.json
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from report import emit
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.messages.pointcloud import depth_to_pointcloud2


def _time(run: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median wall and CPU milliseconds of ``run`` over ``repeats`` calls after one warm-up."""
    run()
    wall, cpu = [], []
    for _ in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    return {
        "wall_ms": round(1e3 * float(np.median(wall)), 3),
        "cpu_ms": round(1e3 * float(np.median(cpu)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per case")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    camera = PinholeCamera(
        args.width, args.height, fx=0.8 * args.width, fy=0.8 * args.width,
        cx=(args.width - 1) / 2, cy=(args.height - 1) / 2, baseline=0.12,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 80.0, (args.height, args.width)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.05] = np.nan
    rgb = rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    header = Header(frame_id="left_camera_optical_frame")
    points = depth.size

    cases = {
        "xyz": lambda: depth_to_pointcloud2(depth, camera, header),
        "xyzrgb": lambda: depth_to_pointcloud2(depth, camera, header, rgb=rgb),
        "xyzrgb_stride2": lambda: depth_to_pointcloud2(depth, camera, header, rgb=rgb, stride=2),
    }
    counts = {"xyz": points, "xyzrgb": points, "xyzrgb_stride2": points // 4}
    result: dict[str, object] = {
        "size": f"{args.width}x{args.height}",
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    for name, run in cases.items():
        timing = _time(run, args.repeats)
        result[name] = {
            **timing,
            "million_points_per_second": round(counts[name] / timing["wall_ms"] / 1e3, 1),
            # What an idle core reaches: the shared machine's neighbours inflate wall time.
            "million_points_per_cpu_second": round(counts[name] / timing["cpu_ms"] / 1e3, 1),
        }

    # The same message built the ways the design rules out, from points already packed into a
    # fresh numpy array (message building only, no maths): handed to the constructor as bytes,
    # and assigned as bytes with rosidl's field checks on.
    cloud = depth_to_pointcloud2(depth, camera, header, rgb=rgb)
    packed = np.frombuffer(cloud.data, np.uint8)
    fields = {
        "header": header, "height": cloud.height, "width": cloud.width, "fields": cloud.fields,
        "point_step": cloud.point_step, "row_step": cloud.row_step,
    }  # fmt: skip

    def constructor_bytes() -> None:
        fresh = np.empty_like(packed)
        fresh[:] = packed
        PointCloud2(data=fresh.tobytes(), **fields)

    def assign_bytes_checked() -> None:
        message = PointCloud2(check_fields=True, **fields)
        message.data = packed.tobytes()

    result["reference_message_building"] = {
        "constructor_bytes": _time(constructor_bytes, args.repeats),
        "assign_bytes_checked": _time(assign_bytes_checked, 1),
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
