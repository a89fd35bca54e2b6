"""What a depth estimator gives for one frame: metric depth, the camera it is in and, where the
estimator has them, its confidence and the left image at the depth's size.

Its own light module (numpy only), so evaluation and reports can speak of estimates without
importing a backend's runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnd_depth_ros.camera import PinholeCamera

__all__ = ["DepthEstimate"]


@dataclass(frozen=True)
class DepthEstimate:
    """Metric depth (H x W float32 metres, NaN where invalid) in ``camera`` and, where the
    model gives one, the matcher's confidence in [0, 1] at the same size (``None`` for mono nets
    and SGBM).

    ``camera`` is the camera the depth is in: the input camera resized to the depth's size (the
    output size asked for), so back-projection and ``camera_info`` need nothing else.
    ``image`` is the left image (H x W x 3 uint8 RGB) area-averaged to that size
    (``cv2.INTER_AREA``, itself at its own size) when the estimator made it on its way, for
    colouring points without resizing it again; ``None`` when it did not.

    :raises ValueError: a depth, confidence or image of another size than ``camera``.
    """

    depth: np.ndarray
    confidence: np.ndarray | None = None
    camera: PinholeCamera = field(kw_only=True)
    image: np.ndarray | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        size = (self.camera.height, self.camera.width)
        for name in ("depth", "confidence", "image"):
            array = getattr(self, name)
            if array is not None and array.shape[:2] != size:
                raise ValueError(f"estimate {name} is {array.shape[1]}x{array.shape[0]} but its "
                                 f"camera is {self.camera.width}x{self.camera.height}")
