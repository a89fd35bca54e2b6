"""What a synthetic frame shows: camera pose, geometry, materials, light and sky.

:func:`street_scene` draws a random driving-like street (road, sidewalks, buildings, walls,
parked and moving vehicles, poles, trees, clutter) and a camera pose on it; rooms and corridors
are drawn by :mod:`~cnd_depth_ros.synthetic.indoor` with the same :class:`SceneBuilder`.
Everything random comes from the ``rng`` it is given, so a frame is a pure function of its seed.
The scene is independent of the camera pose: a sequence is the same scene seen from poses moving
down the street (``CameraPose``), and another look (textures, light) is another
:class:`StreetStyle`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnd_depth_ros.synthetic.primitives import (
    Boxes,
    Cylinders,
    GroundPlane,
    Primitives,
    Rooms,
    Spheres,
)
from cnd_depth_ros.synthetic.sensor import SensorEffects
from cnd_depth_ros.synthetic.textures import TextureBank

__all__ = [
    "STREET_STYLES",
    "CameraPose",
    "Lighting",
    "Materials",
    "Scene",
    "SceneBuilder",
    "Sky",
    "StreetStyle",
    "street_scene",
]


@dataclass(frozen=True)
class CameraPose:
    """A camera's optical centre in the world and its camera-to-world rotation (columns are the
    camera's x right, y down, z forward axes in world coordinates)."""

    position: np.ndarray
    rotation: np.ndarray

    @classmethod
    def from_angles(
        cls, position: np.ndarray, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0
    ) -> CameraPose:
        """Radians: ``yaw`` turns right, ``pitch`` looks up, ``roll`` turns clockwise (as seen
        from behind the camera)."""
        cy, sy = np.cos(yaw), np.sin(yaw)
        cp, sp = np.cos(pitch), np.sin(pitch)
        cr, sr = np.cos(roll), np.sin(roll)
        turn = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
        tilt = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
        spin = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
        return cls(np.asarray(position, dtype=np.float64), turn @ tilt @ spin)

    def shifted(self, right: float) -> CameraPose:
        """The pose ``right`` metres along the camera's own x axis: the right camera of a
        rectified rig is ``shifted(baseline)``."""
        return CameraPose(self.position + right * self.rotation[:, 0], self.rotation)


@dataclass(frozen=True)
class Materials:
    """Per-material arrays: ``texture`` id in the bank, ``scale`` (metres one texture tile
    covers), ``offset`` (texels), ``tint`` (linear RGB factor) and ``contrast`` (1: the texture as
    is, 0: its flat mean colour; low values make the low-texture surfaces stereo finds hard).

    Optional, ``None`` meaning 0 for every material: ``specular`` (strength of a Blinn-Phong
    highlight, the one view-dependent term: glossy surfaces look different from the two
    cameras, as real ones do), its ``shininess`` exponent, and ``emission`` (light the surface
    gives off, in units of its albedo: windows and lamps).
    """

    texture: np.ndarray
    scale: np.ndarray
    offset: np.ndarray
    tint: np.ndarray
    contrast: np.ndarray
    specular: np.ndarray | None = None
    shininess: np.ndarray | None = None
    emission: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.texture)


@dataclass(frozen=True)
class Lighting:
    """A sun at infinity plus hemispherical sky light (Lambertian), and the camera's exposure.

    ``to_sun`` is a unit world vector (y down, so the sun above has negative y); colours are
    linear RGB; ``exposure`` multiplies radiance before the sRGB curve and ``sensor_noise`` is the
    standard deviation of Gaussian noise on [0, 1] pixel values. ``fog_density`` (per metre)
    fades surfaces towards the sky light with depth (0: clear air). ``lamps`` are point lights
    (world positions, ``L x 3``) of linear RGB intensity ``lamp_colours`` at one metre, falling
    off with the square of the distance; they cast no shadows.
    """

    to_sun: np.ndarray
    sun_colour: np.ndarray
    ambient_colour: np.ndarray
    exposure: float
    sensor_noise: float
    shadows: bool = True
    fog_density: float = 0.0
    lamps: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    lamp_colours: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))


@dataclass(frozen=True)
class Sky:
    """Sky at infinity: a gradient from ``horizon`` to ``zenith`` with ``clouds`` (0..1) of a
    noise texture; its colour depends on the ray direction only, as it must at zero disparity."""

    horizon: np.ndarray
    zenith: np.ndarray
    clouds: float
    cloud_texture: int


@dataclass(frozen=True)
class Scene:
    """Everything a view needs besides the camera.

    ``shadow_casters`` are the primitive groups that block the sun (``None``: all of them; a
    room is left out, so the sun acts as light from above that its furniture shadows).
    ``sensor`` is what the camera does to the light after the lens (none by default).
    """

    primitives: tuple[Primitives, ...]
    materials: Materials
    lighting: Lighting
    sky: Sky
    shadow_casters: tuple[Primitives, ...] | None = None
    sensor: SensorEffects = field(default_factory=SensorEffects)


@dataclass(frozen=True)
class StreetStyle:
    """The look of a family of scenes: which textures go where, and the ranges light is drawn
    from. Texture names refer to the :class:`~cnd_depth_ros.synthetic.textures.TextureBank`."""

    road_textures: tuple[str, ...] = ("gravel.png", "noise-0", "noise-1", "moon.png")
    sidewalk_textures: tuple[str, ...] = ("brick.png", "gravel.png", "noise-2", "coins.png")
    facade_textures: tuple[str, ...] = (
        "brick.png",
        "coffee.png",
        "chelsea.png",
        "astronaut.png",
        "rocket.jpg",
        "camera.png",
        "page.png",
        "text.png",
        "hubble_deep_field.jpg",
        "ihc.png",
        "color.png",
        "clock_motion.png",
        "cell.png",
        "noise-3",
        "noise-4",
        "noise-5",
    )
    vehicle_textures: tuple[str, ...] = (
        "retina.jpg",
        "coffee.png",
        "color.png",
        "noise-6",
        "noise-7",
        "astronaut.png",
    )
    vegetation_textures: tuple[str, ...] = ("grass.png", "noise-5")
    pole_textures: tuple[str, ...] = ("moon.png", "gravel.png", "noise-2")
    cloud_texture: str = "noise-4"
    #: Probability that a facade or vehicle is nearly textureless.
    low_texture_fraction: float = 0.15
    sun_elevation_deg: tuple[float, float] = (12.0, 75.0)
    sun_intensity: tuple[float, float] = (0.6, 2.2)
    ambient_intensity: tuple[float, float] = (0.2, 0.7)
    exposure: tuple[float, float] = (0.7, 1.4)
    sensor_noise: tuple[float, float] = (0.0, 0.01)
    camera_height: tuple[float, float] = (1.45, 1.85)
    #: Fog extinction per metre; (0, 0) draws nothing, so clear styles keep their frames.
    fog_density: tuple[float, float] = (0.0, 0.0)


#: Named looks for ``cnd-depth synth --style``. ``foggy_dusk`` is a domain shift for adaptation
#: (``cnd-depth finetune``): every surface role takes other textures, the sun is low and weak,
#: the air foggy, the sensor noisier, more surfaces nearly textureless, the camera lower.
STREET_STYLES: dict[str, StreetStyle] = {
    "default": StreetStyle(),
    "foggy_dusk": StreetStyle(
        road_textures=("coins.png", "noise-6", "cell.png"),
        sidewalk_textures=("hubble_deep_field.jpg", "noise-7", "page.png"),
        facade_textures=(
            "retina.jpg", "grass.png", "moon.png", "gravel.png", "coins.png", "noise-0",
            "noise-1", "noise-6", "noise-7",
        ),
        vehicle_textures=("brick.png", "text.png", "camera.png", "noise-3"),
        vegetation_textures=("coffee.png", "noise-1"),
        pole_textures=("color.png", "noise-0"),
        cloud_texture="noise-1",
        low_texture_fraction=0.3,
        sun_elevation_deg=(3.0, 20.0),
        sun_intensity=(0.3, 1.0),
        ambient_intensity=(0.1, 0.35),
        exposure=(0.5, 1.0),
        sensor_noise=(0.01, 0.03),
        camera_height=(1.1, 1.3),
        fog_density=(0.01, 0.04),
    ),
}


class SceneBuilder:
    """Collects primitives and materials, one row each, while a scene is laid out.

    Rows: materials ``(texture, scale, offset u, offset v, tint r, g, b, contrast, specular,
    shininess, emission)``, boxes ``(centre x, y, z, half size x, y, z, yaw, material)``,
    cylinders ``(x, z, radius, top, bottom, material)``, spheres ``(x, y, z, radius,
    material)``, rooms ``(centre x, y, z, half size x, y, z, yaw, material of each face: -x, +x,
    ceiling, floor, -z, +z)``. Groups are tested in the order boxes, cylinders, spheres, rooms,
    each in the order of its rows: putting near things first lets the ray caster cull more.
    """

    def __init__(self, bank: TextureBank, rng: np.random.Generator) -> None:
        self.bank = bank
        self.rng = rng
        self.materials: list[tuple[float, ...]] = []
        self.boxes: list[tuple[float, ...]] = []
        self.rooms: list[tuple[float, ...]] = []
        self.cylinders: list[tuple[float, ...]] = []
        self.spheres: list[tuple[float, ...]] = []

    def material(
        self,
        textures: tuple[str, ...],
        scale: tuple[float, float],
        low_texture: float = 0.0,
        *,
        brightness: float = 1.0,
        specular: float = 0.0,
        shininess: float = 1.0,
        emission: float = 0.0,
    ) -> int:
        """A new material from one of ``textures`` at a random scale (metres per tile) in
        ``scale``, offset and tint, nearly flat with probability ``low_texture``; the keyword
        arguments are taken as given (``brightness`` scales the tint: dark surfaces)."""
        rng = self.rng
        contrast = rng.uniform(0.03, 0.2) if rng.random() < low_texture else rng.uniform(0.7, 1.3)
        tint = rng.uniform(0.55, 1.0) * rng.uniform(0.8, 1.2, size=3) * brightness
        texture = self.bank.index(str(rng.choice(textures)))
        offset = rng.uniform(0, 4 * self.bank.size, size=2)
        self.materials.append(
            (texture, rng.uniform(*scale), *offset, *tint, contrast, specular, shininess, emission)
        )
        return len(self.materials) - 1

    def box(
        self,
        lower: tuple[float, float, float],
        upper: tuple[float, float, float],
        material: int,
        yaw: float = 0.0,
    ) -> None:
        """An upright box between the corners ``lower`` and ``upper`` (before its ``yaw``)."""
        centre = [(a + b) / 2 for a, b in zip(lower, upper, strict=True)]
        half = [(b - a) / 2 for a, b in zip(lower, upper, strict=True)]
        self.boxes.append((*centre, *half, yaw, material))

    def build(
        self,
        lighting: Lighting,
        sky: Sky,
        ground: int | None,
        sensor: SensorEffects | None = None,
    ) -> Scene:
        """The scene: a ground plane of material ``ground`` (none for ``None``) and every
        primitive collected. Rooms cast no shadows (light from above passes their ceiling)."""
        rows = np.array(self.materials)
        shading = {
            name: rows[:, column] if rows[:, column].any() else None
            for name, column in (("specular", 8), ("emission", 10))
        }
        materials = Materials(
            texture=rows[:, 0].astype(np.int64),
            scale=rows[:, 1],
            offset=rows[:, 2:4],
            tint=rows[:, 4:7],
            contrast=rows[:, 7],
            specular=shading["specular"],
            shininess=rows[:, 9] if shading["specular"] is not None else None,
            emission=shading["emission"],
        )
        objects: list[Primitives] = []
        if self.boxes:
            rows = np.array(self.boxes)
            objects.append(
                Boxes(rows[:, 0:3], rows[:, 3:6], rows[:, 6], rows[:, 7].astype(np.int64))
            )
        if self.cylinders:
            rows = np.array(self.cylinders)
            objects.append(
                Cylinders(
                    rows[:, 0:2], rows[:, 2], rows[:, 3], rows[:, 4], rows[:, 5].astype(np.int64)
                )
            )
        if self.spheres:
            rows = np.array(self.spheres)
            objects.append(Spheres(rows[:, 0:3], rows[:, 3], rows[:, 4].astype(np.int64)))
        ground_plane = [] if ground is None else [GroundPlane(material=ground)]
        sensor = sensor or SensorEffects()
        if not self.rooms:
            primitives = (*ground_plane, *objects)
            return Scene(primitives, materials, lighting, sky, sensor=sensor)
        rows = np.array(self.rooms)
        rooms = Rooms(rows[:, 0:3], rows[:, 3:6], rows[:, 6], rows[:, 7:13].astype(np.int64))
        return Scene(
            (*objects, rooms, *ground_plane),
            materials,
            lighting,
            sky,
            shadow_casters=tuple(objects),
            sensor=sensor,
        )


class _StreetBuilder(SceneBuilder):
    """A :class:`SceneBuilder` with the street's style and its vehicles."""

    def __init__(self, bank: TextureBank, rng: np.random.Generator, style: StreetStyle) -> None:
        super().__init__(bank, rng)
        self.style = style

    def vehicle(self, x: float, z: float, yaw: float, ground: float) -> None:
        rng = self.rng
        kind = rng.random()
        width = rng.uniform(1.6, 1.9) if kind < 0.75 else rng.uniform(2.0, 2.5)
        length = rng.uniform(3.8, 4.9) if kind < 0.75 else rng.uniform(5.5, 9.0)
        body_top = rng.uniform(0.9, 1.1) if kind < 0.75 else rng.uniform(1.6, 2.8)
        style = self.style
        body = self.material(style.vehicle_textures, (1.0, 4.0), style.low_texture_fraction)
        clearance = rng.uniform(0.15, 0.3)
        centre = (x, ground - (clearance + body_top) / 2, z)
        half = (width / 2, (body_top - clearance) / 2, length / 2)
        self.boxes.append((*centre, *half, yaw, body))
        if kind < 0.75:
            cabin = self.material(style.vehicle_textures, (0.5, 2.0), 0.5)
            cabin_height = rng.uniform(0.4, 0.6)
            cabin_centre = (x, ground - body_top - cabin_height / 2, z + rng.uniform(-0.4, 0.1))
            cabin_half = (width / 2 - 0.1, cabin_height / 2, length * rng.uniform(0.22, 0.3))
            self.boxes.append((*cabin_centre, *cabin_half, yaw, cabin))


def _lighting(rng: np.random.Generator, style: StreetStyle) -> Lighting:
    elevation = np.radians(rng.uniform(*style.sun_elevation_deg))
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    to_sun = np.array(
        [
            np.cos(elevation) * np.sin(azimuth),
            -np.sin(elevation),
            np.cos(elevation) * np.cos(azimuth),
        ]
    )
    warmth = rng.uniform(0.0, 0.25)
    sun = rng.uniform(*style.sun_intensity) * np.array([1.0, 1.0 - warmth / 2, 1.0 - warmth])
    ambient = rng.uniform(*style.ambient_intensity) * np.array([0.85, 0.95, 1.1])
    exposure = rng.uniform(*style.exposure)
    sensor_noise = rng.uniform(*style.sensor_noise)
    fog = rng.uniform(*style.fog_density) if style.fog_density[1] > 0 else 0.0
    return Lighting(
        to_sun=to_sun,
        sun_colour=sun,
        ambient_colour=ambient,
        exposure=exposure,
        sensor_noise=sensor_noise,
        fog_density=fog,
    )


def _sky(rng: np.random.Generator, bank: TextureBank, style: StreetStyle) -> Sky:
    overcast = rng.random() < 0.3
    if overcast:
        grey = rng.uniform(0.5, 0.9)
        horizon, zenith = np.full(3, grey), np.full(3, grey * rng.uniform(0.7, 0.95))
    else:
        horizon = np.array([0.75, 0.85, 1.0]) * rng.uniform(0.7, 1.0)
        zenith = np.array([0.15, 0.35, 0.9]) * rng.uniform(0.6, 1.0)
    return Sky(horizon, zenith, rng.uniform(0.0, 0.8), bank.index(style.cloud_texture))


def street_scene(
    rng: np.random.Generator, bank: TextureBank, style: StreetStyle | None = None
) -> tuple[Scene, CameraPose]:
    """A random street along +z and a camera pose on its road near ``z = 0``.

    Layout: road ``|x| < road`` at ``y = 0``; raised sidewalks beyond it; building blocks (with
    gaps, some closed by walls) behind the sidewalks; parked vehicles at both kerbs and moving
    ones in the lanes; poles and trees on the sidewalks; clutter and spheres near the camera;
    sometimes a building closing the street.
    """
    style = style or StreetStyle()
    builder = _StreetBuilder(bank, rng, style)
    road_half = rng.uniform(3.5, 9.0)
    sidewalk = rng.uniform(1.5, 4.5)
    kerb = rng.uniform(0.1, 0.2)
    start, end = -30.0, rng.uniform(60.0, 250.0)
    road = builder.material(style.road_textures, (2.0, 8.0))
    for side in (-1.0, 1.0):
        inner, outer = side * road_half, side * (road_half + sidewalk)
        builder.box(
            (min(inner, outer), -kerb, start),
            (max(inner, outer), 0.0, end),
            builder.material(style.sidewalk_textures, (1.0, 5.0)),
        )
        _building_row(builder, side, road_half + sidewalk, start, end)
        _street_furniture(builder, side, road_half, sidewalk, kerb, start, end)
        _parked_vehicles(builder, side, road_half, end)
    if rng.random() < 0.5:
        builder.box(
            (-60.0, -rng.uniform(8.0, 40.0), end),
            (60.0, 0.0, end + 15.0),
            builder.material(style.facade_textures, (3.0, 15.0), style.low_texture_fraction),
        )
    for _ in range(rng.integers(0, 6)):
        lane_x = rng.uniform(-road_half + 1.2, road_half - 1.2)
        builder.vehicle(lane_x, rng.uniform(6.0, 70.0), rng.normal(0.0, 0.12), 0.0)
    _clutter(builder, road_half)

    height = rng.uniform(*style.camera_height)
    # Clear of the parked vehicles (up to 2.55 m in from the kerb), which start behind z = 0.
    lane = road_half - 2.6
    position = np.array([rng.uniform(-lane, lane), -height, 0.0])
    pose = CameraPose.from_angles(
        position,
        yaw=rng.normal(0.0, 0.12),
        pitch=rng.normal(0.0, 0.03),
        roll=rng.normal(0.0, 0.01),
    )
    return builder.build(_lighting(rng, style), _sky(rng, bank, style), road), pose


def _building_row(
    builder: _StreetBuilder, side: float, inner: float, start: float, end: float
) -> None:
    rng, style = builder.rng, builder.style
    z = start
    while z < end:
        length = rng.uniform(6.0, 30.0)
        if rng.random() < 0.25:
            if rng.random() < 0.5:
                wall = builder.material(
                    style.facade_textures, (1.0, 6.0), style.low_texture_fraction
                )
                x0 = side * (inner + rng.uniform(0.0, 1.0))
                x1 = x0 + side * rng.uniform(0.2, 0.5)
                builder.box(
                    (min(x0, x1), -rng.uniform(1.0, 3.0), z), (max(x0, x1), 0.0, z + length), wall
                )
        else:
            setback = rng.uniform(0.0, 4.0)
            depth = rng.uniform(6.0, 20.0)
            x0, x1 = side * (inner + setback), side * (inner + setback + depth)
            builder.box(
                (min(x0, x1), -rng.uniform(3.0, 35.0), z),
                (max(x0, x1), 0.0, z + length),
                builder.material(style.facade_textures, (2.0, 12.0), style.low_texture_fraction),
                yaw=rng.normal(0.0, 0.03),
            )
        z += length + (rng.uniform(0.5, 8.0) if rng.random() < 0.4 else 0.0)


def _street_furniture(
    builder: _StreetBuilder,
    side: float,
    road_half: float,
    sidewalk: float,
    kerb: float,
    start: float,
    end: float,
) -> None:
    rng, style = builder.rng, builder.style
    z = start + rng.uniform(0.0, 10.0)
    while z < end:
        x = side * (road_half + rng.uniform(0.3, min(1.2, sidewalk - 0.3)))
        if rng.random() < 0.55:
            radius, height = rng.uniform(0.05, 0.18), rng.uniform(2.5, 9.0)
            pole = builder.material(style.pole_textures, (0.5, 2.0), 0.3)
            builder.cylinders.append((x, z, radius, -kerb - height, -kerb, pole))
            if rng.random() < 0.3:
                lamp = builder.material(style.pole_textures, (0.2, 1.0), 0.5)
                builder.spheres.append((x, -kerb - height - 0.2, z, rng.uniform(0.2, 0.4), lamp))
        else:
            trunk_height = rng.uniform(1.8, 4.0)
            bark = builder.material(style.pole_textures, (0.5, 2.0))
            builder.cylinders.append(
                (x, z, rng.uniform(0.1, 0.3), -kerb - trunk_height - 0.5, -kerb, bark)
            )
            crown = rng.uniform(1.0, 3.0)
            leaves = builder.material(style.vegetation_textures, (1.0, 4.0))
            builder.spheres.append((x, -kerb - trunk_height - crown * 0.8, z, crown, leaves))
        z += rng.uniform(6.0, 30.0)


def _parked_vehicles(builder: _StreetBuilder, side: float, road_half: float, end: float) -> None:
    rng = builder.rng
    z = rng.uniform(-10.0, 15.0)
    while z < min(end, 120.0):
        if rng.random() < 0.6:
            x = side * (road_half - rng.uniform(0.95, 1.3))
            builder.vehicle(x, z, rng.normal(0.0, 0.03), 0.0)
        z += rng.uniform(5.5, 14.0)


def _clutter(builder: _StreetBuilder, road_half: float) -> None:
    """Boxes and spheres near the camera: close-range depth the street alone rarely has."""
    rng, style = builder.rng, builder.style
    for _ in range(rng.integers(0, 4)):
        size = rng.uniform(0.4, 2.5, size=3)
        x, z = rng.uniform(-road_half - 3.0, road_half + 3.0), rng.uniform(4.0, 35.0)
        material = builder.material(style.facade_textures, (0.5, 3.0), style.low_texture_fraction)
        builder.box(
            (x - size[0] / 2, -size[1], z - size[2] / 2),
            (x + size[0] / 2, 0.0, z + size[2] / 2),
            material,
            yaw=rng.uniform(-np.pi, np.pi),
        )
    for _ in range(rng.integers(0, 4)):
        radius = rng.uniform(0.3, 1.5)
        x, z = rng.uniform(-road_half - 3.0, road_half + 3.0), rng.uniform(4.0, 40.0)
        material = builder.material(
            style.vegetation_textures + style.vehicle_textures,
            (0.5, 3.0),
            style.low_texture_fraction,
        )
        builder.spheres.append((x, -radius, z, radius, material))
