"""Render a synthetic stereo dataset, ray-cast exactly for rectified rigs: driving-like streets
(--world street, the default), rooms and corridors as robots see them (indoor), or both
alternating (mixed), with left and right images, depth of both views and left normals (format:
docs/data.md).

Each world has its own rig: streets KITTI's car rig, rooms small robot rigs drawn per frame
(baseline 0.05:0.12 m, horizontal field of view 60:100 degrees); --baseline, --fov and --fx
replace parts of it for every world, MIN:MAX drawing each frame's value from the range.

Frame i depends only on --seed and i, so any --workers count gives the same files, and --resume
completes an interrupted set. With --bag instead of --out it writes a rosbag2 of the rig driving
down one street or across one room (stereo images, camera_info, ground-truth depth, tf_static;
docs/replay.md), input for `cnd-depth replay`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnd_depth_ros.commands.arguments import (
    add_bag_format_arguments,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from cnd_depth_ros.errors import CndDepthError

if TYPE_CHECKING:
    from cnd_depth_ros.synthetic.worlds import World

__all__ = ["add_arguments", "run"]


def _range(name: str, unit: str, limits: str) -> Callable[[str], tuple[float, float]]:
    """``type=`` of an option taking ``VALUE`` or ``MIN:MAX`` within ``rig.<limits>``."""

    def parse(text: str) -> tuple[float, float]:
        from cnd_depth_ros.synthetic import rig

        parts = text.split(":")
        try:
            if len(parts) > 2:
                raise ValueError
            values = (float(parts[0]), float(parts[-1]))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected VALUE or MIN:MAX in {unit}, got {text!r}"
            ) from None
        try:
            rig.check_range(name, unit, values, getattr(rig, limits))
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return values

    parse.__name__ = f"{name} range"  # argparse names the type in its messages
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cnd_depth_ros.synthetic.indoor import INDOOR_STYLES
    from cnd_depth_ros.synthetic.scene import STREET_STYLES
    from cnd_depth_ros.synthetic.worlds import WORLDS

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
    parser.add_argument(
        "--world",
        choices=WORLDS,
        default="street",
        help="what the frames show: streets, rooms and corridors (0.3-10 m), or both in turn "
        "(even frames street, odd frames indoor)",
    )
    parser.add_argument("--width", type=positive_int, default=256, help="image width (px)")
    parser.add_argument("--height", type=positive_int, default=160, help="image height (px)")
    focal = parser.add_mutually_exclusive_group()
    focal.add_argument(
        "--fov",
        type=_range("field of view", "degrees", "FOV_LIMITS_DEG"),
        default=None,
        metavar="MIN[:MAX]",
        help="horizontal field of view in degrees, or a range each frame draws from "
        "(default: street KITTI's focal length 0.581 * width = 81.4 deg, indoor 60:100)",
    )
    focal.add_argument(
        "--fx",
        type=positive_float,
        default=None,
        help="focal length in pixels, fx = fy, for every frame (instead of --fov)",
    )
    parser.add_argument(
        "--baseline",
        type=_range("baseline", "m", "BASELINE_LIMITS_M"),
        default=None,
        metavar="MIN[:MAX]",
        help="stereo baseline in metres, or a range each frame draws from, log-uniformly "
        "(default: street 0.54, indoor 0.05:0.12)",
    )
    parser.add_argument(
        "--style",
        choices=sorted(set(STREET_STYLES) | set(INDOOR_STYLES)),
        default="default",
        help="the look of the scenes (foggy_dusk, streets only: other textures, low sun, fog, "
        "noisier sensor, lower camera; a domain shift for cnd-depth finetune)",
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
        help="complete an existing set made with the same world, rig, style and seed",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    bag = parser.add_argument_group("--bag options")
    bag.add_argument("--rate", type=positive_float, default=10.0, help="frames per second")
    bag.add_argument(
        "--speed",
        type=non_negative_float,
        default=None,
        help="speed in m/s (default: street 8, indoor 1; lowered to stop short of an obstacle "
        "in the path)",
    )
    add_bag_format_arguments(bag)


def _worlds(args: argparse.Namespace) -> tuple[World, ...]:
    """The worlds asked for, each with its style and rig.

    :raises CndDepthError: a style the world does not have.
    """
    from cnd_depth_ros.synthetic.indoor import INDOOR_STYLES
    from cnd_depth_ros.synthetic.scene import STREET_STYLES
    from cnd_depth_ros.synthetic.worlds import make_worlds

    names = ("street", "indoor") if args.world == "mixed" else (args.world,)
    catalogues: dict[str, dict[str, Any]] = {"street": STREET_STYLES, "indoor": INDOOR_STYLES}
    for name in names:
        if args.style not in catalogues[name]:
            raise CndDepthError(
                f"--style {args.style} is no {name} style; {name} styles: "
                f"{', '.join(sorted(catalogues[name]))}"
            )
    try:
        return make_worlds(
            args.world,
            args.width,
            args.height,
            baseline=args.baseline,
            fov_deg=args.fov,
            fx=args.fx,
            street_style=STREET_STYLES.get(args.style),
            indoor_style=INDOOR_STYLES.get(args.style),
        )
    except ValueError as error:
        raise CndDepthError(str(error)) from error


def run(args: argparse.Namespace) -> dict[str, Any]:
    worlds = _worlds(args)
    result = _write_bag(args, worlds) if args.bag is not None else _write_dataset(args, worlds)
    return {
        **result,
        "seed": args.seed,
        "world": args.world,
        "style": args.style,
        "rigs": {world.name: world.rig.to_dict() for world in worlds},
    }


def _write_dataset(args: argparse.Namespace, worlds: tuple[World, ...]) -> dict[str, Any]:
    from cnd_depth_ros.data.synthetic_layout import read_camera
    from cnd_depth_ros.synthetic.dataset_writer import write_dataset

    summary = write_dataset(
        args.out,
        worlds,
        args.frames or 2000,
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
        "camera": read_camera(summary.root).to_dict(),
    }


def _write_bag(args: argparse.Namespace, worlds: tuple[World, ...]) -> dict[str, Any]:
    """One drive in one scene: a rig drawn from ranges is drawn once, as frame 0's."""
    from cnd_depth_ros.synthetic.bag_writer import write_sequence_bag

    if args.resume:
        raise CndDepthError("--resume completes a dataset folder (--out); a bag is written whole")
    if len(worlds) > 1:
        raise CndDepthError("a bag is one drive through one world: --world street or indoor")
    (world,) = worlds
    camera = world.camera(args.seed, 0)
    summary = write_sequence_bag(
        args.bag,
        camera,
        args.frames or 100,
        seed=args.seed,
        rate=args.rate,
        speed=args.speed,
        storage=args.storage,
        distro=args.distro,
        style=world.style,
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
        "camera": camera.to_dict(),
    }
