"""Write a synthetic stereo dataset folder (``cnd-depth synth``), in parallel and resumably.

Frame ``i`` shows world ``i % len(worlds)`` (:mod:`~cnd_depth_ros.synthetic.worlds`), filmed
with that world's rig (drawn per frame where it varies: :mod:`~cnd_depth_ros.synthetic.rig`),
and is rendered from ``numpy.random.default_rng([seed, i])`` alone, so a set is the same whatever
the number of worker processes or the order they finish in, and an interrupted run can be
completed later (``resume=True``) with frames identical to an uninterrupted one.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from cnd_depth_ros import __version__
from cnd_depth_ros.atomic_file import write_atomically
from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.data.synthetic_layout import (
    CAMERA_FILE,
    FRAME_CAMERA,
    FRAME_FILES,
    MANIFEST_FILE,
    frame_path,
    frame_stems,
    read_camera,
    write_json,
)
from cnd_depth_ros.errors import DatasetError
from cnd_depth_ros.synthetic.renderer import StereoRendering, render_stereo
from cnd_depth_ros.synthetic.rig import Rig, RigRanges, kitti_like_camera
from cnd_depth_ros.synthetic.scene import StreetStyle
from cnd_depth_ros.synthetic.textures import default_bank
from cnd_depth_ros.synthetic.worlds import Style, World, draw_scene

__all__ = ["WriteSummary", "kitti_like_camera", "render_frame", "write_dataset", "write_frame"]

_LOGGER = logging.getLogger(__name__)

#: zlib level of the PNGs: fast, and still about 2/3 of the raw size on textured images.
_PNG_COMPRESSION = 1


def render_frame(
    seed: int, index: int, camera: PinholeCamera, style: Style | None = None
) -> StereoRendering:
    """Frame ``index`` of the set made with ``seed``: a pure function of its arguments. The
    style's type picks the world (default: the street)."""
    bank = default_bank()
    rng = np.random.default_rng([seed, index])
    scene, pose = draw_scene(rng, bank, style or StreetStyle(), camera)
    return render_stereo(scene, bank, camera, pose, rng)


def _png(rgb: np.ndarray) -> bytes:
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    ok, encoded = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, _PNG_COMPRESSION])
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return encoded.tobytes()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_frame(
    root: Path, index: int, rendering: StereoRendering, camera: PinholeCamera | None = None
) -> None:
    """Write one frame's files, each through a temporary name, the left image last; with
    ``camera``, the frame's own camera file too (before the left image)."""
    contents = {
        "left.png": _png(rendering.left),
        "right.png": _png(rendering.right),
        "depth.npy": _npy(rendering.depth.astype(np.float32)),
        "right_depth.npy": _npy(rendering.right_depth.astype(np.float32)),
        "normals.npy": _npy(rendering.normals.astype(np.float16)),
    }
    if camera is not None:
        camera_path = frame_path(root, index, FRAME_CAMERA)
        write_json(camera_path, camera.to_dict())
    for suffix in FRAME_FILES:
        data = contents[suffix]
        write_atomically(
            frame_path(root, index, suffix), lambda tmp, data=data: tmp.write_bytes(data)
        )


def _make_frame(
    index: int, root: Path, seed: int, worlds: tuple[World, ...], per_frame_camera: bool
) -> int:
    world = worlds[index % len(worlds)]
    camera = world.camera(seed, index)
    rendering = render_frame(seed, index, camera, world.style)
    write_frame(root, index, rendering, camera if per_frame_camera else None)
    return index


@dataclass(frozen=True)
class WriteSummary:
    """What :func:`write_dataset` did; ``frames_per_second`` counts frames written this run."""

    root: Path
    frames: int
    written: int
    skipped: int
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def _manifest(seed: int, worlds: tuple[World, ...]) -> dict[str, Any]:
    """What decides a set's frames, as it reads back from JSON."""
    manifest = {
        "generator": "cnd_depth_ros.synthetic",
        "seed": seed,
        "worlds": [world.to_dict() for world in worlds],
    }
    return json.loads(json.dumps(manifest))


def _recorded_manifest(root: Path, camera: PinholeCamera) -> Any:
    """``synth.json`` of an existing set; one written before there were worlds (a ``style``,
    no ``worlds``) was a street set filmed with its ``camera.json``."""
    recorded = json.loads((root / MANIFEST_FILE).read_text())
    if isinstance(recorded, dict) and "worlds" not in recorded and "style" in recorded:
        street = {"world": "street", "style": recorded.pop("style"), "rig": camera.to_dict()}
        recorded["worlds"] = [street]
    return recorded


def _as_worlds(
    camera: PinholeCamera | RigRanges | Sequence[World], style: Style | None
) -> tuple[World, ...]:
    """The worlds of :func:`write_dataset`'s ``camera`` and ``style`` arguments."""
    if isinstance(camera, (PinholeCamera, RigRanges)):
        return (World(style or StreetStyle(), camera),)
    if style is not None:
        raise ValueError("give the style inside each World, not as style=")
    worlds = tuple(camera)
    if not worlds:
        raise ValueError("a set needs at least one world")
    sizes = {(world.rig.width, world.rig.height) for world in worlds}
    if len(sizes) > 1:
        raise ValueError(f"every world of a set needs one image size, got {sorted(sizes)}")
    return worlds


def _set_camera(worlds: tuple[World, ...]) -> tuple[PinholeCamera, bool]:
    """``camera.json`` of a set and whether its frames need their own: the one rig every frame
    shares, or the middle of the first world's ranges and per-frame cameras."""
    rigs: list[Rig] = [world.rig for world in worlds]
    first = rigs[0]
    if isinstance(first, PinholeCamera) and all(rig == first for rig in rigs):
        return first, False
    return (first if isinstance(first, PinholeCamera) else first.nominal()), True


def _prepare(
    root: Path, camera: PinholeCamera, seed: int, worlds: tuple[World, ...], resume: bool
) -> set[int]:
    """Create ``root``, or check that the set in it is the one asked for; returns the indices
    of the frames already complete."""
    manifest = _manifest(seed, worlds)
    if not (root / CAMERA_FILE).exists():
        root.mkdir(parents=True, exist_ok=True)
        write_json(root / CAMERA_FILE, camera.to_dict())
        write_json(root / MANIFEST_FILE, {**manifest, "version": __version__})
        return set()
    if not resume:
        raise DatasetError(
            f"{root} already holds a dataset; pass --resume to complete it or choose an "
            "empty directory"
        )
    try:
        old_camera = read_camera(root)
        recorded = _recorded_manifest(root, old_camera)
    except (OSError, ValueError) as error:
        raise DatasetError(f"cannot resume {root}: {error}") from error
    if old_camera != camera:
        raise DatasetError(f"cannot resume {root}: it was made with camera {old_camera}")
    if not isinstance(recorded, dict) or any(recorded.get(k) != v for k, v in manifest.items()):
        raise DatasetError(
            f"cannot resume {root}: {root / MANIFEST_FILE} records another seed, world, style "
            "or rig"
        )
    return {int(stem) for stem in frame_stems(root)}


def write_dataset(
    root: Path,
    camera: PinholeCamera | RigRanges | Sequence[World],
    frames: int,
    *,
    seed: int = 0,
    workers: int | None = None,
    resume: bool = False,
    style: Style | None = None,
    progress: bool = True,
) -> WriteSummary:
    """Render frames ``0 .. frames-1`` into the folder ``root``.

    ``camera`` is the rig of every frame (a camera, or :class:`RigRanges` to draw per frame) of
    ``style``'s world (default: the street), or a sequence of :class:`World` s that frames
    cycle through. ``workers`` processes render and write in parallel (default: one per CPU;
    1 renders in this process). With ``resume`` an existing set made with the same camera,
    seed, worlds and rigs is completed, skipping finished frames.

    :raises ValueError: for a non-stereo camera, non-positive counts, no world or worlds of
        different image sizes.
    :raises DatasetError: if ``root`` holds another dataset, or one and ``resume`` is off.
    """
    worlds = _as_worlds(camera, style)
    if any(isinstance(w.rig, PinholeCamera) and w.rig.baseline is None for w in worlds):
        raise ValueError("the synthetic renderer needs a stereo camera (baseline is None)")
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    root = Path(root)
    set_camera, per_frame_camera = _set_camera(worlds)
    done = _prepare(root, set_camera, seed, worlds, resume)
    todo = [index for index in range(frames) if index not in done]
    skipped = frames - len(todo)
    if skipped:
        _LOGGER.info("%s: %d of %d frames already complete", root, skipped, frames)
    make = functools.partial(
        _make_frame, root=root, seed=seed, worlds=worlds, per_frame_camera=per_frame_camera
    )
    workers = min(workers, max(len(todo), 1))
    start = time.perf_counter()
    with tqdm(total=frames, initial=skipped, unit="frame", disable=not progress) as bar:
        if workers == 1:
            for index in todo:
                make(index)
                bar.update()
        else:
            # spawn, not fork: the parent may hold threads (torch, tqdm) that fork would copy.
            context = multiprocessing.get_context("spawn")
            with context.Pool(workers) as pool:
                for _ in pool.imap_unordered(make, todo, chunksize=4):
                    bar.update()
    return WriteSummary(root, frames, len(todo), skipped, time.perf_counter() - start)
