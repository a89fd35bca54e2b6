"""The stereo matching path of CNDstereo: a correlation volume and its soft-argmin disparity.

The paper's CNDstereo only concatenates the two encodings into the ASPP, so it must learn
matching from depth supervision alone; on a CPU budget it learnt the street's layout instead
(docs/decisions.md, 13). This path gives it the structure stereo networks are built on: learned
features of both views correlated over candidate disparities (DispNetC, Mayer et al., CVPR 2016),
the cost aggregated with 2D convolutions, and a differentiable soft-argmin over the disparities
(GC-Net, Kendall et al., ICCV 2017), whose expectation is sub-pixel at 1/4 resolution (StereoNet,
Khamis et al., ECCV 2018). The CND decoder then refines that disparity at full resolution.

Everything is built from convolutions, slices, sums and a softmax, so it exports to ONNX at
opset 17 and parses in TensorRT.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnd_depth_ros.models.backbone import ConvBNReLU
from cnd_depth_ros.models.decoder import reset_head_conv

__all__ = ["CorrelationVolume", "StereoMatcher", "StereoRefiner", "soft_argmin", "unit_features"]

# Cosine similarities (in [-1, 1]) times this are the initial matching logits: sharp enough that
# the soft-argmin of a distinct match lands on it, soft enough to interpolate between levels.
_INITIAL_TEMPERATURE = 10.0


class CorrelationVolume(nn.Module):
    """Zero-parameter cost volume: for each disparity ``d < levels``, the channel mean of
    ``left(x) * right(x - d)``, zero where ``x - d`` falls off the image.

    Built from static slices, channel sums and concatenation only: opset 18's ``ReduceMean`` and
    ``Pad`` do not convert down to opset 17 (the newest TensorRT 8.5 on JetPack 5 parses).
    """

    def __init__(self, levels: int) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"a correlation volume needs at least one level, got {levels}")
        self.levels = levels

    def forward(self, left: Tensor, right: Tensor) -> Tensor:
        width = left.shape[-1]
        first = _channel_mean(left * right)
        volume = [first]
        for d in range(1, self.levels):
            off_image = torch.zeros_like(first[..., : min(d, width)])
            if d < width:
                matched = _channel_mean(left[..., d:] * right[..., :-d])
                volume.append(torch.cat([off_image, matched], dim=-1))
            else:
                volume.append(off_image)
        return torch.cat(volume, dim=1)


def _channel_mean(x: Tensor) -> Tensor:
    return x.sum(dim=1, keepdim=True) * (1.0 / x.shape[1])


def soft_argmin(logits: Tensor, disparities: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax over the disparity channels of ``logits`` and the expected disparity."""
    probabilities = torch.softmax(logits, dim=1)
    return probabilities, (probabilities * disparities).sum(dim=1, keepdim=True)


def _disparity_levels(levels: int) -> Tensor:
    return torch.arange(levels, dtype=torch.float32).view(1, levels, 1, 1)


def unit_features(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Scale every pixel's feature vector to unit length (channel-mean correlation of two such
    vectors is their cosine over the channel count)."""
    return x / torch.sqrt(x.square().sum(dim=1, keepdim=True) + eps)


class StereoMatcher(nn.Module):
    """Features of both views (same resolution) -> ``(probabilities, disparity)``.

    ``probabilities`` (N x levels x H x W) is the softmax over candidate disparities
    ``0 .. levels - 1`` of the aggregated matching cost; ``disparity`` (N x 1 x H x W) is its
    expectation, in pixels of the feature resolution. The aggregation's last convolution starts
    near zero, so an untrained matcher is a block matcher on its (random) features: the soft-argmin
    already points at the right disparity on textured surfaces and every step refines it.
    """

    disparities: Tensor

    def __init__(self, in_channels: int, levels: int, channels: int = 32) -> None:
        super().__init__()
        self.project = nn.Sequential(
            ConvBNReLU(in_channels, channels),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.correlation = CorrelationVolume(levels)
        hidden = max(channels, levels) + channels // 2
        self.aggregate = nn.Sequential(
            ConvBNReLU(levels + channels, hidden),
            ConvBNReLU(hidden, hidden),
            nn.Conv2d(hidden, levels, 3, padding=1),
        )
        self.temperature = nn.Parameter(torch.tensor(_INITIAL_TEMPERATURE))
        self.register_buffer("disparities", _disparity_levels(levels), persistent=False)
        self.levels = levels
        self.channels = channels

    def reset_aggregation(self) -> None:
        """Near-zero aggregation output: the logits start as the raw correlation, yet every
        aggregation layer gets a gradient."""
        reset_head_conv(self.aggregate[-1])

    def forward(self, left: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
        batch = left.shape[0]
        features = unit_features(self.project(torch.cat([left, right])))
        left_features, right_features = features[:batch], features[batch:]
        # Channel-mean correlation of unit vectors -> cosine similarity in [-1, 1].
        cosine = self.correlation(left_features, right_features) * float(self.channels)
        logits = self.temperature * cosine + self.aggregate(
            torch.cat([cosine, left_features], dim=1)
        )
        return soft_argmin(logits, self.disparities)


class StereoRefiner(nn.Module):
    """Sharpen a disparity at twice the matcher's resolution, where a level is half as wide.

    Finer features of both views (a 3x3 and a 1x1 layer, unit-normalised) are correlated over
    ``levels`` disparities; a Gaussian window of ``window`` pixels around the upsampled coarse
    disparity (``prior``) restricts the soft-argmin to the coarse match's neighbourhood, the
    coarse-to-fine step of StereoNet (Khamis et al., ECCV 2018) without warping the right view.
    ``forward(left, right, prior)`` -> N x 1 x H x W disparity in pixels of this resolution.
    """

    disparities: Tensor

    def __init__(
        self, in_channels: int, levels: int, channels: int = 16, window: float = 1.5
    ) -> None:
        super().__init__()
        if not window > 0:
            raise ValueError(f"the refinement window must be positive, got {window}")
        self.project = nn.Sequential(
            ConvBNReLU(in_channels, channels),
            nn.Conv2d(channels, channels, 1),
        )
        self.correlation = CorrelationVolume(levels)
        self.temperature = nn.Parameter(torch.tensor(_INITIAL_TEMPERATURE))
        self.register_buffer("disparities", _disparity_levels(levels), persistent=False)
        self.channels = channels
        self.window = window

    def forward(self, left: Tensor, right: Tensor, prior: Tensor) -> Tensor:
        batch = left.shape[0]
        features = unit_features(self.project(torch.cat([left, right])))
        cosine = self.correlation(features[:batch], features[batch:]) * float(self.channels)
        distance = self.disparities - prior
        logits = self.temperature * cosine - distance * distance * (0.5 / self.window**2)
        return soft_argmin(logits, self.disparities)[1]
