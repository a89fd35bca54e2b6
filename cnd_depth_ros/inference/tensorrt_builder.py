"""Building TensorRT engines: ONNX in, serialized engine out, with progress, a timing cache and
INT8 calibration. The thin layer over the TensorRT 10/11 Python API; what to build is decided by
:mod:`~cnd_depth_ros.inference.engine_plan`, where it is stored by
:mod:`~cnd_depth_ros.inference.engine_cache`.

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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import tensorrt as trt
import torch

from cnd_depth_ros.atomic_file import write_atomically
from cnd_depth_ros.errors import ArtifactError, BackendError
from cnd_depth_ros.inference.calibration import CalibrationCache, CalibrationSet
from cnd_depth_ros.inference.engine_cache import BuildTarget, EngineCache, EngineKey, EngineRecord
from cnd_depth_ros.inference.engine_plan import (
    ModelSource,
    PrecisionPlan,
    plan_precision,
    prepare_onnx,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from cnd_depth_ros.training.datasets.frame import Frame

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


class _LoggingBridge(trt.ILogger):
    """TensorRT's messages into Python logging (TensorRT's own Logger prints to stdout)."""

    _LEVELS = {
        trt.ILogger.INTERNAL_ERROR: logging.CRITICAL,
        trt.ILogger.ERROR: logging.ERROR,
        trt.ILogger.WARNING: logging.WARNING,
        trt.ILogger.INFO: logging.DEBUG,
        trt.ILogger.VERBOSE: logging.DEBUG,
    }

    def __init__(self) -> None:
        trt.ILogger.__init__(self)

    def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
        _LOGGER.log(self._LEVELS.get(severity, logging.INFO), "TensorRT: %s", msg)


@functools.cache
def tensorrt_logger() -> trt.ILogger:
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
    major, minor = torch.cuda.get_device_capability(device)
    return BuildTarget(trt.__version__, torch.cuda.get_device_name(device), f"{major}.{minor}")


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


# Calibrators are deprecated since TensorRT 10.1 and gone with weak typing in 11.x.
if hasattr(trt, "IInt8EntropyCalibrator2"):

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """TensorRT 10's INT8 calibrator over a :class:`CalibrationSet`, with a cache file.

        Batches are copied into device buffers allocated once (TensorRT reads them by address).
        """

        def __init__(
            self, calibration: CalibrationSet, cache: CalibrationCache, device: int
        ) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._calibration = calibration
            self._cache = cache
            self._batches = calibration.batches()
            shape = (calibration.batch_size, 3, calibration.height, calibration.width)
            self._device = {
                name: torch.empty(shape, dtype=torch.float32, device=f"cuda:{device}")
                for name in calibration.input_names
            }
            self._done = 0

        def get_batch_size(self) -> int:
            return self._calibration.batch_size

        def get_batch(self, names: list[str]) -> list[int]:
            batch = next(self._batches, None)
            if batch is None:
                return []  # no more batches
            for name in names:
                self._device[name].copy_(torch.from_numpy(batch[name]))
            self._done += 1
            _LOGGER.info("INT8 calibration batch %d/%d", self._done, len(self._calibration))
            return [self._device[name].data_ptr() for name in names]

        # The stubs say Buffer; TensorRT's docs: return None when there is no cache to read.
        def read_calibration_cache(self) -> bytes | None:  # type: ignore[override]
            return self._cache.read()

        def write_calibration_cache(self, cache: Buffer) -> None:
            self._cache.write(memoryview(cache))


def _parse(network: trt.INetworkDefinition, onnx_path: Path) -> trt.OnnxParser:
    parser = trt.OnnxParser(network, tensorrt_logger())
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise ArtifactError(f"{onnx_path}: TensorRT cannot parse this ONNX file: {errors}")
    return parser


def _attach_timing_cache(config: trt.IBuilderConfig, path: Path) -> trt.ITimingCache:
    """Tactic timings from earlier builds on this runtime: later builds skip most measuring."""
    data = b""
    if path.is_file():
        data = path.read_bytes()
        _LOGGER.info("reusing timing cache %s (%d bytes)", path, len(data))
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):
        _LOGGER.warning("%s: timing cache rejected by TensorRT, starting an empty one", path)
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
    calibrator: trt.IInt8Calibrator | None = None,
) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine as ``plan`` says.

    :raises ArtifactError: TensorRT cannot parse the ONNX file.
    :raises BackendError: the build fails (TensorRT's reasons are in the log).
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
    if plan.calibrator:
        if calibrator is None:
            raise ValueError(f"a {plan.precision} build on this TensorRT needs a calibrator")
        config.int8_calibrator = calibrator
    if hasattr(trt, "IProgressMonitor"):
        config.progress_monitor = _ProgressLog()
    if timing_cache is not None:
        _attach_timing_cache(config, timing_cache)
    with _heartbeat(f"building {onnx_path.name}"):
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT could not build {onnx_path} (its errors are logged above)")
    if timing_cache is not None:
        _save_timing_cache(config, timing_cache)
    del parser  # the parser owns the weights until the build is done
    return bytes(serialized)


def cached_engine(
    model: str | os.PathLike[str],
    *,
    precision: str = "fp16",
    cache: EngineCache | None = None,
    calibration_frames: Sequence[Frame] | None = None,
    calibration_id: str = "",
    height: int | None = None,
    width: int | None = None,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    device: int = 0,
    rebuild: bool = False,
) -> tuple[Path, bytes, EngineRecord]:
    """The engine of ``model`` (artifact or ONNX export) for this TensorRT and GPU: from the
    cache, or built now (with progress in the log) and cached.

    ``calibration_frames`` (any dataset loader's frames; ``calibration_id`` names the set in
    the calibration-cache file name) are needed for INT8.

    :raises ArtifactError: a missing or corrupt model, or an ONNX file TensorRT cannot parse.
    :raises ValueError: INT8 without calibration frames, or a bad size or precision.
    :raises BackendError: no CUDA device, or the build fails.
    """
    cache = cache or EngineCache()
    source = ModelSource.open(model, height=height, width=width)
    plan = plan_precision(precision, weakly_typed=weakly_typed())
    metadata = source.metadata
    key = EngineKey(
        source.sha256, precision, metadata.input_height, metadata.input_width, build_target(device)
    )
    calibration = None
    if plan.needs_calibration and calibration_frames is not None:
        calibration = CalibrationSet.for_model(calibration_frames, metadata)

    def build() -> bytes:
        with (
            tempfile.TemporaryDirectory(prefix="cnd-depth-engine-") as workdir,
            torch.cuda.device(device),
        ):
            onnx_path = prepare_onnx(source, plan, Path(workdir), calibration)
            calibrator = None
            if plan.calibrator and calibration is not None:
                table = CalibrationCache(cache.calibration_cache_path(key, calibration_id))
                calibrator = _EntropyCalibrator(calibration, table, device)
            return build_serialized_engine(
                onnx_path,
                plan,
                workspace_mb=workspace_mb,
                timing_cache=cache.timing_cache_path(key.target),
                calibrator=calibrator,
            )

    # Without calibration frames an INT8 engine still loads from the cache; building one
    # raises in prepare_onnx, naming the missing --calib-data.
    return cache.load_or_build(
        key, build, metadata=metadata, source=str(source.path), rebuild=rebuild
    )
