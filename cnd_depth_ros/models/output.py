"""The output rule: how a network's raw output becomes metric depth for a given camera.

Stereo nets predict disparity in pixels at network resolution (depth = fx * B / d); mono nets
predict metres for a camera whose network-resolution focal length is the training camera's, so
depth scales by fx / training fx for another camera (docs/decisions.md #1). The loss, every
backend and the artifact apply this one module.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import numpy as np
import torch

from cnd_depth_ros.camera import PinholeCamera

__all__ = ["OutputKind", "depth_from_output", "metric_depth"]

OutputKind = Literal["disparity", "depth"]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def depth_from_output(
    raw: ArrayT,
    output: OutputKind,
    *,
    fx: ArrayT | float,
    baseline: ArrayT | float | None,
    reference_fx: float,
) -> ArrayT:
    """Metric depth from a network's raw output.

    ``fx`` (and ``baseline``, metres) describe the camera at the resolution of ``raw``; they may be
    numbers or arrays/tensors that broadcast against ``raw`` (the trainer passes one camera per
    sample as N x 1 x 1 x 1). ``reference_fx`` is the training camera's focal length at network
    resolution (used by ``"depth"`` outputs only). Works unchanged on numpy and torch, so the loss
    and every backend apply the same rule; zero disparity gives ``inf``, not masked here.
    """
    if output == "disparity":
        if baseline is None:
            raise ValueError("a stereo (disparity) model needs a camera with a baseline")
        return fx * baseline / raw
    return raw * (fx / reference_fx)


def metric_depth(
    raw: np.ndarray, output: OutputKind, camera: PinholeCamera, *, reference_fx: float
) -> np.ndarray:
    """Metric depth (metres, float32) from the raw output for ``camera`` at the resolution of
    ``raw``, NaN where it is not a positive finite number: the one place where the validity of
    a network's depth is decided."""
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = depth_from_output(
            raw, output, fx=camera.fx, baseline=camera.baseline, reference_fx=reference_fx
        )
    depth = depth.astype(np.float32, copy=False)
    depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    return depth
