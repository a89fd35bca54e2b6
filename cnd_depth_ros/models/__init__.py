"""Pure PyTorch networks (CND family and the FCRN baseline) and the model artifact."""

from cnd_depth_ros.models.artifact import (
    SHIPPED_MODELS,
    ModelMetadata,
    artifact_paths,
    load_artifact,
    read_metadata,
    resolve_artifact,
    save_artifact,
    weights_sha256,
)
from cnd_depth_ros.models.registry import MODEL_NAMES, build_model

__all__ = [
    "MODEL_NAMES",
    "SHIPPED_MODELS",
    "ModelMetadata",
    "artifact_paths",
    "build_model",
    "load_artifact",
    "read_metadata",
    "resolve_artifact",
    "save_artifact",
    "weights_sha256",
]
