"""The self-supervised stereo objective: learn depth from a rectified pair, without ground truth.

It follows Godard et al., "Unsupervised Monocular Depth Estimation with Left-Right Consistency"
(CVPR 2017; monodepth, reference [10] of the CND paper): the left view is rebuilt from the right
one by sampling it at ``x - d`` with the predicted disparity ``d`` (a differentiable bilinear
warp, ``grid_sample``), and the reconstruction is scored with their SSIM + L1 mix
(``alpha = 0.85``, 3 x 3 SSIM windows); an edge-aware smoothness term and a left-right disparity
consistency term complete it. From Godard et al., "Digging Into Self-Supervised Monocular Depth
Estimation" (ICCV 2019; monodepth2) come the mean-normalised disparity in the smoothness term and
the optional auto-mask (pixels that the unwarped right image already explains better are
ignored: sky, textureless walls at any disparity).

Beyond both, pixels that the right camera cannot see are left out of the reconstruction: those
whose match falls outside the right image, and those hidden behind a nearer surface. Occlusion
follows from the left disparity alone by the ordering constraint of a rectified rig: left pixel
``x`` lands on right column ``x - d(x)``, and it is hidden when some pixel to its right lands at
or left of that column (it is nearer, so it covers it).

All disparities are N x 1 x H x W pixels at the images' resolution; a depth network's output
becomes disparity through the rig, ``d = fx * B / depth``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SelfSupervisedLoss",
    "edge_aware_smoothness",
    "photometric_error",
    "reconstruction_mask",
    "sample_horizontally",
    "ssim_dissimilarity",
    "visible_in_right",
]

#: SSIM's stabilising constants for images in [0, 1] (Wang et al. 2004, K1 = 0.01, K2 = 0.03).
_C1, _C2 = 0.01**2, 0.03**2
#: A left pixel is hidden when a pixel to its right lands less than this many pixels to the
#: right of its own match: two surface points compete for one right pixel and the nearer wins.
_OCCLUSION_TOLERANCE = 0.5


def _check_pair(image: Tensor, disparity: Tensor) -> None:
    if image.ndim != 4 or disparity.ndim != 4 or disparity.shape[1] != 1:
        raise ValueError(
            f"expected N x C x H x W images and N x 1 x H x W disparity, got "
            f"{tuple(image.shape)} and {tuple(disparity.shape)}"
        )
    if image.shape[0] != disparity.shape[0] or image.shape[2:] != disparity.shape[2:]:
        raise ValueError(
            f"image {tuple(image.shape)} and disparity {tuple(disparity.shape)} differ in size"
        )


def _landing(disparity: Tensor) -> Tensor:
    """``x - d``: the right image column each left pixel's match lies on."""
    width = disparity.shape[-1]
    columns = torch.arange(width, dtype=disparity.dtype, device=disparity.device)
    return columns.view(1, 1, 1, -1) - disparity


def _in_view(landing: Tensor) -> Tensor:
    return (landing >= 0) & (landing <= landing.shape[-1] - 1)


def sample_horizontally(image: Tensor, disparity: Tensor) -> tuple[Tensor, Tensor]:
    """``image`` sampled at ``(x - disparity, y)``, bilinearly: the left view rebuilt from the
    right view ``image`` with the left disparity. Returns the warped image and a bool N x 1 x H x W
    mask of the pixels whose sample lies inside ``image`` (pixel centres at integer
    coordinates, as everywhere in the package).
    """
    _check_pair(image, disparity)
    height, width = image.shape[2:]
    source_x = _landing(disparity)
    rows = torch.arange(height, dtype=disparity.dtype, device=disparity.device).view(1, 1, -1, 1)
    # align_corners=True maps -1 and 1 to the centres of the first and last pixels.
    grid_x = 2.0 * source_x / max(width - 1, 1) - 1.0
    grid_y = (2.0 * rows / max(height - 1, 1) - 1.0).expand_as(grid_x)
    grid = torch.cat((grid_x, grid_y), dim=1).permute(0, 2, 3, 1)
    warped = F.grid_sample(
        image, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=True
    )
    return warped, _in_view(source_x)


@torch.no_grad()
def visible_in_right(disparity: Tensor) -> Tensor:
    """Bool N x 1 x H x W: the left pixels that the right camera sees, by the ordering constraint.

    Left pixel ``x`` lands on right column ``x - d(x)``; a pixel ``x' > x`` that lands at or left
    of it (within :data:`_OCCLUSION_TOLERANCE`) is nearer and hides it. One reverse cumulative
    minimum per row, so it is exact for any disparity map and costs O(W). No gradient flows
    through a mask.
    """
    if disparity.ndim != 4 or disparity.shape[1] != 1:
        raise ValueError(f"disparity must be N x 1 x H x W, got {tuple(disparity.shape)}")
    landing = _landing(disparity)
    from_right = torch.flip(torch.cummin(torch.flip(landing, [-1]), dim=-1).values, [-1])
    beyond = torch.full_like(landing[..., :1], math.inf)
    nearest_landing_right_of = torch.cat((from_right[..., 1:], beyond), dim=-1)
    return nearest_landing_right_of >= landing + _OCCLUSION_TOLERANCE


@torch.no_grad()
def reconstruction_mask(disparity: Tensor) -> Tensor:
    """Bool N x 1 x H x W: pixels whose whole 3 x 3 SSIM window is rebuilt from what the right
    camera sees (in view and not occluded), so a correct disparity reconstructs them exactly."""
    usable = _in_view(_landing(disparity)) & visible_in_right(disparity)
    # Erode by one pixel; max_pool pads with -inf, so the image border does not erode.
    return ~(F.max_pool2d((~usable).float(), 3, stride=1, padding=1) > 0)


def ssim_dissimilarity(x: Tensor, y: Tensor) -> Tensor:
    """``(1 - SSIM) / 2`` per pixel and channel, in [0, 1], over 3 x 3 windows with reflected
    borders (monodepth's form of Wang et al. 2004)."""
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x**2
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y**2
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + _C1) * (2 * sigma_xy + _C2)
    denominator = (mu_x**2 + mu_y**2 + _C1) * (sigma_x + sigma_y + _C2)
    return ((1 - numerator / denominator) / 2).clamp(0, 1)


def photometric_error(reconstruction: Tensor, target: Tensor, alpha: float = 0.85) -> Tensor:
    """N x 1 x H x W ``alpha * (1 - SSIM) / 2 + (1 - alpha) * |L1|``, averaged over channels
    (monodepth's appearance matching term, per pixel)."""
    if reconstruction.shape != target.shape:
        raise ValueError(
            f"reconstruction {tuple(reconstruction.shape)} and target {tuple(target.shape)} differ"
        )
    l1 = (reconstruction - target).abs().mean(dim=1, keepdim=True)
    ssim = ssim_dissimilarity(reconstruction, target).mean(dim=1, keepdim=True)
    return alpha * ssim + (1 - alpha) * l1


def edge_aware_smoothness(disparity: Tensor, image: Tensor) -> Tensor:
    """Mean ``|d_x d*| exp(-|d_x I|) + |d_y d*| exp(-|d_y I|)`` with ``d* = d / mean(d)``: the
    disparity may jump where the image has an edge, and is smooth elsewhere (monodepth, with
    monodepth2's normalisation, which keeps the term from simply shrinking the disparity)."""
    _check_pair(image, disparity)
    normalised = disparity / disparity.mean(dim=(2, 3), keepdim=True).clamp_min(1e-7)
    grad_x = (normalised[..., :, 1:] - normalised[..., :, :-1]).abs()
    grad_y = (normalised[..., 1:, :] - normalised[..., :-1, :]).abs()
    edge_x = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(dim=1, keepdim=True)
    edge_y = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(dim=1, keepdim=True)
    return (grad_x * torch.exp(-edge_x)).mean() + (grad_y * torch.exp(-edge_y)).mean()


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over each image's masked pixels, then over images with any (0 when none has)."""
    count = mask.sum(dim=(1, 2, 3))
    per_image = torch.where(mask, values, 0.0).sum(dim=(1, 2, 3)) / count.clamp_min(1)
    present = count > 0
    return torch.where(present, per_image, 0.0).sum() / present.sum().clamp_min(1)


class SelfSupervisedLoss(nn.Module):
    """Photometric reconstruction + edge-aware smoothness + left-right consistency.

    ``forward(left, right, disparity, right_disparity)`` scores the left view's disparity (and
    its agreement with the right view's) and returns the terms by name, ``"loss"`` being their
    weighted sum. Call it on both views of a pair (the right view as a mirrored, swapped pair)
    to use every pixel, as monodepth does. The consistency term compares disparities as
    fractions of the image width, so the weights do not depend on the resolution.

    Defaults: ``alpha = 0.85`` (monodepth), smoothness ``1e-3`` (monodepth2, for the normalised
    disparity), consistency ``1.0`` (monodepth), auto-masking off.
    """

    def __init__(
        self,
        *,
        alpha: float = 0.85,
        smoothness_weight: float = 1e-3,
        consistency_weight: float = 1.0,
        automask: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        for name, weight in (("smoothness_weight", smoothness_weight),
                             ("consistency_weight", consistency_weight)):
            if not (math.isfinite(weight) and weight >= 0.0):
                raise ValueError(f"{name} must be finite and >= 0, got {weight}")
        self.alpha = alpha
        self.smoothness_weight = smoothness_weight
        self.consistency_weight = consistency_weight
        self.automask = automask

    def forward(
        self, left: Tensor, right: Tensor, disparity: Tensor, right_disparity: Tensor
    ) -> dict[str, Tensor]:
        if left.shape != right.shape or disparity.shape != right_disparity.shape:
            raise ValueError(
                f"left {tuple(left.shape)} / right {tuple(right.shape)} and disparities "
                f"{tuple(disparity.shape)} / {tuple(right_disparity.shape)} must match"
            )
        reconstruction, _ = sample_horizontally(right, disparity)
        error = photometric_error(reconstruction, left, self.alpha)
        mask = reconstruction_mask(disparity.detach())
        if self.automask:
            identity = photometric_error(right, left, self.alpha)
            mask = mask & (error.detach() < identity)
        photometric = _masked_mean(error, mask)
        smoothness = edge_aware_smoothness(disparity, left)
        right_seen, _ = sample_horizontally(right_disparity, disparity)
        width = disparity.shape[-1]
        consistency = _masked_mean((disparity - right_seen).abs() / width, mask)
        loss = (
            photometric
            + self.smoothness_weight * smoothness
            + self.consistency_weight * consistency
        )
        return {
            "loss": loss,
            "photometric": photometric.detach(),
            "smoothness": smoothness.detach(),
            "consistency": consistency.detach(),
            "masked_out": 1.0 - mask.float().mean(),
        }

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, smoothness_weight={self.smoothness_weight}, "
            f"consistency_weight={self.consistency_weight}, automask={self.automask}"
        )
