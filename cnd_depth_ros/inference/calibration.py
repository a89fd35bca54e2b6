"""INT8 calibration data: frames from any dataset loader, as the network sees them.

INT8 needs the value range of every activation, measured on representative images. TensorRT 10
and 11 both get INT8 from the graph ("explicit quantization", NVIDIA's recommended path: the
implicit calibrator is deprecated since TensorRT 10.1 and gone in 11): :func:`quantize_qdq`
writes a Q/DQ ONNX with ONNX Runtime's static quantisation, calibrated on the batches of a
:class:`CalibrationSet`, and TensorRT builds that as a strongly typed network. ONNX Runtime's
own INT8 (the ``onnxruntime`` backend on the CPU) is made the same way.

A frame that fails while calibrating is never mistaken for the end of the data: the reader keeps
the error, stops the batches and :func:`quantize_qdq` raises it once the quantiser returns, and a
calibration that did not use every batch is an error too (:class:`CalibrationReader`).

Frames are preprocessed exactly like live images (:func:`~cnd_depth_ros.inference.backend.
to_network_input`: resize to network size, RGB in [0, 1]), otherwise the measured ranges would
not be the ranges the engine meets.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from cnd_depth_ros.inference.backend import to_network_input
from cnd_depth_ros.models.artifact import ModelMetadata

if TYPE_CHECKING:
    from cnd_depth_ros.data.frame import Frame

__all__ = ["QDQ_FP16_OPSET", "CalibrationReader", "CalibrationSet", "calibration_frames",
           "output_layer_nodes", "quantize_qdq"]

_LOGGER = logging.getLogger(__name__)

# The encoder-decoder's operators. Left out, so left in float: the stereo matcher's MatMul,
# GatherElements, Mul and Softmax (correlation and soft-argmin) and the output head.
_QUANTISED_OPS = ["Conv", "ConvTranspose", "Add", "Clip", "Relu", "MaxPool", "Resize"]

#: ONNX's QuantizeLinear/DequantizeLinear take float16 scales from opset 19 on: a Q/DQ graph
#: over an FP16 export is written at this opset at least.
QDQ_FP16_OPSET = 19

Batch = dict[str, np.ndarray]


def calibration_frames(spec: str, *, stereo: bool) -> Sequence[Frame]:
    """The frames of ``spec`` (``KIND:ROOT``, as ``cnd-depth eval --data``), or the motorcycle
    pair scikit-image ships where it is empty (what ``cnd-depth bench`` calibrates on).

    :raises ValueError: a bad spec, or a source without (stereo) frames.
    :raises CndDepthError: the source cannot be read.
    """
    from cnd_depth_ros.data.registry import open_dataset
    from cnd_depth_ros.data.sources import DataSpec, open_frames

    if not spec:
        return open_dataset("motorcycle")
    return open_frames([DataSpec.parse(spec)], stereo=stereo, labeled=False)


def output_layer_nodes(model: onnx.ModelProto) -> list[str]:
    """The decoder's last layer: every conv to one channel, and the depthwise conv feeding it
    (the export writes that layer as depthwise + channel sum, docs/decisions.md 14).

    Kept in float under INT8: it writes the output itself, where 8 bits are felt directly, and
    ONNX Runtime's float depthwise 5x5 kernel is faster than its INT8 one (docs/benchmarks.md).
    """
    weights = {tensor.name: tensor for tensor in model.graph.initializer}
    producers = {name: node for node in model.graph.node for name in node.output}
    layer = []
    for node in model.graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "Conv" else None
        if weight is None or weight.dims[0] != 1:
            continue
        layer.append(node)
        feeding = producers.get(node.input[0])
        if feeding is not None and feeding.op_type == "Conv" and _groups(feeding) > 1:
            layer.append(feeding)
    return [node.name for node in layer if node.name]  # the quantiser excludes by name


def _groups(node: onnx.NodeProto) -> int:
    return next((attribute.i for attribute in node.attribute if attribute.name == "group"), 1)


class CalibrationSet:
    """Network-sized input batches (``{"left": B x 3 x H x W float32[, "right": ...]}``) drawn
    from ``frames``, evenly spread over the dataset when it has more than ``max_frames``.

    ``batch_size`` must match the batch dimension of the network (1 for the static export);
    a last partial batch is dropped because TensorRT calibrates full batches only.
    """

    def __init__(
        self,
        frames: Sequence[Frame],
        *,
        width: int,
        height: int,
        stereo: bool,
        batch_size: int = 1,
        max_frames: int = 256,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"calibration batch_size must be at least 1, got {batch_size}")
        if max_frames < batch_size:
            raise ValueError(
                f"calibration max_frames ({max_frames}) must be at least batch_size ({batch_size})"
            )
        if len(frames) < batch_size:
            raise ValueError(
                f"calibration needs at least {batch_size} frame(s), the dataset has {len(frames)}"
            )
        self.frames = frames
        self.width, self.height, self.stereo = width, height, stereo
        self.batch_size = batch_size
        count = min(len(frames), max_frames) // batch_size * batch_size
        self.indices = np.linspace(0, len(frames) - 1, count).round().astype(int).tolist()

    @classmethod
    def for_model(
        cls, frames: Sequence[Frame], metadata: ModelMetadata, **options: int
    ) -> CalibrationSet:
        """A set sized for the network an artifact describes."""
        return cls(
            frames,
            width=metadata.input_width,
            height=metadata.input_height,
            stereo=metadata.stereo,
            **options,
        )

    @property
    def input_names(self) -> tuple[str, ...]:
        return ("left", "right") if self.stereo else ("left",)

    def __len__(self) -> int:
        """Number of batches."""
        return len(self.indices) // self.batch_size

    def batches(self) -> Iterator[Batch]:
        """Each batch once, in order; a new iterator starts over.

        :raises ValueError: a frame that cannot be read or used, naming its dataset index (a
            stereo model's frame without a right image, say), chained to the loader's error.
        """
        for start in range(0, len(self.indices), self.batch_size):
            indices = self.indices[start : start + self.batch_size]
            try:
                frames = [self.frames[i] for i in indices]
                batch = {"left": self._stack([frame.left for frame in frames])}
                if self.stereo:
                    missing = [frame.name or "frame" for frame in frames if frame.right is None]
                    if missing:
                        raise ValueError(
                            f"calibrating a stereo model needs right images; {missing[0]} has "
                            "none"
                        )
                    batch["right"] = self._stack([frame.right for frame in frames])  # type: ignore[misc]
            except Exception as error:  # any loader's failure, named and chained
                batch_number = start // self.batch_size + 1
                raise ValueError(
                    f"calibration batch {batch_number}/{len(self)} (dataset frame(s) "
                    f"{', '.join(map(str, indices))}): {error}"
                ) from error
            yield batch

    def fingerprint(self) -> str:
        """SHA-256 of every network input calibration reads, in order: the calibration part of
        an INT8 engine's cache key (other frames, another selection or other preprocessing give
        another engine). Reads every calibration frame once.

        :raises ValueError: a frame that cannot be read, as :meth:`batches`.
        """
        digest = hashlib.sha256(f"{self.batch_size}:{len(self)}".encode())
        for batch in self.batches():
            for name in self.input_names:
                digest.update(f"{name}{batch[name].shape}{batch[name].dtype}".encode())
                digest.update(np.ascontiguousarray(batch[name]).tobytes())
        return digest.hexdigest()

    def data_reader(self) -> CalibrationReader:
        """The batches as an ONNX Runtime ``CalibrationDataReader`` (for ``quantize_static``)."""
        return CalibrationReader(self)

    def _stack(self, images: list[np.ndarray]) -> np.ndarray:
        arrays = [to_network_input(image, self.width, self.height) for image in images]
        return np.concatenate(arrays)


class CalibrationReader:
    """An ONNX Runtime ``CalibrationDataReader`` (which recognises any class with
    ``get_next``) over a :class:`CalibrationSet` that never lets an error pass for the end of
    the data.

    A quantiser reads until ``get_next`` returns ``None``. When a batch raises, the reader keeps
    the error and returns ``None`` (whatever the quantiser does with exceptions, it stops);
    :meth:`check` then raises it, and raises too when fewer batches were read than the set has.
    """

    def __init__(self, calibration: CalibrationSet) -> None:
        self.calibration = calibration
        self.used = 0
        self.error: ValueError | None = None
        self._batches = calibration.batches()

    def get_next(self) -> Batch | None:
        if self.error is not None:
            return None
        try:
            batch = next(self._batches, None)
        except ValueError as error:  # batches() names the frame and chains the cause
            self.error = error
            return None
        if batch is not None:
            self.used += 1
        return batch

    def check(self) -> None:
        """:raises ValueError: a batch failed, or not every batch was read."""
        if self.error is not None:
            raise ValueError(f"INT8 calibration failed: {self.error}") from self.error
        if self.used != len(self.calibration):
            raise ValueError(
                f"INT8 calibration read {self.used} of {len(self.calibration)} batches: the "
                "activation ranges would not cover the calibration data"
            )


def _float16_graph(model: onnx.ModelProto) -> bool:
    return any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)


def _opset(model: onnx.ModelProto) -> int:
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def quantize_qdq(
    onnx_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    calibration: CalibrationSet,
    *,
    tensorrt: bool = True,
) -> Path:
    """Write an INT8 Q/DQ copy of ``onnx_path`` calibrated on ``calibration`` and return its path.

    The encoder-decoder's operators are quantised (weights per output channel, biases left in
    float); the stereo matcher's cosine, softmax and soft-argmin stay in float, where 8 bits would
    move its disparity by pixels (docs/decisions.md, 13), and so does the decoder's last layer
    (:func:`output_layer_nodes`).

    With ``tensorrt``: symmetric ``QInt8`` activations (TensorRT accepts only zero point 0) and
    the entropy method of TensorRT's own calibrator, after ONNX Runtime's shape-inference pre-pass
    (no graph optimisation: TensorRT does its own fusions). Without: ``QUInt8`` activations and
    min/max ranges, the form ONNX Runtime's CPU kernels run fastest.

    An FP16 graph (``cnd-depth export --fp16``) gets float16 scales and keeps every operator that
    is not quantised in FP16, which a strongly typed TensorRT build runs as it reads; the graph
    is raised to opset :data:`QDQ_FP16_OPSET` first when it is older.

    :raises ValueError: a calibration frame failed, or not every batch was used
        (:meth:`CalibrationReader.check`).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    output_path = Path(output_path)
    model = onnx.load_model(str(onnx_path))
    with tempfile.TemporaryDirectory(prefix="cnd-qdq-", dir=output_path.parent) as workdir:
        source = Path(onnx_path)
        if _float16_graph(model) and _opset(model) < QDQ_FP16_OPSET:
            source = Path(workdir) / "opset.onnx"
            upgraded = onnx.version_converter.convert_version(model, QDQ_FP16_OPSET)
            onnx.save_model(upgraded, str(source))
        if tensorrt:
            shaped = Path(workdir) / "shapes.onnx"
            quant_pre_process(str(source), str(shaped), skip_optimization=True)
            source = shaped
        _LOGGER.info(
            "calibrating INT8 Q/DQ ranges on %d batch(es) of %d frame(s)",
            len(calibration),
            calibration.batch_size,
        )
        reader = calibration.data_reader()
        quantize_static(
            str(source),
            str(output_path),
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.Entropy if tensorrt else CalibrationMethod.MinMax,
            op_types_to_quantize=_QUANTISED_OPS,
            nodes_to_exclude=output_layer_nodes(model),
            extra_options={
                "ActivationSymmetric": tensorrt,
                "WeightSymmetric": True,
                # TensorRT fuses float biases; INT32 bias Q/DQ is not its form
                "QuantizeBias": False,
            },
        )
    reader.check()
    return output_path

