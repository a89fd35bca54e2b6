"""Fine-tune a model on unlabeled stereo recordings (self-supervised) and write a new artifact.

The model learns from the photometric agreement of each rectified pair (rebuilding the left view
from the right one with its disparity, and the right from the left), so the recordings need no
depth: --data rosbag:BAG reads the stereo topics and camera_info only. --mix-data adds labeled
synthetic batches with the paper's loss, so the model keeps its metric scale; --val-data scores
it on labeled data after every epoch. The new artifact's metadata (training.finetuned_from,
training.adapted_on) records the source artifact's hash and what it was adapted on.
Options left unset take the defaults of cnd_depth_ros.training.finetune.FinetuneConfig
(docs/training.md, "Self-supervised fine-tuning").
"""

from __future__ import annotations

import argparse
from typing import Any

from cnd_depth_ros.commands.train import add_run_arguments, data_spec, run_config

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    unset = argparse.SUPPRESS  # so FinetuneConfig's defaults stay the only ones
    source = parser.add_argument_group("model and data")
    source.add_argument("--model", required=True, metavar="ARTIFACT",
                        help="artifact path or shipped model name (cnd_stereo, cnd_mono, ...)")
    source.add_argument("--data", action="append", required=True, type=data_spec,
                        metavar="KIND:ROOT", help="unlabeled stereo recordings, e.g. "
                        "rosbag:drive.bag, or with its topics: rosbag:drive.bag,left_topic=/zed/"
                        "left/image_rect_color,right_topic=... (any ground truth is ignored); "
                        "repeat to mix")
    source.add_argument("--mix-data", action="append", type=data_spec, default=unset,
                        metavar="KIND:ROOT", help="labeled data mixed into every step")
    source.add_argument("--mix-weight", type=float, default=unset,
                        help="weight of the supervised loss on --mix-data batches")
    source.add_argument("--val-data", action="append", type=data_spec, default=unset,
                        metavar="KIND:ROOT", help="labeled data scored after every epoch")

    objective = parser.add_argument_group("self-supervised objective")
    objective.add_argument("--alpha", type=float, default=unset,
                           help="SSIM share of the photometric error (the rest is L1)")
    objective.add_argument("--smoothness-weight", type=float, default=unset,
                           help="edge-aware smoothness of the mean-normalised disparity")
    objective.add_argument("--consistency-weight", type=float, default=unset,
                           help="left-right disparity consistency")
    objective.add_argument("--automask", action="store_true", default=unset,
                           help="ignore pixels the unwarped right image explains better")
    objective.add_argument("--phi", type=float, default=unset,
                           help="exponent of the extended loss on --mix-data")
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cnd_depth_ros.training import finetune

    return run_config(args, finetune.FinetuneConfig, finetune.main, entry=finetune.__name__)
