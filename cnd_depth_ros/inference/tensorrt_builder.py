"""Building TensorRT engines: ONNX in, serialized engine out, with progress and a timing cache.
The thin layer over the TensorRT 10/11 Python API; what to build is decided by
:mod:`~cnd_depth_ros.inference.engine_plan` (INT8 included: a Q/DQ graph, no calibrator), where
it is stored by :mod:`~cnd_depth_ros.inference.engine_cache`.

Importing this module raises :class:`ImportError` when TensorRT cannot run here (the
``tensorrt-stubs`` package makes ``import tensorrt`` succeed without a runtime, hence the check).
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tensorrt as trt
import torch

from cnd_depth_ros.atomic_file import write_atomically
from cnd_depth_ros.errors import ArtifactError, BackendError
from cnd_depth_ros.inference.calibration import CalibrationSet
from cnd_depth_ros.inference.engine_cache import BuildTarget, CachedEngine, EngineCache, EngineKey
from cnd_depth_ros.inference.engine_plan import (
    ModelSource,
    PrecisionPlan,
    default_precision,
    export_recipe,
    plan_precision,
    prepare_onnx,
)

if TYPE_CHECKING:
    from cnd_depth_ros.data.frame import Frame

if not hasattr(trt, "Builder"):
    raise ImportError("the 'tensorrt' package here has no runtime (only type stubs are installed)")

__all__ = [
    "build_serialized_engine",
    "build_target",
    "cached_engine",
    "tensorrt_logger",
    "weakly_typed",
]

_LOGGER = logging.getLogger(__name__)

#: How often a build without progress callbacks logs that it is still running.
HEARTBEAT_SECONDS = 15.0
DEFAULT_WORKSPACE_MB = 1024
#: What TensorRT's errors say when a build runs out of tactic or GPU memory ("could not find any
#: implementation ... due to insufficient workspace", "Requested amount of GPU memory ... could
#: not be allocated", "Error Code 2: OutOfMemory").
_OUT_OF_MEMORY = ("insufficient workspace", "insufficient memory", "out of memory",
                  "outofmemory", "could not be allocated")


class _LoggingBridge(trt.ILogger):
    """TensorRT's messages into Python logging (TensorRT's own Logger prints to stdout); errors
    also go to every open :meth:`errors` list, so a failed build can say why."""

    _LEVELS = {
        trt.ILogger.INTERNAL_ERROR: logging.CRITICAL,
        trt.ILogger.ERROR: logging.ERROR,
        trt.ILogger.WARNING: logging.WARNING,
        trt.ILogger.INFO: logging.DEBUG,
        trt.ILogger.VERBOSE: logging.DEBUG,
    }

    def __init__(self) -> None:
        trt.ILogger.__init__(self)
        self._lock = threading.Lock()
        self._listeners: list[list[str]] = []

    def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
        level = self._LEVELS.get(severity, logging.INFO)
        _LOGGER.log(level, "TensorRT: %s", msg)
        if level >= logging.ERROR:
            with self._lock:
                for listener in self._listeners:
                    listener.append(msg)

    @contextmanager
    def errors(self) -> Iterator[list[str]]:
        """The error messages TensorRT logs (from any thread) while the block runs."""
        collected: list[str] = []
        with self._lock:
            self._listeners.append(collected)
        try:
            yield collected
        finally:
            with self._lock:
                self._listeners.remove(collected)


@functools.cache
def tensorrt_logger() -> _LoggingBridge:
    """The one logger of the process: TensorRT warns when builders and runtimes get different
    ones."""
    return _LoggingBridge()


def weakly_typed() -> bool:
    """Whether this TensorRT still has the precision builder flags (10.x; removed in 11.x)."""
    return hasattr(trt.BuilderFlag, "FP16") and hasattr(trt.BuilderFlag, "INT8")


def build_target(device: int = 0) -> BuildTarget:
    """This machine's TensorRT version and GPU, the runtime half of every engine key.

    :raises BackendError: no CUDA device (device buffers and the stream come from torch).
    """
    if not torch.cuda.is_available() or device >= torch.cuda.device_count():
        raise BackendError(
            f"TensorRT needs CUDA device {device}, and torch sees "
            f"{torch.cuda.device_count() if torch.cuda.is_available() else 'no CUDA device'}"
        )
    properties = torch.cuda.get_device_properties(device)
    return BuildTarget(
        trt.__version__,
        properties.name,
        f"{properties.major}.{properties.minor}",
        properties.multi_processor_count,
        round(properties.total_memory / 2**30),
    )


@contextmanager
def _heartbeat(what: str, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Log the elapsed time every ``every`` seconds until the block ends."""
    started = time.monotonic()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every):
            _LOGGER.info("%s: still working, %.0f s so far", what, time.monotonic() - started)

    thread = threading.Thread(target=beat, name="tensorrt-build-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


# TensorRT 10.0 added IProgressMonitor; builds elsewhere get only the heartbeat.
if hasattr(trt, "IProgressMonitor"):

    class _ProgressLog(trt.IProgressMonitor):
        """Logs each optimiser phase and its steps, so a minutes-long build shows it is alive.

        TensorRT calls this from several threads; logging is thread-safe and the step counters are
        only read for the message.
        """

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._steps: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self._steps[phase_name] = num_steps
            indent = "  " if parent_phase else ""
            _LOGGER.info("build: %s%s (%d steps)", indent, phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            total = self._steps.get(phase_name, 0)
            if total >= 10 and (step + 1) % max(1, total // 10) == 0:
                _LOGGER.info("build: %s %d/%d", phase_name, step + 1, total)
            return True

        def phase_finish(self, phase_name: str) -> None:
            self._steps.pop(phase_name, None)


def _parse(network: trt.INetworkDefinition, onnx_path: Path) -> trt.OnnxParser:
    parser = trt.OnnxParser(network, tensorrt_logger())
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise ArtifactError(f"{onnx_path}: TensorRT cannot parse this ONNX file: {errors}")
    return parser


def _attach_timing_cache(config: trt.IBuilderConfig, path: Path) -> trt.ITimingCache:
    """Tactic timings from earlier builds on this runtime: later builds skip most measuring. A
    file TensorRT cannot read (``create_timing_cache`` gives ``None``) or rejects is replaced by
    an empty cache, saved over it after the build."""
    data = b""
    if path.is_file():
        data = path.read_bytes()
        _LOGGER.info("reusing timing cache %s (%d bytes)", path, len(data))
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, False):
        _LOGGER.warning("%s: timing cache unreadable or rejected by TensorRT, starting an empty "
                        "one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def _save_timing_cache(config: trt.IBuilderConfig, path: Path) -> None:
    data = bytes(config.get_timing_cache().serialize())
    write_atomically(path, lambda temporary: temporary.write_bytes(data))


def build_serialized_engine(
    onnx_path: Path,
    plan: PrecisionPlan,
    *,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    timing_cache: Path | None = None,
) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine as ``plan`` says.

    :raises ArtifactError: TensorRT cannot parse the ONNX file.
    :raises BackendError: the build fails (TensorRT's reasons are in the log); one that ran out
        of memory names the workspace setting.
    """
    if workspace_mb <= 0:
        raise ValueError(f"workspace must be positive, got {workspace_mb} MB")
    builder = trt.Builder(tensorrt_logger())
    flags = 0
    if plan.strongly_typed:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = _parse(network, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if hasattr(trt, "IProgressMonitor"):
        config.progress_monitor = _ProgressLog()
    if timing_cache is not None:
        _attach_timing_cache(config, timing_cache)
    with _heartbeat(f"building {onnx_path.name}"), tensorrt_logger().errors() as errors:
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        memory = [line for line in errors if any(sign in line.lower() for sign in _OUT_OF_MEMORY)]
        if memory:
            raise BackendError(
                f"TensorRT ran out of memory building {onnx_path} ({memory[0]}). The tactic "
                f"workspace is {workspace_mb} MB (build-engine --workspace-mb, the backend's "
                "workspace_mb): raise it if TensorRT found no implementation within it, lower "
                "it if the GPU itself ran out (a Jetson's GPU shares the system memory: close "
                "other programs too)"
            )
        raise BackendError(f"TensorRT could not build {onnx_path} (its errors are logged above)")
    if timing_cache is not None:
        _save_timing_cache(config, timing_cache)
    del parser  # the parser owns the weights until the build is done
    return bytes(serialized)


def cached_engine(
    model: str | os.PathLike[str],
    *,
    precision: str | None = None,
    cache: EngineCache | None = None,
    calibration: Sequence[Frame] | None = None,
    max_calibration_frames: int = 256,
    height: int | None = None,
    width: int | None = None,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    device: int = 0,
    rebuild: bool = False,
    deserialize: Callable[[bytes], Any] | None = None,
) -> CachedEngine:
    """The engine of ``model`` (artifact or ONNX export) at ``height`` x ``width`` (default: the
    model's size; one engine per shape) for this TensorRT and GPU: from the cache, or built now
    (with progress in the log) and cached.

    ``precision`` defaults to :func:`~cnd_depth_ros.inference.engine_plan.default_precision`.
    INT8 builds calibrate on ``calibration`` (any dataset loader's frames, at most
    ``max_calibration_frames`` spread over them); without frames, the newest cached INT8 engine
    of the model at that shape is used. ``deserialize`` (the backend's TensorRT runtime) turns
    the bytes into an engine, or gives ``None`` for a plan it refuses: a refused cached engine is
    rebuilt (:meth:`EngineCache.load_or_build`).

    :raises ArtifactError: a missing or corrupt model, or an ONNX file TensorRT cannot parse.
    :raises ValueError: INT8 without calibration frames and no cached INT8 engine, a failing
        calibration frame, or a bad size or precision.
    :raises BackendError: no CUDA device, or the build fails.
    """
    cache = cache or EngineCache()
    source = ModelSource.open(model, height=height, width=width)
    weak = weakly_typed()
    precision = precision or default_precision(source, weakly_typed=weak)
    plan = plan_precision(precision, weakly_typed=weak)
    metadata = source.metadata
    calibration_set = None
    if plan.needs_calibration and calibration is not None:
        calibration_set = CalibrationSet.for_model(
            calibration, metadata, max_frames=max_calibration_frames
        )
    key = EngineKey(
        source.sha256,
        precision,
        metadata.input_height,
        metadata.input_width,
        build_target(device),
        export_recipe(source, plan),
        calibration_set.fingerprint() if calibration_set is not None else "",
    )

    def build() -> bytes:
        with tempfile.TemporaryDirectory(prefix="cnd-depth-engine-") as workdir:
            onnx_path = prepare_onnx(source, plan, Path(workdir), calibration_set)
            with torch.cuda.device(device):
                return build_serialized_engine(
                    onnx_path,
                    plan,
                    workspace_mb=workspace_mb,
                    timing_cache=cache.timing_cache_path(key.target),
                )

    if plan.needs_calibration and calibration_set is None:
        calibrated = cache.newest_calibrated(key)
        if calibrated is None:
            raise ValueError(
                f"INT8 needs calibration images: no INT8 engine of {source.path} at "
                f"{metadata.input_width}x{metadata.input_height} is cached in {cache.root} for "
                "this TensorRT and GPU; give a dataset (--calib-data KIND:ROOT)"
            )
        _LOGGER.info("no calibration data given: INT8 engine calibrated on data %s",
                     calibrated.calibration[:12])
        key = calibrated
    return cache.load_or_build(
        key,
        build,
        metadata=metadata,
        source=str(source.path),
        rebuild=rebuild,
        accept=deserialize or (lambda data: data),
    )
