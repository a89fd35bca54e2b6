"""Render a synthetic stereo dataset: driving-like streets ray-cast exactly for a rectified rig,
with left and right images, depth of both views and left normals (format: docs/data.md).

Frame i depends only on --seed and i, so any --workers count gives the same files, and --resume
completes an interrupted set."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="dataset folder")
    parser.add_argument("--frames", type=_positive_int, default=2000, help="number of frames")
    parser.add_argument("--seed", type=_seed, default=0, help="seed of the whole set")
    parser.add_argument("--width", type=_positive_int, default=256, help="image width (px)")
    parser.add_argument("--height", type=_positive_int, default=160, help="image height (px)")
    parser.add_argument(
        "--fx",
        type=_positive_float,
        default=None,
        help="focal length in pixels, fx = fy (default: KITTI's, 0.581 * width)",
    )
    parser.add_argument(
        "--baseline", type=_positive_float, default=0.54, help="stereo baseline in metres"
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="rendering processes (default: one per CPU)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="complete an existing set made with the same camera and seed",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cnd_depth_ros.synthetic.dataset_writer import kitti_like_camera, write_dataset

    camera = kitti_like_camera(args.width, args.height, args.fx, args.baseline)
    summary = write_dataset(
        args.out,
        camera,
        args.frames,
        seed=args.seed,
        workers=args.workers,
        resume=args.resume,
        progress=not args.no_progress,
    )
    print(
        f"{summary.root}: {summary.written} frames written, {summary.skipped} already there, "
        f"{summary.seconds:.1f} s ({summary.frames_per_second:.1f} frames/s)"
    )
    return {
        "out": str(summary.root),
        "frames": summary.frames,
        "written": summary.written,
        "skipped": summary.skipped,
        "seconds": round(summary.seconds, 3),
        "frames_per_second": round(summary.frames_per_second, 3),
        "seed": args.seed,
        "camera": camera.to_dict(),
    }
