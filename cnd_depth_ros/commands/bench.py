"""Benchmark inference backends, OpenCV StereoSGBM (backend sgbm) among them, in one run.

Every backend does the node's whole job on the same real stereo pair (the Middlebury 2014
motorcycle that scikit-image ships, at its own 741x500 or resized to ``--camera``): resize to the
input planned for that camera (or ``--input-size``; SGBM matches at it too), run, convert to
metres, resize back. Reports p50/p95 latency, frames/s, and the largest depth difference to the
torch reference (metres). Backend specs are NAME or NAME:VALUE: a precision
(onnxruntime:int8), or SGBM's preset (sgbm:stereo_image_proc).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cnd_depth_ros.commands.arguments import (
    add_input_plan_arguments,
    add_refinement_argument,
    positive_int,
)
from cnd_depth_ros.errors import CndDepthError

if TYPE_CHECKING:
    from cnd_depth_ros.data.frame import Frame

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="artifact path, shipped model name, or .onnx from `cnd-depth export`",
    )
    parser.add_argument(
        "--backends",
        default="torch,onnxruntime,sgbm",
        help="comma-separated NAME[:PRECISION] (torch, onnxruntime, tensorrt, auto, sgbm); "
        "sgbm:stereo_image_proc is SGBM with stereo_image_proc's own defaults",
    )
    add_input_plan_arguments(parser, camera=True)
    add_refinement_argument(parser)
    parser.add_argument("--iters", type=positive_int, default=50, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads for every backend (default: runtime's own)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--calib-data",
        metavar="KIND:ROOT",
        help="INT8 calibration frames (default: the motorcycle pair)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    import cv2

    from cnd_depth_ros.data.registry import open_dataset
    from cnd_depth_ros.inference.benchmark import StereoInput, run_benchmark
    from cnd_depth_ros.inference.disparity_refinement import DisparityRefinement

    # Progress from this package only: the exporter's optimiser logs hundreds of INFO lines.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("cnd_depth_ros").setLevel(logging.INFO)
    specs = [spec for spec in args.backends.split(",") if spec.strip()]
    options: dict[str, Any] = {"device": args.device}
    if args.threads is not None:
        options["threads"] = args.threads
        cv2.setNumThreads(args.threads)
    try:
        frame = open_dataset("motorcycle")[0]
        assert frame.right is not None
        pair = StereoInput(frame.left, frame.right, frame.camera)
        if args.camera is not None:
            pair = pair.resized(*args.camera)
        calibration: Sequence[Frame] = [frame]
        if args.calib_data:
            from cnd_depth_ros.data.sources import DataSpec, open_frames

            calibration = open_frames([DataSpec.parse(args.calib_data)], stereo=True)
        results = run_benchmark(
            args.model,
            specs,
            pair,
            pixel_budget=args.pixel_budget,
            input_size=args.input_size,
            iterations=args.iters,
            warmup=args.warmup,
            options=options,
            calibration=calibration,
            refinement=DisparityRefinement() if args.refinement else None,
        )
    except ValueError as error:  # bad specs, sizes or options: user input, not a crash
        raise CndDepthError(str(error)) from error
    print(f"{'backend':<20}{'p50 ms':>9}{'p95 ms':>9}{'fps':>8}  max |d - torch| m")
    for result in results:
        print(
            f"{result.backend:<20}{result.p50_ms:>9.2f}{result.p95_ms:>9.2f}{result.fps:>8.1f}  "
            f"{result.max_abs_diff_vs_torch:.4g}"
        )
    return {"results": [result.to_json() for result in results]}
