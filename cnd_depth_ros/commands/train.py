"""Train a CND network (or the FCRN baseline) and write a model artifact to --out.

One process by default. --nproc N runs N DDP processes on this machine through torchrun; for
several machines run `torchrun ... -m cnd_depth_ros.cli train ...` on each (docs/training.md).
Options left unset take the defaults of cnd_depth_ros.training.trainer.TrainConfig; the run's
full settings are stored in its checkpoint, artifact and train_report.json.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from cnd_depth_ros.errors import CndDepthError

if TYPE_CHECKING:
    from cnd_depth_ros.training.trainer import RunConfig

ConfigT = TypeVar("ConfigT", bound="RunConfig")

__all__ = ["add_arguments", "add_run_arguments", "data_spec", "run", "run_config"]


def data_spec(text: str) -> str:
    """argparse type of ``--data``-like options: ``KIND:ROOT[,NAME=VALUE...]``, checked here and
    kept as text (the run's config records it)."""
    from cnd_depth_ros.data.sources import DataSpec

    try:
        DataSpec.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    unset = argparse.SUPPRESS  # so TrainConfig's defaults stay the only ones
    data = parser.add_argument_group("data")
    data.add_argument("--data", action="append", required=True, type=data_spec,
                      metavar="KIND:ROOT", help="training data; repeat to mix sources; loader "
                      "options follow the root, e.g. rosbag:BAG,left_topic=/cam/left/image_rect"
                      ",right_topic=/cam/right/image_rect (docs/data.md)")
    data.add_argument("--val-data", action="append", type=data_spec, metavar="KIND:ROOT",
                      default=unset, help="validation data (default: hold out --val-fraction)")
    data.add_argument("--val-fraction", type=float, default=unset,
                      help="share of --data held out for validation when no --val-data")
    data.add_argument("--width", type=int, default=unset, help="network input width")
    data.add_argument("--height", type=int, default=unset, help="network input height")

    augment = parser.add_argument_group(
        "augmentation", "each on by default; docs/training.md, \"Augmentation\""
    )
    augment.add_argument("--rescale", action=argparse.BooleanOptionalAction, default=unset,
                         help="scale each frame by a random factor before the crop (stereo nets:"
                              " so its 98th-percentile disparity lands in --disparity-target)")
    augment.add_argument("--scale-range", nargs=2, type=float, default=unset,
                         metavar=("MIN", "MAX"),
                         help="how far a frame may be shrunk and enlarged (default 0.1 2)")
    augment.add_argument("--disparity-target", nargs=2, type=float, default=unset,
                         metavar=("MIN", "MAX"), help="stereo nets: pixels at the network input "
                         "(default: a sixth of the matcher's range to all of it, 15.3 92)")
    augment.add_argument("--crop-aspects", nargs=2, type=float, default=unset,
                         metavar=("MIN", "MAX"), help="batches at input sizes of --width x "
                         "--height pixels with aspect ratios in this range (default 1 3.4)")
    augment.add_argument("--no-crop-aspects", dest="crop_aspects", action="store_const",
                         const=None, default=unset, help="every batch at --width x --height")
    augment.add_argument("--camera-effects", action=argparse.BooleanOptionalAction,
                         default=unset, help="per-view gain, gamma and white balance, blur, "
                         "sensor noise, JPEG artefacts")

    model = parser.add_argument_group("model and loss")
    model.add_argument("--variant", default="cnd_mono",
                       help="network: cnd_micro, cnd_mono, cnd_stereo, fcrn (`cnd-depth models`)")
    model.add_argument("--model-config", dest="model", type=_json_object, default=unset,
                       metavar="JSON", help='build_model overrides, e.g. \'{"width_mult": 0.5}\'')
    model.add_argument("--phi", type=float, default=unset, help="exponent of the extended loss")
    model.add_argument("--init-from", default=unset, metavar="ARTIFACT",
                       help="start from this artifact's (or shipped model's) weights wherever a"
                            " tensor's name and shape match")
    add_run_arguments(parser)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of :class:`~cnd_depth_ros.training.trainer.RunConfig` (optimisation and
    run), shared with ``cnd-depth finetune``; unset ones keep the config's defaults."""
    unset = argparse.SUPPRESS
    schedule = parser.add_argument_group("optimisation")
    length = schedule.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int, help="optimizer steps in all")
    length.add_argument("--epochs", type=int, help="passes over the training data")
    schedule.add_argument("--batch-size", type=int, default=unset, help="per process")
    schedule.add_argument("--lr", type=float, default=unset, help="peak AdamW learning rate")
    schedule.add_argument("--weight-decay", type=float, default=unset)
    schedule.add_argument("--schedule", choices=("cosine", "poly"), default=unset,
                          help="decay after the warm-up")
    schedule.add_argument("--warmup-steps", type=int, default=unset)
    schedule.add_argument("--clip-grad", type=float, default=unset,
                          help="gradient norm limit (0: off)")
    schedule.add_argument("--amp", action=argparse.BooleanOptionalAction, default=unset,
                          help="mixed precision (CUDA only)")
    schedule.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                          default=unset, help="channels-last memory format")
    schedule.add_argument("--seed", type=int, default=unset)
    schedule.add_argument("--deterministic", action="store_true", default=unset,
                          help="deterministic kernels (slower on GPU)")

    run_group = parser.add_argument_group("run")
    run_group.add_argument("--out", required=True, help="folder for artifact, checkpoint, logs")
    run_group.add_argument("--resume", default=unset, metavar="CHECKPOINT",
                           help="continue a run from its OUT/checkpoint.pt (same settings)")
    run_group.add_argument("--checkpoint-every", type=int, default=unset, metavar="STEPS")
    run_group.add_argument("--log-every", type=int, default=unset, metavar="STEPS")
    run_group.add_argument("--workers", type=int, default=unset,
                           help="DataLoader workers per process")
    run_group.add_argument("--device", default=unset, help="auto, cpu, cuda or cuda:N")
    run_group.add_argument("--nproc", type=int, default=1,
                           help="DDP processes on this machine (relaunches through torchrun)")
    run_group.add_argument("--no-progress", dest="progress", action="store_false",
                           default=unset, help="no progress bar")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cnd_depth_ros.training import trainer

    return run_config(args, trainer.TrainConfig, trainer.main, entry=trainer.__name__)


def run_config(
    args: argparse.Namespace,
    config_type: type[ConfigT],
    main: Callable[[ConfigT], dict[str, Any]],
    *,
    entry: str,
) -> dict[str, Any]:
    """Build ``config_type`` from the parsed options and run it: here, or as ``--nproc`` DDP
    processes that run the ``__main__`` of the module ``entry``.

    :raises CndDepthError: bad settings, or a failed run.
    """
    from cnd_depth_ros.training.trainer import launch

    cli_only = ("nproc", "json", "verbose")
    settings = {key: value for key, value in vars(args).items() if key not in cli_only}
    if args.nproc < 1:
        raise CndDepthError(f"--nproc must be at least 1, got {args.nproc}")
    try:
        config = config_type(**settings)
    except ValueError as error:
        raise CndDepthError(str(error)) from error
    if args.nproc > 1:
        if "WORLD_SIZE" in os.environ:
            raise CndDepthError("--nproc cannot be used inside torchrun; launch one or the other")
        return launch(config, args.nproc, entry=entry)
    if int(os.environ.get("RANK", "0")) != 0:
        args.json = None  # under torchrun, only rank 0 writes --json
    try:
        return main(config)
    except ValueError as error:
        raise CndDepthError(str(error)) from error
