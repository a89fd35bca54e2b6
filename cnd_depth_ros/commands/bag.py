"""Write a dataset's frames as a rosbag2 for `cnd-depth replay`: any kind the package reads
(kitti, kitti_raw, middlebury, motorcycle, nyu, nyu_raw, sun_rgbd, tum_rgbd, apolloscape,
synthetic, rosbag), so the node's depth can be scored on real pairs through DDS.

The bag holds, on the topics replay reads by default, the rectified left and right images (rgb8),
their camera_info at each frame's own size (right P[0,3] = -fx * B; frames of different sizes or
rigs may share a bag), the ground-truth depth (/ground_truth/depth, 32FC1 metres, NaN where
unknown) and /tf_static between the optical frames. Frames are 1/--rate s apart; --repeat N
writes each one N times in a row (the two KITTI 2012 sample pairs become ten frames with
--repeat 5). The bag is written in a hidden folder and renamed when complete. Details:
docs/replay.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnd_depth_ros.commands.arguments import (
    add_bag_format_arguments,
    positive_float,
    positive_int,
)
from cnd_depth_ros.commands.train import data_spec
from cnd_depth_ros.errors import CndDepthError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=data_spec, metavar="KIND:ROOT",
                        help="the frames: a dataset kind and its folder (or bag), loader "
                             "options after commas, e.g. kitti:KITTI2012,occluded=0 or "
                             "middlebury:scenes,focal=3740 (docs/data.md); the motorcycle "
                             "pair needs no folder: motorcycle:-")
    parser.add_argument("--out", required=True, type=Path, metavar="BAG",
                        help="the rosbag2 folder to write (must not exist)")
    parser.add_argument("--rate", type=positive_float, default=10.0,
                        help="frames per second of the bag's timeline")
    parser.add_argument("--repeat", type=positive_int, default=1, metavar="N",
                        help="write each frame N times in a row")
    parser.add_argument("--max-frames", type=positive_int, metavar="N",
                        help="the first N frames of the dataset only (before --repeat)")
    add_bag_format_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cnd_depth_ros.data.sources import DataSpec, open_frames
    from cnd_depth_ros.synthetic.bag_writer import write_frames_bag

    spec = DataSpec.parse(args.data)
    try:
        frames = open_frames([spec], stereo=False)
        summary = write_frames_bag(
            args.out,
            frames,
            rate=args.rate,
            repeat=args.repeat,
            max_frames=args.max_frames,
            storage=args.storage,
            distro=args.distro,
            progress=not args.no_progress,
        )
    except ValueError as error:
        raise CndDepthError(f"{spec}: {error}") from error
    sources = summary.frames // args.repeat
    print(
        f"{summary.path}: {sources} frames of {spec} x {args.repeat} = {summary.frames} frames "
        f"({summary.duration_s:.1f} s at {args.rate:g} Hz), {summary.messages} messages, "
        f"{len(summary.cameras)} camera(s), {args.storage}, {args.distro}, "
        f"{summary.seconds:.1f} s"
    )
    return {
        "bag": str(summary.path),
        "data": str(spec),
        "dataset_frames": sources,
        "repeat": args.repeat,
        "frames": summary.frames,
        "messages": summary.messages,
        "rate": args.rate,
        "duration_s": summary.duration_s,
        "storage": args.storage,
        "distro": args.distro,
        "seconds": round(summary.seconds, 3),
        "cameras": [camera.to_dict() for camera in summary.cameras],
    }
