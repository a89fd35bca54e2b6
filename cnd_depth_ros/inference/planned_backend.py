"""A backend whose network input follows the camera it is given (:mod:`input_plan`).

The node, ``eval`` and ``bench`` hold one :class:`PlannedBackend` instead of a bare
:class:`~cnd_depth_ros.inference.backend.DepthBackend`, and run it as any other
:class:`~cnd_depth_ros.inference.backend.DepthEstimator`. The first camera (or a new camera size
mid-stream) is planned, and when the plan's size differs from the loaded one the backend is
created again at that size (torch: the weights again; ONNX Runtime: a new export; TensorRT: an
engine from the cache or a build). A model file with static shapes (``.onnx``, ``.engine``) keeps
its own size; the plan it would have had is reported so the user can export for it. A backend
without a model (``sgbm``) has nothing to plan: it runs at each camera's size, or at
``input_size`` when one is given.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.inference.backend import DepthEstimator
from cnd_depth_ros.inference.depth_estimate import DepthEstimate
from cnd_depth_ros.inference.disparity_refinement import DisparityRefinement
from cnd_depth_ros.inference.input_plan import (
    InputPlan,
    default_pixel_budget,
    model_disparity_range,
    plan_input,
)
from cnd_depth_ros.inference.registry import create_backend, resolve_backend, takes_model
from cnd_depth_ros.models.artifact import ModelMetadata, read_metadata

__all__ = ["PlannedBackend", "has_static_shapes"]

_LOGGER = logging.getLogger(__name__)


def has_static_shapes(model: str | os.PathLike[str]) -> bool:
    """Whether ``model`` is a file compiled for one input size (an ONNX export, an engine)."""
    return str(model).endswith((".onnx", ".engine"))


class PlannedBackend(DepthEstimator):
    """Backend ``name`` (a spec: ``onnxruntime:int8``, ``sgbm:stereo_image_proc``, ...) running
    ``model`` at the input planned for each camera (a backend without a model ignores ``model``).

    :param pixel_budget: network pixels per frame; ``None``: the default for the device.
    :param min_depth: metres; the nearest depth whose disparity must fit the stereo matcher's
        range (0: no such limit).
    :param input_size: (width, height) to use for every camera instead of planning
        (:attr:`fixed_size`; :attr:`input_size` is the size the backend runs at now).
    :param camera: plan for this camera at once, so the first frame does not re-create the
        backend; ``None``: load at the model's own size until a camera arrives.
    :param refinement: how a stereo net's disparity is refined against the camera images
        (:mod:`disparity_refinement`); ``None``: the net's output upsampled as it is. A
        ``refinement`` given to :meth:`estimate` replaces it for that call.
    :param options: the backend's own options (device, precision, threads, ...).
    :raises ValueError: an unknown backend, a bad option or a budget below the smallest input.
    :raises ArtifactError: a missing or unreadable model.
    :raises BackendError: the backend cannot run here.
    """

    def __init__(
        self,
        name: str,
        model: str | os.PathLike[str] | None,
        *,
        pixel_budget: int | None = None,
        min_depth: float = 0.0,
        input_size: tuple[int, int] | None = None,
        camera: PinholeCamera | None = None,
        refinement: DisparityRefinement | None = DisparityRefinement(),  # noqa: B008 - frozen
        **options: Any,
    ) -> None:
        self.name, self._options = resolve_backend(name, model, options)
        self.refinement = refinement
        self.model = model if takes_model(self.name) else None
        self.static_shapes = self.model is not None and has_static_shapes(self.model)
        device = self._options.get("device") or ("cuda" if self.name == "tensorrt" else "cpu")
        self.pixel_budget = pixel_budget or default_pixel_budget(device)
        self.min_depth = min_depth
        self.fixed_size = input_size
        self._camera_key: tuple[Any, ...] | None = None
        self.plan: InputPlan | None = None
        #: Every plan made, in order (one per camera size seen).
        self.plans: list[InputPlan] = []
        #: What planning chose for the camera when the model file fixes another size.
        self.wanted: InputPlan | None = None
        self._disparity_range: float | None = None
        if self.model is not None and not self.static_shapes:
            self._disparity_range = model_disparity_range(read_metadata(self.model))
            size = input_size if camera is None else self._plan(camera).size
            self._backend = self._create(size)
        else:  # a size fixed by the model file, or none to plan (no model)
            self._backend = self._create(input_size)
            if self._backend.metadata is not None:
                self._disparity_range = model_disparity_range(self._backend.metadata)
        if camera is not None:
            self.prepare(camera)

    @property
    def backend(self) -> DepthEstimator:
        """The backend loaded now."""
        return self._backend

    @property
    def metadata(self) -> ModelMetadata | None:
        """The model's metadata; ``None`` for a backend that runs no model."""
        return self._backend.metadata

    @property
    def stereo(self) -> bool:
        """Whether the backend needs the right image."""
        return self._backend.stereo

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(width, height) the backend runs at now; ``None``: each camera's own size."""
        return self._backend.input_size

    def _create(self, size: tuple[int, int] | None) -> DepthEstimator:
        sizes = {} if size is None else {"width": size[0], "height": size[1]}
        return create_backend(self.name, self.model, **sizes, **self._options)

    def _plan(self, camera: PinholeCamera) -> InputPlan:
        if self.fixed_size is not None:
            width, height = self.fixed_size
            return InputPlan(camera.width, camera.height, width, height, self.pixel_budget,
                             "fixed by the model file" if self.static_shapes else "size asked for")
        return plan_input(
            camera,
            pixel_budget=self.pixel_budget,
            disparity_range=self._disparity_range,
            min_depth=self.min_depth,
        )

    def prepare(self, camera: PinholeCamera) -> InputPlan | None:
        """Plan for ``camera``; create the backend again if the plan changes its size.

        :returns: the new plan when this camera changed it (for a log line), else ``None``;
            always ``None`` for a backend without a model (nothing to plan).
        """
        key = (camera.width, camera.height, camera.fx, camera.baseline, self.min_depth)
        if key == self._camera_key or self.model is None:
            return None
        plan = self._plan(camera)
        current = self._backend.input_size
        assert current is not None  # a network's: a backend without a model is not planned
        if self.static_shapes:
            self.wanted = plan if plan.size != current else None
            plan = InputPlan(camera.width, camera.height, *current, self.pixel_budget,
                             "fixed by the model file")
        elif plan.size != current:
            _LOGGER.info("%s: loading %s for it", plan.describe(), self.name)
            backend = self._create(plan.size)
            backend.warmup()
            self._backend, old = backend, self._backend
            old.close()
        self._camera_key, self.plan = key, plan
        self.plans.append(plan)
        return plan

    def _estimate(self, left: np.ndarray, right: np.ndarray | None, camera: PinholeCamera,
                  output: PinholeCamera, refinement: DisparityRefinement | None) -> DepthEstimate:
        """The backend's :meth:`~DepthEstimator.estimate` at the input planned for ``camera``,
        refined with the call's ``refinement`` or else this one's."""
        self.prepare(camera)
        return self._backend.estimate(
            left, right, camera=camera, output_size=(output.width, output.height),
            refinement=self.refinement if refinement is None else refinement,
        )

    def warmup(self, iterations: int = 3) -> None:
        self._backend.warmup(iterations)

    def info(self) -> dict[str, Any]:
        info = self._backend.info()
        if self.metadata is None:
            return info
        info["pixel_budget"] = self.pixel_budget
        if self.metadata.stereo:
            info["refinement"] = "off" if self.refinement is None else "on"
        if self.plan is not None:
            info["input plan"] = self.plan.describe()
        if self.wanted is not None:
            info["planned input"] = f"{self.wanted.width}x{self.wanted.height}"
        return info

    def close(self) -> None:
        self._backend.close()
