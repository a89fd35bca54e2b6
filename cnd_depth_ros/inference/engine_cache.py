"""Where TensorRT engines live, what each was built from, and whether it may be loaded.

A serialized engine only runs on the TensorRT version and the GPU model that built it, and a
first build on a Jetson takes minutes, so engines are cached. The cache key is everything the
engine depends on: the model (SHA-256 of the artifact's weights, or of the ONNX file), the
export recipe (the code and package versions that turn the model into the graph TensorRT
parses), the INT8 calibration data, the TensorRT version, the GPU (name, compute capability,
multiprocessor count and memory: an AGX Orin and an Orin Nano share the first two), the
precision and the input shape. Each ``NAME.engine`` has a sidecar ``NAME.json``
(:class:`EngineRecord`) with the key, the artifact metadata (so an engine alone is a usable
model), the engine's SHA-256 recorded at build time, and the build time. Loading checks the
sidecar before TensorRT sees a byte: a truncated or altered file, or one built for something
else, is refused with the file and the reason.

:meth:`EngineCache.load_or_build` holds a lock file per engine from the check to the save, so a
node starting while ``cnd-depth build-engine`` builds the same engine waits for it and loads it,
instead of building it a second time or reading an engine and a sidecar from different builds.

Nothing here imports TensorRT: the whole module runs in the tests on machines without a GPU.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cnd_depth_ros.atomic_file import write_atomically
from cnd_depth_ros.errors import ArtifactError, BackendError
from cnd_depth_ros.models.artifact import ModelMetadata, check_json_format

__all__ = [
    "CACHE_ENV",
    "ENGINE_SUFFIX",
    "PRECISIONS",
    "BuildTarget",
    "CachedEngine",
    "EngineCache",
    "EngineKey",
    "EngineRecord",
    "StaleEngineError",
    "copy_engine_file",
    "default_cache_dir",
    "file_sha256",
    "load_engine_file",
    "read_record",
    "save_engine_file",
]

_LOGGER = logging.getLogger(__name__)

#: Environment variable that moves the engine cache (default ``~/.cache/cnd_depth_ros/engines``).
CACHE_ENV = "CND_DEPTH_CACHE"
ENGINE_SUFFIX = ".engine"
PRECISIONS = ("fp32", "fp16", "int8")
#: 2: the key gained the export recipe, the calibration data and the GPU's size.
SIDECAR_FORMAT = 2
#: How often a process waiting for another one's build says so.
LOCK_REPORT_SECONDS = 30.0
_HEX64 = re.compile(r"[0-9a-f]{64}")


class StaleEngineError(ArtifactError):
    """An intact engine built for something else: another TensorRT version, GPU, model, export
    recipe, calibration, precision or input shape. Cached engines are rebuilt; an explicit engine
    path is an error."""


def default_cache_dir() -> Path:
    """``$CND_DEPTH_CACHE`` if set, else ``~/.cache/cnd_depth_ros/engines``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "cnd_depth_ros" / "engines"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (engines and ONNX files can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-").lower() or "unknown"


@dataclass(frozen=True)
class BuildTarget:
    """The runtime an engine is bound to: the TensorRT version and the GPU model.

    Jetson modules report one name ("Orin") and one compute capability (8.7) from the Orin Nano
    to the AGX Orin; their multiprocessor count and memory (GiB, rounded) tell them apart, and
    TensorRT picks tactics for both.
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    multiprocessors: int
    memory_gib: int

    def describe(self) -> str:
        return (
            f"TensorRT {self.tensorrt_version} on {self.gpu_name} (compute capability "
            f"{self.compute_capability}, {self.multiprocessors} SMs, {self.memory_gib} GiB)"
        )

    @property
    def slug(self) -> str:
        """File-name-safe identity, for caches that are per runtime (timing caches)."""
        gpu = _slug(self.gpu_name)
        return (
            f"trt{_slug(self.tensorrt_version)}-{gpu}-sm{self.compute_capability}"
            f"-{self.multiprocessors}x-{self.memory_gib}g"
        )


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on; two equal keys may share one engine.

    ``recipe`` is the SHA-256 of how the model became the graph TensorRT parsed
    (:func:`~cnd_depth_ros.inference.engine_plan.export_recipe`), ``calibration`` the SHA-256
    of the INT8 calibration inputs (:meth:`~cnd_depth_ros.inference.calibration.CalibrationSet.
    fingerprint`; empty for FP32 and FP16).
    """

    model_sha256: str
    precision: str
    height: int
    width: int
    target: BuildTarget
    recipe: str
    calibration: str = ""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"engine input must be positive, got {self.width}x{self.height}")
        for name in ("model_sha256", "recipe"):
            if not _HEX64.fullmatch(getattr(self, name)):
                raise ValueError(f"{name} must be 64 hex digits, got {getattr(self, name)!r}")
        if self.calibration and not _HEX64.fullmatch(self.calibration):
            raise ValueError(f"calibration must be 64 hex digits, got {self.calibration!r}")

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical JSON of the key: the engine's identity in the cache."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def same_build_inputs(self, other: EngineKey) -> bool:
        """Same model, precision and shape: ``other`` is this engine for another runtime or
        export recipe, or calibrated on other data."""
        return (self.model_sha256, self.precision, self.height, self.width) == (
            other.model_sha256,
            other.precision,
            other.height,
            other.width,
        )

    def replaces(self, other: EngineKey) -> bool:
        """Whether an engine with this key makes ``other`` useless: the same model, precision
        and shape for another runtime or export recipe. Engines calibrated on other data are
        kept: each is valid, and INT8 loaded without calibration data takes the newest."""
        return (
            self != other
            and self.same_build_inputs(other)
            and self.calibration == other.calibration
        )

    def differences(self, wanted: EngineKey) -> list[str]:
        """Human-readable reasons why an engine with this key is not ``wanted``."""
        reasons = []
        if self.target != wanted.target:
            reasons.append(f"built by {self.target.describe()}, this is {wanted.target.describe()}")
        if self.model_sha256 != wanted.model_sha256:
            reasons.append(
                f"built from model {self.model_sha256[:12]}, wanted {wanted.model_sha256[:12]}"
            )
        if self.recipe != wanted.recipe:
            reasons.append(
                f"built by export recipe {self.recipe[:12]}, this code's is {wanted.recipe[:12]} "
                "(the exporter, its rewrites or the package versions changed)"
            )
        if self.calibration != wanted.calibration:
            reasons.append(
                f"calibrated on data {self.calibration[:12] or '(none)'}, wanted "
                f"{wanted.calibration[:12] or '(none)'}"
            )
        if self.precision != wanted.precision:
            reasons.append(f"precision {self.precision}, wanted {wanted.precision}")
        if (self.height, self.width) != (wanted.height, wanted.width):
            reasons.append(
                f"input {self.width}x{self.height}, wanted {wanted.width}x{wanted.height}"
            )
        return reasons

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineKey:
        return cls(**{**data, "target": BuildTarget(**data["target"])})


@dataclass(frozen=True)
class EngineRecord:
    """The sidecar JSON of one engine file."""

    key: EngineKey
    metadata: ModelMetadata
    sha256: str
    size: int
    build_seconds: float
    built_at: str
    source: str
    format: int = SIDECAR_FORMAT

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["key"] = self.key.to_json()
        data["metadata"] = self.metadata.to_json()
        return data

    @classmethod
    def from_json(cls, data: Any, source: str) -> EngineRecord:
        """Validate and build; every problem is an :class:`ArtifactError` naming ``source``."""
        check_json_format(data, source, kind="engine sidecar", version=SIDECAR_FORMAT)
        try:
            key = EngineKey.from_json(data["key"])
            metadata = ModelMetadata.from_json(data["metadata"], source=source)
            return cls(
                key=key,
                metadata=metadata,
                sha256=str(data["sha256"]),
                size=int(data["size"]),
                build_seconds=float(data["build_seconds"]),
                built_at=str(data["built_at"]),
                source=str(data["source"]),
            )
        except ArtifactError:
            raise
        except (KeyError, TypeError, ValueError) as error:
            raise ArtifactError(f"{source}: invalid engine sidecar ({error!r})") from error


def _sidecar(engine: Path) -> Path:
    return engine.with_suffix(".json")


def save_engine_file(
    path: Path,
    engine: bytes,
    *,
    key: EngineKey,
    metadata: ModelMetadata,
    build_seconds: float,
    source: str,
) -> EngineRecord:
    """Write ``engine`` and its sidecar atomically (the sidecar last) and return the record."""
    record = EngineRecord(
        key=key,
        metadata=metadata,
        sha256=hashlib.sha256(engine).hexdigest(),
        size=len(engine),
        build_seconds=round(build_seconds, 3),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        source=source,
    )
    write_atomically(path, lambda tmp: tmp.write_bytes(engine))
    text = json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n"
    write_atomically(_sidecar(path), lambda tmp: tmp.write_text(text))
    return record


def read_record(path: Path) -> EngineRecord:
    """The validated sidecar of the engine ``path``.

    :raises ArtifactError: no sidecar, or an unreadable or invalid one.
    """
    sidecar = _sidecar(path)
    if not sidecar.is_file():
        raise ArtifactError(
            f"{path}: no sidecar {sidecar.name}; engines are loaded only with the sidecar "
            "`cnd-depth build-engine` writes (it records the model, TensorRT version and GPU)"
        )
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{sidecar}: unreadable engine sidecar ({error})") from error
    return EngineRecord.from_json(data, source=str(sidecar))


def load_engine_file(
    path: Path, *, target: BuildTarget, key: EngineKey | None = None
) -> tuple[bytes, EngineRecord]:
    """The bytes and record of an engine that is intact and was built for ``target``.

    With ``key`` (a cached engine), the model, precision and shape must match as well; without
    (an engine given by path), its own sidecar says which model it runs.

    :raises ArtifactError: missing, truncated or altered file, or a bad sidecar.
    :raises StaleEngineError: built by another TensorRT version or GPU, or for another key.
    """
    record = read_record(path)
    try:
        engine = path.read_bytes()
    except OSError as error:
        raise ArtifactError(f"{path}: unreadable engine ({error})") from error
    if len(engine) != record.size:
        raise ArtifactError(
            f"{path}: truncated or overwritten engine ({len(engine)} bytes, "
            f"{record.size} when built)"
        )
    if hashlib.sha256(engine).hexdigest() != record.sha256:
        raise ArtifactError(f"{path}: engine checksum does not match its sidecar (corrupted)")
    wanted = key or replace(record.key, target=target)
    reasons = record.key.differences(wanted)
    if reasons:
        raise StaleEngineError(f"{path}: stale engine: {'; '.join(reasons)}")
    return engine, record


def copy_engine_file(path: Path, target: Path) -> Path:
    """Copy an engine and its sidecar to ``target`` (an ``.engine`` path), each atomically."""
    if target.suffix != ENGINE_SUFFIX:
        raise ValueError(f"engine file names end in {ENGINE_SUFFIX}, got {target}")
    engine, sidecar = path.read_bytes(), _sidecar(path).read_text()
    write_atomically(target, lambda tmp: tmp.write_bytes(engine))
    write_atomically(_sidecar(target), lambda tmp: tmp.write_text(sidecar))
    return target


@dataclass(frozen=True)
class CachedEngine:
    """What :meth:`EngineCache.load_or_build` hands back: the engine file, its bytes and
    record, and what ``accept`` made of the bytes (the deserialized engine, for the backend)."""

    path: Path
    data: bytes
    record: EngineRecord
    loaded: Any


def _accept_bytes(data: bytes) -> bytes:
    return data


class EngineCache:
    """A folder of engines, their lock files and the timing caches.

    Engines are named ``VARIANT-PRECISION-WxH-DIGEST.engine`` with the digest of their full
    :class:`EngineKey`, so engines for different runtimes, recipes or calibrations never
    overwrite each other; :meth:`stale_entries` finds the ones a new build replaces.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def engine_path(self, key: EngineKey, variant: str) -> Path:
        name = f"{_slug(variant)}-{key.precision}-{key.width}x{key.height}-{key.digest[:16]}"
        return self.root / f"{name}{ENGINE_SUFFIX}"

    def timing_cache_path(self, target: BuildTarget) -> Path:
        """One timing cache per runtime: TensorRT rejects caches from other GPUs or versions."""
        return self.root / f"timing-{target.slug}.cache"

    def entries(self) -> list[tuple[Path, EngineRecord]]:
        """Every engine with a readable sidecar (unreadable ones are logged and skipped)."""
        found = []
        for path in sorted(self.root.glob(f"*{ENGINE_SUFFIX}")):
            try:
                found.append((path, read_record(path)))
            except ArtifactError as error:
                _LOGGER.warning("engine cache: skipping %s", error)
        return found

    def stale_entries(self, key: EngineKey) -> list[tuple[Path, EngineRecord]]:
        """Engines an engine for ``key`` replaces: the same model, precision, shape and
        calibration, built for another TensorRT, GPU or export recipe."""
        return [(path, record) for path, record in self.entries() if key.replaces(record.key)]

    def newest_calibrated(self, key: EngineKey) -> EngineKey | None:
        """The key of the newest INT8 engine that is ``key`` calibrated on any data, or
        ``None``: how an INT8 engine is found without its calibration frames at hand."""
        matching = [
            record
            for _, record in self.entries()
            if replace(record.key, calibration=key.calibration) == key and record.key.calibration
        ]
        if not matching:
            return None
        return max(matching, key=lambda record: record.built_at).key

    def remove(self, path: Path) -> None:
        """Delete an engine and its sidecar."""
        path.unlink(missing_ok=True)
        _sidecar(path).unlink(missing_ok=True)

    @contextmanager
    def lock(self, path: Path) -> Iterator[None]:
        """Hold ``path``'s lock file (``NAME.lock``, an advisory ``flock``) for the block; a
        process that has to wait for another one says so, every
        :data:`LOCK_REPORT_SECONDS`. Each open of the file is its own lock, so threads of one
        process exclude each other too. Lock files are left in place (removing one would let
        a third process lock a new file while the second still waits on the old one)."""
        lock_path = path.with_suffix(".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as handle:
            waited_since = time.monotonic()
            reported = 0.0
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as error:
                    if error.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                waited = time.monotonic() - waited_since
                if waited >= reported:
                    _LOGGER.info(
                        "%s is being built by another process (lock %s): waiting for it, "
                        "%.0f s so far", path.name, lock_path, waited,
                    )
                    reported += LOCK_REPORT_SECONDS
                time.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def load_or_build(
        self,
        key: EngineKey,
        build: Callable[[], bytes],
        *,
        metadata: ModelMetadata,
        source: str,
        rebuild: bool = False,
        accept: Callable[[bytes], Any] = _accept_bytes,
    ) -> CachedEngine:
        """The engine for ``key``: from the cache when it is there, intact, current and accepted,
        else ``build()`` (logged: it can take minutes), stored, and any stale engine it replaces
        removed. All of it under the engine's :meth:`lock`.

        ``accept(bytes)`` turns the bytes into what the caller runs (TensorRT's deserialized
        engine) or returns ``None`` to refuse them: a refused cached engine is rebuilt (TensorRT
        refuses plans of another TensorRT build even under the same version string), a refused
        fresh build is an error.

        :raises BackendError: ``accept`` refuses the engine just built.
        """
        path = self.engine_path(key, metadata.variant)
        with self.lock(path):
            reason, cached = self._cached(path, key, rebuild)
            if cached is not None:
                engine, record = cached
                loaded = accept(engine)
                if loaded is not None:
                    _LOGGER.info("using cached engine %s", path)
                    return CachedEngine(path, engine, record, loaded)
                reason = "TensorRT cannot deserialize the cached engine (a plan of another build)"
                _LOGGER.warning("%s: %s: rebuilding it from the model", path, reason)
            stale = self.stale_entries(key)
            for old_path, old in stale:
                _LOGGER.warning(
                    "%s is stale (%s): rebuilding", old_path, "; ".join(old.key.differences(key))
                )
            _LOGGER.info(
                "building a %s engine of %s at %dx%d with %s (%s); a first build can take "
                "minutes: `cnd-depth build-engine --model %s --precision %s --height %d "
                "--width %d` builds it ahead of time",
                key.precision, source, key.width, key.height, key.target.describe(), reason,
                source, key.precision, key.height, key.width,
            )
            started = time.monotonic()
            engine = build()
            record = save_engine_file(
                path,
                engine,
                key=key,
                metadata=metadata,
                build_seconds=time.monotonic() - started,
                source=source,
            )
            _LOGGER.info("built %s in %.1f s", path, record.build_seconds)
            for old_path, _ in stale:
                self.remove(old_path)
            loaded = accept(engine)
            if loaded is None:
                raise BackendError(
                    f"{path}: TensorRT cannot deserialize the engine it has just built "
                    "(its reasons are logged)"
                )
            return CachedEngine(path, engine, record, loaded)

    @staticmethod
    def _cached(
        path: Path, key: EngineKey, rebuild: bool
    ) -> tuple[str, tuple[bytes, EngineRecord] | None]:
        """The cached engine for ``key`` if it can serve, else why not (for the log)."""
        if rebuild:
            return "a rebuild was asked for", None
        if not path.exists():
            return f"no engine for this model, shape and precision in {path.parent} yet", None
        try:
            return "", load_engine_file(path, target=key.target, key=key)
        except ArtifactError as error:
            _LOGGER.warning("%s: rebuilding", error)
            return "the cached engine is unusable", None
