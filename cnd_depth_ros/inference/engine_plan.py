"""What a TensorRT engine is built from: the model, the precision plan, and the ONNX to parse.

TensorRT 10 can choose reduced precision itself ("weak typing": ``BuilderFlag.FP16``).
TensorRT 11 removed the precision flags and the INT8 calibrator: networks are strongly typed and
the precision is in the ONNX graph, an FP16 export for FP16 and Q/DQ nodes for INT8 (NVIDIA,
"Migrating from TensorRT 10.x to 11.x", Removed Python APIs:
https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html).
INT8 is built the same way on both: a strongly typed network from a Q/DQ graph over the FP16
export ("explicit quantization", which NVIDIA recommends; TensorRT 10's implicit calibration
would let the builder run any layer in INT8, the stereo matcher's MatMul included, against
docs/decisions.md 13). :func:`plan_precision` maps a requested precision onto the TensorRT at
hand, :func:`default_precision` picks one the model can be built in, :func:`export_recipe`
fingerprints the code that makes the graph, and :func:`prepare_onnx` writes the ONNX the plan
needs. Nothing here imports TensorRT.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cnd_depth_ros.errors import ArtifactError
from cnd_depth_ros.inference.calibration import QDQ_FP16_OPSET, CalibrationSet, quantize_qdq
from cnd_depth_ros.inference.engine_cache import PRECISIONS, file_sha256
from cnd_depth_ros.inference.export import (
    DEFAULT_OPSET,
    ONNX_EXPORT_KEY,
    export_onnx,
    load_onnx,
    metadata_at_size,
)
from cnd_depth_ros.models.artifact import (
    ModelMetadata,
    read_metadata,
    resolve_artifact,
    weights_sha256,
)

__all__ = [
    "EXPORT_CODE",
    "QDQ_CODE",
    "ModelSource",
    "PrecisionPlan",
    "default_precision",
    "export_recipe",
    "plan_precision",
    "prepare_onnx",
]

_LOGGER = logging.getLogger(__name__)

Graph = Literal["fp32", "fp16", "qdq"]
#: The graph a strongly typed build parses for each precision.
_STRONGLY_TYPED_GRAPHS: dict[str, Graph] = {"fp32": "fp32", "fp16": "fp16", "int8": "qdq"}

_PACKAGE = Path(__file__).resolve().parent.parent
#: The code that turns an artifact into an ONNX graph: the networks, the exporter, its rewrites.
EXPORT_CODE: tuple[Path, ...] = (
    _PACKAGE / "models",
    _PACKAGE / "inference" / "export.py",
    _PACKAGE / "inference" / "layer_rewrites.py",
)
#: The code that turns a graph into its INT8 Q/DQ form.
QDQ_CODE: tuple[Path, ...] = (_PACKAGE / "inference" / "calibration.py",)


@dataclass(frozen=True)
class ModelSource:
    """A model an engine can be built from: an artifact, or an ONNX file from ``cnd-depth export``.

    ``sha256`` is the model part of the engine-cache key: of the weights for an artifact, of the
    file for an ONNX export. ``onnx_precision`` is the precision an ONNX file was exported in
    (``None`` for an artifact, which is exported as each plan needs).
    """

    path: Path
    metadata: ModelMetadata
    sha256: str
    onnx_precision: str | None = None

    @classmethod
    def open(
        cls,
        model: str | os.PathLike[str],
        *,
        height: int | None = None,
        width: int | None = None,
    ) -> ModelSource:
        """Read an artifact (path or shipped name) or an ``.onnx`` export, at ``height`` x
        ``width`` (default the model's own size; an ONNX file has static shapes and only runs at
        its own).

        :raises ArtifactError: a missing or corrupt model file, named in the message.
        :raises ValueError: an ONNX file asked to run at another size.
        """
        if str(model).endswith(".onnx"):
            path = Path(model)
            proto, metadata = load_onnx(path)
            wanted = (width or metadata.input_width, height or metadata.input_height)
            if wanted != (metadata.input_width, metadata.input_height):
                raise ValueError(
                    f"{path} has static shape {metadata.input_width}x{metadata.input_height}; "
                    f"export it again at {wanted[0]}x{wanted[1]} or pass the artifact"
                )
            props = {entry.key: entry.value for entry in proto.metadata_props}
            try:
                precision = json.loads(props.get(ONNX_EXPORT_KEY, "{}")).get("precision", "fp32")
            except json.JSONDecodeError as error:
                raise ArtifactError(f"{path}: unreadable {ONNX_EXPORT_KEY!r} ({error})") from error
            return cls(path, metadata, file_sha256(path), onnx_precision=precision)
        base = resolve_artifact(model)
        metadata = metadata_at_size(read_metadata(base), width, height)
        return cls(base, metadata, weights_sha256(base))


@dataclass(frozen=True)
class PrecisionPlan:
    """How to build one precision: which ONNX graph TensorRT parses, and with what settings."""

    precision: str
    graph: Graph
    strongly_typed: bool
    #: ``BuilderFlag`` member names to set (weakly typed TensorRT 10 only).
    builder_flags: tuple[str, ...] = ()

    @property
    def needs_calibration(self) -> bool:
        return self.graph == "qdq"

    @property
    def onnx_precisions(self) -> tuple[str, ...]:
        """The ONNX exports (``fp32``/``fp16``) this plan builds from, the preferred first: a
        Q/DQ graph is made from the FP16 export (an FP32 one leaves the layers INT8 does not
        cover in FP32), TensorRT 10's FP16 flag takes either."""
        if self.graph == "qdq":
            return ("fp16", "fp32")
        if not self.strongly_typed and self.precision == "fp16":
            return ("fp32", "fp16")
        return (self.graph,)


def plan_precision(precision: str, *, weakly_typed: bool) -> PrecisionPlan:
    """The plan for ``precision`` on a TensorRT that does (10.x) or does not (11.x) still have the
    weak-typing builder flags. INT8 is a strongly typed Q/DQ build on both.

    :raises ValueError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" or not weakly_typed:
        return PrecisionPlan(precision, _STRONGLY_TYPED_GRAPHS[precision], strongly_typed=True)
    if precision == "fp32":
        return PrecisionPlan(precision, "fp32", strongly_typed=False)
    return PrecisionPlan(precision, "fp32", strongly_typed=False, builder_flags=("FP16",))


def default_precision(source: ModelSource, *, weakly_typed: bool) -> str:
    """FP16 wherever this TensorRT can build it from ``source``; on a strongly typed TensorRT
    (11.x) an ONNX export builds in its own precision (an FP32 export has no FP16 graph)."""
    if source.onnx_precision is None or weakly_typed or source.onnx_precision == "fp16":
        return "fp16"
    _LOGGER.info(
        "%s is an %s export: building an %s engine (this TensorRT takes precision from the graph;"
        " `cnd-depth export --fp16` makes an FP16 one)",
        source.path, source.onnx_precision.upper(), source.onnx_precision.upper(),
    )
    return source.onnx_precision


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _code_digest(paths: tuple[Path, ...]) -> str:
    """SHA-256 of the Python files at ``paths`` (files, or folders read recursively)."""
    digest = hashlib.sha256()
    for root in paths:
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        for path in files:
            digest.update(f"{path.relative_to(root.parent)}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def export_recipe(source: ModelSource, plan: PrecisionPlan) -> str:
    """SHA-256 of how ``source`` becomes the graph TensorRT parses for ``plan``: for an
    artifact, the code of the networks, the exporter and its rewrites (:data:`EXPORT_CODE`),
    the opset and the exporting packages' versions; for INT8, the quantiser's code
    (:data:`QDQ_CODE`) and ONNX Runtime's version. An ONNX file's own hash is the model part of
    the key, so only the INT8 step counts for it. Any change gives engines another key: the
    weights alone do not say that the graph is the same.
    """
    parts: dict[str, str] = {"graph": plan.graph}
    if source.onnx_precision is None:
        parts["opset"] = str(QDQ_FP16_OPSET if plan.graph == "qdq" else DEFAULT_OPSET)
        parts["export_code"] = _code_digest(EXPORT_CODE)
        for package in ("torch", "onnx", "onnxscript"):
            parts[package] = _package_version(package)
    if plan.graph == "qdq":
        parts["qdq_code"] = _code_digest(QDQ_CODE)
        parts["onnxruntime"] = _package_version("onnxruntime")
    canonical = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def prepare_onnx(
    source: ModelSource,
    plan: PrecisionPlan,
    workdir: Path,
    calibration: CalibrationSet | None = None,
) -> Path:
    """The ONNX file TensorRT should parse for ``plan``: the source itself when it already is
    that graph, else an export (and Q/DQ quantisation) written into ``workdir``.

    :raises ValueError: INT8 without calibration data (or with a failing frame), or an ONNX file
        in a precision the plan cannot build from (the message says which export to make).
    """
    if plan.needs_calibration and calibration is None:
        raise ValueError("INT8 needs calibration images: give a dataset (--calib-data KIND:ROOT)")
    accepted = plan.onnx_precisions
    if source.onnx_precision is None:
        onnx_path = export_onnx(
            source.path,
            workdir / f"model-{accepted[0]}.onnx",
            height=source.metadata.input_height,
            width=source.metadata.input_width,
            fp16=accepted[0] == "fp16",
            opset=QDQ_FP16_OPSET if plan.graph == "qdq" else DEFAULT_OPSET,
        )
    else:
        onnx_path = source.path
        if source.onnx_precision not in accepted:
            hint = "cnd-depth export --fp16" if accepted[0] == "fp16" else "cnd-depth export"
            raise ValueError(
                f"{source.path} is an {source.onnx_precision.upper()} export, but a "
                f"{plan.precision.upper()} engine here is built from an "
                f"{accepted[0].upper()} graph: make one with `{hint}` or pass the artifact"
            )
        if plan.graph == "qdq" and source.onnx_precision != accepted[0]:
            _LOGGER.warning(
                "%s is an %s export: the layers %s does not cover stay %s (an %s export, "
                "`cnd-depth export --fp16`, runs them in FP16)",
                source.path, source.onnx_precision.upper(), plan.precision.upper(),
                source.onnx_precision.upper(), accepted[0].upper(),
            )
    if plan.graph != "qdq":
        return onnx_path
    assert calibration is not None  # checked above
    return quantize_qdq(onnx_path, workdir / "model-qdq.onnx", calibration)
