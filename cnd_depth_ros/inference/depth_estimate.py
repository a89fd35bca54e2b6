"""What a depth estimator gives for one frame: metric depth and, where it has one, its confidence.

Its own light module (numpy only), so evaluation and reports can speak of estimates without
importing a backend's runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DepthEstimate"]


@dataclass(frozen=True)
class DepthEstimate:
    """Metric depth (H x W float32 metres, NaN where invalid) and, where the model gives one,
    the matcher's confidence in [0, 1] at the same size (``None`` for mono nets and SGBM)."""

    depth: np.ndarray
    confidence: np.ndarray | None = None
