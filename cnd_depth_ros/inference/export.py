"""ONNX export of a model artifact, and reading such an ONNX file back as a self-contained model.

The exported graph has static shapes, inputs ``left`` (and ``right`` for stereo), both
1 x 3 x H x W float32 RGB in [0, 1] (the ImageNet normalisation is the graph's first layer, see
docs/decisions.md), and one output named ``depth``: 1 x 1 x H x W float32, the *raw* network output.
Despite its name it is whatever the artifact's ``output`` says: disparity in pixels at network
resolution for stereo models, focal-normalised depth for mono models. The artifact's metadata is
embedded in the file's ``metadata_props`` (:data:`ONNX_METADATA_KEY`), so the ONNX file alone is a
usable model for every backend; ``ModelMetadata.metric_depth`` turns its output into metres.

Graph rewrites: the layer rewrites of :mod:`cnd_depth_ros.inference.layer_rewrites` (transposed
convs as convs, the one-channel conv as depthwise + sum, kernel taps that only read padding at
the export size dropped), each the same function, verified by parity tests; and:

* BatchNorm is folded into the preceding convolution by the exporter's optimiser (onnxscript), and
  the export fails if a BatchNormalization node is left;
* ``fp16=True`` runs the whole network in float16 behind float32 inputs and output (``Cast``
  nodes inside the graph): the graph TensorRT 11's strongly typed builder makes FP16 engines from.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from google.protobuf.message import DecodeError
from torch import Tensor, nn

from cnd_depth_ros.atomic_file import write_atomically
from cnd_depth_ros.errors import ArtifactError
from cnd_depth_ros.inference.layer_rewrites import (
    replace_conv_transposes,
    replace_convs_with_dead_taps,
    replace_single_output_convs,
)
from cnd_depth_ros.inference.onnx_checks import check_tensorrt_compatible
from cnd_depth_ros.models.artifact import (
    ModelMetadata,
    load_artifact,
    weights_sha256,
)
from cnd_depth_ros.models.cnd import CNDStereo

__all__ = [
    "CONFIDENCE_NAME",
    "DEFAULT_OPSET",
    "INPUT_NAMES",
    "ONNX_EXPORT_KEY",
    "ONNX_METADATA_KEY",
    "OUTPUT_NAME",
    "check_network_inputs",
    "embedded_metadata",
    "export_onnx",
    "export_onnx_model",
    "load_onnx",
    "metadata_at_size",
    "read_onnx_metadata",
]

_LOGGER = logging.getLogger(__name__)

#: The exporter's native opset; 17 is accepted too (TensorRT 8.5 on JetPack 5 parses up to 17).
DEFAULT_OPSET = 18
INPUT_NAMES = ("left", "right")
OUTPUT_NAME = "depth"
#: A stereo graph's second output: the matcher's confidence in [0, 1] (1 x 1 x H x W). Exports
#: made before it have only ``depth``; the backends then report no confidence.
CONFIDENCE_NAME = "confidence"
#: ``metadata_props`` key holding the artifact's metadata JSON.
ONNX_METADATA_KEY = "cnd_depth_ros.metadata"
#: ``metadata_props`` key holding how the file was made (opset, precision, weights hash).
ONNX_EXPORT_KEY = "cnd_depth_ros.export"


def metadata_at_size(
    metadata: ModelMetadata, width: int | None = None, height: int | None = None
) -> ModelMetadata:
    """The metadata of the same (fully convolutional) network run at another input size.

    The training camera is rescaled with the image, so the output rule (docs/decisions.md 1)
    stays right for the new size.

    :raises ValueError: a size that is not a positive multiple of 16.
    """
    width = metadata.input_width if width is None else width
    height = metadata.input_height if height is None else height
    if (width, height) == (metadata.input_width, metadata.input_height):
        return metadata
    if width <= 0 or height <= 0:
        raise ValueError(f"network input must be positive, got {width}x{height}")
    return replace(
        metadata,
        input_width=width,
        input_height=height,
        training_camera=metadata.training_camera.resized(width, height),
    )


def _output_names(metadata: ModelMetadata) -> tuple[str, ...]:
    return (OUTPUT_NAME, CONFIDENCE_NAME) if metadata.stereo else (OUTPUT_NAME,)


def check_network_inputs(
    metadata: ModelMetadata, left: np.ndarray, right: np.ndarray | None
) -> dict[str, np.ndarray]:
    """The graph's feed (``{"left": ..., "right": ...}``) for network-sized inputs, checked.

    :raises ValueError: a missing or extra right image, or an input that is not
        1 x 3 x H x W float32 at the network size.
    """
    if (right is not None) != metadata.stereo:
        needs = "needs a right input" if metadata.stereo else "takes no right input"
        raise ValueError(f"{metadata.variant} {needs}")
    expected = (1, 3, metadata.input_height, metadata.input_width)
    feed = dict(zip(INPUT_NAMES, [left] if right is None else [left, right], strict=False))
    for name, array in feed.items():
        if array.shape != expected or array.dtype != np.float32:
            raise ValueError(
                f"network input {name!r} must be {expected} float32, got {array.shape} "
                f"{array.dtype}"
            )
    return feed


class _ExportGraph(nn.Module):
    """The network as exported: float32 in and out, FP16 inside when asked."""

    def __init__(self, net: nn.Module, fp16: bool) -> None:
        super().__init__()
        self.net = net.half() if fp16 else net
        self.fp16 = fp16

    def forward(self, *images: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        if self.fp16:
            images = tuple(image.half() for image in images)
        if not isinstance(self.net, CNDStereo):
            output = self.net(*images)
            return output.float() if self.fp16 else output
        outputs = self.net.predict(*images)
        depth, confidence = outputs["disparity"], outputs["confidence"]
        return (depth.float(), confidence.float()) if self.fp16 else (depth, confidence)


def export_onnx_model(
    model_path: str | os.PathLike[str],
    *,
    height: int | None = None,
    width: int | None = None,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """The checked ONNX graph of an artifact (see the module docstring), in memory.

    :raises ArtifactError: an unreadable artifact, or a graph that fails ``onnx.checker`` or uses
        an operator outside the TensorRT parser's list (named in the message).
    :raises ValueError: a size that is not a positive multiple of 16, or an opset below 17.
    """
    if opset < 17:
        raise ValueError(f"opset must be 17 or newer, got {opset}")
    net, metadata = load_artifact(model_path)
    metadata = metadata_at_size(metadata, width, height)
    shape = (1, 3, metadata.input_height, metadata.input_width)
    inputs = tuple(torch.rand(shape) for _ in range(2 if metadata.stereo else 1))
    net.eval()
    rewritten = replace_conv_transposes(net)
    depthwise = replace_single_output_convs(net)
    trimmed = replace_convs_with_dead_taps(net, inputs)
    graph = _ExportGraph(net, fp16).eval()
    names = list(INPUT_NAMES[: len(inputs)])
    _LOGGER.info(
        "exporting %s at %s (%s)",
        model_path,
        "x".join(map(str, shape[::-1][:2])),
        "fp16" if fp16 else "fp32",
    )
    with torch.no_grad():
        program = torch.onnx.export(
            graph,
            inputs,
            input_names=names,
            output_names=list(_output_names(metadata)),
            opset_version=opset,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    source = f"ONNX export of {model_path}"
    if program is None:
        raise ArtifactError(f"{source}: torch.onnx.export returned no program")
    proto = program.model_proto
    exported_opset = next(
        entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")
    )
    if exported_opset != opset:
        raise ArtifactError(f"{source}: the exporter produced opset {exported_opset}, not {opset}")
    leftover = [node.name for node in proto.graph.node if node.op_type == "BatchNormalization"]
    if leftover:
        raise ArtifactError(
            f"{source}: BatchNormalization not folded into a convolution at {leftover}"
        )
    onnx.helper.set_model_props(
        proto,
        {
            ONNX_METADATA_KEY: json.dumps(metadata.to_json(), sort_keys=True),
            ONNX_EXPORT_KEY: json.dumps(
                {
                    "opset": opset,
                    "precision": "fp16" if fp16 else "fp32",
                    "weights_sha256": weights_sha256(model_path),
                    "conv_transposes_rewritten": rewritten,
                    "single_output_convs_rewritten": depthwise,
                    "convs_with_dead_taps_trimmed": trimmed,
                    "exporter": f"torch {torch.__version__}",
                },
                sort_keys=True,
            ),
        },
    )
    proto.doc_string = (
        f"cnd_depth_ros {metadata.variant}: output '{OUTPUT_NAME}' is {metadata.output}"
        + (f", '{CONFIDENCE_NAME}' the matcher's confidence" if metadata.stereo else "")
    )
    _validate(proto, source)
    return proto


def export_onnx(
    model_path: str | os.PathLike[str],
    onnx_path: str | os.PathLike[str],
    *,
    height: int | None = None,
    width: int | None = None,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export an artifact (path or shipped name) to ``onnx_path``, written atomically.

    Defaults to the artifact's own input size. Raises as :func:`export_onnx_model`.
    """
    proto = export_onnx_model(model_path, height=height, width=width, fp16=fp16, opset=opset)
    target = Path(onnx_path)
    write_atomically(target, lambda temporary: onnx.save_model(proto, str(temporary)))
    return target


def _validate(proto: onnx.ModelProto, source: str) -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ArtifactError(f"{source}: invalid ONNX graph ({error})") from error
    check_tensorrt_compatible(proto, source)


def load_onnx(path: str | os.PathLike[str]) -> tuple[onnx.ModelProto, ModelMetadata]:
    """An ONNX file made by :func:`export_onnx`, checked, and its embedded metadata.

    :raises ArtifactError: a missing, truncated or corrupt file, or one without valid metadata.
    """
    try:
        proto = onnx.load_model(str(path))
    except FileNotFoundError as error:
        raise ArtifactError(f"{path}: no such file") from error
    except (OSError, DecodeError, ValueError) as error:
        raise ArtifactError(f"{path}: not a readable ONNX file ({error})") from error
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as error:
        raise ArtifactError(f"{path}: invalid or truncated ONNX graph ({error})") from error
    metadata = embedded_metadata(proto, str(path))
    _check_signature(proto, metadata, str(path))
    return proto, metadata


def read_onnx_metadata(path: str | os.PathLike[str]) -> ModelMetadata:
    """The artifact metadata embedded in an exported ONNX file; raises as :func:`load_onnx`."""
    return load_onnx(path)[1]


def embedded_metadata(proto: onnx.ModelProto, source: str) -> ModelMetadata:
    """The artifact metadata in an exported graph's ``metadata_props``.

    :raises ArtifactError: naming ``source``, when it is missing or invalid.
    """
    props = {entry.key: entry.value for entry in proto.metadata_props}
    if ONNX_METADATA_KEY not in props:
        raise ArtifactError(
            f"{source}: no {ONNX_METADATA_KEY!r} metadata: not exported by `cnd-depth export`"
        )
    try:
        data: Any = json.loads(props[ONNX_METADATA_KEY])
    except json.JSONDecodeError as error:
        raise ArtifactError(f"{source}: unreadable embedded metadata ({error})") from error
    return ModelMetadata.from_json(data, source=source)


def _check_signature(proto: onnx.ModelProto, metadata: ModelMetadata, source: str) -> None:
    """Inputs and output must be what the metadata promises, or the backends would misread them."""
    expected = (1, 3, metadata.input_height, metadata.input_width)
    names = list(INPUT_NAMES[: 2 if metadata.stereo else 1])
    inputs = [value for value in proto.graph.input]
    if [value.name for value in inputs] != names:
        raise ArtifactError(
            f"{source}: graph inputs {[value.name for value in inputs]}, expected {names}"
        )
    for value in inputs:
        dims = tuple(dim.dim_value for dim in value.type.tensor_type.shape.dim)
        if dims != expected:
            raise ArtifactError(
                f"{source}: input {value.name!r} has shape {dims}, expected "
                f"{expected} (static shapes from `cnd-depth export`)"
            )
    outputs = [value.name for value in proto.graph.output]
    expected_outputs = list(_output_names(metadata))
    if outputs not in (expected_outputs, [OUTPUT_NAME]):
        raise ArtifactError(f"{source}: graph outputs {outputs}, expected {expected_outputs}")
