"""The PyTorch backend: the reference every other backend is tested against.

On the CPU it runs the artifact's network as it is, in FP32. On CUDA it is built for latency at
batch 1, where a small network is bound by kernel launches rather than arithmetic: FP16 weights
and activations (``precision="fp16"``), inputs staged through pinned host memory so the copies
are asynchronous, and the whole forward pass captured once as a CUDA graph
(``torch.cuda.CUDAGraph``) and replayed, one launch per frame.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from cnd_depth_ros.errors import ArtifactError, BackendError
from cnd_depth_ros.inference.backend import DepthBackend, NetworkOutputs
from cnd_depth_ros.inference.devices import parse_device
from cnd_depth_ros.inference.export import (
    CONFIDENCE_NAME,
    OUTPUT_NAME,
    check_network_inputs,
    metadata_at_size,
)
from cnd_depth_ros.models.artifact import load_artifact
from cnd_depth_ros.models.cnd import CNDStereo

__all__ = ["TorchBackend"]

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def _torch_device(device: str) -> torch.device:
    """The torch device for the ``device`` option, checked against this machine.

    :raises ValueError: an unknown device string.
    :raises BackendError: CUDA asked for where there is none.
    """
    kind, index = parse_device(device)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise BackendError(f"device {device!r} asked for, but CUDA is not available here")
        if index >= torch.cuda.device_count():
            raise BackendError(
                f"device {device!r} asked for, but there are {torch.cuda.device_count()} GPUs"
            )
    return torch.device(kind, index) if kind == "cuda" else torch.device("cpu")


class TorchBackend(DepthBackend):
    """Runs an artifact (path or shipped name) with PyTorch.

    :param device: ``cpu``, ``cuda`` or ``cuda:N``.
    :param precision: ``fp32``, or ``fp16`` on CUDA.
    :param threads: CPU threads (``torch.set_num_threads``: process-wide).
    :param height: network input height if not the artifact's (multiple of 16).
    :param width: network input width if not the artifact's (multiple of 16).
    :param cuda_graphs: on CUDA, capture the forward pass as a CUDA graph on the first frame.
    :raises ArtifactError: ``model_path`` is not a loadable artifact (an ``.onnx`` file included).
    :raises ValueError: an unsupported device, precision or size.
    :raises BackendError: CUDA asked for where there is none.
    """

    name = "torch"

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
        height: int | None = None,
        width: int | None = None,
        cuda_graphs: bool = True,
    ) -> None:
        if str(model_path).endswith(".onnx"):
            raise ArtifactError(
                f"{model_path}: the torch backend runs model artifacts, not ONNX files "
                "(use the onnxruntime or tensorrt backend)"
            )
        if precision not in _DTYPES:
            raise ValueError(f"torch backend precision must be fp32 or fp16, got {precision!r}")
        self.device = _torch_device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("torch backend: fp16 needs a CUDA device")
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be at least 1, got {threads}")
            torch.set_num_threads(threads)
        model, metadata = load_artifact(model_path, device=self.device)
        super().__init__(metadata_at_size(metadata, width, height), str(model_path))
        self.precision = precision
        self._dtype = _DTYPES[precision]
        self._model = model.to(self._dtype)
        self._use_graph = cuda_graphs and self.device.type == "cuda"
        self._graph: torch.cuda.CUDAGraph | None = None
        count = 2 if metadata.stereo else 1
        shape = (1, 3, self.metadata.input_height, self.metadata.input_width)
        if self.device.type == "cuda":
            # Static buffers: the CUDA graph reads and writes fixed addresses, and pinned host
            # memory lets the host<->device copies run asynchronously on our stream.
            self._stream = torch.cuda.Stream(self.device)
            self._host_inputs = [torch.empty(shape, pin_memory=True) for _ in range(count)]
            self._device_inputs = [
                torch.empty(shape, dtype=self._dtype, device=self.device) for _ in range(count)
            ]
            self._host_outputs = {
                name: torch.empty((1, 1, *shape[2:]), pin_memory=True)
                for name in self._output_names
            }
            self._device_outputs: dict[str, torch.Tensor] = {}

    @property
    def _output_names(self) -> tuple[str, ...]:
        return (OUTPUT_NAME, CONFIDENCE_NAME) if self.metadata.stereo else (OUTPUT_NAME,)

    def _forward(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """The graph's outputs by name, as the ONNX export has them."""
        if isinstance(self._model, CNDStereo):
            outputs = self._model.predict(*inputs)
            return {OUTPUT_NAME: outputs["disparity"], CONFIDENCE_NAME: outputs["confidence"]}
        return {OUTPUT_NAME: self._model(*inputs)}

    def run(self, left: np.ndarray, right: np.ndarray | None) -> NetworkOutputs:
        arrays = list(check_network_inputs(self.metadata, left, right).values())
        if self.device.type == "cpu":
            with torch.inference_mode():
                outputs = self._forward(*(torch.from_numpy(array) for array in arrays))
            return {name: output.numpy() for name, output in outputs.items()}
        return self._run_cuda(arrays)

    def _run_cuda(self, arrays: list[np.ndarray]) -> NetworkOutputs:
        for host, array in zip(self._host_inputs, arrays, strict=True):
            host.numpy()[...] = array
        if self._use_graph and self._graph is None:
            self._capture()
        with torch.cuda.stream(self._stream), torch.inference_mode():
            for device_input, host in zip(self._device_inputs, self._host_inputs, strict=True):
                device_input.copy_(host, non_blocking=True)
            if self._graph is not None:
                self._graph.replay()
            else:
                self._device_outputs = self._forward(*self._device_inputs)
            for name, host in self._host_outputs.items():
                host.copy_(self._device_outputs[name], non_blocking=True)
        self._stream.synchronize()
        return {name: host.numpy().copy() for name, host in self._host_outputs.items()}

    def _capture(self) -> None:
        """Record one forward pass on the static buffers (after warm-up iterations on a side
        stream, as CUDA graph capture requires)."""
        with torch.cuda.stream(self._stream), torch.inference_mode():
            for _ in range(3):
                self._forward(*self._device_inputs)
        self._stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, stream=self._stream):
            self._device_outputs = self._forward(*self._device_inputs)
        self._graph = graph

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "device": str(self.device),
            "precision": self.precision,
            "cuda_graph": self._use_graph,
            "threads": torch.get_num_threads(),
        }

    def close(self) -> None:
        self._graph = None
        if self.device.type == "cuda":
            self._device_outputs = {}
            torch.cuda.empty_cache()
