"""Rooms and corridors as a robot's stereo camera sees them, at 0.3 to 10 m.

:func:`indoor_scene` lays out a closed room or corridor (floor, walls, ceiling; doors, windows
that glow, pictures, skirting boards), furniture along the walls and in the room (shelves,
cabinets, tables with chairs, desks, sofas, stacked boxes, plants, bins), people-sized figures
and small clutter on every surface, lit by ceiling lamps (point lights), light from above that
the furniture shadows and hemispherical ambient light, each with its own colour temperature.
Walls are often nearly textureless, some surfaces glossy (a highlight that differs between the
views) or dark. It uses the street's machinery (:class:`~cnd_depth_ros.synthetic.scene.
SceneBuilder`, the primitives, the texture bank), so depth and normals are exact in both views.

**Depth range.** Everything lies in the room and every corner of the room lies within
``style.depth_range[1]`` metres of both cameras, so no depth exceeds it and no ray leaves the
room (there is no sky). The near limit is kept for the rig the scene is drawn for, in both
views: the camera is placed and raised so that the floor, each wall and the ceiling are at least
``style.depth_range[0]`` metres deep at every pixel (a plane's nearest depth over the image is
reached in a corner), and an object is left out if any of its primitives comes within
``near / cos(corner angle)`` metres of either camera (only points that far off the axis could be
nearer, and those are deeper). Wide views get more room: at 100 degrees across a 4:3 image the
camera stands at least 0.27 m above the floor (0.34 m looking 15 degrees down), at 160 degrees
1.3 m, and walls stand back similarly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.synthetic.scene import CameraPose, Lighting, Scene, SceneBuilder, Sky
from cnd_depth_ros.synthetic.sensor import SensorRanges
from cnd_depth_ros.synthetic.textures import TextureBank

__all__ = ["INDOOR_STYLES", "IndoorStyle", "colour_temperature", "indoor_scene"]

#: Linear-light RGB of a black body, from Mitchell Charity's table ("What color is a blackbody?",
#: sRGB, CIE 1964 10-degree observer), the sRGB values decoded with the 2.2 power.
_BLACKBODY_K = np.array([2000.0, 2500.0, 3000.0, 3500.0, 4000.0, 5000.0, 6500.0, 8000.0])
_BLACKBODY_SRGB = np.array(
    [
        [255, 137, 18],
        [255, 161, 72],
        [255, 180, 107],
        [255, 196, 137],
        [255, 209, 163],
        [255, 228, 206],
        [255, 249, 253],
        [227, 233, 255],
    ]
)
_BLACKBODY_LINEAR = (_BLACKBODY_SRGB / 255.0) ** 2.2
#: How far (metres) things mounted on a wall stand out of it at most.
_WALL_ITEMS = 0.06


def colour_temperature(kelvin: float) -> np.ndarray:
    """Linear RGB of light of colour temperature ``kelvin`` (2000-8000 K), luminance 1."""
    rgb = np.array(
        [np.interp(kelvin, _BLACKBODY_K, _BLACKBODY_LINEAR[:, c]) for c in range(3)]
    )
    return rgb / (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2])


@dataclass(frozen=True)
class IndoorStyle:
    """The look of a family of rooms: texture pools per surface role (names in the
    :class:`~cnd_depth_ros.synthetic.textures.TextureBank`), how often surfaces are plain,
    dark or glossy, the ranges light and camera are drawn from, and the sensor's effects."""

    wall_textures: tuple[str, ...] = (
        "noise-0", "noise-3", "noise-5", "page.png", "brick.png", "moon.png", "gravel.png",
    )
    floor_textures: tuple[str, ...] = (
        "gravel.png", "brick.png", "coins.png", "cell.png", "ihc.png", "moon.png", "noise-1",
        "noise-6",
    )
    ceiling_textures: tuple[str, ...] = ("noise-2", "noise-4", "page.png", "moon.png")
    furniture_textures: tuple[str, ...] = (
        "coffee.png", "retina.jpg", "ihc.png", "cell.png", "brick.png", "color.png", "moon.png",
        "gravel.png", "noise-6", "noise-7",
    )
    clutter_textures: tuple[str, ...] = (
        "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png", "color.png",
        "coins.png", "clock_motion.png", "text.png", "page.png", "retina.jpg",
        "hubble_deep_field.jpg", "noise-3", "noise-7",
    )
    person_textures: tuple[str, ...] = (
        "astronaut.png", "chelsea.png", "coffee.png", "color.png", "retina.jpg", "noise-6",
        "noise-7",
    )
    picture_textures: tuple[str, ...] = (
        "astronaut.png", "chelsea.png", "rocket.jpg", "hubble_deep_field.jpg", "camera.png",
        "clock_motion.png", "coffee.png", "text.png",
    )
    window_textures: tuple[str, ...] = ("grass.png", "gravel.png", "rocket.jpg", "noise-4")
    corridor_fraction: float = 0.3
    #: Probability that the walls (or the ceiling) are nearly textureless paint.
    plain_wall_fraction: float = 0.6
    #: Probability that a furniture, clutter or floor material is very dark.
    dark_fraction: float = 0.15
    #: Probability that a furniture, clutter or floor material is glossy.
    glossy_fraction: float = 0.3
    #: Metres along the optical axis every pixel's depth lies in (see the module docstring).
    depth_range: tuple[float, float] = (0.3, 10.0)
    camera_height: tuple[float, float] = (0.25, 1.6)
    #: Degrees; positive looks up.
    camera_pitch_deg: tuple[float, float] = (-15.0, 8.0)
    ceiling_height: tuple[float, float] = (2.3, 3.2)
    lamps: tuple[int, int] = (1, 4)
    #: Kelvin, drawn separately for the lamps, the light from above and the ambient light.
    colour_temperature: tuple[float, float] = (2700.0, 6500.0)
    #: Linear intensity at one metre.
    lamp_intensity: tuple[float, float] = (1.5, 6.0)
    overhead_intensity: tuple[float, float] = (0.0, 0.8)
    ambient_intensity: tuple[float, float] = (0.1, 0.5)
    #: Emission of windows and lamp shades in units of their albedo (over 1: blown out).
    window_emission: tuple[float, float] = (2.0, 8.0)
    exposure: tuple[float, float] = (0.5, 1.5)
    sensor: SensorRanges = field(
        default_factory=lambda: SensorRanges(
            vignetting=(0.0, 0.35),
            blur_sigma=(0.0, 0.8),
            shot_noise=(0.0, 0.003),
            read_noise=(0.001, 0.006),
            gain_difference=0.05,
        )
    )


#: Named looks for ``cnd-depth synth --world indoor --style``.
INDOOR_STYLES: dict[str, IndoorStyle] = {"default": IndoorStyle()}


@dataclass(frozen=True)
class _Place:
    """A frame on the floor at ``(x, z)`` turned by ``yaw`` (the boxes' convention): local x
    along ``(cos, -sin)``, local z (the front of a piece of furniture) along ``(sin, cos)``."""

    x: float
    z: float
    yaw: float

    def point(self, lx: float, lz: float) -> tuple[float, float]:
        cos, sin = math.cos(self.yaw), math.sin(self.yaw)
        return self.x + lx * cos + lz * sin, self.z - lx * sin + lz * cos

    def moved(self, lx: float, lz: float, turn: float = 0.0) -> _Place:
        return _Place(*self.point(lx, lz), self.yaw + turn)

    def box(
        self,
        builder: SceneBuilder,
        lower: tuple[float, float, float],
        upper: tuple[float, float, float],
        material: int,
    ) -> None:
        """A box between local corners (y: down from the floor at 0)."""
        x, z = self.point((lower[0] + upper[0]) / 2, (lower[2] + upper[2]) / 2)
        half = [(b - a) / 2 for a, b in zip(lower, upper, strict=True)]
        y = (lower[1] + upper[1]) / 2
        builder.boxes.append((x, y, z, *half, self.yaw, material))

    def cylinder(
        self, builder: SceneBuilder, lx: float, lz: float, radius: float, top: float, bottom: float,
        material: int,
    ) -> None:
        builder.cylinders.append((*self.point(lx, lz), radius, top, bottom, material))

    def sphere(
        self, builder: SceneBuilder, lx: float, y: float, lz: float, radius: float, material: int
    ) -> None:
        x, z = self.point(lx, lz)
        builder.spheres.append((x, y, z, radius, material))


@dataclass
class _Room:
    """The room being furnished: its extent, the camera, where things may not go."""

    builder: SceneBuilder
    style: IndoorStyle
    x0: float
    x1: float
    z0: float
    z1: float
    ceiling: float
    eye: np.ndarray
    keep_out: float
    #: Floor footprints ``(x0, z0, x1, z1)`` of the furniture placed so far.
    taken: list[tuple[float, float, float, float]] = field(default_factory=list)
    #: Surfaces clutter can stand on: place, half width, half depth, height (metres up).
    surfaces: list[tuple[_Place, float, float, float]] = field(default_factory=list)

    @property
    def rng(self) -> np.random.Generator:
        return self.builder.rng

    def spot(self, margin: float) -> _Place | None:
        """A random place at least ``margin`` from every wall, facing anywhere; ``None`` if
        the room is too small."""
        if min(self.x1 - self.x0, self.z1 - self.z0) <= 2 * margin:
            return None
        rng = self.rng
        x = rng.uniform(self.x0 + margin, self.x1 - margin)
        z = rng.uniform(self.z0 + margin, self.z1 - margin)
        return _Place(x, z, rng.uniform(-math.pi, math.pi))

    def walls(self) -> list[tuple[_Place, float]]:
        """Each wall as a frame at its middle facing into the room, and its length."""
        x_mid, z_mid = (self.x0 + self.x1) / 2, (self.z0 + self.z1) / 2
        width, length = self.x1 - self.x0, self.z1 - self.z0
        return [
            (_Place(self.x0, z_mid, math.pi / 2), length),
            (_Place(self.x1, z_mid, -math.pi / 2), length),
            (_Place(x_mid, self.z0, 0.0), width),
            (_Place(x_mid, self.z1, math.pi), width),
        ]

    def material(
        self, textures: tuple[str, ...], scale: tuple[float, float], low_texture: float = 0.0,
        *, finish: bool = True,
    ) -> int:
        """A material; with ``finish`` sometimes dark, sometimes glossy. The same numbers are
        drawn whatever the style's fractions, so styles that differ only in them lay out the
        same rooms."""
        rng, style = self.rng, self.style
        dark, darkness = rng.random() < style.dark_fraction, rng.uniform(0.04, 0.15)
        glossy, gloss = rng.random() < style.glossy_fraction, rng.uniform(0.2, 0.9)
        return self.builder.material(
            textures,
            scale,
            low_texture,
            brightness=darkness if finish and dark else 1.0,
            specular=gloss if finish and glossy else 0.0,
            shininess=rng.uniform(10.0, 80.0),
        )

    def attempt(self, build: Callable[[], None], *, exclusive: bool = True) -> bool:
        """Run ``build()`` (which adds primitives) and keep them only if none comes within
        ``keep_out`` of the camera and, with ``exclusive``, their footprint overlaps no other
        piece of furniture (touching is fine)."""
        builder = self.builder
        counts = (len(builder.boxes), len(builder.cylinders), len(builder.spheres))
        build()
        lower, upper = _bounds(builder, counts)
        if len(lower) == 0:
            return False
        gap = np.maximum(np.maximum(lower - self.eye, self.eye - upper), 0.0)
        footprint = (lower[:, 0].min(), lower[:, 2].min(), upper[:, 0].max(), upper[:, 2].max())
        blocked = bool((np.linalg.norm(gap, axis=1) < self.keep_out).any())
        if exclusive and not blocked:
            blocked = any(
                footprint[0] < other[2] - 0.01 and other[0] + 0.01 < footprint[2]
                and footprint[1] < other[3] - 0.01 and other[1] + 0.01 < footprint[3]
                for other in self.taken
            )
        if blocked:
            del builder.boxes[counts[0] :], builder.cylinders[counts[1] :]
            del builder.spheres[counts[2] :]
            return False
        if exclusive:
            self.taken.append(footprint)
        return True


def _bounds(builder: SceneBuilder, counts: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """World bounding boxes of the primitives added since ``counts`` (boxes, cylinders,
    spheres), as ``(N, 3)`` lower and upper corners."""
    lower, upper = [], []
    for row in builder.boxes[counts[0] :]:
        x, y, z, hx, hy, hz, yaw = row[:7]
        cos, sin = abs(math.cos(yaw)), abs(math.sin(yaw))
        extent = np.array([cos * hx + sin * hz, hy, sin * hx + cos * hz])
        lower.append(np.array([x, y, z]) - extent)
        upper.append(np.array([x, y, z]) + extent)
    for x, z, radius, top, bottom, _ in builder.cylinders[counts[1] :]:
        lower.append(np.array([x - radius, top, z - radius]))
        upper.append(np.array([x + radius, bottom, z + radius]))
    for x, y, z, radius, _ in builder.spheres[counts[2] :]:
        lower.append(np.array([x, y, z]) - radius)
        upper.append(np.array([x, y, z]) + radius)
    return np.array(lower).reshape(-1, 3), np.array(upper).reshape(-1, 3)


def _corner_rays(camera: PinholeCamera) -> np.ndarray:
    """Camera-frame rays (unit z) through the four outer corners of the image."""
    us = (-0.5 - camera.cx, camera.width - 0.5 - camera.cx)
    vs = (-0.5 - camera.cy, camera.height - 0.5 - camera.cy)
    return np.array([[u / camera.fx, v / camera.fy, 1.0] for u in us for v in vs])


def _plane_clearance(corners: np.ndarray, rotation: np.ndarray, normal: np.ndarray) -> float:
    """Per metre of required depth, how far a plane whose unit ``normal`` points away from the
    camera must be: a ray of unit z reaches it at ``distance / (ray . normal)``, least in a
    corner (the dot product is linear over the image)."""
    return max(float((corners @ (rotation.T @ normal)).max()), 0.0)


def indoor_scene(
    rng: np.random.Generator,
    bank: TextureBank,
    style: IndoorStyle | None = None,
    camera: PinholeCamera | None = None,
) -> tuple[Scene, CameraPose]:
    """A random room or corridor around a camera pose in it, for ``camera`` (the near limit is
    kept for its field of view; without one, for a 100 degree 4:3 camera)."""
    style = style or IndoorStyle()
    camera = camera or PinholeCamera(400, 300, 167.8, 167.8, 199.5, 149.5)
    near, far = style.depth_range
    builder = SceneBuilder(bank, rng)
    corridor = rng.random() < style.corridor_fraction
    if corridor:
        yaw = rng.normal(0.0, 0.2) + (math.pi if rng.random() < 0.25 else 0.0)
    else:
        yaw = rng.uniform(-math.pi, math.pi)
    pitch = math.radians(rng.uniform(*style.camera_pitch_deg))
    roll = rng.normal(0.0, 0.02)
    orientation = CameraPose.from_angles(np.zeros(3), yaw, pitch, roll).rotation
    corners = _corner_rays(camera)
    # Both views keep the limits: the right camera is up to one baseline nearer to anything.
    baseline = camera.baseline or 0.0
    keep_out = near * float(np.linalg.norm(corners, axis=1).max()) + baseline

    def clearance(normal: tuple[float, float, float]) -> float:
        towards = np.array(normal)
        right_nearer = baseline * max(float(orientation[:, 0] @ towards), 0.0)
        return near * _plane_clearance(corners, orientation, towards) + right_nearer

    height = max(rng.uniform(*style.camera_height), clearance((0.0, 1.0, 0.0)))
    ceiling = max(rng.uniform(*style.ceiling_height), height + clearance((0.0, -1.0, 0.0)))
    margins = [clearance(normal) + _WALL_ITEMS for normal in
               ((-1.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 0.0, 1.0))]
    if corridor:
        span_x, span_z = rng.uniform(1.3, 2.6), rng.uniform(6.0, 14.0)
    else:
        span_x, span_z = rng.uniform(2.6, 8.0), rng.uniform(3.0, 10.0)
    # The camera's place across each span: the slack beyond both margins split at random, most
    # of it ahead, so that the camera rarely stands right before a wall.
    extents = []
    for span, (low, high), ahead in (
        (span_x, margins[:2], math.sin(yaw)),
        (span_z, margins[2:], math.cos(yaw)),
    ):
        share = min(max(0.5 - 0.45 * ahead + rng.uniform(-0.25, 0.25), 0.0), 1.0)
        slack = max(span - low - high, 0.0)
        extents.append([low + share * slack, high + (1.0 - share) * slack])
    _fit(extents, margins, far - baseline, max(height, ceiling - height))
    (left, right), (back, front) = extents
    room = _Room(
        builder, style, -left, right, -back, front, ceiling, np.array([0.0, -height, 0.0]),
        keep_out,
    )
    _shell(room)
    _wall_items(room, corridor)
    _furniture(room, corridor)
    _people(room)
    _clutter(room)
    lighting = _lighting(room)
    sky = Sky(np.full(3, 0.5), np.full(3, 0.5), 0.0, 0)  # never seen: the room is closed
    for rows in (builder.boxes, builder.cylinders, builder.spheres):
        rows.sort(key=lambda row: _distance_to(row, room.eye))
    scene = builder.build(lighting, sky, None, style.sensor.draw(rng))
    return scene, CameraPose(room.eye, orientation)


def _distance_to(row: tuple[float, ...], eye: np.ndarray) -> float:
    """Horizontal distance from ``eye`` to a box's, cylinder's or sphere's centre (rows of
    six or fewer numbers are cylinders ``(x, z, ...)``): the near-first order of the ray
    caster."""
    x, z = (row[0], row[1]) if len(row) == 6 else (row[0], row[2])
    return math.hypot(x - eye[0], z - eye[2])


def _fit(extents: list[list[float]], margins: list[float], far: float, vertical: float) -> None:
    """Shrink the room towards the camera (never inside a margin) until its farthest corner is
    within ``far`` metres; ``vertical`` is the larger of the camera's heights over the floor
    and under the ceiling."""
    limit = far * far - vertical * vertical - 1e-3
    low = [margins[0], margins[1], margins[2], margins[3]]
    original = [*extents[0], *extents[1]]

    def reach(scale: float) -> float:
        e = [m + scale * (o - m) for m, o in zip(low, original, strict=True)]
        return max(e[0], e[1]) ** 2 + max(e[2], e[3]) ** 2

    if reach(1.0) <= limit:
        return
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if reach(mid) <= limit else (lo, mid)
    e = [m + lo * (o - m) for m, o in zip(low, original, strict=True)]
    extents[0][:], extents[1][:] = e[:2], e[2:]


def _shell(room: _Room) -> None:
    """Floor, walls (one of them sometimes in another finish) and ceiling: one room primitive,
    closed, so no ray leaves it."""
    style = room.style
    floor = room.material(style.floor_textures, (0.5, 3.0))
    walls = room.material(style.wall_textures, (0.5, 4.0), style.plain_wall_fraction, finish=False)
    accent = (
        room.material(style.wall_textures, (0.5, 3.0), finish=False)
        if room.rng.random() < 0.3
        else walls
    )
    ceiling = room.material(
        style.ceiling_textures, (0.5, 4.0), style.plain_wall_fraction, finish=False
    )
    centre = ((room.x0 + room.x1) / 2, -room.ceiling / 2, (room.z0 + room.z1) / 2)
    half = ((room.x1 - room.x0) / 2, room.ceiling / 2, (room.z1 - room.z0) / 2)
    faces = (walls, walls, ceiling, floor, walls, accent)
    room.builder.rooms.append((*centre, *half, 0.0, *faces))


def _wall_items(room: _Room, corridor: bool) -> None:
    """Skirting boards, doors, windows and pictures, standing out of the walls by at most
    ``_WALL_ITEMS``."""
    rng, style, builder = room.rng, room.style, room.builder
    skirting = room.material(style.furniture_textures, (0.3, 1.0), 0.5)
    has_skirting = rng.random() < 0.6
    door_material = room.material(style.furniture_textures, (0.5, 2.0), 0.4)
    frame = room.material(style.furniture_textures, (0.3, 1.0), 0.6)
    for wall, length in room.walls():
        if has_skirting:
            wall.box(builder, (-length / 2, -rng.uniform(0.05, 0.12), 0.0),
                     (length / 2, 0.0, 0.015), skirting)
        used: list[tuple[float, float]] = []
        for _ in range(rng.integers(0, 4 if corridor else 2)):
            span = _free_span(rng, length, rng.uniform(0.8, 1.0), used)
            if span:
                wall.box(builder, (span[0], -rng.uniform(2.0, min(2.15, room.ceiling - 0.05)),
                                   0.0), (span[1], 0.0, 0.03), door_material)
                handle = span[0] + 0.08 if rng.random() < 0.5 else span[1] - 0.12
                wall.box(builder, (handle, -1.07, 0.03), (handle + 0.04, -1.02, 0.06), frame)
        if not corridor:
            for _ in range(rng.integers(0, 3)):
                width = rng.uniform(0.7, 2.2)
                span = _free_span(rng, length, width, used)
                if span:
                    _window(room, wall, span, frame)
        for _ in range(rng.integers(0, 3)):
            span = _free_span(rng, length, rng.uniform(0.3, 1.2), used)
            if span:
                bottom = rng.uniform(0.9, 1.5)
                top = min(bottom + rng.uniform(0.3, 0.9), room.ceiling - 0.1)
                picture = room.builder.material(style.picture_textures, (0.3, 1.2))
                wall.box(builder, (span[0], -top, 0.0), (span[1], -bottom, 0.02), picture)


def _free_span(
    rng: np.random.Generator, length: float, width: float, used: list[tuple[float, float]]
) -> tuple[float, float] | None:
    """A random stretch ``width`` long on a wall ``length`` long (centred at 0), 0.2 m from its
    ends and 0.1 m from the stretches in ``used`` (to which it is added); ``None`` if it does not
    fit."""
    if length < width + 0.4:
        return None
    start = rng.uniform(-length / 2 + 0.2, length / 2 - 0.2 - width)
    span = (start, start + width)
    if any(span[0] < b + 0.1 and a - 0.1 < span[1] for a, b in used):
        return None
    used.append(span)
    return span


def _window(room: _Room, wall: _Place, span: tuple[float, float], frame: int) -> None:
    """A glowing pane (blown out, nearly textureless: the outside seen from in) in a frame
    with a cross bar."""
    rng, style, builder = room.rng, room.style, room.builder
    sill = rng.uniform(0.7, 1.0)
    top = min(sill + rng.uniform(0.8, 1.6), room.ceiling - 0.15)
    glass = builder.material(
        style.window_textures, (0.5, 3.0), 0.5, emission=rng.uniform(*style.window_emission)
    )
    (a, b), bar = span, 0.05
    wall.box(builder, (a, -top, 0.0), (b, -sill, 0.02), glass)
    for lower, upper in (
        ((a - bar, -top - bar, 0.0), (b + bar, -top, _WALL_ITEMS)),
        ((a - bar, -sill, 0.0), (b + bar, -sill + bar, _WALL_ITEMS)),
        ((a - bar, -top, 0.0), (a, -sill, _WALL_ITEMS)),
        ((b, -top, 0.0), (b + bar, -sill, _WALL_ITEMS)),
        (((a + b) / 2 - bar / 2, -top, 0.02), ((a + b) / 2 + bar / 2, -sill, 0.04)),
    ):
        wall.box(builder, lower, upper, frame)


def _furniture(room: _Room, corridor: bool) -> None:
    """Pieces along each wall, walking along it with gaps, then a few free-standing ones."""
    rng = room.rng
    along_wall = (_shelf, _cabinet, _desk, _sofa, _box_stack, _plant, _bin)
    weights = np.array([3.0, 2.0, 2.0, 1.0, 2.0, 1.0, 1.0])
    if corridor:
        weights = np.array([1.0, 2.0, 0.0, 0.0, 2.0, 1.0, 2.0])
    for wall, length in room.walls():
        position = -length / 2 + rng.uniform(0.0, 1.5)
        while position < length / 2 - 0.3:
            if rng.random() < (0.5 if corridor else 0.7):
                width = rng.uniform(0.4, 1.8)
                width = min(width, length / 2 - position)
                kind = along_wall[rng.choice(len(along_wall), p=weights / weights.sum())]
                depth = rng.uniform(0.3, 0.9)
                place = wall.moved(position + width / 2, depth / 2 + 0.02)
                room.attempt(functools.partial(kind, room, place, width, depth))
                position += width
            position += rng.uniform(0.2, 2.0 if corridor else 1.2)
    middle = (_table_with_chairs, _box_stack, _plant, _bin, _sofa)
    for _ in range(rng.integers(0, 2 if corridor else 4)):
        kind = middle[rng.integers(len(middle))]
        width, depth = rng.uniform(0.4, 1.8), rng.uniform(0.4, 1.0)
        reach = max(width, depth) / 2 + 0.3  # from the walls
        free = room.spot(reach)
        if free is not None:
            room.attempt(functools.partial(kind, room, free, width, depth))


def _shelf(room: _Room, place: _Place, width: float, depth: float) -> None:
    """A bookcase: sides, back, top and 2-6 boards, each a surface for clutter."""
    rng, builder = room.rng, room.builder
    depth = min(depth, 0.45)
    height = min(rng.uniform(0.8, 2.2), room.ceiling - 0.1)
    wood = room.material(room.style.furniture_textures, (0.3, 1.5), 0.2)
    t, w, d = 0.02, width / 2, depth / 2
    place.box(builder, (-w, -height, -d), (-w + t, 0.0, d), wood)
    place.box(builder, (w - t, -height, -d), (w, 0.0, d), wood)
    place.box(builder, (-w, -height, -d), (w, -height + t, d), wood)
    place.box(builder, (-w, -height, -d), (w, 0.0, -d + t), wood)
    boards = int(rng.integers(2, 7))
    for k in range(boards):
        level = 0.05 + k * (height - 0.05) / boards
        place.box(builder, (-w + t, -level - t, -d + t), (w - t, -level, d), wood)
        room.surfaces.append((place, w - t, d - t, level + t))


def _cabinet(room: _Room, place: _Place, width: float, depth: float) -> None:
    """A closed cabinet or chest of drawers: body, door panels, handles; its top a surface."""
    rng, builder = room.rng, room.builder
    height = rng.uniform(0.5, 2.0)
    body = room.material(room.style.furniture_textures, (0.3, 2.0), 0.4)
    panel = room.material(room.style.furniture_textures, (0.3, 2.0), 0.5)
    w, d = width / 2, depth / 2
    place.box(builder, (-w, -height, -d), (w, 0.0, d), body)
    doors = max(1, int(width / 0.5))
    step = width / doors
    for k in range(doors):
        a = -w + k * step + 0.01
        place.box(builder, (a, -height + 0.02, d), (a + step - 0.02, -0.06, d + 0.015), panel)
        handle = a + step / 2 - 0.05
        place.box(builder, (handle, -height / 2 - 0.01, d + 0.015),
                  (handle + 0.1, -height / 2 + 0.01, d + 0.035), body)
    room.surfaces.append((place, w, d, height))


def _table(room: _Room, place: _Place, width: float, depth: float, height: float) -> None:
    rng, builder = room.rng, room.builder
    wood = room.material(room.style.furniture_textures, (0.3, 2.0), 0.3)
    w, d, top = width / 2, depth / 2, rng.uniform(0.025, 0.05)
    place.box(builder, (-w, -height, -d), (w, -height + top, d), wood)
    leg = rng.uniform(0.03, 0.07)
    if rng.random() < 0.25:
        place.cylinder(builder, 0.0, 0.0, leg * 1.5, -height + top, 0.0, wood)
    else:
        for sx in (-1, 1):
            for sz in (-1, 1):
                cx, cz = sx * (w - leg), sz * (d - leg)
                place.box(builder, (cx - leg / 2, -height + top, cz - leg / 2),
                          (cx + leg / 2, 0.0, cz + leg / 2), wood)
    room.surfaces.append((place, w, d, height))


def _chair(room: _Room, place: _Place) -> None:
    rng, builder = room.rng, room.builder
    material = room.material(room.style.furniture_textures, (0.3, 1.0), 0.3)
    seat, size, leg = rng.uniform(0.42, 0.5), rng.uniform(0.2, 0.25), 0.025
    place.box(builder, (-size, -seat - 0.04, -size), (size, -seat, size), material)
    for sx in (-1, 1):
        for sz in (-1, 1):
            cx, cz = sx * (size - leg), sz * (size - leg)
            place.box(builder, (cx - leg, -seat, cz - leg), (cx + leg, 0.0, cz + leg), material)
    back = rng.uniform(0.35, 0.5)
    place.box(builder, (-size, -seat - back, -size), (size, -seat - 0.04, -size + 0.03), material)


def _table_with_chairs(room: _Room, place: _Place, width: float, depth: float) -> None:
    rng = room.rng
    depth = max(depth, 0.6)
    _table(room, place, width, depth, rng.uniform(0.7, 0.78))
    for side in (-1, 1):
        if rng.random() < 0.7:
            offset = rng.uniform(-width / 4, width / 4)
            turn = math.pi if side > 0 else 0.0  # the back away from the table
            _chair(room, place.moved(offset, side * (depth / 2 + 0.15), turn))


def _desk(room: _Room, place: _Place, width: float, depth: float) -> None:
    """A desk against the wall (its back to the wall), a monitor on it, a chair before it."""
    rng, builder = room.rng, room.builder
    width, depth = max(width, 0.8), min(max(depth, 0.5), 0.8)
    height = rng.uniform(0.7, 0.76)
    _table(room, place, width, depth, height)
    if rng.random() < 0.6:
        screen = room.material(room.style.clutter_textures, (0.3, 0.6), 0.5)
        size = rng.uniform(0.45, 0.7)
        place.box(builder, (-size / 2, -height - 0.05 - size * 0.6, -depth / 2 + 0.1),
                  (size / 2, -height - 0.05, -depth / 2 + 0.13), screen)
        place.box(builder, (-0.04, -height - 0.06, -depth / 2 + 0.09),
                  (0.04, -height, -depth / 2 + 0.16), screen)
    if rng.random() < 0.7:
        _chair(room, place.moved(rng.uniform(-0.2, 0.2), depth / 2 + 0.1, math.pi))


def _sofa(room: _Room, place: _Place, width: float, depth: float) -> None:
    rng, builder = room.rng, room.builder
    width, depth = max(width, 0.9), max(depth, 0.7)
    fabric = room.material(room.style.furniture_textures, (0.3, 1.5), 0.3)
    w, d = width / 2, depth / 2
    seat, back, arm = rng.uniform(0.38, 0.48), rng.uniform(0.75, 0.95), 0.15
    place.box(builder, (-w, -seat, -d), (w, 0.0, d), fabric)
    place.box(builder, (-w, -back, -d), (w, -seat, -d + 0.2), fabric)
    for side in (-1, 1):
        x = side * (w - arm / 2)
        place.box(builder, (x - arm / 2, -seat - 0.2, -d + 0.2), (x + arm / 2, -seat, d), fabric)


def _box_stack(room: _Room, place: _Place, width: float, depth: float) -> None:
    """One to four boxes (cartons, crates) stacked, each a little turned."""
    rng, builder = room.rng, room.builder
    base = 0.0
    size = np.array([min(width, 0.8), rng.uniform(0.2, 0.6), min(depth, 0.7)])
    for _ in range(rng.integers(1, 5)):
        material = room.material(room.style.furniture_textures + room.style.clutter_textures,
                                 (0.2, 1.0), 0.3)
        turn = rng.normal(0.0, 0.15)
        w, h, d = size / 2
        box_place = place.moved(rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), turn)
        box_place.box(builder, (-w, -base - 2 * h, -d), (w, -base, d), material)
        base += 2 * h
        size = size * rng.uniform(0.6, 1.0, size=3)
        if base > 1.8:
            break


def _plant(room: _Room, place: _Place, width: float, depth: float) -> None:
    rng, builder = room.rng, room.builder
    pot = room.material(room.style.furniture_textures, (0.2, 0.6), 0.5)
    leaves = room.builder.material(("grass.png", "noise-5"), (0.2, 1.0))
    radius = rng.uniform(0.12, 0.25)
    pot_height = rng.uniform(0.2, 0.5)
    place.cylinder(builder, 0.0, 0.0, radius, -pot_height, 0.0, pot)
    crown = rng.uniform(0.2, 0.5)
    stem = rng.uniform(0.0, 0.8)
    place.cylinder(builder, 0.0, 0.0, 0.02, -pot_height - stem - crown, -pot_height, pot)
    place.sphere(builder, 0.0, -pot_height - stem - crown, 0.0, crown, leaves)


def _bin(room: _Room, place: _Place, width: float, depth: float) -> None:
    rng = room.rng
    material = room.material(room.style.furniture_textures + room.style.clutter_textures,
                             (0.2, 0.8), 0.4)
    place.cylinder(room.builder, 0.0, 0.0, rng.uniform(0.12, 0.3), -rng.uniform(0.3, 0.9), 0.0,
                   material)


def _people(room: _Room) -> None:
    """Zero to three standing figures: legs, torso, arms and head, 1.5 to 1.95 m tall."""
    rng, builder, style = room.rng, room.builder, room.style
    for _ in range(rng.integers(0, 4)):
        place = room.spot(0.4)
        if place is None:
            return
        tall = rng.uniform(1.5, 1.95)
        clothes = room.material(style.person_textures, (0.2, 1.0), 0.3)
        trousers = room.material(style.person_textures, (0.2, 1.0), 0.5)
        skin = builder.material(("noise-0", "noise-2"), (0.2, 0.5), 1.0)

        def figure(place: _Place = place, tall: float = tall, clothes: int = clothes,
                   trousers: int = trousers, skin: int = skin) -> None:
            hip, shoulder, head = 0.53 * tall, 0.82 * tall, 0.065 * tall
            width = rng.uniform(0.17, 0.24)
            for side in (-1, 1):
                place.cylinder(builder, side * width * 0.45, 0.0, rng.uniform(0.06, 0.09),
                               -hip, 0.0, trousers)
                place.cylinder(builder, side * (width + 0.05), 0.0, 0.045, -shoulder,
                               -hip + 0.05, clothes)
            place.box(builder, (-width, -shoulder, -0.12), (width, -hip + 0.02, 0.12), clothes)
            place.cylinder(builder, 0.0, 0.0, 0.05, -shoulder - 0.08, -shoulder, skin)
            place.sphere(builder, 0.0, -tall + head, 0.0, head, skin)

        room.attempt(figure)


def _clutter(room: _Room) -> None:
    """Small things on every surface and on the floor: many depths, many edges."""
    rng, style = room.rng, room.style
    spots = [
        (place, w, d, height, int(rng.integers(0, 5))) for place, w, d, height in room.surfaces
    ]
    for _ in range(rng.integers(2, 12)):
        place = room.spot(0.15)
        if place is not None:
            spots.append((place, 0.0, 0.0, 0.0, 1))
    for place, w, d, height, count in spots:
        for _ in range(count):
            material = room.material(style.clutter_textures, (0.05, 0.5), 0.2)
            spot = place.moved(rng.uniform(-w, w) * 0.85, rng.uniform(-d, d) * 0.85,
                               rng.uniform(-math.pi, math.pi))
            kind = rng.integers(3)
            size = rng.uniform(0.03, 0.15 if height > 0 else 0.3)
            builder = room.builder
            item: Callable[[], None]
            if kind == 0:  # a box: books, cartons, devices
                tall = size * rng.uniform(0.5, 3.0)
                lower, upper = (-size, -height - tall, -size * 0.7), (size, -height, size * 0.7)
                item = functools.partial(spot.box, builder, lower, upper, material)
            elif kind == 1:  # a cylinder: cups, bottles, tins
                tall = size * rng.uniform(1.0, 4.0)
                item = functools.partial(
                    spot.cylinder, builder, 0.0, 0.0, size * 0.6, -height - tall, -height, material
                )
            else:  # a ball
                item = functools.partial(
                    spot.sphere, builder, 0.0, -height - size, 0.0, size, material
                )
            room.attempt(item, exclusive=False)


def _lighting(room: _Room) -> Lighting:
    """Ceiling lamps (a glowing globe or panel, the point light inside it), light from above
    that the furniture shadows, and ambient light: three colour temperatures."""
    rng, style, builder = room.rng, room.style, room.builder
    lamps, colours = [], []
    for _ in range(rng.integers(style.lamps[0], style.lamps[1] + 1)):
        place = room.spot(0.3)
        if place is None:
            break
        x, z = place.x, place.z
        colour = colour_temperature(rng.uniform(*style.colour_temperature))
        shade = builder.material(("noise-4", "page.png"), (0.3, 1.0), 1.0,
                                 emission=rng.uniform(*style.window_emission))
        if rng.random() < 0.5:
            radius = rng.uniform(0.08, 0.2)
            drop = rng.uniform(0.0, 0.7)
            y = -room.ceiling + drop + radius
            position = np.array([x, y, z])

            def globe(x: float = x, y: float = y, z: float = z, radius: float = radius,
                      shade: int = shade, drop: float = drop) -> None:
                builder.spheres.append((x, y, z, radius, shade))
                if drop > 0.05:
                    builder.cylinders.append((x, z, 0.008, -room.ceiling, y - radius, shade))
            if not room.attempt(globe, exclusive=False):
                continue
        else:
            half = rng.uniform(0.15, 0.6, size=2)
            position = np.array([x, -room.ceiling + 0.08, z])

            def panel(x: float = x, z: float = z, half: np.ndarray = half,
                      shade: int = shade) -> None:
                builder.box((x - half[0], -room.ceiling, z - half[1]),
                            (x + half[0], -room.ceiling + 0.03, z + half[1]), shade)
            if not room.attempt(panel, exclusive=False):
                continue
        lamps.append(position)
        colours.append(colour * rng.uniform(*style.lamp_intensity))
    elevation = math.radians(rng.uniform(45.0, 88.0))
    azimuth = rng.uniform(0.0, 2.0 * math.pi)
    to_light = np.array([
        math.cos(elevation) * math.sin(azimuth),
        -math.sin(elevation),
        math.cos(elevation) * math.cos(azimuth),
    ])
    overhead = colour_temperature(rng.uniform(*style.colour_temperature))
    ambient = colour_temperature(rng.uniform(*style.colour_temperature))
    return Lighting(
        to_sun=to_light,
        sun_colour=overhead * rng.uniform(*style.overhead_intensity),
        ambient_colour=ambient * rng.uniform(*style.ambient_intensity),
        exposure=rng.uniform(*style.exposure),
        sensor_noise=0.0,
        lamps=np.array(lamps).reshape(-1, 3),
        lamp_colours=np.array(colours).reshape(-1, 3),
    )
