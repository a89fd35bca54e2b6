"""Write stereo frames as a rosbag2 that ``cnd-depth replay`` plays into depth_node: a synthetic
drive (down a street, or across a room; ``cnd-depth synth --bag``) or the frames of any dataset
the package reads (``cnd-depth bag``).

Topics are the node's inputs as a stereo driver plus image_proc publish them, and the ground truth
the rosbag dataset and ``cnd-depth replay`` read (``DEFAULT_TOPICS``): rectified ``rgb8`` images,
camera_info for both cameras at each image's own size (the right one with ``P[0, 3] = -fx * B``),
depth along the optical axis as ``32FC1`` metres (REP 118: NaN where unknown, ``+inf`` where the
ray meets only sky), and ``/tf_static`` with the optical frames, offered transient-local as tf2
latches it. The messages are built by :mod:`cnd_depth_ros.messages` from the type definitions
of the chosen distro and written by its :class:`~cnd_depth_ros.messages.bag.BagWriter` (Humble
gets metadata version 8, whose QoS profiles Humble's parser reads, later distros version 9), so a
bag at ``path`` is never half written. One loop (:func:`_write_bag`) writes every bag; the public
functions only say what each frame holds (:class:`BagFrame`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.messages.bag import BagWriteError, BagWriter
from cnd_depth_ros.messages.builders import make_header
from cnd_depth_ros.messages.camera_info import camera_info_for
from cnd_depth_ros.messages.image import array_to_image
from cnd_depth_ros.messages.tf_static import StaticTransform, tf_message
from cnd_depth_ros.messages.topics import DEFAULT_TOPICS, TF_STATIC
from cnd_depth_ros.synthetic.sequence import SequenceFrame, render_sequence
from cnd_depth_ros.synthetic.worlds import Style

if TYPE_CHECKING:
    from cnd_depth_ros.data.frame import Frame

__all__ = [
    "FRAME_IDS",
    "START_NS",
    "BagFrame",
    "BagWriteSummary",
    "write_frames_bag",
    "write_sequence_bag",
]

_LOGGER = logging.getLogger(__name__)

FRAME_IDS = {
    "base": "base_link",
    "left": "left_camera_optical_frame",
    "right": "right_camera_optical_frame",
}
#: Recorded times start here (2024-01-01T00:00:00Z): fixed, so a bag is a function of its seed.
START_NS = 1_704_067_200 * 10**9
#: World (x right, y down, z along the street or room) -> base_link (x forward, y left, z up).
_BASE_FROM_WORLD = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class BagWriteSummary:
    """What :func:`write_sequence_bag` or :func:`write_frames_bag` wrote: ``frames`` frames of
    ``messages`` messages in all, ``duration_s`` from the first stamp to the last, ``cameras``
    the distinct left cameras in order of appearance, in ``seconds``."""

    path: Path
    frames: int
    messages: int
    duration_s: float
    seconds: float
    cameras: tuple[PinholeCamera, ...] = ()


@dataclass(frozen=True)
class BagFrame:
    """One frame as the bag holds it, every message stamped (and logged at) ``stamp_ns``.

    ``left``/``right``: H x W x 3 uint8 RGB (``right`` ``None``: a mono frame); ``camera``: the
    left camera at this image size, with the baseline for a stereo frame; ``depth``: H x W
    float32 metres of the left view as written (REP 118: NaN unknown, ``+inf`` too far), or
    ``None``; ``transforms``: static transforms besides the one between the optical frames
    (which comes from the baseline), published from this frame on.

    :raises ValueError: images and camera of different sizes, or a right image without a
        stereo baseline.
    """

    stamp_ns: int
    camera: PinholeCamera
    left: np.ndarray
    right: np.ndarray | None = None
    depth: np.ndarray | None = None
    transforms: tuple[StaticTransform, ...] = ()

    def __post_init__(self) -> None:
        size = (self.camera.height, self.camera.width)
        for name in ("left", "right", "depth"):
            pixels = getattr(self, name)
            if pixels is not None and pixels.shape[:2] != size:
                raise ValueError(
                    f"{name} image {pixels.shape[1]}x{pixels.shape[0]} does not match its "
                    f"camera {self.camera.width}x{self.camera.height}"
                )
        if self.right is not None and self.camera.baseline is None:
            raise ValueError("a stereo frame needs a camera with a baseline (it has none)")


def _optical_frames(baseline: float) -> StaticTransform:
    """The right optical frame ``baseline`` metres along the left one's x axis."""
    return StaticTransform(FRAME_IDS["left"], FRAME_IDS["right"], (baseline, 0.0, 0.0),
                           (0.0, 0.0, 0.0, 1.0))


def _write_bag(
    path: Path,
    frames: Callable[[], Iterable[BagFrame]],
    *,
    total: int,
    storage: str,
    distro: str,
    progress: bool,
) -> BagWriteSummary:
    """Write the frames ``frames()`` gives into the rosbag2 ``path`` (the one writing loop).

    Arguments and ``path`` are checked before ``frames()`` is called. A topic is added when its
    first message comes (a mono bag has no right topics, one without ground truth no depth
    topic). ``/tf_static`` is written when a frame adds or moves a static transform (the
    optical frames' one follows the camera's baseline), holding all of them, as tf2's static
    broadcaster latches them. ``total`` is for the progress bar.

    :raises ValueError: an unknown ``storage`` or ``distro``, or what ``frames`` raises.
    :raises BagWriteError: ``path`` exists, or writing failed. Whatever fails, nothing is left
        at ``path``.
    """
    started = time.perf_counter()
    stamps: list[int] = []
    cameras: dict[PinholeCamera, None] = {}
    static: dict[str, StaticTransform] = {}
    bag = BagWriter(path, storage, distro)
    store = bag.typestore
    try:
        with bag:
            for frame in tqdm(frames(), total=total, unit="frame", disable=not progress):
                stamp, camera = frame.stamp_ns, frame.camera
                added = list(frame.transforms)
                if frame.right is not None:
                    assert camera.baseline is not None  # BagFrame checks it
                    added.append(_optical_frames(camera.baseline))
                if any(static.get(transform.child) != transform for transform in added):
                    static.update((transform.child, transform) for transform in added)
                    bag.write_message(TF_STATIC, stamp, tf_message(static.values(), stamp, store),
                                      latched=True)
                left = make_header(stamp, FRAME_IDS["left"], store)
                bag.write_message(DEFAULT_TOPICS["left_topic"], stamp,
                                  array_to_image(frame.left, "rgb8", left, typestore=store))
                bag.write_message(DEFAULT_TOPICS["left_info_topic"], stamp,
                                  camera_info_for(camera, left, typestore=store))
                if frame.right is not None:
                    right = make_header(stamp, FRAME_IDS["right"], store)
                    bag.write_message(DEFAULT_TOPICS["right_topic"], stamp,
                                      array_to_image(frame.right, "rgb8", right, typestore=store))
                    bag.write_message(DEFAULT_TOPICS["right_info_topic"], stamp,
                                      camera_info_for(camera, right, right=True, typestore=store))
                if frame.depth is not None:
                    depth = frame.depth.astype(np.float32)
                    bag.write_message(DEFAULT_TOPICS["depth_topic"], stamp,
                                      array_to_image(depth, "32FC1", left, typestore=store))
                stamps.append(stamp)
                cameras[camera] = None
    except BagWriteError:
        raise
    except OSError as error:  # from the frames: a dataset file or the renderer's output
        raise BagWriteError(f"cannot write the bag {path}: {error}") from error
    _LOGGER.info("%s: %d frames, %d messages", path, len(stamps), bag.count)
    return BagWriteSummary(
        path=bag.path,
        frames=len(stamps),
        messages=bag.count,
        duration_s=(stamps[-1] - stamps[0]) / 1e9 if stamps else 0.0,
        seconds=time.perf_counter() - started,
        cameras=tuple(cameras),
    )


def _drive_frame(camera: PinholeCamera, frame: SequenceFrame) -> BagFrame:
    """Frame ``frame`` of a drive; the first places base_link on the ground below the left
    camera, axes along the drive."""
    transforms: tuple[StaticTransform, ...] = ()
    if frame.index == 0:
        transforms = (StaticTransform.from_matrix(
            FRAME_IDS["base"], FRAME_IDS["left"],
            np.array([0.0, 0.0, -frame.pose.position[1]]),
            _BASE_FROM_WORLD @ frame.pose.rotation,
        ),)
    rendering = frame.rendering
    return BagFrame(START_NS + round(frame.time_s * 1e9), camera, rendering.left, rendering.right,
                    rendering.depth, transforms)


def write_sequence_bag(
    path: Path,
    camera: PinholeCamera,
    frames: int,
    *,
    seed: int = 0,
    rate: float = 10.0,
    speed: float | None = None,
    storage: str = "sqlite3",
    distro: str = "jazzy",
    style: Style | None = None,
    progress: bool = True,
) -> BagWriteSummary:
    """Render :func:`~cnd_depth_ros.synthetic.sequence.render_sequence` (the style picks the
    world, street by default; ``speed`` defaults to the world's) into the rosbag2 ``path``, with
    ``/tf_static`` from ``base_link`` (on the ground below the first left camera, axes along the
    drive) to both optical frames.

    Every message is logged at its header stamp, ``START_NS`` plus the frame's time.

    :raises ValueError: an unknown ``storage`` or ``distro``, or bad sequence arguments.
    :raises BagWriteError: ``path`` exists, or writing failed (nothing is left at ``path``).
    """

    def bag_frames() -> Iterable[BagFrame]:
        # Checks the arguments and draws the scene now; frames render as the loop asks.
        sequence = render_sequence(camera, frames, seed=seed, rate=rate, speed=speed, style=style)
        return (_drive_frame(camera, frame) for frame in sequence)

    return _write_bag(path, bag_frames, total=frames, storage=storage, distro=distro,
                      progress=progress)


def write_frames_bag(
    path: Path,
    frames: Sequence[Frame],
    *,
    rate: float = 10.0,
    repeat: int = 1,
    max_frames: int | None = None,
    storage: str = "sqlite3",
    distro: str = "jazzy",
    progress: bool = True,
) -> BagWriteSummary:
    """Write dataset frames (any loader of :mod:`cnd_depth_ros.data`) into the
    rosbag2 ``path``, for ``cnd-depth replay``.

    The first ``max_frames`` frames (default all), each ``repeat`` times in a row, are written
    ``1 / rate`` s apart from ``START_NS``; frames are read one at a time. Each frame's
    camera_info is its own camera at its own size, so frames of different sizes or rigs may
    share a bag. Depth is NaN wherever the frame has no ground truth (:attr:`Frame.valid`);
    frames without depth or a right image give a bag without that topic. ``/tf_static`` holds
    the right optical frame ``baseline`` along the left one's x axis, written again when the
    baseline changes.

    :raises ValueError: a ``rate`` that is not positive and finite, ``repeat`` or ``max_frames``
        below 1, no frames, an unknown ``storage`` or ``distro``, a stereo frame without a
        baseline.
    :raises DatasetError: a frame cannot be read.
    :raises BagWriteError: ``path`` exists, or writing failed. Whatever fails, nothing is left
        at ``path``.
    """
    if not 0 < rate < np.inf:
        raise ValueError(f"rate must be positive and finite, got {rate} Hz")
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    count = len(frames) if max_frames is None else min(max_frames, len(frames))
    if count == 0:
        raise ValueError("no frames to write")

    def bag_frames() -> Iterable[BagFrame]:
        for index in range(count):
            frame = frames[index]
            depth = None
            if frame.depth is not None:
                depth = np.where(frame.valid, frame.depth, np.nan).astype(np.float32)
            for copy in range(repeat):
                stamp = START_NS + round((index * repeat + copy) * 1e9 / rate)
                try:
                    bag_frame = BagFrame(stamp, frame.camera, frame.left, frame.right, depth)
                except ValueError as error:
                    raise ValueError(f"frame {frame.name or index}: {error}") from error
                yield bag_frame

    return _write_bag(path, bag_frames, total=count * repeat, storage=storage, distro=distro,
                      progress=progress)
