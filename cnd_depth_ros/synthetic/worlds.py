"""The synthetic worlds and what a set is made of: which scenes, filmed with which rig.

A style's type names its world: a :class:`~cnd_depth_ros.synthetic.scene.StreetStyle` draws
streets, an :class:`~cnd_depth_ros.synthetic.indoor.IndoorStyle` rooms and corridors. A set is
one or more :class:`World` s (a style and a rig); frame ``i`` shows ``worlds[i % len(worlds)]``,
so ``mixed`` alternates street and indoor frames, each with its own rig.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.synthetic.indoor import IndoorStyle, indoor_scene
from cnd_depth_ros.synthetic.rig import (
    KITTI_BASELINE,
    KITTI_FX_PER_WIDTH,
    ROBOT_BASELINE_M,
    ROBOT_FOV_DEG,
    Rig,
    RigRanges,
    frame_camera,
)
from cnd_depth_ros.synthetic.scene import CameraPose, Scene, StreetStyle, street_scene
from cnd_depth_ros.synthetic.textures import TextureBank

__all__ = ["WORLDS", "Style", "World", "draw_scene", "make_worlds", "world_name", "world_rig"]

#: ``cnd-depth synth --world`` choices.
WORLDS = ("street", "indoor", "mixed")

Style = StreetStyle | IndoorStyle


def world_name(style: Style) -> str:
    return "indoor" if isinstance(style, IndoorStyle) else "street"


def draw_scene(
    rng: np.random.Generator, bank: TextureBank, style: Style, camera: PinholeCamera
) -> tuple[Scene, CameraPose]:
    """A random scene of ``style``'s world and the camera's pose in it (rooms are laid out so
    that ``camera`` sees no nearer than their near limit; streets ignore the camera)."""
    if isinstance(style, IndoorStyle):
        return indoor_scene(rng, bank, style, camera)
    return street_scene(rng, bank, style)


@dataclass(frozen=True)
class World:
    """One kind of frame in a set: the scenes' style and the rig that films them."""

    style: Style
    rig: Rig

    @property
    def name(self) -> str:
        return world_name(self.style)

    def camera(self, seed: int, index: int) -> PinholeCamera:
        return frame_camera(self.rig, seed, index)

    def to_dict(self) -> dict[str, Any]:
        """How it reads back from JSON (``synth.json``)."""
        return {"world": self.name, "style": asdict(self.style), "rig": self.rig.to_dict()}


def world_rig(
    world: str,
    width: int,
    height: int,
    *,
    baseline: tuple[float, float] | None = None,
    fov_deg: tuple[float, float] | None = None,
    fx: float | None = None,
) -> Rig:
    """A world's rig, with the given parts replacing its own: streets are filmed with KITTI's
    car rig (0.54 m, ``fx`` 0.581 px per pixel of width), rooms with small robot rigs drawn per
    frame (:data:`~cnd_depth_ros.synthetic.rig.ROBOT_BASELINE_M`, ``ROBOT_FOV_DEG``). A rig
    whose ranges are single values is a fixed camera.

    :raises ValueError: an unknown world, both ``fov_deg`` and ``fx``, or a bad range.
    """
    if world not in ("street", "indoor"):
        raise ValueError(f"no world named {world!r}; choose street or indoor")
    if fov_deg is not None and fx is not None:
        raise ValueError("give the rig a field of view or a focal length, not both")
    street = world == "street"
    if baseline is None:
        baseline = (KITTI_BASELINE, KITTI_BASELINE) if street else ROBOT_BASELINE_M
    if fov_deg is None and fx is None:
        fx, fov_deg = (KITTI_FX_PER_WIDTH * width, None) if street else (None, ROBOT_FOV_DEG)
    return RigRanges(width, height, baseline, fov_deg, fx).simplest()


def make_worlds(
    world: str,
    width: int,
    height: int,
    *,
    baseline: tuple[float, float] | None = None,
    fov_deg: tuple[float, float] | None = None,
    fx: float | None = None,
    street_style: StreetStyle | None = None,
    indoor_style: IndoorStyle | None = None,
) -> tuple[World, ...]:
    """The worlds of ``cnd-depth synth --world WORLD``, each with its :func:`world_rig` (the
    given rig parts replacing its own).

    :raises ValueError: an unknown world or a bad rig.
    """
    if world not in WORLDS:
        raise ValueError(f"world must be one of {', '.join(WORLDS)}, got {world!r}")
    names = ("street", "indoor") if world == "mixed" else (world,)
    styles: dict[str, Style] = {
        "street": street_style or StreetStyle(),
        "indoor": indoor_style or IndoorStyle(),
    }
    return tuple(
        World(
            styles[name],
            world_rig(name, width, height, baseline=baseline, fov_deg=fov_deg, fx=fx),
        )
        for name in names
    )
