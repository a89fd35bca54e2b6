"""The TensorRT backend: a serialized engine run asynchronously on its own CUDA stream.

``model_path`` is an artifact or ONNX export (the engine comes from the engine cache, built on
first use for the asked input shape: minutes on a Jetson, so ``cnd-depth build-engine`` does it
ahead of time) or an ``.engine`` file with its sidecar (checked, never rebuilt: a stale one, one
for another shape, or one TensorRT cannot deserialize is an error). A cached engine TensorRT
cannot deserialize is rebuilt from the model. Execution uses TensorRT 10/11's name-based I/O:
device buffers are allocated once with torch (no pycuda), their addresses bound with
``set_tensor_address``, and each frame is pinned-host -> device copy, ``execute_async_v3``,
device -> pinned-host copy on one stream, synchronised before returning.

Importing this module raises :class:`ImportError` where TensorRT cannot run, which is how the
backend registry learns it is unavailable.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorrt as trt
import torch

from cnd_depth_ros.errors import ArtifactError, BackendError, CndDepthError
from cnd_depth_ros.inference.backend import DepthBackend, NetworkOutputs
from cnd_depth_ros.inference.devices import parse_device
from cnd_depth_ros.inference.engine_cache import (
    ENGINE_SUFFIX,
    EngineCache,
    EngineRecord,
    StaleEngineError,
    load_engine_file,
)
from cnd_depth_ros.inference.export import CONFIDENCE_NAME, INPUT_NAMES, OUTPUT_NAME
from cnd_depth_ros.inference.tensorrt_builder import (
    DEFAULT_WORKSPACE_MB,
    build_target,
    cached_engine,
    tensorrt_logger,
)

if TYPE_CHECKING:
    from cnd_depth_ros.data.frame import Frame

__all__ = ["TensorRTBackend"]

_LOGGER = logging.getLogger(__name__)

#: The I/O types this backend binds; an export keeps float32 I/O even when FP16 inside.
_TORCH_DTYPES = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}


def _shape(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(dims[index] for index in range(len(dims)))


@contextmanager
def _on_cuda(where: str, index: int) -> Iterator[None]:
    """Run the block on CUDA device ``index``; torch's and TensorRT's runtime errors there (no
    CUDA, a busy device, out of memory) become the package's error, naming ``where``."""
    try:
        with torch.cuda.device(index):
            yield
    except CndDepthError:
        raise
    except RuntimeError as error:
        raise BackendError(f"{where}: TensorRT cannot run on cuda:{index}: {error}") from error


class TensorRTBackend(DepthBackend):
    """Runs a TensorRT engine on a CUDA GPU (``device="cuda"`` or ``"cuda:N"``).

    ``precision`` (``fp32``, ``fp16``, ``int8``; default: FP16 where the model can be built so,
    see :func:`~cnd_depth_ros.inference.engine_plan.default_precision`) and ``height`` /
    ``width`` (default: the model's size) pick the engine to build or load from the cache, one
    per shape; an ``.engine`` file has its own, which must match them when given. INT8 builds
    need ``calibration`` (any dataset loader's frames); without, the newest cached INT8 engine
    is loaded. ``threads`` is accepted like every backend's and unused: TensorRT runs on the GPU.

    :raises ArtifactError: a missing, corrupt, truncated or stale engine or model, naming the file.
    :raises ValueError: INT8 without calibration frames and nothing cached, or a bad option.
    :raises BackendError: no CUDA device, or TensorRT fails to build or load.
    """

    name = "tensorrt"

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        device: str = "cuda",
        precision: str | None = None,
        threads: int | None = None,
        height: int | None = None,
        width: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        calibration: Sequence[Frame] | None = None,
        workspace_mb: int = DEFAULT_WORKSPACE_MB,
    ) -> None:
        kind, index = parse_device(device)
        if kind != "cuda":
            raise ValueError(f"the TensorRT backend runs on CUDA devices only, got {device!r}")
        del threads  # see the class docstring
        path = Path(model_path)
        self._index = index
        self._engine_path = path
        with _on_cuda(str(path), index):
            self._runtime: trt.Runtime | None = trt.Runtime(tensorrt_logger())
        if path.suffix == ENGINE_SUFFIX:
            engine, self.record = self._engine_file(path, precision, height, width)
        else:
            cached = cached_engine(
                path,
                precision=precision,
                cache=EngineCache(cache_dir),
                calibration=calibration,
                height=height,
                width=width,
                workspace_mb=workspace_mb,
                device=index,
                deserialize=self._deserialize,
            )
            self._engine_path, engine, self.record = cached.path, cached.loaded, cached.record
        super().__init__(self.record.metadata, str(model_path))
        self._engine: trt.ICudaEngine | None = engine
        self._output_names: tuple[str, ...] = (OUTPUT_NAME,)
        self._check_io(engine)
        with _on_cuda(str(self._engine_path), index):
            context = engine.create_execution_context()
            if context is None:
                raise BackendError(f"{self._engine_path}: no execution context (GPU memory?)")
            self._context: trt.IExecutionContext | None = context
            self._stream = torch.cuda.Stream()
            self._device: dict[str, torch.Tensor] = {}
            self._host: dict[str, torch.Tensor] = {}
            for name in self._io_names:
                shape = _shape(engine.get_tensor_shape(name))
                dtype = _TORCH_DTYPES[engine.get_tensor_dtype(name)]
                self._device[name] = torch.empty(shape, dtype=dtype, device=f"cuda:{index}")
                self._host[name] = torch.empty(shape, dtype=dtype).pin_memory()
                if not context.set_tensor_address(name, self._device[name].data_ptr()):
                    raise BackendError(f"{self._engine_path}: cannot bind tensor {name!r}")
        _LOGGER.info("TensorRT engine %s ready (%s)", self._engine_path, self.record.key.precision)

    def _deserialize(self, data: bytes) -> trt.ICudaEngine | None:
        """TensorRT's engine from ``data``, or ``None`` when it refuses the plan."""
        assert self._runtime is not None  # set before any engine is looked at
        with _on_cuda(str(self._engine_path), self._index):
            return self._runtime.deserialize_cuda_engine(data)

    def _engine_file(
        self, path: Path, precision: str | None, height: int | None, width: int | None
    ) -> tuple[trt.ICudaEngine, EngineRecord]:
        """An explicit engine file, checked: stale, for another shape or precision, or refused
        by TensorRT is an error (never rebuilt: the user chose this file)."""
        if not path.is_file():
            raise ArtifactError(f"{path}: no such engine file")
        data, record = load_engine_file(path, target=build_target(self._index))
        key = record.key
        size = (width or key.width, height or key.height)
        if size != (key.width, key.height):
            raise StaleEngineError(
                f"{path} is built for {key.width}x{key.height}, not {size[0]}x{size[1]}: an "
                "engine runs only at the input shape it was built for; build one with "
                f"`cnd-depth build-engine --model MODEL --height {size[1]} --width {size[0]} "
                "--engine OUT`"
            )
        if precision is not None and precision != key.precision:
            raise StaleEngineError(f"{path} is a {key.precision} engine, not {precision}")
        engine = self._deserialize(data)
        if engine is None:
            raise ArtifactError(
                f"{path}: TensorRT cannot deserialize this engine (its reasons are logged; an "
                "engine from another TensorRT build must be built again here)"
            )
        return engine, record

    @property
    def _input_names(self) -> tuple[str, ...]:
        return INPUT_NAMES[: 2 if self.metadata.stereo else 1]

    @property
    def _io_names(self) -> tuple[str, ...]:
        return (*self._input_names, *self._output_names)

    def _check_io(self, engine: trt.ICudaEngine) -> None:
        """The engine's tensors must be what the metadata promises, or frames would be misread."""
        actual: dict[str, tuple[str, tuple[int, ...]]] = {}
        for position in range(engine.num_io_tensors):
            name = engine.get_tensor_name(position)
            mode = engine.get_tensor_mode(name)
            actual[name] = (
                "input" if mode == trt.TensorIOMode.INPUT else "output",
                _shape(engine.get_tensor_shape(name)),
            )
            dtype = engine.get_tensor_dtype(name)
            if dtype not in _TORCH_DTYPES:
                raise ArtifactError(
                    f"{self._engine_path}: tensor {name!r} is {dtype}; this backend binds "
                    "FLOAT and HALF inputs and outputs (`cnd-depth export` keeps float32 I/O)"
                )
        height, width = self.metadata.input_height, self.metadata.input_width
        expected = {name: ("input", (1, 3, height, width)) for name in self._input_names}
        # Engines built from exports older than the confidence output have only depth.
        outputs = (OUTPUT_NAME, CONFIDENCE_NAME) if CONFIDENCE_NAME in actual else (OUTPUT_NAME,)
        expected.update({name: ("output", (1, 1, height, width)) for name in outputs})
        if actual != expected or (CONFIDENCE_NAME in outputs and not self.metadata.stereo):
            raise ArtifactError(
                f"{self._engine_path}: engine tensors {actual} differ from the model's {expected}"
            )
        self._output_names = outputs

    def run(self, left: np.ndarray, right: np.ndarray | None) -> NetworkOutputs:
        if self._context is None:
            raise BackendError(f"{self._engine_path}: the backend is closed")
        arrays = {"left": left, "right": right}
        with torch.cuda.device(self._index), torch.cuda.stream(self._stream):
            for name in self._input_names:
                array = arrays[name]
                host = self._host[name]
                if array is None or array.shape != tuple(host.shape):
                    shape = None if array is None else array.shape
                    raise ValueError(f"input {name!r} must be {tuple(host.shape)}, got {shape}")
                host.copy_(torch.from_numpy(array))
                self._device[name].copy_(host, non_blocking=True)
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise BackendError(f"{self._engine_path}: TensorRT execution failed (see log)")
            for name in self._output_names:
                self._host[name].copy_(self._device[name], non_blocking=True)
        self._stream.synchronize()
        return {
            name: self._host[name].numpy().astype(np.float32, copy=True)
            for name in self._output_names
        }

    def info(self) -> dict[str, Any]:
        key = self.record.key
        return {
            **super().info(),
            "precision": key.precision,
            "engine": str(self._engine_path),
            "tensorrt": key.target.tensorrt_version,
            "gpu": key.target.gpu_name,
            "engine_build_seconds": self.record.build_seconds,
        }

    def close(self) -> None:
        """Free the context, engine and buffers, in that order (the context uses the engine)."""
        self._context = None
        self._engine = None
        self._runtime = None
        self._device = {}
        self._host = {}
