"""What a TensorRT engine is built from: the model, the precision plan, and the ONNX to parse.

TensorRT 10 chooses reduced precision itself ("weak typing": ``BuilderFlag.FP16`` / ``INT8``
plus an INT8 calibrator). TensorRT 11 removed those flags and the calibrator: networks are
strongly typed and the precision is in the ONNX graph, an FP16 export for FP16 and Q/DQ nodes
for INT8 (NVIDIA, "Migrating from TensorRT 10.x to 11.x", Removed Python APIs:
https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html).
:func:`plan_precision` maps a requested precision onto the TensorRT at hand and
:func:`prepare_onnx` writes the ONNX the plan needs. Nothing here imports TensorRT.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cnd_depth_ros.errors import ArtifactError
from cnd_depth_ros.inference.calibration import CalibrationSet, quantize_qdq
from cnd_depth_ros.inference.engine_cache import PRECISIONS, file_sha256
from cnd_depth_ros.inference.export import (
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

__all__ = ["ModelSource", "PrecisionPlan", "plan_precision", "prepare_onnx"]

Graph = Literal["fp32", "fp16", "qdq"]
#: The graph a strongly typed build parses for each precision.
_STRONGLY_TYPED_GRAPHS: dict[str, Graph] = {"fp32": "fp32", "fp16": "fp16", "int8": "qdq"}


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
    #: Attach an INT8 calibrator to the builder config (weakly typed TensorRT 10 only).
    calibrator: bool = False

    @property
    def needs_calibration(self) -> bool:
        return self.calibrator or self.graph == "qdq"


def plan_precision(precision: str, *, weakly_typed: bool) -> PrecisionPlan:
    """The plan for ``precision`` on a TensorRT that does (10.x) or does not (11.x) still have the
    weak-typing builder flags.

    :raises ValueError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if not weakly_typed:
        return PrecisionPlan(precision, _STRONGLY_TYPED_GRAPHS[precision], strongly_typed=True)
    if precision == "fp32":
        return PrecisionPlan(precision, "fp32", strongly_typed=False)
    if precision == "fp16":
        return PrecisionPlan(precision, "fp32", strongly_typed=False, builder_flags=("FP16",))
    # FP16 as well, so layers INT8 has no kernel for fall back to FP16 rather than FP32.
    return PrecisionPlan(
        precision, "fp32", strongly_typed=False, builder_flags=("FP16", "INT8"), calibrator=True
    )


def prepare_onnx(
    source: ModelSource,
    plan: PrecisionPlan,
    workdir: Path,
    calibration: CalibrationSet | None = None,
) -> Path:
    """The ONNX file TensorRT should parse for ``plan``: the source itself when it already is
    that graph, else an export (and Q/DQ quantisation) written into ``workdir``.

    :raises ValueError: INT8 without calibration data, or an ONNX file in the wrong precision
        for a strongly typed build (the message says which export to make).
    """
    if plan.needs_calibration and calibration is None:
        raise ValueError("INT8 needs calibration images: give a dataset (--calib-data KIND:ROOT)")
    export_graph = "fp32" if plan.graph == "qdq" else plan.graph
    if source.onnx_precision is None:
        onnx_path = export_onnx(
            source.path,
            workdir / f"model-{export_graph}.onnx",
            height=source.metadata.input_height,
            width=source.metadata.input_width,
            fp16=export_graph == "fp16",
        )
    else:
        onnx_path = source.path
        if source.onnx_precision != export_graph and (
            plan.strongly_typed or plan.graph == "qdq"
        ):
            hint = "cnd-depth export --fp16" if export_graph == "fp16" else "cnd-depth export"
            raise ValueError(
                f"{source.path} is an {source.onnx_precision.upper()} export, but a "
                f"{plan.precision.upper()} engine here is built from an "
                f"{export_graph.upper()} graph: make one with `{hint}` or pass the artifact"
            )
    if plan.graph != "qdq":
        return onnx_path
    assert calibration is not None  # checked above
    return quantize_qdq(onnx_path, workdir / "model-qdq.onnx", calibration)
