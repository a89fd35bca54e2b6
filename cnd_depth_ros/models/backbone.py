"""The CND encoder: MobileNetV2 with output stride 16, and the in-graph input normalisation.

MobileNetV2 follows Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks"
(CVPR 2018). As in DeepLabv3+ (Chen et al., ECCV 2018) and the CND paper, the last stride-2 stage
runs at stride 1 with dilation 2, so the encoder output is at 1/16 of the input, and the final
1x1 convolution to 1280 channels is dropped: the ASPP takes the 320-channel bottleneck directly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_NORMALISATION",
    "IMAGENET_STD",
    "ConvBNReLU",
    "ImageNormalization",
    "InvertedResidual",
    "MobileNetV2Encoder",
    "check_images",
    "init_weights",
    "make_divisible",
]

# The values every artifact's sidecar records as its (in-graph) normalisation.
IMAGENET_NORMALISATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
IMAGENET_MEAN: tuple[float, ...] = tuple(IMAGENET_NORMALISATION["mean"])
IMAGENET_STD: tuple[float, ...] = tuple(IMAGENET_NORMALISATION["std"])

# (expansion t, output channels c, repeats n, first stride s): Table 2 of Sandler et al.
_INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),  # the second reduction: 1/4 resolution, the decoder's skip connection
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),  # stride replaced by dilation 2 for output stride 16
    (6, 320, 1, 1),
)
_SKIP_STAGE = 1


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without losing more than 10% (MobileNet rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ImageNormalization(nn.Module):
    """RGB in [0, 1] -> ImageNet mean/std normalised: the first layer of every network, so the
    ONNX graph and engines take camera images with one scaling only (docs/decisions.md, 2)."""

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        # Constants, not weights: kept out of the state dict and so out of artifacts.
        self.register_buffer("mean", _as_channels(mean), persistent=False)
        self.register_buffer("std", _as_channels(std), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def _as_channels(values: tuple[float, ...]) -> Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1)


class ConvBNReLU(nn.Sequential):
    """Convolution, batch norm, ReLU6; ``padding`` keeps the size at stride 1 for any dilation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
    ) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding,
                dilation=dilation,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 (strided or dilated) -> linear projection (1x1), with an
    identity shortcut when shape is kept."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, expand_ratio: int, dilation: int = 1
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = round(in_channels * expand_ratio)
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(in_channels, hidden, kernel_size=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, dilation=dilation, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 feature extractor at output stride 16.

    ``forward`` returns ``{"half": 1/2-resolution features (after the first bottleneck), "skip":
    1/4-resolution features (after the second reduction stage), "out": 1/16-resolution
    features}``; their channel counts are :attr:`half_channels`, :attr:`skip_channels` and
    :attr:`out_channels`.
    """

    def __init__(self, width_mult: float = 1.0, round_nearest: int = 8) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        in_channels = make_divisible(32 * width_mult, round_nearest)
        stem = ConvBNReLU(3, in_channels, stride=2)
        stages: list[nn.Module] = []
        stride_so_far, dilation = 2, 1
        for t, c, n, s in _INVERTED_RESIDUAL_SETTING:
            out_channels = make_divisible(c * width_mult, round_nearest)
            if s == 2 and stride_so_far == 16:
                stride, previous_dilation, dilation = 1, dilation, dilation * 2
            else:
                stride, previous_dilation = s, dilation
                stride_so_far *= s
            blocks = []
            for i in range(n):
                blocks.append(
                    InvertedResidual(
                        in_channels,
                        out_channels,
                        stride if i == 0 else 1,
                        t,
                        dilation=previous_dilation if i == 0 else dilation,
                    )
                )
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.low = nn.Sequential(stem, *stages[: _SKIP_STAGE + 1])
        self.high = nn.Sequential(*stages[_SKIP_STAGE + 1 :])
        self.half_channels = make_divisible(
            _INVERTED_RESIDUAL_SETTING[0][1] * width_mult, round_nearest
        )
        self.skip_channels = make_divisible(
            _INVERTED_RESIDUAL_SETTING[_SKIP_STAGE][1] * width_mult, round_nearest
        )
        self.out_channels = in_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        # Slices of ``low`` share its modules, so parameter names stay those of artifacts.
        half = self.low[:2](x)
        skip = self.low[2:](half)
        return {"half": half, "skip": skip, "out": self.high(skip)}


def init_weights(module: nn.Module) -> None:
    """He init for convolutions, unit BN: trained from scratch (no ImageNet weights offline)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def check_images(left: Tensor, right: Tensor | None = None, *, multiple: int = 16) -> None:
    """Reject input a network cannot take, naming the shape: N x 3 x H x W with H and W
    multiples of ``multiple``, and a right image of the left's shape when one is given.

    :raises ValueError: any mismatch.
    """
    if left.dim() != 4 or left.shape[1] != 3:
        raise ValueError(f"expected left images of shape N x 3 x H x W, got {tuple(left.shape)}")
    height, width = left.shape[-2:]
    if height % multiple or width % multiple or height == 0 or width == 0:
        raise ValueError(
            f"input height and width must be positive multiples of {multiple}, got {height}x{width}"
        )
    if right is not None and right.shape != left.shape:
        raise ValueError(
            f"left and right images must have the same shape, got {tuple(left.shape)} and "
            f"{tuple(right.shape)}"
        )
