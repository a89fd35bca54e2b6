"""Loading depth_node's model on a backend at configure: every reason it cannot run is found and
logged then, so a node that activates can infer.

The backend and the optional CPU fallback load the same way (the fallback from the very file
the backend loaded), with the same checks: the model loads on that backend, suits the node's
mode (a stereo model needs ``mode stereo``), and survives a warm-up run. A backend without a
model (``sgbm``) ignores ``model_path``. INT8 is calibrated on the frames of
``calibration_data`` (:func:`~cnd_depth_ros.inference.calibration.calibration_frames`).
"""

from __future__ import annotations

import time
from typing import Any

from rclpy.node import Node

from cnd_depth_ros.errors import CndDepthError
from cnd_depth_ros.inference.calibration import calibration_frames
from cnd_depth_ros.inference.disparity_refinement import DisparityRefinement
from cnd_depth_ros.inference.planned_backend import PlannedBackend
from cnd_depth_ros.inference.registry import with_calibration
from cnd_depth_ros.ros.parameters import model_path

__all__ = ["load_backend"]


def load_backend(
    node: Node, name: str, values: dict[str, Any], options: dict[str, Any], role: str = ""
) -> PlannedBackend | None:
    """Backend ``name`` with the model of the parameter ``values`` loaded at its own input size
    (planned again for the first camera) and warmed up; ``None`` after logging, on ``node``'s
    logger, why not. ``role`` names the backend in those lines (``"fallback "``)."""
    logger = node.get_logger()
    mode = values["mode"]
    model = model_path(values)
    started = time.monotonic()
    try:
        if "calibration" in with_calibration(name, options, None):
            try:
                frames = calibration_frames(values["calibration_data"], stereo=mode == "stereo")
            except (CndDepthError, ValueError) as error:
                logger.error(f"calibration_data {values['calibration_data']!r}: {error}")
                return None
            options = with_calibration(name, options, frames)
        backend = PlannedBackend(
            name, model, pixel_budget=values["pixel_budget"] or None,
            min_depth=values["min_depth"],
            refinement=DisparityRefinement() if values["disparity_refinement"] else None,
            **options,
        )
    except (CndDepthError, ValueError) as error:
        logger.error(f"{role}backend {name!r} cannot load model {model!r}: {error}")
        return None
    info = backend.info()
    if backend.stereo != (mode == "stereo"):
        kind = "stereo" if backend.stereo else "mono"
        logger.error(
            f"model {info['model']!r} is a {kind} model ({info['variant']}) but mode is {mode!r}"
        )
        backend.close()
        return None
    try:
        backend.warmup()
    except (CndDepthError, RuntimeError) as error:
        logger.error(f"model {model!r} failed its warm-up run on {role}backend "
                     f"{backend.name!r}: {error}")
        backend.close()
        return None
    logger.info(
        f"loaded {info['model']} ({info['variant']}, {info['input']}) on {role}backend "
        f"{info['backend']} in {time.monotonic() - started:.1f} s"
    )
    return backend
