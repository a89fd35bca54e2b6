"""INT8 calibration data: frames from any dataset loader, as the network sees them.

INT8 needs the value range of every activation, measured on representative images. Both ways
TensorRT gets INT8 are fed from one :class:`CalibrationSet`:

* TensorRT 10 calibrates while it builds (``BuilderFlag.INT8`` plus an ``IInt8Calibrator`` that
  pulls :meth:`CalibrationSet.batches`, with a :class:`CalibrationCache` file so a rebuild skips
  the pass; see :mod:`cnd_depth_ros.inference.tensorrt_builder`).
* TensorRT 11 has no calibrator (strongly typed networks only): precision comes from the graph,
  so :func:`quantize_qdq` writes a Q/DQ ONNX with ONNX Runtime's static quantisation, calibrated
  on the same batches, and TensorRT builds that.

Frames are preprocessed exactly like live images (:func:`~cnd_depth_ros.inference.backend.
to_network_input`: resize to network size, RGB in [0, 1]), otherwise the measured ranges would
not be the ranges the engine meets.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from cnd_depth_ros.atomic_file import write_atomically
from cnd_depth_ros.errors import ArtifactError
from cnd_depth_ros.inference.backend import to_network_input
from cnd_depth_ros.models.artifact import ModelMetadata

if TYPE_CHECKING:
    from onnxruntime.quantization import CalibrationDataReader

    from cnd_depth_ros.training.datasets.frame import Frame

__all__ = ["CalibrationCache", "CalibrationSet", "output_layer_nodes", "quantize_qdq"]

_LOGGER = logging.getLogger(__name__)

# The encoder-decoder's operators. Left out, so left in float: the stereo matcher's MatMul,
# GatherElements, Mul and Softmax (correlation and soft-argmin) and the output head.
_QUANTISED_OPS = ["Conv", "ConvTranspose", "Add", "Clip", "Relu", "MaxPool", "Resize"]

Batch = dict[str, np.ndarray]


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
        """Each batch once, in order; a new iterator starts over."""
        for start in range(0, len(self.indices), self.batch_size):
            frames = [self.frames[i] for i in self.indices[start : start + self.batch_size]]
            batch = {"left": self._stack([frame.left for frame in frames])}
            if self.stereo:
                missing = [frame.name or "frame" for frame in frames if frame.right is None]
                if missing:
                    raise ValueError(
                        f"calibrating a stereo model needs right images; {missing[0]} has none"
                    )
                batch["right"] = self._stack([frame.right for frame in frames])  # type: ignore[misc]
            yield batch

    def data_reader(self) -> CalibrationDataReader:
        """The batches as an ONNX Runtime ``CalibrationDataReader`` (for ``quantize_static``)."""
        from onnxruntime.quantization import CalibrationDataReader

        batches = self.batches()

        class _Reader(CalibrationDataReader):
            def get_next(self) -> Batch | None:
                return next(batches, None)

        return _Reader()

    def _stack(self, images: list[np.ndarray]) -> np.ndarray:
        arrays = [to_network_input(image, self.width, self.height) for image in images]
        return np.concatenate(arrays)


class CalibrationCache:
    """TensorRT's calibration table in a file: read before calibrating, written after."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def read(self) -> bytes | None:
        """The cached table, or ``None`` when there is none yet (calibration then runs)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ArtifactError(f"{self.path}: unreadable calibration cache ({error})") from error
        if not data:
            _LOGGER.warning("%s: empty calibration cache, calibrating again", self.path)
            return None
        return data

    def write(self, data: bytes | memoryview) -> None:
        """Store the table atomically."""
        table = bytes(data)
        write_atomically(self.path, lambda temporary: temporary.write_bytes(table))
        _LOGGER.info("wrote INT8 calibration cache %s", self.path)


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
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    output_path = Path(output_path)
    source = Path(onnx_path)
    if tensorrt:
        source = output_path.with_name(f"{output_path.stem}.shapes.onnx")
        quant_pre_process(str(onnx_path), str(source), skip_optimization=True)
    _LOGGER.info(
        "calibrating INT8 Q/DQ ranges on %d batch(es) of %d frame(s)",
        len(calibration),
        calibration.batch_size,
    )
    quantize_static(
        str(source),
        str(output_path),
        calibration.data_reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=CalibrationMethod.Entropy if tensorrt else CalibrationMethod.MinMax,
        op_types_to_quantize=_QUANTISED_OPS,
        nodes_to_exclude=output_layer_nodes(onnx.load_model(str(onnx_path))),
        extra_options={
            "ActivationSymmetric": tensorrt,
            "WeightSymmetric": True,
            "QuantizeBias": False,  # TensorRT fuses float biases; INT32 bias Q/DQ is not its form
        },
    )
    if tensorrt:
        source.unlink()
    return output_path
