"""The end-to-end demo: a synthetic drive through the real depth_node, measured and reported.

It renders a short synthetic street drive as a rosbag2 (stereo images, camera_info, ground-truth
depth, tf_static; reused when it already exists), starts depth_node with the shipped stereo
model, replays the bag into it through DDS as fast as the node keeps up, records the node's
outputs (depth, points, camera_info) as a bag, scores the depth against the ground truth, and
writes report.html. Everything lands in --out; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/demo"), metavar="DIR",
                        help="where the bag, the recording, metrics.json and report.html go")
    parser.add_argument("--frames", type=int, default=40, help="frames in the synthetic drive")
    parser.add_argument("--width", type=int, default=640, help="camera image width (px)")
    parser.add_argument("--height", type=int, default=400, help="camera image height (px)")
    parser.add_argument("--seed", type=int, default=7, help="which synthetic street")
    parser.add_argument("--model", default="cnd_stereo",
                        help="model for the node: a shipped name or an artifact path")
    parser.add_argument("--backend", default="auto", help="inference backend of the node")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cnd_depth_ros.cli import run_command

    bag = args.out / "street.bag"
    progress = ["--no-progress"] if args.no_progress else []
    if not (bag / "metadata.yaml").is_file():
        run_command("synth", [
            "--bag", str(bag), "--frames", str(args.frames), "--seed", str(args.seed),
            "--width", str(args.width), "--height", str(args.height), *progress,
        ])
    recording = args.out / "depth_node_outputs.bag"
    shutil.rmtree(recording, ignore_errors=True)  # the demo's own output of an earlier run
    result = run_command("replay", [
        str(bag), "--out", str(args.out), "--model", args.model, "--backend", args.backend,
        "--max-rate", "--record", str(recording), *progress,
    ])
    print(f"recording: {recording.resolve()} (read it with `ros2 bag info` or rosbags)")
    return {**result, "bag": str(bag)}
