"""Write a synthetic stereo dataset folder (``cnd-depth synth``), in parallel and resumably.

Frame ``i`` is rendered from ``numpy.random.default_rng([seed, i])`` alone, so a set is the same
whatever the number of worker processes or the order they finish in, and an interrupted run can
be completed later (``resume=True``) with frames identical to an uninterrupted one.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from cnd_depth_ros import __version__
from cnd_depth_ros.atomic_file import write_atomically
from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.errors import DatasetError
from cnd_depth_ros.synthetic.layout import (
    CAMERA_FILE,
    FRAME_FILES,
    MANIFEST_FILE,
    frame_path,
    frame_stems,
    read_camera,
    write_json,
)
from cnd_depth_ros.synthetic.renderer import StereoRendering, render_stereo
from cnd_depth_ros.synthetic.scene import StreetStyle, street_scene
from cnd_depth_ros.synthetic.textures import default_bank

__all__ = ["WriteSummary", "kitti_like_camera", "render_frame", "write_dataset", "write_frame"]

_LOGGER = logging.getLogger(__name__)

#: KITTI's colour rig (``P_rect_02``: fx 721.5 px at 1242 px wide; baseline 0.54 m).
KITTI_FX_PER_WIDTH = 721.5377 / 1242.0
KITTI_BASELINE = 0.54
#: zlib level of the PNGs: fast, and still about 2/3 of the raw size on textured images.
_PNG_COMPRESSION = 1


def kitti_like_camera(
    width: int = 256, height: int = 160, fx: float | None = None, baseline: float = KITTI_BASELINE
) -> PinholeCamera:
    """A rectified rig like KITTI's scaled to ``width``: square pixels, centred principal point
    (pixel centres at integer coordinates), ``fx`` defaulting to KITTI's focal length per pixel
    of width."""
    focal = KITTI_FX_PER_WIDTH * width if fx is None else fx
    return PinholeCamera(
        width=width,
        height=height,
        fx=focal,
        fy=focal,
        cx=(width - 1) / 2.0,
        cy=(height - 1) / 2.0,
        baseline=baseline,
    )


def render_frame(
    seed: int, index: int, camera: PinholeCamera, style: StreetStyle | None = None
) -> StereoRendering:
    """Frame ``index`` of the set made with ``seed``: a pure function of its arguments."""
    bank = default_bank()
    rng = np.random.default_rng([seed, index])
    scene, pose = street_scene(rng, bank, style)
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


def write_frame(root: Path, index: int, rendering: StereoRendering) -> None:
    """Write one frame's files, each through a temporary name, the left image last."""
    contents = {
        "left.png": _png(rendering.left),
        "right.png": _png(rendering.right),
        "depth.npy": _npy(rendering.depth.astype(np.float32)),
        "right_depth.npy": _npy(rendering.right_depth.astype(np.float32)),
        "normals.npy": _npy(rendering.normals.astype(np.float16)),
    }
    for suffix in FRAME_FILES:
        data = contents[suffix]
        write_atomically(
            frame_path(root, index, suffix), lambda tmp, data=data: tmp.write_bytes(data)
        )


def _make_frame(
    index: int, root: Path, seed: int, camera: PinholeCamera, style: StreetStyle
) -> int:
    write_frame(root, index, render_frame(seed, index, camera, style))
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


def _manifest(seed: int, style: StreetStyle) -> dict[str, Any]:
    """What decides a set's frames besides the camera, as it reads back from JSON."""
    manifest = {"generator": "cnd_depth_ros.synthetic", "seed": seed, "style": asdict(style)}
    return json.loads(json.dumps(manifest))


def _prepare(
    root: Path, camera: PinholeCamera, seed: int, style: StreetStyle, resume: bool
) -> set[int]:
    """Create ``root``, or check that the set in it is the one asked for; returns the indices
    of the frames already complete."""
    manifest = _manifest(seed, style)
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
        recorded = json.loads((root / MANIFEST_FILE).read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(f"cannot resume {root}: {error}") from error
    if old_camera != camera:
        raise DatasetError(f"cannot resume {root}: it was made with camera {old_camera}")
    if not isinstance(recorded, dict) or any(recorded.get(k) != v for k, v in manifest.items()):
        raise DatasetError(
            f"cannot resume {root}: {root / MANIFEST_FILE} records another seed or style"
        )
    return {int(stem) for stem in frame_stems(root)}


def write_dataset(
    root: Path,
    camera: PinholeCamera,
    frames: int,
    *,
    seed: int = 0,
    workers: int | None = None,
    resume: bool = False,
    style: StreetStyle | None = None,
    progress: bool = True,
) -> WriteSummary:
    """Render frames ``0 .. frames-1`` into the folder ``root``.

    ``workers`` processes render and write in parallel (default: one per CPU; 1 renders in
    this process). With ``resume`` an existing set made with the same camera, seed and style is
    completed, skipping finished frames.

    :raises ValueError: for a non-stereo camera or non-positive counts.
    :raises DatasetError: if ``root`` holds another dataset, or one and ``resume`` is off.
    """
    if camera.baseline is None:
        raise ValueError("the synthetic renderer needs a stereo camera (baseline is None)")
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    style = style or StreetStyle()
    root = Path(root)
    done = _prepare(root, camera, seed, style, resume)
    todo = [index for index in range(frames) if index not in done]
    skipped = frames - len(todo)
    if skipped:
        _LOGGER.info("%s: %d of %d frames already complete", root, skipped, frames)
    make = functools.partial(_make_frame, root=root, seed=seed, camera=camera, style=style)
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
