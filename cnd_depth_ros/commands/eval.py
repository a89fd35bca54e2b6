"""Score a model (or the SGBM baseline) on a dataset with the paper's metrics.

--model takes an artifact path, a shipped model name (cnd_micro, cnd_mono, cnd_stereo) or sgbm.
The model runs through an inference backend, from camera images to metric depth at the ground
truth's resolution, so the numbers are those of the deployed model. The JSON result is
{"metrics": {"rel", "log10", "rmse", ...}, "frames": N, "model", "backend", "data"}.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from cnd_depth_ros.errors import CndDepthError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="artifact path, cnd_micro, cnd_mono, cnd_stereo, or sgbm")
    parser.add_argument("--data", required=True, metavar="KIND",
                        help="dataset kind: synthetic, kitti, kitti_raw, middlebury, motorcycle, "
                             "nyu, apolloscape, rosbag")
    parser.add_argument("--data-root", metavar="DIR", help="dataset folder or bag")
    parser.add_argument("--backend", default="torch",
                        help="inference backend for networks: torch, onnxruntime, tensorrt, auto")
    parser.add_argument("--device", help="backend device: cpu, cuda or cuda:N")
    parser.add_argument("--max-frames", type=int, metavar="N", help="score the first N frames")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cnd_depth_ros.evaluation.dataset_eval import evaluate_dataset, open_predictor
    from cnd_depth_ros.training.datasets.registry import open_dataset

    options = {} if args.device is None or args.model == "sgbm" else {"device": args.device}
    started = time.monotonic()
    try:
        frames = open_dataset(args.data, args.data_root)
        with open_predictor(args.model, backend=args.backend, **options) as (predict, info):
            if info["stereo"] and len(frames) and frames[0].right is None:
                raise ValueError(
                    f"{args.model} needs stereo pairs but {args.data} data has no right images"
                )
            result = evaluate_dataset(
                predict, frames, max_frames=args.max_frames, progress=args.progress,
                description=f"eval {args.model}",
            )
    except ValueError as error:
        raise CndDepthError(str(error)) from error
    return {
        **result,
        "model": args.model,
        "backend": info.pop("backend", args.backend),
        "model_info": info,
        "data": {"kind": args.data, "root": args.data_root},
        "seconds": round(time.monotonic() - started, 2),
    }
