"""Render a synthetic stereo dataset: driving-like streets ray-cast exactly for a rectified rig,
with left and right images, depth of both views and left normals (format: docs/data.md).

Frame i depends only on --seed and i, so any --workers count gives the same files, and --resume
completes an interrupted set. With --bag instead of --out it writes a rosbag2 of the rig driving
down one street (stereo images, camera_info, ground-truth depth, tf_static; docs/replay.md),
input for `cnd-depth replay`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnd_depth_ros.commands.arguments import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from cnd_depth_ros.errors import CndDepthError

if TYPE_CHECKING:
    from cnd_depth_ros.camera import PinholeCamera
    from cnd_depth_ros.synthetic.scene import StreetStyle

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cnd_depth_ros.synthetic.scene import STREET_STYLES

    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, metavar="DIR", help="dataset folder")
    target.add_argument(
        "--bag", type=Path, metavar="PATH", help="write a rosbag2 of one drive here instead"
    )
    parser.add_argument(
        "--frames", type=positive_int, default=None, help="number of frames (default: 2000, "
        "--bag: 100)"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the whole set")
    parser.add_argument("--width", type=positive_int, default=256, help="image width (px)")
    parser.add_argument("--height", type=positive_int, default=160, help="image height (px)")
    parser.add_argument(
        "--fx",
        type=positive_float,
        default=None,
        help="focal length in pixels, fx = fy (default: KITTI's, 0.581 * width)",
    )
    parser.add_argument(
        "--baseline", type=positive_float, default=0.54, help="stereo baseline in metres"
    )
    parser.add_argument(
        "--style",
        choices=sorted(STREET_STYLES),
        default="default",
        help="the look of the streets (foggy_dusk: other textures, low sun, fog, noisier sensor, "
        "lower camera; a domain shift for cnd-depth finetune)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="rendering processes (default: one per CPU)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="complete an existing set made with the same camera and seed",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    bag = parser.add_argument_group("--bag options")
    bag.add_argument("--rate", type=positive_float, default=10.0, help="frames per second")
    bag.add_argument("--speed", type=non_negative_float, default=8.0,
                     help="driving speed in m/s (lowered to stop short of an obstacle in the lane)")
    bag.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3",
                     help="rosbag2 storage format")
    bag.add_argument("--distro", choices=("humble", "jazzy", "kilted"), default="jazzy",
                     help="ROS 2 distro whose message definitions and bag format to write")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cnd_depth_ros.synthetic.dataset_writer import kitti_like_camera
    from cnd_depth_ros.synthetic.scene import STREET_STYLES

    camera = kitti_like_camera(args.width, args.height, args.fx, args.baseline)
    style = STREET_STYLES[args.style]
    write = _write_bag if args.bag is not None else _write_dataset
    result = write(args, camera, style)
    return {**result, "seed": args.seed, "style": args.style, "camera": camera.to_dict()}


def _write_dataset(
    args: argparse.Namespace, camera: PinholeCamera, style: StreetStyle
) -> dict[str, Any]:
    from cnd_depth_ros.synthetic.dataset_writer import write_dataset

    summary = write_dataset(
        args.out,
        camera,
        args.frames or 2000,
        seed=args.seed,
        workers=args.workers,
        resume=args.resume,
        style=style,
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
    }


def _write_bag(
    args: argparse.Namespace, camera: PinholeCamera, style: StreetStyle
) -> dict[str, Any]:
    from cnd_depth_ros.synthetic.bag_writer import write_sequence_bag

    if args.resume:
        raise CndDepthError("--resume completes a dataset folder (--out); a bag is written whole")
    summary = write_sequence_bag(
        args.bag,
        camera,
        args.frames or 100,
        seed=args.seed,
        rate=args.rate,
        speed=args.speed,
        storage=args.storage,
        distro=args.distro,
        style=style,
        progress=not args.no_progress,
    )
    print(
        f"{summary.path}: {summary.frames} frames ({summary.duration_s:.1f} s of driving), "
        f"{summary.messages} messages, {args.storage}, {args.distro}, {summary.seconds:.1f} s"
    )
    return {
        "bag": str(summary.path),
        "frames": summary.frames,
        "messages": summary.messages,
        "storage": args.storage,
        "distro": args.distro,
        "rate": args.rate,
        "seconds": round(summary.seconds, 3),
    }
