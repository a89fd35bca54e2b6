"""Depth <-> disparity, back-projection and surface normals of a rectified pinhole camera.

Conventions: the camera's optical frame (x right, y down, z forward, REP 103), pixel centres at
integer coordinates (the convention of :meth:`PinholeCamera.resized`), depth in metres along z.
Invalid depth is NaN in numpy (REP 118) and 0 in training tensors.

Each geometric operation has one implementation, written in torch so it can run batched on the
GPU and carry gradients; the numpy functions call it, so both variants agree by construction.
The torch functions take N x 1 x H x W depth and an N x 5 camera tensor in the
``CAMERA_FIELDS`` order of :mod:`cnd_depth_ros.training.data`:
``[fx, fy, cx, cy, baseline]``.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

from cnd_depth_ros.camera import PinholeCamera

__all__ = [
    "backproject",
    "backproject_torch",
    "depth_to_disparity",
    "disparity_to_depth",
    "normals_from_depth",
    "normals_from_depth_torch",
    "project_points",
]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def disparity_to_depth(
    disparity: ArrayT, fx: float | ArrayT, baseline: float | ArrayT
) -> ArrayT:
    """Depth ``fx * baseline / disparity`` in metres, NaN where disparity is not finite and
    positive (zero disparity is a point at infinity, never a usable depth).

    ``fx`` is the focal length in pixels at the resolution of ``disparity``; tensors broadcast,
    so an N x 1 x 1 x 1 ``fx`` converts a batch of rigs at once.
    """
    return _scaled_reciprocal(disparity, fx, baseline)


def depth_to_disparity(depth: ArrayT, fx: float | ArrayT, baseline: float | ArrayT) -> ArrayT:
    """Disparity ``fx * baseline / depth`` in pixels, NaN where depth is not finite and positive."""
    return _scaled_reciprocal(depth, fx, baseline)


def _scaled_reciprocal(values: ArrayT, fx: float | ArrayT, baseline: float | ArrayT) -> ArrayT:
    """``fx * baseline / values`` where ``values`` is finite and positive, NaN elsewhere.

    Depth and disparity are each other's scaled reciprocal, so both conversions are this one.
    """
    for name, scalar in (("fx", fx), ("baseline", baseline)):
        if isinstance(scalar, (int, float)) and not (math.isfinite(scalar) and scalar > 0):
            raise ValueError(f"{name} must be finite and positive, got {scalar}")
    if isinstance(values, torch.Tensor):
        if not values.is_floating_point():
            values = values.float()
        valid = torch.isfinite(values) & (values > 0)
        return torch.where(valid, fx * baseline / torch.where(valid, values, 1.0), math.nan)
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    valid = np.isfinite(values) & (values > 0)
    result = np.where(valid, fx * baseline / np.where(valid, values, 1.0), np.nan)
    return result.astype(values.dtype, copy=False)


def backproject_torch(depth: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """3D points (N x 3 x H x W, metres, optical frame) of N x 1 x H x W ``depth``.

    Differentiable and unmasked: invalid depth goes through as it is (0 lands on the optical
    centre, NaN stays NaN), so callers mask with their own validity.
    """
    _check_batch(depth, camera)
    height, width = depth.shape[-2:]
    fx, fy, cx, cy = (camera[:, i].to(depth.dtype).view(-1, 1, 1, 1) for i in range(4))
    u = torch.arange(width, dtype=depth.dtype, device=depth.device).view(1, 1, 1, width)
    v = torch.arange(height, dtype=depth.dtype, device=depth.device).view(1, 1, height, 1)
    return torch.cat(((u - cx) / fx * depth, (v - cy) / fy * depth, depth), dim=1)


def backproject(depth: np.ndarray, camera: PinholeCamera) -> np.ndarray:
    """3D points (H x W x 3, metres, optical frame) of H x W ``depth``; NaN where depth is not
    finite and positive, as in an organised point cloud."""
    depth = _check_image(depth, camera)
    points = backproject_torch(torch.from_numpy(depth)[None, None], _camera_tensor(camera))
    points_hwc = points[0].permute(1, 2, 0).numpy()
    return np.where(_valid_depth(depth)[..., None], points_hwc, np.nan)


def normals_from_depth_torch(depth: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """Unit surface normals (N x 3 x H x W, optical frame, facing the camera) of N x 1 x H x W
    ``depth``; 0 where depth is invalid (not finite and positive) or has no valid neighbour
    along a row or a column.

    See :func:`normals_from_depth` for the method.
    """
    normals, known = _normals(depth, camera)
    return torch.where(known, normals, 0.0)


def normals_from_depth(depth: np.ndarray, camera: PinholeCamera) -> np.ndarray:
    """Unit surface normals (H x W x 3, optical frame, facing the camera) of H x W ``depth``;
    NaN where depth is invalid or has no valid neighbour along a row or a column.

    The normal is the cross product of two tangents between back-projected neighbours, one
    along the row and one along the column. Each tangent blends the forward and backward
    differences, weighting each by how far it turns from the line of sight: the central
    difference on smooth surfaces, the one-sided difference next to an occlusion edge (a
    difference across the edge runs almost along the line of sight). Exact for planes, close to
    second-order accurate on smooth curved surfaces.
    """
    depth = _check_image(depth, camera)
    normals, known = _normals(torch.from_numpy(depth)[None, None], _camera_tensor(camera))
    normals_hwc = normals[0].permute(1, 2, 0).numpy()
    return np.where(known[0, 0, ..., None].numpy(), normals_hwc, np.nan)


def _normals(depth: torch.Tensor, camera: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit normals (N x 3 x H x W) and where they are defined (N x 1 x H x W bool)."""
    valid = torch.isfinite(depth) & (depth > 0)
    # Zero depth at invalid pixels keeps NaN out of the arithmetic (and out of gradients); the
    # validity masks decide which differences are used.
    points = backproject_torch(torch.where(valid, depth, 0.0), camera)
    along_row, row_known = _edge_aware_tangent(points, valid, dim=-1)
    along_column, column_known = _edge_aware_tangent(points, valid, dim=-2)
    # column x row points towards the camera: (0, 1, 0) x (1, 0, 0) = (0, 0, -1).
    normals = torch.linalg.cross(along_column, along_row, dim=1)
    squared_length = normals.square().sum(dim=1, keepdim=True)
    known = row_known & column_known & (squared_length > 0)
    # sqrt after where(): the gradient of sqrt at 0 is infinite even where it is not selected.
    return normals / torch.where(known, squared_length, 1.0).sqrt(), known


def _edge_aware_tangent(
    points: torch.Tensor, valid: torch.Tensor, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel, a blend of the forward and backward differences of ``points`` along ``dim``,
    and where at least one of them has both ends valid.

    Each difference is weighted by ``sin(theta) ** 4``, theta its angle to the line of sight: on
    a smooth surface both sides make about the same angle and the blend is the central
    difference (second order); a difference across an occlusion edge runs almost along the line
    of sight, its weight vanishes and the tangent stays on the pixel's own surface. A side with
    an invalid end gets no weight.
    """
    step = points.diff(dim=dim)
    length = points.shape[dim]
    sight = points.narrow(dim, 1, length - 1) + points.narrow(dim, 0, length - 1)
    pair_valid = valid.narrow(dim, 1, length - 1) & valid.narrow(dim, 0, length - 1)
    weight = torch.where(pair_valid, _sin_squared(step, sight).square(), 0.0)
    forward, forward_weight = _pad_one(step, dim, at_end=True), _pad_one(weight, dim, True)
    backward, backward_weight = _pad_one(step, dim, at_end=False), _pad_one(weight, dim, False)
    total = forward_weight + backward_weight
    # where() on both sides of the division keeps 0 / 0 out of the values and the gradients.
    share = torch.where(total > 0, forward_weight / torch.where(total > 0, total, 1.0), 0.5)
    tangent = share * forward + (1.0 - share) * backward
    known = _pad_one(pair_valid, dim, at_end=True) | _pad_one(pair_valid, dim, at_end=False)
    return tangent, known


def _sin_squared(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared sine of the angle between N x 3 x ... vectors, 0 where either is zero."""
    cross = torch.linalg.cross(a, b, dim=1).square().sum(dim=1, keepdim=True)
    lengths = a.square().sum(dim=1, keepdim=True) * b.square().sum(dim=1, keepdim=True)
    return cross / torch.where(lengths > 0, lengths, 1.0)


def _pad_one(tensor: torch.Tensor, dim: int, at_end: bool) -> torch.Tensor:
    """``tensor`` with one slice of zeros (False for bool) appended or prepended along ``dim``."""
    shape = list(tensor.shape)
    shape[dim] = 1
    zeros = tensor.new_zeros(shape)
    return torch.cat((tensor, zeros) if at_end else (zeros, tensor), dim=dim)


def _valid_depth(depth: np.ndarray) -> np.ndarray:
    return np.isfinite(depth) & (depth > 0)


def _camera_tensor(camera: PinholeCamera) -> torch.Tensor:
    return torch.tensor(
        [[camera.fx, camera.fy, camera.cx, camera.cy, camera.baseline or 0.0]], dtype=torch.float64
    )


def _check_image(depth: np.ndarray, camera: PinholeCamera) -> np.ndarray:
    """``depth`` as a float32/float64 H x W array matching ``camera`` (computations run in its
    precision), or ValueError saying why not."""
    depth = np.asarray(depth)
    if depth.shape != (camera.height, camera.width):
        raise ValueError(
            f"depth of shape {depth.shape} does not match the {camera.width}x{camera.height} "
            "camera (expected H x W)"
        )
    if depth.dtype not in (np.float32, np.float64):
        depth = depth.astype(np.float64)
    return np.ascontiguousarray(depth)


def _check_batch(depth: torch.Tensor, camera: torch.Tensor) -> None:
    if depth.ndim != 4 or depth.shape[1] != 1:
        raise ValueError(f"depth must be N x 1 x H x W, got {tuple(depth.shape)}")
    if camera.shape != (depth.shape[0], 5):
        raise ValueError(
            f"camera must be N x 5 [fx, fy, cx, cy, baseline] with N = {depth.shape[0]}, "
            f"got {tuple(camera.shape)}"
        )


def project_points(
    points: np.ndarray, camera: PinholeCamera, transform: np.ndarray | None = None
) -> np.ndarray:
    """Sparse depth image of ``points`` (N x 3, metres), moved into the camera's optical frame
    by ``transform`` (4 x 4, when given): each point lands on the pixel whose centre is nearest
    its projection; where several do, the nearest point is kept (the others are hidden behind
    it); NaN where none does. How LiDAR becomes ground truth for scoring and training."""
    if transform is not None:
        points = points @ transform[:3, :3].T + transform[:3, 3]
    points = points[np.isfinite(points).all(axis=1) & (points[:, 2] > 0)]
    x, y, z = points.T
    u = np.rint(camera.fx * x / z + camera.cx).astype(np.int64)
    v = np.rint(camera.fy * y / z + camera.cy).astype(np.int64)
    inside = (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)
    depth = np.full((camera.height, camera.width), np.inf)
    np.minimum.at(depth, (v[inside], u[inside]), z[inside])
    depth[np.isinf(depth)] = np.nan
    return depth.astype(np.float32)
