"""A camera driving down one synthetic street, or a robot crossing one room: the frames of a
synthetic recording.

The scene and the first pose come from :func:`~cnd_depth_ros.synthetic.worlds.draw_scene` (the
style picks the world); the rig then moves straight ahead (world +z) at a constant speed, its
orientation fixed, one stereo pair every ``1 / rate`` seconds. A scene drawn for single frames
may have a vehicle, furniture or clutter in the rig's path, so scenes are drawn from
``default_rng([seed, 1, attempt])`` until one leaves room for the whole drive (the roomiest of
``_ATTEMPTS`` otherwise), and the speed is lowered where needed for the rig to stop short of the
first obstacle in its path. Frame ``i``'s sensor noise comes from ``default_rng([seed, 0, i])``:
a sequence is a pure function of its arguments.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.synthetic.primitives import GroundPlane
from cnd_depth_ros.synthetic.renderer import StereoRendering, render_stereo
from cnd_depth_ros.synthetic.scene import CameraPose, Scene, StreetStyle
from cnd_depth_ros.synthetic.textures import default_bank
from cnd_depth_ros.synthetic.worlds import Style, draw_scene, world_name

__all__ = ["DEFAULT_SPEED", "SequenceFrame", "free_distance", "render_sequence"]

#: Half width (metres) of the corridor the rig sweeps, per world: a car, a small robot.
_HALF_WIDTH = {"street": 1.0, "indoor": 0.35}
#: Speed (m/s) of a drive when none is given, per world.
DEFAULT_SPEED = {"street": 8.0, "indoor": 1.0}
#: Distance (metres) the rig keeps from the first obstacle in its corridor.
_MARGIN = 2.0
#: Streets drawn at most while looking for one with room for the drive.
_ATTEMPTS = 20


@dataclass(frozen=True)
class SequenceFrame:
    """Frame ``index`` of a sequence: its time since the first frame and the rendered pair."""

    index: int
    time_s: float
    pose: CameraPose
    rendering: StereoRendering


def free_distance(
    scene: Scene, pose: CameraPose, half_width: float = _HALF_WIDTH["street"]
) -> float:
    """How far (metres) the rig can drive along +z before its corridor meets an object.

    The corridor is ``half_width`` either side of the camera and spans from just above the
    ground to a little above the camera; objects are taken by their axis-aligned bounds, so the
    answer errs on the short side. Objects that begin behind the camera (parked cars beside it,
    the room around it) are not in the way: the scene places the camera clear of them and it
    moves straight ahead.
    """
    x, y, z = pose.position
    low = np.array([x - half_width, y - 0.3])
    high = np.array([x + half_width, -0.05])
    nearest = np.inf
    for group in scene.primitives:
        if isinstance(group, GroundPlane) or not len(group):
            continue
        lower, upper = group.bounds()
        across = np.all((lower[:, :2] < high) & (upper[:, :2] > low), axis=1)
        ahead = across & (lower[:, 2] > z)
        if ahead.any():
            nearest = min(nearest, float(lower[ahead, 2].min()) - z)
    return max(nearest, 0.0)


def render_sequence(
    camera: PinholeCamera,
    frames: int,
    *,
    seed: int = 0,
    rate: float = 10.0,
    speed: float | None = None,
    style: Style | None = None,
) -> Iterator[SequenceFrame]:
    """Render ``frames`` stereo pairs ``1 / rate`` s apart of the rig moving at ``speed`` m/s
    (default: :data:`DEFAULT_SPEED` of the style's world, the street by default; slower if an
    obstacle in its path is nearer than the distance it would cover). Arguments are checked
    and the scene is drawn now; frames are rendered as the iterator is consumed.

    :raises ValueError: a non-stereo camera, fewer than one frame, or a rate or speed that is not
        positive and finite (speed may be 0: a parked rig).
    """
    style = style or StreetStyle()
    world = world_name(style)
    speed = DEFAULT_SPEED[world] if speed is None else speed
    if camera.baseline is None:
        raise ValueError("a synthetic sequence needs a stereo camera (baseline is None)")
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if not 0 < rate < np.inf:
        raise ValueError(f"rate must be positive and finite, got {rate} Hz")
    if not 0 <= speed < np.inf:
        raise ValueError(f"speed must be non-negative and finite, got {speed} m/s")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    bank = default_bank()
    duration = (frames - 1) / rate
    drive = speed * duration + _MARGIN
    roomiest: tuple[float, Scene, CameraPose] | None = None
    for attempt in range(_ATTEMPTS):
        rng = np.random.default_rng([seed, 1, attempt])
        scene, start = draw_scene(rng, bank, style, camera)
        room = free_distance(scene, start, _HALF_WIDTH[world])
        if roomiest is None or room > roomiest[0]:
            roomiest = (room, scene, start)
        if room >= drive:
            break
    assert roomiest is not None
    room, scene, start = roomiest
    if duration > 0:
        speed = min(speed, max(room - _MARGIN, 0.0) / duration)
    return _render(scene, start, camera, frames, seed, rate, speed)


def _render(
    scene: Scene,
    start: CameraPose,
    camera: PinholeCamera,
    frames: int,
    seed: int,
    rate: float,
    speed: float,
) -> Iterator[SequenceFrame]:
    bank = default_bank()
    for index in range(frames):
        time_s = index / rate
        pose = CameraPose(start.position + np.array([0.0, 0.0, speed * time_s]), start.rotation)
        noise = np.random.default_rng([seed, 0, index])
        yield SequenceFrame(index, time_s, pose, render_stereo(scene, bank, camera, pose, noise))
