"""Score a model (or the SGBM baseline) on a dataset with the paper's metrics.

--model takes an artifact path or a shipped model name (cnd_micro, cnd_mono, cnd_stereo), run by
--backend; --backend sgbm (sgbm:stereo_image_proc for stereo_image_proc's own settings) is OpenCV's
StereoSGBM and needs no model. Every backend runs from camera images to metric depth at the
ground truth's resolution, so the numbers are those of the deployed estimator. The JSON result is
{"metrics": {"rel", "log10", "rmse", ...}, "frames": N, "model", "backend", "data"}, plus
"baseline" with --baseline BACKEND (e.g. sgbm) and "report" with --report DIR (report.html and
its figures: frames, metrics table, error by distance, per-frame error, inference time).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnd_depth_ros.commands.arguments import (
    add_input_plan_arguments,
    add_refinement_argument,
    backend_spec,
)
from cnd_depth_ros.data.registry import DATASET_KINDS
from cnd_depth_ros.errors import CndDepthError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cnd_depth_ros.data.frame import Frame
    from cnd_depth_ros.evaluation.report import ReportCollector

__all__ = ["add_arguments", "run"]


def _data_option(text: str) -> tuple[str, Any]:
    from cnd_depth_ros.data.sources import parse_option

    try:
        return parse_option(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model",
                        help="artifact path, cnd_micro, cnd_mono or cnd_stereo (not needed by "
                             "--backend sgbm)")
    parser.add_argument("--data", required=True, metavar="KIND",
                        help=f"dataset kind: {', '.join(DATASET_KINDS)}")
    parser.add_argument("--data-root", metavar="DIR", help="dataset folder or bag")
    parser.add_argument("--data-option", action="append", type=_data_option, default=[],
                        metavar="NAME=VALUE", help="loader option, repeatable, e.g. "
                        "left_topic=/zed/left/image_rect_color for a rosbag (docs/data.md)")
    parser.add_argument("--backend", default="torch", type=backend_spec,
                        help="inference backend: torch, onnxruntime, tensorrt, auto, or sgbm "
                             "(OpenCV StereoSGBM, no model; sgbm:stereo_image_proc with "
                             "stereo_image_proc's own settings)")
    parser.add_argument("--device", help="backend device: cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                        help="backend precision (default: the backend's own); int8 needs"
                             " --calib-data")
    parser.add_argument("--calib-data", metavar="KIND:ROOT",
                        help="INT8 calibration frames (evenly drawn, at most 256); score on"
                             " other frames than these")
    parser.add_argument("--max-frames", type=int, metavar="N", help="score the first N frames")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar")
    parser.add_argument("--baseline", metavar="BACKEND", type=backend_spec,
                        help="also score this backend (e.g. sgbm, sgbm:stereo_image_proc; a "
                             "network backend runs --model) with its defaults on the same "
                             "frames, next to the model")
    parser.add_argument("--report", type=Path, metavar="DIR",
                        help="write report.html and its PNG figures into DIR")
    add_input_plan_arguments(parser)
    add_refinement_argument(parser)
    parser.add_argument("--confidence-threshold", type=float, default=0.0, metavar="C",
                        help="score only pixels whose matcher confidence is at least C (0-1), "
                             "as the node's confidence_threshold keeps them; the JSON says "
                             "which share of the ground truth was kept")
    parser.add_argument("--min-depth", type=float, default=1e-3, metavar="M",
                        help="score ground truth from this depth (m); predictions are clipped")
    parser.add_argument("--max-depth", type=float, default=80.0, metavar="M",
                        help="score ground truth up to this depth (m), the KITTI convention")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cnd_depth_ros.data.registry import open_dataset
    from cnd_depth_ros.evaluation.report import ReportCollector, panel_indices

    if args.baseline == args.backend:
        raise CndDepthError(f"--baseline {args.baseline} is --backend itself: nothing to compare")
    options = _backend_options(args)
    started = time.monotonic()
    model_log = baseline_log = None
    try:
        frames = open_dataset(args.data, args.data_root, **dict(args.data_option))
        if args.report is not None:
            limit = len(frames) if args.max_frames is None else args.max_frames
            keep = panel_indices(max(0, min(limit, len(frames))))
            model_log = ReportCollector(keep)
            baseline_log = ReportCollector(keep) if args.baseline else None
        result, info = _evaluate(args.backend, frames, args, model_log, **options)
        if args.baseline:
            baseline_result, _ = _evaluate(args.baseline, frames, args, baseline_log)
    except ValueError as error:
        raise CndDepthError(str(error)) from error
    output = {
        **result,
        "model": args.model,
        "backend": info.pop("backend", args.backend),
        "input_plans": info.pop("input_plans", []),
        "model_info": info,
        "data": {"kind": args.data, "root": args.data_root,
                 **({"options": dict(args.data_option)} if args.data_option else {})},
    }
    if args.baseline:
        output["baseline"] = {"backend": args.baseline, **baseline_result}
    if model_log is not None:
        output["report"] = str(_write_report(args, output, model_log, baseline_log))
    output["seconds"] = round(time.monotonic() - started, 2)
    return output


def _backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--device``, ``--precision``, the ``--calib-data`` frames and the input plan's options
    as backend options."""
    from cnd_depth_ros.inference.registry import with_calibration

    options: dict[str, Any] = {"pixel_budget": args.pixel_budget, "input_size": args.input_size}
    if not args.refinement:
        options["refinement"] = None
    if args.device is not None:
        options["device"] = args.device
    if args.precision is not None:
        options["precision"] = args.precision
    try:
        int8 = "calibration" in with_calibration(args.backend, options, None)
    except ValueError as error:
        raise CndDepthError(str(error)) from error
    if not int8:
        return options
    if not args.calib_data:
        raise CndDepthError("INT8 needs --calib-data KIND:ROOT to calibrate on")
    from cnd_depth_ros.data.sources import DataSpec, open_frames

    frames = open_frames([DataSpec.parse(args.calib_data)], stereo=True)
    return with_calibration(args.backend, options, frames)


def _evaluate(
    backend: str,
    frames: Sequence[Frame],
    args: argparse.Namespace,
    collector: ReportCollector | None,
    **options: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(result, info)`` of ``--model`` on ``backend`` over ``frames``, feeding ``collector`` if
    there is one."""
    from cnd_depth_ros.evaluation.dataset_eval import evaluate_dataset, open_predictor

    if len(frames):
        options["camera"] = frames[0].camera
    with open_predictor(args.model, backend=backend, **options) as (predict, info):
        name = info["model"]
        if info["stereo"] and len(frames) and frames[0].right is None:
            raise ValueError(f"{name} needs stereo pairs but {args.data} data has no right images")
        result = evaluate_dataset(
            predict, frames, max_frames=args.max_frames, progress=args.progress,
            description=f"eval {name}", min_depth=args.min_depth, max_depth=args.max_depth,
            confidence_threshold=args.confidence_threshold,
            on_frame=None if collector is None else collector.on_frame,
        )
    return result, info


def _write_report(
    args: argparse.Namespace,
    output: dict[str, Any],
    model_log: ReportCollector,
    baseline_log: ReportCollector | None,
) -> Path:
    from cnd_depth_ros.evaluation.report import write_report

    # The model's name, or the backend's own description (OpenCV StereoSGBM) where it has none.
    name = Path(output["model_info"]["model"]).name
    baseline = None
    if baseline_log is not None:
        baseline = baseline_log.baseline(args.baseline, output["baseline"]["metrics"])
    details = {
        "model": args.model,
        "backend": output["backend"],
        "data": " ".join(
            part for part in (args.data, args.data_root,
                              *(f"{name}={value}" for name, value in args.data_option)) if part
        ),
        "frames": output["frames"],
        "skipped (no ground truth)": output["skipped"],
        "latency": "time of one prediction, camera images to metric depth, resizing included",
    }
    try:
        return write_report(
            args.report,
            title=f"{name} on {args.data}",
            metrics=output["metrics"],
            **model_log.report_arguments(baseline_log),
            baseline=baseline,
            details=details,
            model_name=name,
        )
    except OSError as error:
        raise CndDepthError(f"cannot write the report into {args.report}: {error}") from error
