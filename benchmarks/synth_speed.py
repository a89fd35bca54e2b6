"""How fast ``cnd-depth synth`` makes training data: frames per second, and 2,000 frames' time.

Renders ``--frames`` frames with ``--workers`` processes into a temporary folder through the same
code as the command (files included) and extrapolates to ``--target`` frames. On a shared machine
wall time depends on the neighbours, so it also reports CPU time per frame (rendering alone, in
this process; and rendering plus files, in the workers) and the rate it gives on idle cores::

    .venv/bin/python benchmarks/synth_speed.py --frames 300 --json results.json
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from report import emit

from cnd_depth_ros.synthetic.dataset_writer import kitti_like_camera, render_frame, write_dataset
from cnd_depth_ros.synthetic.textures import default_bank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300, help="frames to render and write")
    parser.add_argument("--target", type=int, default=2000, help="frames to extrapolate to")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=160)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--render-frames", type=int, default=30, help="frames timed in-process")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    camera = kitti_like_camera(args.width, args.height)
    default_bank()  # load the textures outside the timed loop
    start = time.process_time()
    for index in range(args.render_frames):
        render_frame(seed=1, index=index, camera=camera)
    render_cpu = (time.process_time() - start) / args.render_frames

    # CPU time of the worker processes: the rate an idle machine reaches, whatever else runs.
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)

    with tempfile.TemporaryDirectory() as folder:
        summary = write_dataset(
            Path(folder) / "set", camera, args.frames, seed=0, workers=args.workers
        )
        size = sum(path.stat().st_size for path in (Path(folder) / "set").iterdir())
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu = (
        children.ru_utime - children_before.ru_utime + children.ru_stime - children_before.ru_stime
    )
    cpu_per_frame = worker_cpu / args.frames if args.workers > 1 else render_cpu
    idle_rate = min(args.workers, os.cpu_count() or 1) / cpu_per_frame
    result = {
        "size": f"{args.width}x{args.height}",
        "frames": args.frames,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "render_cpu_ms_per_frame": round(render_cpu * 1e3, 1),
        "cpu_ms_per_frame_with_files": round(cpu_per_frame * 1e3, 1),
        "frames_per_second": round(summary.frames_per_second, 2),
        "seconds": round(summary.seconds, 1),
        f"extrapolated_seconds_for_{args.target}": round(args.target / summary.frames_per_second),
        "idle_machine_frames_per_second": round(idle_rate, 2),
        f"idle_machine_seconds_for_{args.target}": round(args.target / idle_rate),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "megabytes_per_frame": round(size / args.frames / 1e6, 3),
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
