"""The network input size for a camera: its aspect ratio kept, within a pixel budget.

A CND net is fully convolutional, so its input need not be the size it was trained at, and it
must not be one size for every camera: squeezing a 1242x375 car camera into 256x160 makes its
pixels twice as wide as tall, which the net never saw (docs/decisions.md, 21). The planner picks
the largest input whose sides are multiples of the net's stride, whose aspect ratio is the
camera's (square pixels after resizing, within a few percent), and whose pixel count fits the
budget (the time per frame grows with it). For the stereo net it also keeps the nearest depth the
user asks for (``min_depth``) within the disparities the matcher represents, and it never
upsamples the camera.

Every place that runs a network on camera images plans through :func:`plan_input`: the node,
``eval``, ``replay`` (through the node), ``bench``, ``export`` and ``build-engine``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.models.artifact import MAX_INPUT_SIDE, ModelMetadata

__all__ = [
    "DEFAULT_PIXEL_BUDGET",
    "INPUT_MULTIPLE",
    "InputPlan",
    "default_pixel_budget",
    "model_disparity_range",
    "plan_input",
]

#: Network sides are multiples of the encoder's output stride.
INPUT_MULTIPLE = 16
#: Pixels per network input by default: 320x240 on a CPU keeps a 640x480 stereo camera above
#: 10 depth images/s on two cores (docs/benchmarks.md); 640x480 on a GPU.
DEFAULT_PIXEL_BUDGET = {"cpu": 320 * 240, "cuda": 640 * 480}
# A planned input may stretch the camera's aspect ratio by this much to use the budget better
# (more where the sides are so short that one multiple of 16 is a larger step).
_ASPECT_TOLERANCE = 0.08
_SMALLEST_SIDE = 2 * INPUT_MULTIPLE

Limit = Literal[
    "pixel budget", "disparity range", "camera size", "size asked for", "fixed by the model file"
]


@dataclass(frozen=True)
class InputPlan:
    """The network input chosen for one camera size, and what limited it."""

    camera_width: int
    camera_height: int
    width: int
    height: int
    pixel_budget: int
    limited_by: Limit

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as ``cv2.resize`` and the backends take it."""
        return self.width, self.height

    @property
    def scale(self) -> float:
        """Network pixels per camera pixel, horizontally (disparities scale by it)."""
        return self.width / self.camera_width

    def describe(self) -> str:
        """One line for logs and reports."""
        return (
            f"camera {self.camera_width}x{self.camera_height} -> network input "
            f"{self.width}x{self.height} ({self.width * self.height} px, limited by the "
            f"{self.limited_by})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "camera": f"{self.camera_width}x{self.camera_height}",
            "network": f"{self.width}x{self.height}",
            "pixel_budget": self.pixel_budget,
            "limited_by": self.limited_by,
        }


def default_pixel_budget(device: str | None) -> int:
    """The budget for a backend on ``device`` (``None``/``cpu``: the CPU one; ``cuda...``)."""
    return DEFAULT_PIXEL_BUDGET["cuda" if device and device.startswith("cuda") else "cpu"]


def model_disparity_range(metadata: ModelMetadata) -> float | None:
    """The largest disparity (network pixels) a stereo model represents; None for mono."""
    if metadata.output != "disparity":
        return None
    from cnd_depth_ros.models.cnd import stereo_disparity_range

    return stereo_disparity_range(**metadata.model_config)


def plan_input(
    camera: PinholeCamera,
    *,
    pixel_budget: int,
    disparity_range: float | None = None,
    min_depth: float = 0.0,
) -> InputPlan:
    """The network input for ``camera``.

    ``disparity_range`` (network pixels, stereo models) and ``min_depth`` (metres, 0: none) bound
    the scale so that the disparity of the nearest depth, ``scale * fx * B / min_depth``, fits.

    :raises ValueError: a budget below the smallest input (32x32 px) or a negative ``min_depth``.
    """
    if pixel_budget < _SMALLEST_SIDE**2:
        raise ValueError(
            f"pixel_budget must be at least {_SMALLEST_SIDE**2} ({_SMALLEST_SIDE}x"
            f"{_SMALLEST_SIDE}), got {pixel_budget}"
        )
    if not min_depth >= 0.0:
        raise ValueError(f"min_depth must be >= 0, got {min_depth}")
    area = camera.width * camera.height
    limits: dict[Limit, float] = {"pixel budget": math.sqrt(pixel_budget / area),
                                  "camera size": 1.0}
    if disparity_range is not None and min_depth > 0.0 and camera.baseline is not None:
        nearest_disparity = camera.fx * camera.baseline / min_depth
        limits["disparity range"] = disparity_range / nearest_disparity
    limited_by = min(limits, key=limits.__getitem__)
    scale = limits[limited_by]
    budget = min(pixel_budget, max(scale * scale * area, _SMALLEST_SIDE**2))
    width, height = _sides(camera.width / camera.height, budget)
    return InputPlan(camera.width, camera.height, width, height, pixel_budget, limited_by)


def _sides(aspect: float, budget: float) -> tuple[int, int]:
    """The largest multiple-of-16 sides within ``budget`` pixels and the aspect tolerance; the
    closest aspect ratio where the budget is too small for any within it."""
    candidates = []
    for height in range(_SMALLEST_SIDE, MAX_INPUT_SIDE + 1, INPUT_MULTIPLE):
        ideal = height * aspect
        for width in {_multiple(ideal, math.floor), _multiple(ideal, math.ceil)}:
            if _SMALLEST_SIDE <= width <= MAX_INPUT_SIDE and width * height <= budget:
                error = abs(math.log(width / ideal))
                candidates.append((error, width, height))
    if not candidates:
        return _SMALLEST_SIDE, _SMALLEST_SIDE
    # Small inputs cannot follow the aspect ratio as closely: allow half a multiple's worth.
    fitting = [c for c in candidates
               if c[0] <= math.log1p(max(_ASPECT_TOLERANCE, INPUT_MULTIPLE / 2 / min(c[1:])))]
    if fitting:
        _, width, height = max(fitting, key=lambda c: (c[1] * c[2], -c[0]))
    else:
        _, width, height = min(candidates)
    return width, height


def _multiple(value: float, rounding: Any) -> int:
    return int(rounding(value / INPUT_MULTIPLE)) * INPUT_MULTIPLE
