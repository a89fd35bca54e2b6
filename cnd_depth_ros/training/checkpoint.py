"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a dict ``{model, optimizer, scheduler, scaler, step, epoch, config}`` saved with
``torch.save``. It is written to a temporary file in the same folder and renamed over the old one,
so a kill at any moment leaves either the previous or the new checkpoint, never half of one. It is
read back with ``weights_only=True``: only tensors and plain containers, nothing that runs code.
Checkpoints are for resuming; the deployable result of a run is the model artifact
(:mod:`cnd_depth_ros.models.artifact`).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from cnd_depth_ros.atomic_file import write_atomically
from cnd_depth_ros.errors import ArtifactError

__all__ = ["CHECKPOINT_KEYS", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "step", "epoch", "config")


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` atomically to ``path`` (temporary file + rename in the same folder)."""
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise ValueError(f"checkpoint state is missing {missing}")
    return write_atomically(path, lambda temporary: torch.save(state, temporary))


def load_checkpoint(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, tensors only (``weights_only``).

    :raises ArtifactError: the file is missing, unreadable, not a checkpoint, or lacks a key.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ArtifactError(f"{path}: unreadable checkpoint ({error})") from error
    if not isinstance(state, dict):
        raise ArtifactError(f"{path}: not a training checkpoint (got {type(state).__name__})")
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise ArtifactError(f"{path}: not a training checkpoint (missing {missing})")
    return state
