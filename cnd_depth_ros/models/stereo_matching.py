"""The stereo matching path of CNDstereo: a correlation volume and its soft-argmin disparity.

The paper's CNDstereo only concatenates the two encodings into the ASPP, so it must learn
matching from depth supervision alone; on a CPU budget it learnt the street's layout instead
(docs/decisions.md, 13). This path gives it the structure stereo networks are built on: learned
features of both views correlated over candidate disparities (DispNetC, Mayer et al., CVPR 2016),
the cost aggregated with 2D convolutions, and a differentiable soft-argmin over the disparities
(GC-Net, Kendall et al., ICCV 2017), whose expectation is sub-pixel at 1/4 resolution (StereoNet,
Khamis et al., ECCV 2018). The CND decoder then refines that disparity at full resolution.

Everything is built from convolutions, matrix products, gathers and a softmax, so it exports
to ONNX at opset 17 and parses in TensorRT.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnd_depth_ros.models.backbone import ConvBNReLU
from cnd_depth_ros.models.decoder import reset_head_conv

__all__ = [
    "CorrelationVolume",
    "StereoMatcher",
    "StereoRefiner",
    "match_confidence",
    "soft_argmin",
    "unit_features",
]

# Cosine similarities (in [-1, 1]) times this are the initial matching logits: sharp enough that
# the soft-argmin of a distinct match lands on it, soft enough to interpolate between levels.
_INITIAL_TEMPERATURE = 10.0


class CorrelationVolume(nn.Module):
    """Zero-parameter cost volume: for each disparity ``d < levels``, the channel mean of
    ``left(x) * right(x - d)``, zero where ``x - d`` falls off the image.

    Computed as one matrix product per image row (every left pixel against every right pixel of
    its row) from which the ``levels`` diagonals are gathered: a handful of large operations
    instead of a slice, product and sum per level, which ran 3x slower in ONNX Runtime. All
    are opset-17 operators TensorRT parses (Transpose, MatMul, GatherElements, Mul).
    """

    def __init__(self, levels: int) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"a correlation volume needs at least one level, got {levels}")
        self.levels = levels

    def forward(self, left: Tensor, right: Tensor) -> Tensor:
        batch, channels, height, width = left.shape
        # N x H x W x W: row r, left pixel x, right pixel x'.
        similarity = torch.matmul(left.permute(0, 2, 3, 1), right.permute(0, 2, 1, 3))
        x = torch.arange(width, device=left.device).view(width, 1)
        source = x - torch.arange(self.levels, device=left.device).view(1, self.levels)
        on_image = (source >= 0).to(similarity.dtype) * (1.0 / channels)
        index = source.clamp(min=0).expand(batch, height, width, self.levels)
        volume = similarity.gather(-1, index) * on_image
        return volume.permute(0, 3, 1, 2)


def soft_argmin(logits: Tensor, disparities: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax over the disparity channels of ``logits`` (N x L x H x W) and the expected
    disparity (N x 1 x H x W) for the ``L`` values of ``disparities``.

    Computed with the disparities last, where softmax and the expectation (a matrix product)
    are contiguous; over the channel axis ONNX Runtime's softmax transposes internally.
    """
    probabilities = torch.softmax(logits.permute(0, 2, 3, 1), dim=-1)
    disparity = torch.matmul(probabilities, disparities.view(-1, 1))
    return probabilities.permute(0, 3, 1, 2), disparity.permute(0, 3, 1, 2)


def match_confidence(probabilities: Tensor, disparity: Tensor) -> Tensor:
    """How sure the matcher is, per pixel, in [0, 1]: the probability mass within one level of
    its expected disparity (N x 1 x H x W; ``probabilities`` N x L x H x W over levels
    ``0 .. L - 1``, ``disparity`` their expectation). A sharp, single match puts nearly all of
    it there; textureless or repetitive surfaces, occlusions and disparities beyond the levels
    spread it, and the expectation of a spread distribution is where depth goes wrong."""
    levels = torch.arange(probabilities.shape[1], device=probabilities.device)
    near = ((levels.view(1, -1, 1, 1) - disparity).abs() <= 1.0).to(probabilities.dtype)
    return (probabilities * near).sum(dim=1, keepdim=True).clamp(0.0, 1.0)


def _disparity_levels(levels: int) -> Tensor:
    return torch.arange(levels, dtype=torch.float32)


def unit_features(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Scale every pixel's feature vector to unit length (channel-mean correlation of two such
    vectors is their cosine over the channel count)."""
    return x / torch.sqrt(x.square().sum(dim=1, keepdim=True) + eps)


class _CosineMatching(nn.Module):
    """What matcher and refiner share: a projection of both views' features (a 3x3 layer, then
    one of ``last_kernel``), unit-normalised and correlated over ``levels`` disparities, a
    learned temperature for the cosine logits, and the disparity values of the levels."""

    disparities: Tensor

    def __init__(self, in_channels: int, levels: int, channels: int, last_kernel: int) -> None:
        super().__init__()
        self.project = nn.Sequential(
            ConvBNReLU(in_channels, channels),
            nn.Conv2d(channels, channels, last_kernel, padding=last_kernel // 2),
        )
        self.correlation = CorrelationVolume(levels)
        self.temperature = nn.Parameter(torch.tensor(_INITIAL_TEMPERATURE))
        self.register_buffer("disparities", _disparity_levels(levels), persistent=False)
        self.levels = levels
        self.channels = channels

    def cosine_cost(self, left: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
        """``(cosine similarity per level (N x levels x H x W), the left view's unit features)``."""
        batch = left.shape[0]
        features = unit_features(self.project(torch.cat([left, right])))
        left_features = features[:batch]
        # Channel-mean correlation of unit vectors, times the channel count: the cosine.
        cosine = self.correlation(left_features, features[batch:]) * float(self.channels)
        return cosine, left_features


class StereoMatcher(_CosineMatching):
    """Features of both views (same resolution) -> ``(probabilities, disparity)``.

    ``probabilities`` (N x levels x H x W) is the softmax over candidate disparities
    ``0 .. levels - 1`` of the aggregated matching cost; ``disparity`` (N x 1 x H x W) is its
    expectation, in pixels of the feature resolution. The aggregation's last convolution starts
    near zero, so an untrained matcher is a block matcher on its (random) features: the soft-argmin
    already points at the right disparity on textured surfaces and every step refines it.
    """

    def __init__(self, in_channels: int, levels: int, channels: int = 32) -> None:
        super().__init__(in_channels, levels, channels, last_kernel=3)
        hidden = max(channels, levels) + channels // 2
        self.aggregate = nn.Sequential(
            ConvBNReLU(levels + channels, hidden),
            ConvBNReLU(hidden, hidden),
            nn.Conv2d(hidden, levels, 3, padding=1),
        )

    def reset_aggregation(self) -> None:
        """Near-zero aggregation output: the logits start as the raw correlation, yet every
        aggregation layer gets a gradient."""
        reset_head_conv(self.aggregate[-1])

    def forward(self, left: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
        cosine, left_features = self.cosine_cost(left, right)
        logits = self.temperature * cosine + self.aggregate(
            torch.cat([cosine, left_features], dim=1)
        )
        return soft_argmin(logits, self.disparities)


class StereoRefiner(_CosineMatching):
    """Sharpen a disparity at twice the matcher's resolution, where a level is half as wide.

    Finer features of both views (a 3x3 and a 1x1 layer, unit-normalised) are correlated over
    ``levels`` disparities; a Gaussian window of ``window`` pixels around the upsampled coarse
    disparity (``prior``) restricts the soft-argmin to the coarse match's neighbourhood, the
    coarse-to-fine step of StereoNet (Khamis et al., ECCV 2018) without warping the right view.
    ``forward(left, right, prior)`` -> N x 1 x H x W disparity in pixels of this resolution.
    """

    def __init__(
        self, in_channels: int, levels: int, channels: int = 16, window: float = 1.5
    ) -> None:
        if not window > 0:
            raise ValueError(f"the refinement window must be positive, got {window}")
        super().__init__(in_channels, levels, channels, last_kernel=1)
        self.window = window

    def forward(self, left: Tensor, right: Tensor, prior: Tensor) -> Tensor:
        cosine, _ = self.cosine_cost(left, right)
        distance = self.disparities.view(1, -1, 1, 1) - prior
        logits = self.temperature * cosine - distance * distance * (0.5 / self.window**2)
        return soft_argmin(logits, self.disparities)[1]
