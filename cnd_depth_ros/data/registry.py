"""One entry point for every dataset format: ``open_dataset(kind, root, **options)``.

The CLI's ``--data KIND --data-root DIR`` and the trainer's data sources go through here, so a
new format is one loader module plus one line in :data:`DATASET_KINDS`. Loader modules are
imported only when their kind is opened.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnd_depth_ros.data.frame import Frame

__all__ = ["DATASET_KINDS", "open_dataset"]

#: kind -> (module under ``cnd_depth_ros.data``, class, takes a root path).
DATASET_KINDS: dict[str, tuple[str, str, bool]] = {
    "synthetic": ("synthetic", "SyntheticDataset", True),
    "kitti": ("kitti", "KittiStereoDataset", True),
    "kitti_raw": ("kitti", "KittiDepthDataset", True),
    "middlebury": ("middlebury", "MiddleburyDataset", True),
    "motorcycle": ("middlebury", "MotorcycleDataset", False),
    "nyu": ("nyu", "NyuV2Dataset", True),
    "nyu_raw": ("rgbd", "NyuRawDataset", True),
    "sun_rgbd": ("rgbd", "SunRgbdDataset", True),
    "tum_rgbd": ("rgbd", "TumRgbdDataset", True),
    "apolloscape": ("apolloscape", "ApolloScapeDataset", True),
    "rosbag": ("rosbag", "RosbagDataset", True),
}


def open_dataset(kind: str, root: str | Path | None = None, **options: Any) -> Sequence[Frame]:
    """The dataset of ``kind`` at ``root`` as a lazy ``Sequence[Frame]``.

    ``options`` are the loader's keyword arguments (e.g. ``fx=`` for KITTI 2012 without
    calibration, ``depth_topic=`` for a rosbag). ``motorcycle`` (the scikit-image Middlebury
    pair) needs no root.

    :raises ValueError: for an unknown kind or option, or a missing root.
    :raises DatasetError: when the files are not in the kind's format.
    """
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; valid kinds: {sorted(DATASET_KINDS)}")
    module_name, class_name, needs_root = DATASET_KINDS[kind]
    module = importlib.import_module(f"cnd_depth_ros.data.{module_name}")
    factory = getattr(module, class_name)
    if needs_root and root is None:
        raise ValueError(f"dataset kind {kind!r} needs a root folder or file")
    arguments = (Path(root),) if needs_root and root is not None else ()
    try:
        inspect.signature(factory).bind(*arguments, **options)
    except TypeError as error:
        accepted = list(inspect.signature(factory).parameters)[len(arguments) :]
        raise ValueError(
            f"dataset kind {kind!r}: bad options {sorted(options)} ({error}); it accepts "
            f"{accepted}"
        ) from error
    return factory(*arguments, **options)
