"""Analytic surfaces and their exact ray intersections, vectorised over rays.

World frame: x right, y *down*, z forward along the street (the optical frame of an unrotated
camera), ground at ``y = 0``. A ray is ``origin + t * direction``; directions need not be unit
length, so camera rays scaled to unit camera-z give ``t`` = depth directly.

Each class holds a *group* of primitives of one kind as arrays (struct of arrays): the ray caster
tests primitive ``k`` on only the rays that can reach it (:meth:`intersect`), then shades every
pixel of the whole group at once (:meth:`surface`: normals, surface coordinates, materials).
Surface coordinates are in metres along the surface, so a texture has the same scale everywhere
and its second axis follows gravity on vertical faces (textures stand upright).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Boxes", "Cylinders", "GroundPlane", "Primitives", "Rooms", "Spheres"]

#: Smallest accepted ray parameter: a ray never hits the surface it starts on.
T_MIN = 1e-6


def _first_root(a: np.ndarray, b: np.ndarray, c: np.ndarray, t_min: float) -> np.ndarray:
    """Smaller root of ``a t^2 + b t + c = 0`` where it is real and above ``t_min``, else inf.

    The entry point of a ray into a convex quadric seen from outside; rays that start inside
    (only possible through numerical noise) count as misses.
    """
    disc = b * b - 4.0 * a * c
    t = np.full(a.shape, np.inf)
    real = (disc >= 0.0) & (a > 0.0)
    root = (-b[real] - np.sqrt(disc[real])) / (2.0 * a[real])
    t[real] = np.where(root > t_min, root, np.inf)
    return t


@dataclass(frozen=True)
class GroundPlane:
    """The infinite horizontal plane ``y = height`` (0: the road), facing up."""

    material: int
    height: float = 0.0

    def __len__(self) -> int:
        return 1

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([[-np.inf, self.height, -np.inf]]), np.array(
            [[np.inf, self.height, np.inf]]
        )

    def intersect(
        self, k: int, origins: np.ndarray, directions: np.ndarray, t_min: float = T_MIN
    ) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.height - origins[..., 1]) / directions[:, 1]
        return np.where((t > t_min) & np.isfinite(t), t, np.inf)

    def surface(
        self, ks: np.ndarray, points: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        normals = np.zeros_like(points)
        normals[:, 1] = -1.0
        return normals, points[:, [0, 2]], np.full(len(ks), self.material, dtype=np.int64)


def _yaw_axes(yaws: np.ndarray) -> np.ndarray:
    """Rows of ``axes[k]``: the local x, y, z axes in world coordinates of a box turned by
    ``yaws[k]`` about the vertical."""
    cos, sin = np.cos(yaws), np.sin(yaws)
    axes = np.zeros((len(yaws), 3, 3))
    axes[:, 0] = np.stack([cos, np.zeros_like(cos), -sin], axis=1)
    axes[:, 1, 1] = 1.0
    axes[:, 2] = np.stack([sin, np.zeros_like(cos), cos], axis=1)
    return axes


def _slabs(
    axes: np.ndarray,
    centre: np.ndarray,
    half: np.ndarray,
    origins: np.ndarray,
    directions: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Slab test in one box's frame: the ray is inside all three slabs on ``[t_near, t_far]``.

    Coordinates run along the first axis (3 x N), so the per-axis min/max are fast
    element-wise operations rather than reductions over a length-3 axis.
    """
    local_origins = axes @ (origins - centre).T
    if local_origins.ndim == 1:
        local_origins = local_origins[:, None]
    local_directions = axes @ directions.T
    half = half[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / local_directions
        t1 = (-half - local_origins) * inverse
        t2 = (half - local_origins) * inverse
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    t_near = np.maximum(np.maximum(near[0], near[1]), near[2])
    t_far = np.minimum(np.minimum(far[0], far[1]), far[2])
    return t_near, t_far


def _faces(
    axes: np.ndarray, centres: np.ndarray, half_sizes: np.ndarray, points: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For points on the faces of boxes: the face index (0-2: local x, y, z), the outward
    normal in world coordinates and the face's (u, v): x faces (z, y), y faces (x, z), z faces
    (x, y)."""
    local = np.einsum("nij,nj->ni", axes, points - centres)
    ratio = np.abs(local) / half_sizes
    face = ratio.argmax(axis=1)
    rows = np.arange(len(points))
    local_normals = np.zeros_like(local)
    local_normals[rows, face] = np.sign(local[rows, face])
    normals = np.einsum("nij,ni->nj", axes, local_normals)
    u_axis = np.array([2, 0, 0])[face]
    v_axis = np.array([1, 2, 1])[face]
    uv = np.stack([local[rows, u_axis], local[rows, v_axis]], axis=1)
    return face, normals, uv


def _extents(
    axes: np.ndarray, centres: np.ndarray, half_sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """World axis-aligned bounds of turned boxes."""
    extent = np.einsum("kij,ki->kj", np.abs(axes), half_sizes)
    return centres - extent, centres + extent


@dataclass(frozen=True)
class _UprightBoxes:
    """Boxes standing upright, each turned by ``yaws`` (radians) about the vertical axis;
    ``half_sizes`` are along the box's own x, y, z."""

    centres: np.ndarray
    half_sizes: np.ndarray
    yaws: np.ndarray
    #: Rows of ``axes[k]`` are box k's local x, y, z axes in world coordinates.
    axes: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "axes", _yaw_axes(self.yaws))

    def __len__(self) -> int:
        return len(self.centres)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return _extents(self.axes, self.centres, self.half_sizes)

    def _slabs(
        self, k: int, origins: np.ndarray, directions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return _slabs(self.axes[k], self.centres[k], self.half_sizes[k], origins, directions)

    def _faces(
        self, ks: np.ndarray, points: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _faces(self.axes[ks], self.centres[ks], self.half_sizes[ks], points)


@dataclass(frozen=True)
class Boxes(_UprightBoxes):
    """Solid upright boxes: buildings, walls, sidewalks, vehicles, furniture."""

    material_ids: np.ndarray

    def intersect(
        self, k: int, origins: np.ndarray, directions: np.ndarray, t_min: float = T_MIN
    ) -> np.ndarray:
        """Where the ray enters the box."""
        t_near, t_far = self._slabs(k, origins, directions)
        return np.where((t_near <= t_far) & (t_near > t_min), t_near, np.inf)

    def surface(
        self, ks: np.ndarray, points: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        _, normals, uv = self._faces(ks, points)
        return normals, uv, self.material_ids[ks]


@dataclass(frozen=True)
class Rooms(_UprightBoxes):
    """The inner faces of upright boxes: a room's floor, walls and ceiling in one primitive. A
    ray from inside leaves through exactly one face, so one slab test per ray replaces six
    planes. ``face_materials[k]`` holds room k's materials of its faces ``-x, +x, -y``
    (ceiling, y is down)``, +y`` (floor)``, -z, +z``; normals face inwards.
    """

    face_materials: np.ndarray

    def intersect(
        self, k: int, origins: np.ndarray, directions: np.ndarray, t_min: float = T_MIN
    ) -> np.ndarray:
        """Where the ray leaves the box (from outside: where it meets the far inner face)."""
        t_near, t_far = self._slabs(k, origins, directions)
        return np.where((t_near <= t_far) & (t_far > t_min), t_far, np.inf)

    def surface(
        self, ks: np.ndarray, points: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        face, normals, uv = self._faces(ks, points)
        local = np.einsum("nij,nj->ni", self.axes[ks], normals)
        side = face * 2 + (local[np.arange(len(ks)), face] > 0)
        return -normals, uv, self.face_materials[ks, side]


@dataclass(frozen=True)
class Cylinders:
    """Vertical capped cylinders (poles, tree trunks) from ``tops`` down to ``bottoms`` (y)."""

    centres_xz: np.ndarray
    radii: np.ndarray
    tops: np.ndarray
    bottoms: np.ndarray
    material_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.radii)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        x, z, r = self.centres_xz[:, 0], self.centres_xz[:, 1], self.radii
        return (
            np.stack([x - r, self.tops, z - r], axis=1),
            np.stack([x + r, self.bottoms, z + r], axis=1),
        )

    def intersect(
        self, k: int, origins: np.ndarray, directions: np.ndarray, t_min: float = T_MIN
    ) -> np.ndarray:
        radius, top, bottom = self.radii[k], self.tops[k], self.bottoms[k]
        offset_x = origins[..., 0] - self.centres_xz[k, 0]
        offset_z = origins[..., 2] - self.centres_xz[k, 1]
        dx, dy, dz = directions[:, 0], directions[:, 1], directions[:, 2]
        a = dx * dx + dz * dz
        b = 2.0 * (offset_x * dx + offset_z * dz)
        c = np.broadcast_to(offset_x * offset_x + offset_z * offset_z - radius * radius, a.shape)
        t_side = _first_root(a, b, c, t_min)
        with np.errstate(invalid="ignore"):
            y_side = origins[..., 1] + t_side * dy
        t = np.where((y_side >= top) & (y_side <= bottom), t_side, np.inf)
        for cap in (top, bottom):
            with np.errstate(divide="ignore", invalid="ignore"):
                t_cap = (cap - origins[..., 1]) / dy
                x_cap = offset_x + t_cap * dx
                z_cap = offset_z + t_cap * dz
                on_cap = (t_cap > t_min) & (x_cap * x_cap + z_cap * z_cap <= radius * radius)
            t = np.where(on_cap & (t_cap < t), t_cap, t)
        return t

    def surface(
        self, ks: np.ndarray, points: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        radial = points[:, [0, 2]] - self.centres_xz[ks]
        rho = np.hypot(radial[:, 0], radial[:, 1])
        distance_to = np.stack(
            [
                np.abs(rho - self.radii[ks]),
                np.abs(points[:, 1] - self.tops[ks]),
                np.abs(points[:, 1] - self.bottoms[ks]),
            ],
            axis=1,
        )
        part = distance_to.argmin(axis=1)
        safe_rho = np.maximum(rho, 1e-12)
        normals = np.zeros_like(points)
        side = part == 0
        normals[side, 0] = radial[side, 0] / safe_rho[side]
        normals[side, 2] = radial[side, 1] / safe_rho[side]
        normals[part == 1, 1] = -1.0
        normals[part == 2, 1] = 1.0
        around = np.arctan2(radial[:, 0], radial[:, 1]) * self.radii[ks]
        uv = np.where(side[:, None], np.stack([around, points[:, 1]], axis=1), radial)
        return normals, uv, self.material_ids[ks]


@dataclass(frozen=True)
class Spheres:
    """Spheres (tree crowns, bushes, balls, lamp globes)."""

    centres: np.ndarray
    radii: np.ndarray
    material_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.radii)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.centres - self.radii[:, None], self.centres + self.radii[:, None]

    def intersect(
        self, k: int, origins: np.ndarray, directions: np.ndarray, t_min: float = T_MIN
    ) -> np.ndarray:
        offset = origins - self.centres[k]
        a = np.einsum("ni,ni->n", directions, directions)
        b = 2.0 * (offset * directions).sum(axis=-1)
        c = np.broadcast_to((offset * offset).sum(axis=-1) - self.radii[k] ** 2, a.shape)
        return _first_root(a, np.broadcast_to(b, a.shape), c, t_min)

    def surface(
        self, ks: np.ndarray, points: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        radii = self.radii[ks]
        normals = (points - self.centres[ks]) / radii[:, None]
        longitude = np.arctan2(normals[:, 0], normals[:, 2])
        latitude = np.arcsin(np.clip(normals[:, 1], -1.0, 1.0))
        uv = np.stack([longitude * radii, latitude * radii], axis=1)
        return normals, uv, self.material_ids[ks]


#: Any primitive group the ray caster accepts.
Primitives = GroundPlane | Boxes | Rooms | Cylinders | Spheres
