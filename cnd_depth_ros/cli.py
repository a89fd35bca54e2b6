"""The ``cnd-depth`` command.

Each sub-command lives in its own module under :mod:`cnd_depth_ros.commands` and exposes
``add_arguments(parser)`` and ``run(args) -> dict``; the returned dict is what ``--json PATH``
writes. Modules are imported only when their command runs, so ``cnd-depth --help`` stays fast and
a training box without ROS never imports rclpy.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from cnd_depth_ros import __version__
from cnd_depth_ros.atomic_file import write_text_atomically
from cnd_depth_ros.errors import CndDepthError

__all__ = ["COMMANDS", "main", "run_command"]

#: name -> (module, one-line help). Keep in the order a user meets them.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("cnd_depth_ros.commands.models", "list the networks with their parameter counts"),
    "synth": ("cnd_depth_ros.commands.synth", "render a synthetic stereo dataset with exact depth"),
    "train": ("cnd_depth_ros.commands.train", "train a network (one process, torchrun DDP)"),
    "finetune": ("cnd_depth_ros.commands.finetune", "adapt a model to unlabeled stereo recordings"),
    "eval": ("cnd_depth_ros.commands.eval", "score a model or SGBM on a dataset"),
    "export": ("cnd_depth_ros.commands.export", "export a model artifact to ONNX"),
    "build-engine": ("cnd_depth_ros.commands.build_engine", "build a TensorRT engine for this GPU"),
    "bench": ("cnd_depth_ros.commands.bench", "time inference backends next to StereoSGBM"),
    "bag": ("cnd_depth_ros.commands.bag", "write a dataset's frames as a rosbag2 for replay"),
    "replay": ("cnd_depth_ros.commands.replay", "replay a rosbag2 through depth_node and score it"),
    "demo": ("cnd_depth_ros.commands.demo", "synthetic drive -> depth_node -> report, end to end"),
}


def _top_level_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnd-depth",
        description="Train, export, compile, benchmark and evaluate CND depth networks.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {name:<14}{summary}" for name, (_, summary) in COMMANDS.items())
        + "\n\n`cnd-depth COMMAND --help` describes each one.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND")
    return parser


def _command_parser(name: str) -> tuple[ModuleType, argparse.ArgumentParser]:
    module_name, summary = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=f"cnd-depth {name}",
        description=(module.__doc__ or summary).strip(),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    module.add_arguments(parser)
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON here")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return module, parser


def run_command(name: str, argv: Sequence[str]) -> dict[str, Any]:
    """Run the sub-command ``name`` with command-line ``argv`` and return its results; for
    commands made of other commands (``demo``). Errors propagate as :class:`CndDepthError`."""
    module, parser = _command_parser(name)
    args = parser.parse_args(list(argv))
    result: dict[str, Any] = module.run(args)
    if args.json is not None:
        text = json.dumps(result, indent=2, sort_keys=True, default=str) + "\n"
        write_text_atomically(args.json, text)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _top_level_parser().parse_args(argv[:1] or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    _, parser = _command_parser(name)
    verbose = parser.parse_args(rest).verbose  # exits on bad arguments, with usage
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        run_command(name, rest)
    except CndDepthError as error:
        print(f"cnd-depth {name}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnd-depth {name}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
