"""The interface every inference backend shares, and the pre/post-processing the networks use.

:class:`DepthEstimator` is what the node, ``eval`` and ``bench`` run: camera images in, metric
depth out. Most estimators are networks, :class:`DepthBackend`; OpenCV's SGBM
(:mod:`~cnd_depth_ros.inference.sgbm`) is one too, without a model.

A network backend only implements :meth:`DepthBackend.run` (network forward on network-sized float
tensors); :meth:`DepthBackend.infer` does the rest identically for all of them: check and resize the
camera images, run, turn the raw output into metric depth for the *live* camera (the artifact's
output rule, :mod:`cnd_depth_ros.models.output`), refine a stereo net's disparity against the
camera images when asked (:mod:`disparity_refinement`), and resize to the requested output size.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import cv2
import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.geometry import depth_to_disparity, disparity_to_depth
from cnd_depth_ros.inference.camera_images import check_camera_images
from cnd_depth_ros.inference.depth_estimate import DepthEstimate
from cnd_depth_ros.inference.disparity_refinement import DisparityRefinement
from cnd_depth_ros.inference.export import CONFIDENCE_NAME, OUTPUT_NAME
from cnd_depth_ros.models.artifact import ModelMetadata

__all__ = ["DepthBackend", "DepthEstimator", "NetworkOutputs", "to_network_input"]

#: What :meth:`DepthBackend.run` returns: the graph's outputs by name, each 1 x 1 x h x w float32:
#: ``"depth"`` (the raw output, as the artifact's ``output`` says) and, for stereo nets, the
#: matcher's ``"confidence"``.
NetworkOutputs = dict[str, np.ndarray]


def to_network_input(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """H x W x 3 uint8 RGB -> 1 x 3 x height x width float32 in [0, 1] (normalisation is in the
    graph)."""
    return _as_tensor(_resized(image, width, height, _network_interpolation(image, width, height)))


def _network_interpolation(image: np.ndarray, width: int, height: int) -> int:
    """How an image is resized for the network: area interpolation when shrinking, so thin
    structures are not aliased away; bilinear when enlarging."""
    shrinking = image.shape[0] > height or image.shape[1] > width
    return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR


def _as_tensor(image: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 RGB -> 1 x 3 x H x W float32 in [0, 1]."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255)


def _resized(
    image: np.ndarray, width: int, height: int, interpolation: int = cv2.INTER_LINEAR
) -> np.ndarray:
    """``image`` at ``width`` x ``height`` (bilinear unless told), itself when it already is."""
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=interpolation)


class DepthEstimator(abc.ABC):
    """Camera images -> metric depth: every backend in the registry, and
    :class:`~cnd_depth_ros.inference.planned_backend.PlannedBackend` around one. Subclasses
    implement :meth:`_estimate`, :attr:`stereo`, :attr:`input_size` and :meth:`info` (and
    usually :meth:`close`)."""

    name: ClassVar[str]
    #: The model's metadata; ``None`` for an estimator that runs no model (SGBM).
    metadata: ModelMetadata | None = None

    @property
    @abc.abstractmethod
    def stereo(self) -> bool:
        """Whether it needs the right image (and the camera's baseline)."""

    @property
    @abc.abstractmethod
    def input_size(self) -> tuple[int, int] | None:
        """(width, height) it runs at; ``None``: each camera's own size."""

    def estimate(
        self,
        left: np.ndarray,
        right: np.ndarray | None = None,
        *,
        camera: PinholeCamera,
        output_size: tuple[int, int] | None = None,
        refinement: DisparityRefinement | None = None,
    ) -> DepthEstimate:
        """Metric depth for ``camera`` (H x W float32 metres, NaN where invalid), with the
        matcher's confidence where there is one, in the camera at the output size.

        ``left``/``right`` are H x W x 3 uint8 RGB images of the size ``camera`` describes.
        ``output_size`` is (width, height), default the camera's size. ``refinement`` refines a
        stereo net's disparity against the images (estimators without a net ignore it).

        :raises ValueError: wrong image shapes or dtype, a missing right image for a stereo
            estimator, or a stereo estimator without a baseline in ``camera``.
        """
        width, height = output_size or (camera.width, camera.height)
        same = (width, height) == (camera.width, camera.height)
        output = camera if same else camera.resized(width, height)
        return self._estimate(left, right, camera, output, refinement)

    @abc.abstractmethod
    def _estimate(self, left: np.ndarray, right: np.ndarray | None, camera: PinholeCamera,
                  output: PinholeCamera, refinement: DisparityRefinement | None) -> DepthEstimate:
        """:meth:`estimate` once the output is decided: the estimate is in ``output``, ``camera``
        at the output size."""

    def infer(
        self,
        left: np.ndarray,
        right: np.ndarray | None = None,
        *,
        camera: PinholeCamera,
        output_size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """The depth of :meth:`estimate` alone: H x W float32 metres, NaN where invalid."""
        return self.estimate(left, right, camera=camera, output_size=output_size).depth

    def warmup(self, iterations: int = 3) -> None:  # noqa: B027 - optional hook
        """Run a few times so the first real frame does not pay for lazy setup."""

    @abc.abstractmethod
    def info(self) -> dict[str, Any]:
        """What runs, for logs, diagnostics and reports: at least ``backend``, ``model``,
        ``variant`` and ``input``."""

    def close(self) -> None:  # noqa: B027 - optional hook: backends without resources keep it
        """Release sessions, engines and device memory. Safe to call twice."""


class DepthBackend(DepthEstimator):
    """Runs one model artifact. Subclasses implement :meth:`run` (and usually :meth:`close`)."""

    metadata: ModelMetadata

    def __init__(self, metadata: ModelMetadata, source: str) -> None:
        self.metadata = metadata
        self.source = source

    @property
    def stereo(self) -> bool:
        return self.metadata.stereo

    @property
    def input_size(self) -> tuple[int, int]:
        """Network input as (width, height)."""
        return self.metadata.input_width, self.metadata.input_height

    @abc.abstractmethod
    def run(self, left: np.ndarray, right: np.ndarray | None) -> NetworkOutputs:
        """Forward pass: 1 x 3 x h x w float32 input(s) at network size -> the graph's outputs
        (:data:`NetworkOutputs`)."""

    def _estimate(self, left: np.ndarray, right: np.ndarray | None, camera: PinholeCamera,
                  output: PinholeCamera, refinement: DisparityRefinement | None) -> DepthEstimate:
        """:meth:`DepthEstimator.estimate` through the network at :attr:`input_size`;
        ``refinement`` works at the camera's size (mono nets ignore it)."""
        check_camera_images(
            left, right, camera, stereo=self.metadata.stereo, name=self.metadata.variant
        )
        width, height = self.input_size
        interpolation = _network_interpolation(left, width, height)
        network_left = _resized(left, width, height, interpolation)
        outputs = self.run(
            _as_tensor(network_left),
            to_network_input(right, width, height) if self.metadata.stereo else None,
        )
        network_camera = camera.resized(width, height)
        depth = self.metadata.metric_depth(outputs[OUTPUT_NAME][0, 0], network_camera)
        confidence = outputs[CONFIDENCE_NAME][0, 0] if CONFIDENCE_NAME in outputs else None
        if refinement is not None and right is not None and self.metadata.stereo:
            assert camera.baseline is not None  # checked with the images
            disparity = depth_to_disparity(_resized(depth, camera.width, camera.height),
                                           camera.fx, camera.baseline)
            disparity = refinement.refine(left, right, disparity, downscale=camera.width / width)
            depth = disparity_to_depth(disparity, camera.fx, camera.baseline)
        depth = _resized(depth, output.width, output.height)
        if confidence is not None:
            confidence = _resized(confidence, output.width, output.height)
        # The network's left image is the estimate's ``image`` when the network runs at the
        # output size and did not enlarge it (bilinear, where ``image`` is area-averaged).
        at_output = (output.width, output.height) == (width, height)
        averaged = interpolation == cv2.INTER_AREA or network_left is left
        image = network_left if at_output and averaged else None
        return DepthEstimate(depth, confidence, camera=output, image=image)

    def warmup(self, iterations: int = 3) -> None:
        """Run a few forward passes so the first real frame does not pay for lazy setup."""
        width, height = self.input_size
        zeros = np.zeros((1, 3, height, width), np.float32)
        for _ in range(iterations):
            self.run(zeros, zeros if self.metadata.stereo else None)

    def info(self) -> dict[str, Any]:
        """What runs: for logs, diagnostics and benchmark reports."""
        width, height = self.input_size
        return {
            "backend": self.name,
            "model": self.source,
            "variant": self.metadata.variant,
            "input": f"{width}x{height}",
            "output": self.metadata.output,
        }
