"""Data sources named on the command line: ``KIND:ROOT[,NAME=VALUE...]``, opened as frames.

Every command that reads a dataset (train, finetune, eval, bag, bench and build-engine's
calibration sets) goes through :class:`DataSpec` and :func:`open_frames`, so a source is written
the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnd_depth_ros.data.base import FrameDataset
from cnd_depth_ros.data.frame import Frame
from cnd_depth_ros.data.registry import open_dataset

__all__ = ["ConcatFrames", "DataSpec", "open_frames", "parse_option"]


def parse_option(text: str) -> tuple[str, Any]:
    """``"NAME=VALUE"`` -> ``(NAME, VALUE)``, the value an int or float where it reads as one,
    ``None`` for ``none`` (e.g. ``right_topic=none``: a mono bag), else the string.

    :raises ValueError: ``text`` is not ``NAME=VALUE``.
    """
    name, separator, value = (part.strip() for part in text.partition("="))
    if not separator or not name:
        raise ValueError(f"dataset option {text!r} must be NAME=VALUE, e.g. left_topic=/cam/left")
    if value.lower() == "none":
        return name, None
    for number in (int, float):
        try:
            return name, number(value)
        except ValueError:
            pass
    return name, value


@dataclass(frozen=True)
class DataSpec:
    """One data source: a dataset kind of the registry, its root folder (or bag) and the
    loader's options (a bag's topic names, say)."""

    kind: str
    root: Path
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        """``"synthetic:data/synth"`` -> ``DataSpec("synthetic", Path("data/synth"))``; options
        follow the root, comma-separated (:func:`parse_option`):
        ``"rosbag:drive,left_topic=/zed/left/image_rect_color,right_topic=/zed/right/..."``.

        :raises ValueError: ``text`` is not ``KIND:ROOT[,NAME=VALUE...]``.
        """
        kind, separator, rest = text.partition(":")
        root, *options = rest.split(",")
        if not separator or not kind.strip() or not root.strip():
            raise ValueError(f"data source {text!r} must be KIND:ROOT, e.g. synthetic:data/synth")
        return cls(kind.strip().lower(), Path(root.strip()),
                   tuple(parse_option(option) for option in options))

    def __str__(self) -> str:
        options = "".join(f",{name}={value}" for name, value in self.options)
        return f"{self.kind}:{self.root}{options}"


def open_frames(
    specs: Sequence[DataSpec], *, stereo: bool, labeled: bool = True
) -> Sequence[Frame]:
    """The frames of all ``specs`` in order, as one lazy sequence. ``labeled=False`` opens
    recordings without ground truth too (a rosbag without a depth topic); frames keep whatever
    ground truth a source has, for the caller to ignore.

    :raises ValueError: no specs, an empty source, or a mono source where ``stereo`` is needed.
    """
    if not specs:
        raise ValueError("no data source given")
    sources = []
    for spec in specs:
        options = dict(spec.options)
        if spec.kind == "rosbag" and not labeled:  # ground truth is neither needed nor read
            options.update(depth_topic=None, points_topic=None)
        frames = open_dataset(spec.kind, spec.root, **options)
        if len(frames) == 0:
            raise ValueError(f"data source {spec} has no frames")
        if stereo and frames[0].right is None:
            raise ValueError(f"data source {spec} has no right images; a stereo model needs them")
        sources.append(frames)
    if len(sources) == 1:
        return sources[0]
    return ConcatFrames(sources)


class ConcatFrames(FrameDataset[tuple[int, int]]):
    """Several frame sequences as one, in order, each still read lazily."""

    def __init__(self, sources: Sequence[Sequence[Frame]]) -> None:
        self.sources = list(sources)
        super().__init__(
            [(source, index) for source, frames in enumerate(self.sources)
             for index in range(len(frames))]
        )

    def load(self, item: tuple[int, int]) -> Frame:
        source, index = item
        return self.sources[source][index]
