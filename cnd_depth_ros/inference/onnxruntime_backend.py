"""The ONNX Runtime backend: the fastest way to run a CND net on a CPU (docs/benchmarks.md).

It runs an ONNX file made by ``cnd-depth export`` (the artifact metadata rides inside it), or
exports an artifact in memory first. Sessions use every graph optimisation ONNX Runtime has and a
sequential executor with ``threads`` intra-op threads: at batch 1 the network is one chain of
convolutions, so inter-op parallelism only adds scheduling cost.

``precision="int8"`` quantises the graph statically (QDQ, unsigned 8-bit activations and signed
per-channel weights: the pairing ONNX Runtime's x86 and Arm kernels are fastest with) with
activation ranges calibrated on ``calibration`` frames; the accuracy it costs is measured in
docs/benchmarks.md. On CUDA (the CUDA execution provider, where installed) ``fp16`` runs the FP16
export.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort

from cnd_depth_ros.errors import ArtifactError, BackendError
from cnd_depth_ros.inference.backend import DepthBackend, NetworkOutputs
from cnd_depth_ros.inference.calibration import CalibrationSet, quantize_qdq
from cnd_depth_ros.inference.devices import parse_device
from cnd_depth_ros.inference.export import (
    check_network_inputs,
    embedded_metadata,
    export_onnx_model,
    load_onnx,
    metadata_at_size,
)
from cnd_depth_ros.models.artifact import ModelMetadata

if TYPE_CHECKING:
    from cnd_depth_ros.data.frame import Frame

__all__ = ["OnnxRuntimeBackend", "quantize_int8"]

_LOGGER = logging.getLogger(__name__)
_PRECISIONS = ("fp32", "fp16", "int8")


def quantize_int8(model: onnx.ModelProto, calibration: CalibrationSet) -> onnx.ModelProto:
    """A statically quantised INT8 copy of ``model`` for ONNX Runtime on the CPU, calibrated on
    ``calibration`` (:func:`~cnd_depth_ros.inference.calibration.quantize_qdq`)."""
    _LOGGER.info("quantising to INT8, calibrating on %d frame(s)", len(calibration))
    with tempfile.TemporaryDirectory(prefix="cnd-int8-") as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        onnx.save_model(model, str(source))
        quantize_qdq(source, target, calibration, tensorrt=False)
        quantised = onnx.load_model(str(target))
    del quantised.metadata_props[:]
    quantised.metadata_props.extend(model.metadata_props)
    return quantised


class OnnxRuntimeBackend(DepthBackend):
    """Runs an exported ``.onnx`` file, or an artifact exported on the fly, with ONNX Runtime.

    :param device: ``cpu``, or ``cuda``/``cuda:N`` where the CUDA execution provider is installed.
    :param precision: ``fp32``; ``fp16`` on CUDA; ``int8`` on the CPU (needs ``calibration``).
    :param threads: intra-op threads (default: ONNX Runtime's, one per physical core).
    :param height: network input height if not the artifact's (artifacts only; an ONNX file has
        static shapes).
    :param width: network input width, likewise.
    :param calibration: frames (any dataset loader) to calibrate INT8 activation ranges on.
    :param optimization: ONNX Runtime graph optimisation level: ``all``, ``extended``, ``basic``
        or ``disabled``.
    :raises ArtifactError: a missing, corrupt or truncated model file, named in the message.
    :raises ValueError: an unsupported option value.
    :raises BackendError: a device ONNX Runtime cannot use here.
    """

    name = "onnxruntime"

    _OPTIMIZATION = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
        height: int | None = None,
        width: int | None = None,
        calibration: Sequence[Frame] | None = None,
        optimization: str = "all",
    ) -> None:
        kind, index = parse_device(device)
        if precision not in _PRECISIONS:
            raise ValueError(
                f"onnxruntime precision must be one of {_PRECISIONS}, got {precision!r}"
            )
        if precision == "fp16" and kind != "cuda":
            raise ValueError("onnxruntime: fp16 needs device cuda (FP16 kernels are GPU kernels)")
        if precision == "int8" and (kind != "cpu" or not calibration):
            raise ValueError("onnxruntime: int8 runs on the CPU and needs calibration frames")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        if optimization not in self._OPTIMIZATION:
            raise ValueError(
                f"optimization must be one of {sorted(self._OPTIMIZATION)}, got {optimization!r}"
            )
        providers: list[Any] = ["CPUExecutionProvider"]
        if kind == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendError(
                    f"device {device!r}: this onnxruntime has no CUDA execution provider "
                    f"(available: {ort.get_available_providers()})"
                )
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))

        model, metadata = self._load(model_path, precision, height, width)
        super().__init__(metadata, str(model_path))
        if precision == "int8":
            assert calibration is not None
            model = quantize_int8(model, CalibrationSet.for_model(calibration, metadata))
        options = ort.SessionOptions()
        options.graph_optimization_level = self._OPTIMIZATION[optimization]
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self._session: ort.InferenceSession | None = ort.InferenceSession(
                model.SerializeToString(), sess_options=options, providers=providers
            )
        except Exception as error:  # onnxruntime raises its own untyped pybind errors
            raise ArtifactError(f"{model_path}: ONNX Runtime cannot load it ({error})") from error
        self.device = "cuda" if kind == "cuda" else "cpu"
        self.precision = precision
        self.threads = threads
        self.optimization = optimization

    @staticmethod
    def _load(
        model_path: str | os.PathLike[str], precision: str, height: int | None, width: int | None
    ) -> tuple[onnx.ModelProto, ModelMetadata]:
        """The graph to run and its metadata: the ONNX file as it is, or a fresh export."""
        if not str(model_path).endswith(".onnx"):
            fp16 = precision == "fp16"
            model = export_onnx_model(model_path, height=height, width=width, fp16=fp16)
            return model, embedded_metadata(model, str(model_path))
        model, metadata = load_onnx(model_path)
        if metadata_at_size(metadata, width, height) is not metadata:
            raise ValueError(
                f"{model_path} has static shapes {metadata.input_width}x{metadata.input_height}; "
                f"export it again for {width}x{height}"
            )
        return model, metadata

    def run(self, left: np.ndarray, right: np.ndarray | None) -> NetworkOutputs:
        if self._session is None:
            raise BackendError(f"{self.source}: the onnxruntime backend is closed")
        feed = check_network_inputs(self.metadata, left, right)
        try:
            outputs = self._session.run(None, feed)
        except Exception as error:  # onnxruntime's pybind errors (shape, dtype, provider)
            raise BackendError(f"{self.source}: onnxruntime failed: {error}") from error
        names = [output.name for output in self._session.get_outputs()]
        return {
            name: np.asarray(output, dtype=np.float32)
            for name, output in zip(names, outputs, strict=True)
        }

    def info(self) -> dict[str, Any]:
        providers = self._session.get_providers() if self._session is not None else []
        return {
            **super().info(),
            "device": self.device,
            "precision": self.precision,
            "threads": self.threads,
            "optimization": self.optimization,
            "providers": providers,
            "onnxruntime": ort.__version__,
        }

    def close(self) -> None:
        self._session = None
