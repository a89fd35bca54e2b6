"""Build a TensorRT engine for this machine's GPU from a model artifact or an ONNX export.

The engine goes into the engine cache ($CND_DEPTH_CACHE, default ~/.cache/cnd_depth_ros/engines),
where the tensorrt backend and the node find it, and with --engine OUT also to OUT (plus OUT.json,
its sidecar) for loading by path.
Build it ahead of time: a first build on a Jetson takes minutes; progress is logged meanwhile.
An engine runs at one input shape only: build one per --height/--width the node will use
(the node logs the size it plans for each camera), or let --camera WxH plan it as the node does
(default: the model's own size).
INT8 needs calibration images from any dataset kind, e.g. --calib-data kitti:/data/kitti.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from cnd_depth_ros.commands.arguments import add_input_plan_arguments, network_size, positive_int
from cnd_depth_ros.errors import BackendError, CndDepthError

__all__ = ["add_arguments", "run"]


def _engine_file(text: str) -> Path:
    path = Path(text)
    if path.suffix != ".engine":
        raise argparse.ArgumentTypeError(f"engine files end in .engine, got {text!r}")
    return path


def _cuda_index(text: str) -> int:
    from cnd_depth_ros.inference.devices import parse_device

    try:
        kind, index = parse_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    if kind != "cuda":
        raise argparse.ArgumentTypeError(f"engines are built on a CUDA device, got {text!r}")
    return index


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="artifact path, shipped model name, or .onnx from `cnd-depth export`")
    parser.add_argument("--engine", type=_engine_file, metavar="OUT",
                        help="also write the engine (and OUT.json, its sidecar) here")
    parser.add_argument("--precision", choices=("fp16", "fp32", "int8"),
                        help="default: fp16 where the model can be built so (an FP32 .onnx on "
                        "TensorRT 11 builds fp32)")
    parser.add_argument("--height", type=positive_int,
                        help="network input height (multiple of 16; default: the model's)")
    parser.add_argument("--width", type=positive_int,
                        help="network input width (multiple of 16; default: the model's)")
    add_input_plan_arguments(parser, camera=True, input_size=False)
    parser.add_argument("--calib-data", metavar="KIND:ROOT",
                        help="INT8 calibration images: a dataset of any kind")
    parser.add_argument("--calib-frames", type=positive_int, default=256,
                        help="at most this many calibration frames, spread over the dataset")
    parser.add_argument("--workspace-mb", type=positive_int, default=1024,
                        help="TensorRT builder workspace limit")
    parser.add_argument("--device", type=_cuda_index, default="cuda", help="cuda or cuda:N")
    parser.add_argument("--rebuild", action="store_true",
                        help="build even when the cache holds a current engine")


def run(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        from cnd_depth_ros.inference import tensorrt_builder
    except ImportError as error:
        raise BackendError(
            f"TensorRT is not available on this machine ({error}). Build engines on the machine "
            "that runs them, with TensorRT 10 or 11 installed (JetPack, or NVIDIA's Python "
            "index); the onnxruntime and torch backends need no engine."
        ) from error
    from cnd_depth_ros.inference.engine_cache import copy_engine_file
    from cnd_depth_ros.inference.engine_plan import ModelSource

    started = time.monotonic()
    width, height = network_size(args, device="cuda")
    try:
        frames = None
        if args.calib_data:
            from cnd_depth_ros.data.sources import DataSpec, open_frames

            stereo = ModelSource.open(args.model).metadata.stereo
            frames = open_frames([DataSpec.parse(args.calib_data)], stereo=stereo)
        cached = tensorrt_builder.cached_engine(
            args.model,
            precision=args.precision,
            calibration=frames,
            max_calibration_frames=args.calib_frames,
            height=height,
            width=width,
            workspace_mb=args.workspace_mb,
            device=args.device,
            rebuild=args.rebuild,
        )
    except ValueError as error:
        raise CndDepthError(str(error)) from error
    path, record = cached.path, cached.record
    if args.engine is not None:
        path = copy_engine_file(path, args.engine)
    return {
        "engine": str(path),
        "model": args.model,
        "precision": record.key.precision,
        "input": f"{record.key.width}x{record.key.height}",
        "tensorrt": record.key.target.tensorrt_version,
        "gpu": record.key.target.gpu_name,
        "compute_capability": record.key.target.compute_capability,
        "sha256": record.sha256,
        "build_seconds": record.build_seconds,
        "seconds": round(time.monotonic() - started, 3),
    }
