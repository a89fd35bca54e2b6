"""Closest-hit and any-hit ray casting over groups of analytic primitives.

Exactness comes from the primitives; speed from culling: a primitive is tested only on the rays
that can reach it. Camera rays share one origin, so a primitive's world bounding box projected into
the image gives the pixel rectangle to test, and within it only the rays that have not yet met
something nearer than the box's nearest corner (so scenes laid out nearest first cull most).
Shadow rays are parallel (a sun at infinity), so projecting onto the plane across the sun
direction does the same for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cnd_depth_ros.synthetic.primitives import T_MIN, Primitives

__all__ = ["Hits", "cast_camera_rays", "shade_points", "shadowed"]

#: Closest distance (metres, along the optical axis) at which a box corner still projects sanely.
_NEAR = 1e-3


@dataclass(frozen=True)
class Hits:
    """Per-ray closest hit: ``t`` (inf for a miss), ``group`` index into the primitive list and
    ``index`` within the group (-1 for a miss)."""

    t: np.ndarray
    group: np.ndarray
    index: np.ndarray

    @property
    def hit(self) -> np.ndarray:
        return self.group >= 0


def _box_corners(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """The 8 corners of axis-aligned boxes, ``(K, 8, 3)``."""
    pick = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=bool)
    return np.where(pick[None], upper[:, None], lower[:, None])


def _pixel_rectangles(
    lower: np.ndarray,
    upper: np.ndarray,
    origin: np.ndarray,
    rotation: np.ndarray,
    intrinsics: tuple[float, float, float, float],
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Conservative pixel rectangle ``(u0, u1, v0, v1)`` (half open) of each world box, and the
    least depth a point in the box can have (0 where unknown).

    Boxes straddling the camera plane, or unbounded, get the whole image; boxes behind it none.
    """
    fx, fy, cx, cy = intrinsics
    rectangles = np.tile(np.array([0, width, 0, height]), (len(lower), 1))
    nearest = np.zeros(len(lower))
    finite = np.isfinite(lower).all(axis=1) & np.isfinite(upper).all(axis=1)
    if not finite.any():
        return rectangles, nearest
    corners = (_box_corners(lower[finite], upper[finite]) - origin) @ rotation
    z = corners[..., 2]
    in_front = (z > _NEAR).all(axis=1)
    behind = (z <= _NEAR).all(axis=1)
    safe_z = np.where(z > _NEAR, z, 1.0)
    u = fx * corners[..., 0] / safe_z + cx
    v = fy * corners[..., 1] / safe_z + cy
    projected = np.stack(
        [
            np.floor(u.min(axis=1)),
            np.floor(u.max(axis=1)) + 2,
            np.floor(v.min(axis=1)),
            np.floor(v.max(axis=1)) + 2,
        ],
        axis=1,
    )
    limits = np.array([width, width, height, height])
    projected = np.clip(projected, 0, limits).astype(np.int64)
    rows = np.where(in_front[:, None], projected, rectangles[finite])
    rows[behind] = 0
    rectangles[finite] = rows
    nearest[finite] = np.where(in_front, z.min(axis=1), 0.0)
    return rectangles, nearest


def cast_camera_rays(
    primitives: Sequence[Primitives],
    origin: np.ndarray,
    rotation: np.ndarray,
    directions: np.ndarray,
    intrinsics: tuple[float, float, float, float],
) -> Hits:
    """Closest hit of every pixel's ray of one pinhole view.

    ``directions`` is ``(H, W, 3)`` in world coordinates, ``rotation`` the camera-to-world matrix
    (columns: camera axes in the world), ``intrinsics`` ``(fx, fy, cx, cy)``. Returned arrays are
    ``(H, W)``.
    """
    height, width = directions.shape[:2]
    t_best = np.full((height, width), np.inf)
    group_best = np.full((height, width), -1, dtype=np.int64)
    index_best = np.full((height, width), -1, dtype=np.int64)
    for g, group in enumerate(primitives):
        lower, upper = group.bounds()
        rectangles, nearest = _pixel_rectangles(
            lower, upper, origin, rotation, intrinsics, width, height
        )
        for k, (u0, u1, v0, v1) in enumerate(rectangles):
            if u0 >= u1 or v0 >= v1:
                continue
            window = (slice(v0, v1), slice(u0, u1))
            best = t_best[window]
            rays = directions[window].reshape(-1, 3)
            # Rays that met something nearer than the whole box cannot change.
            open_rays = np.flatnonzero(best > nearest[k])
            if open_rays.size == 0:
                continue
            if open_rays.size == best.size:
                t = group.intersect(k, origin, rays).reshape(best.shape)
            else:
                t = np.full(best.shape, np.inf)
                t.reshape(-1)[open_rays] = group.intersect(k, origin, rays[open_rays])
            closer = t < best
            best[closer] = t[closer]
            group_best[window][closer] = g
            index_best[window][closer] = k
    return Hits(t_best, group_best, index_best)


def shadowed(
    primitives: Sequence[Primitives], points: np.ndarray, to_sun: np.ndarray
) -> np.ndarray:
    """Whether anything blocks the way from each point (offset off its surface) to the sun.

    ``to_sun`` is a unit vector; the result is a bool array over ``points`` ``(M, 3)``.
    """
    helper = np.array([1.0, 0.0, 0.0]) if abs(to_sun[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
    across_u = np.cross(to_sun, helper)
    across_u /= np.linalg.norm(across_u)
    across_v = np.cross(to_sun, across_u)
    basis = np.stack([across_u, across_v, to_sun], axis=1)
    projected = points @ basis
    # Points sorted across the sun's rays: each primitive's shadow is a band of this order.
    order = np.argsort(projected[:, 0], kind="stable")
    across = projected[order, 0]
    blocked = np.zeros(len(points), dtype=bool)
    for group in primitives:
        lower, upper = group.bounds()
        unbounded = ~(np.isfinite(lower).all(axis=1) & np.isfinite(upper).all(axis=1))
        finite_lower = np.where(unbounded[:, None], 0.0, lower)
        finite_upper = np.where(unbounded[:, None], 0.0, upper)
        corners = _box_corners(finite_lower, finite_upper) @ basis
        box_low, box_high = corners.min(axis=1), corners.max(axis=1)
        for k in range(len(group)):
            if unbounded[k]:
                rows = np.flatnonzero(~blocked)
            else:
                first, last = np.searchsorted(across, [box_low[k, 0], box_high[k, 0]])
                rows = order[first:last]
                inside = (
                    ~blocked[rows]
                    & (projected[rows, 1] >= box_low[k, 1])
                    & (projected[rows, 1] <= box_high[k, 1])
                    & (projected[rows, 2] <= box_high[k, 2])
                )
                rows = rows[inside]
            if rows.size == 0:
                continue
            t = group.intersect(k, points[rows], np.broadcast_to(to_sun, (rows.size, 3)), T_MIN)
            blocked[rows[np.isfinite(t)]] = True
    return blocked


def shade_points(
    primitives: Sequence[Primitives], group: np.ndarray, index: np.ndarray, points: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World normals ``(M, 3)``, surface coordinates ``(M, 2)`` and material ids ``(M,)`` of hit
    points, given which primitive each one lies on."""
    normals = np.zeros_like(points)
    uv = np.zeros((len(points), 2))
    materials = np.zeros(len(points), dtype=np.int64)
    for g, primitive_group in enumerate(primitives):
        rows = np.flatnonzero(group == g)
        if rows.size == 0:
            continue
        normals[rows], uv[rows], materials[rows] = primitive_group.surface(
            index[rows], points[rows]
        )
    return normals, uv, materials
