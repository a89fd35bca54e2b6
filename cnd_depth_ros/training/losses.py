"""The CND training loss (paper eq. 2 and 3) and the berHu loss of the FCRN baseline.

Every loss here is called as ``loss(pred_depth, gt_depth, gt_normals, valid_mask, camera=None)``
with N x 1 x H x W depths in metres, N x 3 x H x W unit ground-truth normals (0 where unknown),
an N x 1 x H x W bool mask of pixels with ground truth, and optionally the N x 5 camera tensor
``[fx, fy, cx, cy, baseline]`` of :func:`~cnd_depth_ros.training.data.to_sample`.
Pixels outside the mask never touch the value or the gradient, so sparse ground truth (LiDAR)
and images without any valid pixel work: the latter simply contribute nothing.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from cnd_depth_ros.geometry import backproject_torch

__all__ = [
    "BerHuLoss",
    "ExtendedDepthLoss",
    "StereoDepthLoss",
    "disparity_loss",
    "extended_loss",
    "normal_orthogonality_loss",
    "scale_invariant_log_loss",
]

#: Predicted depth is clamped here before the log: a net at initialisation may predict <= 0.
MIN_PREDICTED_DEPTH = 1e-6


def scale_invariant_log_loss(
    pred_depth: Tensor, gt_depth: Tensor, valid_mask: Tensor, scale_invariance: float = 0.5
) -> Tensor:
    """``mean(d^2) - scale_invariance * mean(d)^2`` with ``d = log D - log D*`` (Eigen et al.
    2014), over each image's valid pixels, then averaged over the images that have any.

    ``scale_invariance`` 0 is the plain squared log error, 1 ignores a global scale error
    entirely; the paper uses 0.5, which keeps metric scale while forgiving part of it.
    """
    valid = _scored_pixels(pred_depth, gt_depth, valid_mask)
    # Masked values are replaced before the log, so neither they nor their gradients are NaN.
    pred_log = torch.where(valid, pred_depth, 1.0).clamp_min(MIN_PREDICTED_DEPTH).log()
    log_ratio = torch.where(valid, pred_log - torch.where(valid, gt_depth, 1.0).log(), 0.0)
    count = valid.sum(dim=(1, 2, 3))
    mean = log_ratio.sum(dim=(1, 2, 3)) / count.clamp_min(1)
    mean_square = log_ratio.square().sum(dim=(1, 2, 3)) / count.clamp_min(1)
    return _mean_over_images(mean_square - scale_invariance * mean.square(), count > 0)


def normal_orthogonality_loss(
    pred_depth: Tensor, gt_normals: Tensor, valid_mask: Tensor, camera: Tensor | None = None
) -> Tensor:
    """Mean ``|cos|`` of the angle between each predicted surface tangent and the ground-truth
    normal ``N*``: 0 when the predicted surface is locally the true one, up to 1.

    Tangents join horizontally and vertically adjacent pixels, used only where both pixels are
    valid and have a known normal; ``N*`` is the mean of the two pixels' normals, which is
    exactly orthogonal to the chord of a plane and of a sphere.

    With ``camera`` the tangents join back-projected predicted points, exact for a pinhole
    camera. Without it they are taken in (u, v, depth) space, the image-plane approximation of
    the paper's ``(grad_x D + grad_y D) . N*``: it mixes pixels and metres, so it is exact only
    for surfaces facing the camera; pass the camera whenever it is known.
    """
    _check_depths(pred_depth, valid_mask)
    if gt_normals.shape != (pred_depth.shape[0], 3, *pred_depth.shape[2:]):
        raise ValueError(
            f"gt_normals must be N x 3 x H x W matching depth {tuple(pred_depth.shape)}, "
            f"got {tuple(gt_normals.shape)}"
        )
    known = (
        valid_mask
        & torch.isfinite(gt_normals).all(dim=1, keepdim=True)
        & (gt_normals != 0).any(dim=1, keepdim=True)
    )
    normals = torch.where(known, gt_normals, 0.0)
    depth = torch.where(known, pred_depth, 1.0)
    if camera is not None:
        surface = backproject_torch(depth, camera)
    else:
        batch, _, height, width = depth.shape
        v, u = torch.meshgrid(
            torch.arange(height, dtype=depth.dtype, device=depth.device),
            torch.arange(width, dtype=depth.dtype, device=depth.device),
            indexing="ij",
        )
        surface = torch.cat((u.expand(batch, 1, -1, -1), v.expand(batch, 1, -1, -1), depth), 1)

    cosines, pairs = [], []
    for dim in (-1, -2):
        length = surface.shape[dim]
        tangent = surface.diff(dim=dim)
        normal = normals.narrow(dim, 0, length - 1) + normals.narrow(dim, 1, length - 1)
        pair = known.narrow(dim, 0, length - 1) & known.narrow(dim, 1, length - 1)
        squared_lengths = _dot(tangent, tangent) * _dot(normal, normal)
        pair = pair & (squared_lengths > 0)
        cosine = _dot(tangent, normal) / torch.where(pair, squared_lengths, 1.0).sqrt()
        cosines.append(torch.where(pair, cosine, 0.0).flatten(1))
        pairs.append(pair.flatten(1))
    cosine, pair = torch.cat(cosines, dim=1).abs(), torch.cat(pairs, dim=1)
    count = pair.sum(dim=1)
    return _mean_over_images(cosine.sum(dim=1) / count.clamp_min(1), count > 0)


def extended_loss(depth_loss: Tensor, phi: float = 2.0) -> Tensor:
    """Paper eq. 3, ``(|L_depth| + 1) ** phi - 1``: for phi > 1 it grows faster than the depth
    loss where that is large, and equals it at phi = 1."""
    _check_phi(phi)
    return (depth_loss.abs() + 1.0).pow(phi) - 1.0


class ExtendedDepthLoss(nn.Module):
    """The CND training loss: eq. 3 applied to eq. 2,
    ``L_depth = scale_invariant_log_loss + normal_weight * normal_orthogonality_loss``.

    Defaults are the paper's: ``phi = 2``, ``scale_invariance = 0.5``, ``normal_weight = 1``.
    """

    def __init__(
        self, phi: float = 2.0, *, scale_invariance: float = 0.5, normal_weight: float = 1.0
    ) -> None:
        super().__init__()
        _check_phi(phi)
        if not 0.0 <= scale_invariance <= 1.0:
            raise ValueError(f"scale_invariance must be in [0, 1], got {scale_invariance}")
        if not (math.isfinite(normal_weight) and normal_weight >= 0.0):
            raise ValueError(f"normal_weight must be finite and >= 0, got {normal_weight}")
        self.phi = phi
        self.scale_invariance = scale_invariance
        self.normal_weight = normal_weight

    def depth_loss(
        self,
        pred_depth: Tensor,
        gt_depth: Tensor,
        gt_normals: Tensor,
        valid_mask: Tensor,
        camera: Tensor | None = None,
    ) -> Tensor:
        """``L_depth`` of eq. 2, for logging next to the extended loss."""
        loss = scale_invariant_log_loss(pred_depth, gt_depth, valid_mask, self.scale_invariance)
        if self.normal_weight:
            normal = normal_orthogonality_loss(pred_depth, gt_normals, valid_mask, camera)
            loss = loss + self.normal_weight * normal
        return loss

    def forward(
        self,
        pred_depth: Tensor,
        gt_depth: Tensor,
        gt_normals: Tensor,
        valid_mask: Tensor,
        camera: Tensor | None = None,
    ) -> Tensor:
        depth_loss = self.depth_loss(pred_depth, gt_depth, gt_normals, valid_mask, camera)
        return extended_loss(depth_loss, self.phi)

    def extra_repr(self) -> str:
        return (
            f"phi={self.phi}, scale_invariance={self.scale_invariance}, "
            f"normal_weight={self.normal_weight}"
        )


def disparity_loss(
    pred_depth: Tensor, gt_depth: Tensor, valid_mask: Tensor, camera: Tensor
) -> Tensor:
    """Smooth L1 (Huber, 1 px) between predicted and true disparity ``fx * B / depth`` in
    pixels, the loss stereo networks train on (GC-Net, Kendall et al. 2017; PSMNet, Chang and Chen
    2018). A log-depth loss weighs a far pixel's sub-pixel disparity error as much as a near
    pixel's whole-pixel one; this weighs every pixel by what a matcher can measure there.
    """
    valid = _scored_pixels(pred_depth, gt_depth, valid_mask)
    focal_baseline = (camera[:, 0] * camera[:, 4]).view(-1, 1, 1, 1).to(pred_depth.dtype)
    pred = focal_baseline / torch.where(valid, pred_depth, 1.0).clamp_min(MIN_PREDICTED_DEPTH)
    truth = focal_baseline / torch.where(valid, gt_depth, 1.0)
    error = nn.functional.smooth_l1_loss(pred, truth, reduction="none", beta=1.0)
    count = valid.sum(dim=(1, 2, 3))
    per_image = torch.where(valid, error, 0.0).sum(dim=(1, 2, 3)) / count.clamp_min(1)
    return _mean_over_images(per_image, count > 0)


class StereoDepthLoss(ExtendedDepthLoss):
    """The extended loss plus ``disparity_weight`` times :func:`disparity_loss`, for nets that
    match a stereo pair: the extended loss keeps the paper's objective, the disparity term gives
    the matcher the gradient it learns from. Needs ``camera`` (fx and baseline)."""

    def __init__(
        self, phi: float = 2.0, *, disparity_weight: float = 1.0, **options: float
    ) -> None:
        super().__init__(phi, **options)
        if not (math.isfinite(disparity_weight) and disparity_weight >= 0.0):
            raise ValueError(f"disparity_weight must be finite and >= 0, got {disparity_weight}")
        self.disparity_weight = disparity_weight

    def forward(
        self,
        pred_depth: Tensor,
        gt_depth: Tensor,
        gt_normals: Tensor,
        valid_mask: Tensor,
        camera: Tensor | None = None,
    ) -> Tensor:
        if camera is None:
            raise ValueError("StereoDepthLoss needs the camera (fx and baseline) of each sample")
        loss = super().forward(pred_depth, gt_depth, gt_normals, valid_mask, camera)
        return loss + self.disparity_weight * disparity_loss(
            pred_depth, gt_depth, valid_mask, camera
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, disparity_weight={self.disparity_weight}"


class BerHuLoss(nn.Module):
    """The reverse Huber loss of FCRN (Laina et al. 2016): ``|r|`` up to ``c``, then
    ``(r^2 + c^2) / 2c``, with ``c = threshold * max |r|`` over the batch's valid pixels (held
    constant in the gradient, as in the paper). Averaged over all valid pixels of the batch.

    Takes the same arguments as :class:`ExtendedDepthLoss` so the trainer can swap them;
    ``gt_normals`` and ``camera`` are not used.
    """

    def __init__(self, threshold: float = 0.2) -> None:
        super().__init__()
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold

    def forward(
        self,
        pred_depth: Tensor,
        gt_depth: Tensor,
        gt_normals: Tensor,
        valid_mask: Tensor,
        camera: Tensor | None = None,
    ) -> Tensor:
        valid = _scored_pixels(pred_depth, gt_depth, valid_mask)
        residual = torch.where(valid, pred_depth - torch.where(valid, gt_depth, 0.0), 0.0).abs()
        c = self.threshold * residual.detach().max()
        quadratic = (residual.square() + c.square()) / (2.0 * torch.where(c > 0, c, 1.0))
        per_pixel = torch.where(residual <= c, residual, quadratic)
        return per_pixel.sum() / valid.sum().clamp_min(1)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}"


def _mean_over_images(per_image: Tensor, present: Tensor) -> Tensor:
    """Mean of ``per_image`` over the images marked ``present``; 0 (still differentiable, so
    ``backward()`` works) when none is."""
    return torch.where(present, per_image, 0.0).sum() / present.sum().clamp_min(1)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Dot product over the channel dimension of N x 3 x H x W vectors."""
    return (a * b).sum(dim=1, keepdim=True)


def _scored_pixels(pred_depth: Tensor, gt_depth: Tensor, valid_mask: Tensor) -> Tensor:
    """The pixels a depth term scores: in ``valid_mask`` with finite, positive ground truth."""
    _check_depths(pred_depth, valid_mask, gt_depth)
    return valid_mask & torch.isfinite(gt_depth) & (gt_depth > 0)


def _check_depths(pred_depth: Tensor, valid_mask: Tensor, gt_depth: Tensor | None = None) -> None:
    if pred_depth.ndim != 4 or pred_depth.shape[1] != 1:
        raise ValueError(f"pred_depth must be N x 1 x H x W, got {tuple(pred_depth.shape)}")
    others = [("valid_mask", valid_mask)] + ([] if gt_depth is None else [("gt_depth", gt_depth)])
    for name, tensor in others:
        if tensor.shape != pred_depth.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)}, pred_depth {tuple(pred_depth.shape)}"
            )
    if valid_mask.dtype != torch.bool:
        raise ValueError(f"valid_mask must be a bool tensor, got {valid_mask.dtype}")


def _check_phi(phi: float) -> None:
    if not (math.isfinite(phi) and phi > 0.0):
        raise ValueError(f"phi must be finite and positive, got {phi}")
