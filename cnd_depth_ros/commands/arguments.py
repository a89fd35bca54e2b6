"""argparse ``type=`` functions shared by the sub-commands.

Each one turns the text of an option into a value or raises ``argparse.ArgumentTypeError``, so a
bad value ends in argparse's usage message naming the option, never in a traceback. Infinity and
NaN are no valid sizes, rates or durations, so the float types reject them.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from cnd_depth_ros.messages.bag import DISTROS, STORAGES

__all__ = [
    "add_bag_format_arguments",
    "add_input_plan_arguments",
    "add_refinement_argument",
    "backend_spec",
    "image_size",
    "network_size",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
]

def positive_int(text: str) -> int:
    """An integer of at least 1: sizes, counts, iterations."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer of at least 0: seeds."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0: rates, timeouts, lengths."""
    value = float(text)
    if not 0.0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number of at least 0: tolerances, speeds."""
    value = float(text)
    if not 0.0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def backend_spec(text: str) -> str:
    """A backend spec, ``NAME`` or ``NAME:VALUE`` (``sgbm:stereo_image_proc``), of a backend the
    registry knows; the value itself is checked when the backend is created."""
    from cnd_depth_ros.inference.registry import parse_backend_spec

    try:
        parse_backend_spec(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text.strip()


def image_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (e.g. ``640x192``) -> ``(width, height)``, both positive."""
    width, separator, height = text.lower().partition("x")
    try:
        size = (int(width), int(height))
    except ValueError:
        size = (0, 0)
    if not separator or min(size) < 1:
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT, e.g. 640x192, got {text}")
    return size


def add_input_plan_arguments(
    parser: argparse.ArgumentParser, *, camera: bool = False, input_size: bool = True
) -> None:
    """The options of the network-input planner (``inference/input_plan.py``): ``--pixel-budget``;
    ``camera``: ``--camera WxH``, the camera to plan for; ``input_size``: ``--input-size WxH``."""
    group = parser.add_argument_group("network input size (planned per camera by default)")
    if camera:
        group.add_argument("--camera", type=image_size, metavar="WxH",
                           help="the camera's image size: the network input is planned for it "
                                "(its aspect ratio kept within --pixel-budget)")
    group.add_argument("--pixel-budget", type=positive_int, metavar="PX",
                       help="network pixels per frame (default: 76800 on a CPU, 307200 on a GPU)")
    if input_size:
        group.add_argument("--input-size", type=image_size, metavar="WxH",
                           help="run the network at this size for every camera instead of "
                                "planning (multiples of 16)")


def add_refinement_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-refinement``: ``args.refinement`` is then False (the node's
    ``disparity_refinement:=false``)."""
    parser.add_argument("--no-refinement", dest="refinement", action="store_false",
                        help="stereo nets: the net's disparity upsampled as it is, not refined "
                             "against the camera images (the node's disparity_refinement)")


def add_bag_format_arguments(parser: Any) -> None:
    """``--storage`` and ``--distro`` of a bag the command writes (``messages.bag.BagWriter``);
    ``parser`` is a parser or an argument group."""
    parser.add_argument("--storage", choices=STORAGES, default="sqlite3",
                        help="rosbag2 storage format")
    parser.add_argument("--distro", choices=tuple(DISTROS), default="jazzy",
                        help="ROS 2 distro whose message definitions and bag format to write")


def network_size(
    args: argparse.Namespace, *, device: str | None
) -> tuple[int | None, int | None]:
    """``(width, height)`` of an export or engine: ``--width``/``--height`` as given, planned for
    ``--camera`` within ``--pixel-budget`` (the default for ``device``), or ``(None, None)`` for
    the model's own size.

    :raises CndDepthError: ``--camera`` together with ``--width`` or ``--height``.
    """
    from cnd_depth_ros.errors import CndDepthError

    if args.camera is None:
        return args.width, args.height
    if args.width is not None or args.height is not None:
        raise CndDepthError("give either --camera (the input is planned for it) or "
                            "--width/--height, not both")
    from cnd_depth_ros.camera import PinholeCamera
    from cnd_depth_ros.inference.input_plan import default_pixel_budget, plan_input

    width, height = args.camera
    camera = PinholeCamera(width, height, fx=width, fy=width, cx=width / 2, cy=height / 2)
    plan = plan_input(camera, pixel_budget=args.pixel_budget or default_pixel_budget(device))
    print(plan.describe())
    return plan.size
