"""Export a model artifact to ONNX for ONNX Runtime and TensorRT.

Static shapes (default: the artifact's input size; `--camera WxH` plans the size for a camera, as
the node does), inputs `left` (and `right`) as 1x3xHxW float32
RGB in [0, 1], output `depth`: the raw network output (disparity in pixels for stereo models,
focal-normalised depth for mono models; the artifact metadata inside the file says which).
BatchNorm is folded and stride-1 transposed convolutions become convolutions; the graph is checked
with onnx.checker and against the operators TensorRT's ONNX parser supports.
--fp16 makes the graph TensorRT 11 builds FP16 engines from (float32 inputs and output).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from cnd_depth_ros.commands.arguments import add_input_plan_arguments, network_size
from cnd_depth_ros.errors import CndDepthError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="artifact path or shipped model name")
    parser.add_argument(
        "--onnx",
        required=True,
        type=Path,
        metavar="OUT.onnx",
        help="where to write the ONNX file (atomically)",
    )
    parser.add_argument(
        "--height", type=int, help="network input height (multiple of 16; default: the artifact's)"
    )
    parser.add_argument(
        "--width", type=int, help="network input width (multiple of 16; default: the artifact's)"
    )
    add_input_plan_arguments(parser, camera=True, input_size=False)
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="FP16 weights and activations behind float32 inputs and output",
    )
    parser.add_argument(
        "--opset", type=int, default=18, help="ONNX opset (17 for TensorRT 8.5 / JetPack 5)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    import onnx

    from cnd_depth_ros.inference.export import export_onnx, load_onnx

    if args.onnx.suffix != ".onnx":
        raise CndDepthError(f"--onnx must name a .onnx file, got {str(args.onnx)!r}")
    started = time.monotonic()
    # The device the export is for is not known here: a --camera plan uses the CPU budget
    # unless --pixel-budget says otherwise.
    width, height = network_size(args, device=None)
    try:
        path = export_onnx(
            args.model,
            args.onnx,
            height=height,
            width=width,
            fp16=args.fp16,
            opset=args.opset,
        )
    except ValueError as error:  # bad sizes or opset: user input, not a crash
        raise CndDepthError(str(error)) from error
    proto, metadata = load_onnx(path)
    inputs = [value.name for value in proto.graph.input]
    print(
        f"wrote {path}: {metadata.variant}, inputs {', '.join(inputs)} "
        f"1x3x{metadata.input_height}x{metadata.input_width}, output depth = {metadata.output}, "
        f"{'fp16' if args.fp16 else 'fp32'}"
    )
    return {
        "onnx": str(path),
        "model": args.model,
        "variant": metadata.variant,
        "height": metadata.input_height,
        "width": metadata.input_width,
        "inputs": inputs,
        "output": metadata.output,
        "precision": "fp16" if args.fp16 else "fp32",
        "opset": args.opset,
        "operators": sorted({node.op_type for node in proto.graph.node}),
        "bytes": path.stat().st_size,
        "onnx_version": onnx.__version__,
        "seconds": round(time.monotonic() - started, 3),
    }
