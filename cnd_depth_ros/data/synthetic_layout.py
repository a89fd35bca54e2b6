"""The synthetic dataset folder format, shared by the writer and the loader.

``DIR/camera.json`` (:class:`~cnd_depth_ros.camera.PinholeCamera` fields of the left camera, the
baseline in metres), ``DIR/synth.json`` (how the set was made: seed, worlds, rigs, version) and
per frame ``NNNNNN_left.png``, ``NNNNNN_right.png`` (8-bit RGB), ``NNNNNN_depth.npy`` and
``NNNNNN_right_depth.npy`` (float32 metres along the optical axis, ``inf`` on sky),
``NNNNNN_normals.npy`` (float16 unit normals of the left view in its optical frame, NaN on sky)
and, in sets whose rig varies from frame to frame, ``NNNNNN_camera.json`` (that frame's camera,
which then takes the place of ``camera.json``; same image size).

A frame is complete when its left image exists: the writer renames it into place last.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cnd_depth_ros.atomic_file import write_text_atomically
from cnd_depth_ros.camera import PinholeCamera

__all__ = [
    "CAMERA_FILE",
    "FRAME_CAMERA",
    "FRAME_FILES",
    "MANIFEST_FILE",
    "frame_path",
    "frame_stems",
    "read_camera",
    "read_frame_camera",
    "write_json",
]

CAMERA_FILE = "camera.json"
MANIFEST_FILE = "synth.json"
#: Per-frame file suffixes, in writing order: the left image last marks the frame complete.
FRAME_FILES = ("right.png", "depth.npy", "right_depth.npy", "normals.npy", "left.png")
#: Suffix of a frame's own camera, written before its left image where the rig varies.
FRAME_CAMERA = "camera.json"


def frame_path(root: Path, index: int, suffix: str) -> Path:
    """``root/NNNNNN_suffix``: six digits sort correctly up to a million frames."""
    return root / f"{index:06d}_{suffix}"


def frame_stems(root: Path) -> list[str]:
    """Sorted ``NNNNNN`` stems of the complete frames in ``root``."""
    return sorted(path.name[: -len("_left.png")] for path in root.glob("*_left.png"))


def read_camera(root: Path) -> PinholeCamera:
    """The camera of a dataset folder.

    :raises OSError: if ``camera.json`` cannot be read.
    :raises ValueError: if it is not a valid camera (names the file).
    """
    return _read_camera_file(root / CAMERA_FILE)


def read_frame_camera(root: Path, index: int, default: PinholeCamera) -> PinholeCamera:
    """Frame ``index``'s own camera where it has one, else ``default`` (the set's).

    :raises OSError: if the frame's camera file exists but cannot be read.
    :raises ValueError: if it is not a valid camera or its size is not ``default``'s.
    """
    path = frame_path(root, index, FRAME_CAMERA)
    if not path.exists():
        return default
    camera = _read_camera_file(path)
    if (camera.width, camera.height) != (default.width, default.height):
        raise ValueError(
            f"{path} is {camera.width}x{camera.height}, but {CAMERA_FILE} says "
            f"{default.width}x{default.height}"
        )
    return camera


def _read_camera_file(path: Path) -> PinholeCamera:
    text = path.read_text()
    try:
        return PinholeCamera.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{path}: not a camera description ({error})") from error


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write through a temporary file and a rename, so a reader never sees half of it."""
    write_text_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
