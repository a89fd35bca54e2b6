"""FCRN, the baseline: Laina et al., "Deeper Depth Prediction with Fully Convolutional Residual
Networks" (3DV 2016).

A ResNet-50 encoder (He et al., CVPR 2016; the 1000-way classifier removed), a 1x1 conv from
2048 to 1024 channels, four *faster up-projection* blocks (1024 -> 512 -> 256 -> 128 -> 64
channels, each 2x), and a 3x3 conv to one channel at half the input resolution, upsampled
bilinearly to the input size. About 63.6M parameters, as the paper reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnd_depth_ros.models.backbone import ImageNormalization, check_images, init_weights
from cnd_depth_ros.models.decoder import PositiveHead, reset_head_conv

__all__ = [
    "FCRN",
    "Bottleneck",
    "FCRNConfig",
    "FastUpConv",
    "ResNetEncoder",
    "UpProjection",
    "fcrn",
]


@dataclass
class FCRNConfig:
    """Hyperparameters of FCRN. ``output_range`` / ``output_init``: depth in metres, see
    :class:`~cnd_depth_ros.models.decoder.PositiveHead`."""

    layers: tuple[int, ...] = (3, 4, 6, 3)
    decoder_channels: tuple[int, ...] = (512, 256, 128, 64)
    output_range: tuple[float, float] = (0.01, 1000.0)
    output_init: float = 10.0

    def __post_init__(self) -> None:
        for name in ("layers", "decoder_channels", "output_range"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        if len(self.layers) != 4 or min(self.layers) < 1:
            raise ValueError(f"layers must be four positive block counts, got {self.layers}")
        if len(self.decoder_channels) != 4 or min(self.decoder_channels) < 1:
            raise ValueError(
                f"decoder_channels must be four positive widths, got {self.decoder_channels}"
            )
        if len(self.output_range) != 2:
            raise ValueError(f"output_range must be (low, high), got {self.output_range}")


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce, 3x3 (strided), 1x1 expand x4, projection shortcut when the
    shape changes."""

    expansion: ClassVar[int] = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNetEncoder(nn.Sequential):
    """ResNet stem and four bottleneck stages: N x 3 x H x W -> N x 2048 x H/32 x W/32."""

    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        modules: list[nn.Module] = [
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        ]
        in_channels = 64
        for stage, blocks in enumerate(layers):
            width = 64 * 2**stage
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                modules.append(Bottleneck(in_channels, width, stride))
                in_channels = width * Bottleneck.expansion
        super().__init__(*modules)
        self.out_channels = in_channels


class FastUpConv(nn.Module):
    """Laina's faster up-convolution: four convolutions (3x3, 3x2, 2x3, 2x2) on the input whose
    outputs are interleaved into a 2x larger map; equal to zero-unpooling + a 5x5 conv, 4x cheaper.

    Output pixel (2i + r, 2j + s) comes from the kernel that covers input row i (r = 0, 3 taps
    centred) or rows i, i + 1 (r = 1, 2 taps), and likewise for columns. Every conv pads by one
    and a 2-tap axis drops its first output, so the graph has no asymmetric ``Pad`` (whose opset
    18 form does not convert to 17); the interleave is a pixel shuffle (``DepthToSpace``).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        # Pixel-shuffle order: (r, s) = (0, 0), (0, 1), (1, 0), (1, 1).
        kernels = ((3, 3), (3, 2), (2, 3), (2, 2))
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, kernel, padding=1, bias=False)
            for kernel in kernels
        )

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        parts = [conv(x)[..., -height:, -width:] for conv in self.convs]
        n, c = parts[0].shape[:2]
        return F.pixel_shuffle(torch.stack(parts, dim=2).reshape(n, 4 * c, height, width), 2)


class UpProjection(nn.Module):
    """Faster up-projection block: ``relu(BN(conv3x3(relu(BN(up(x))))) + BN(up'(x)))``, where
    ``up`` and ``up'`` are two :class:`FastUpConv`s."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            FastUpConv(in_channels, out_channels),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.projection = nn.Sequential(
            FastUpConv(in_channels, out_channels), nn.BatchNorm2d(out_channels)
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.main(x) + self.projection(x))


class FCRN(nn.Module):
    """FCRN for one camera: ``forward(left)`` -> N x 1 x H x W depth in metres.

    ``left`` is RGB in [0, 1], N x 3 x H x W with H and W multiples of 16 (sizes that are not
    multiples of 32 are fine: the prediction is resized to the input size).
    """

    is_stereo: ClassVar[bool] = False
    output_kind: ClassVar[Literal["disparity", "depth"]] = "depth"

    def __init__(self, config: FCRNConfig) -> None:
        super().__init__()
        self.config = config
        self.normalize = ImageNormalization()
        self.encoder = ResNetEncoder(config.layers)
        first = 2 * config.decoder_channels[0]
        self.reduce = nn.Sequential(
            nn.Conv2d(self.encoder.out_channels, first, 1, bias=False), nn.BatchNorm2d(first)
        )
        widths = (first, *config.decoder_channels)
        self.decoder = nn.Sequential(
            *(UpProjection(widths[i], widths[i + 1]) for i in range(len(widths) - 1))
        )
        self.predict = nn.Conv2d(widths[-1], 1, 3, padding=1)
        low, high = config.output_range
        self.head = PositiveHead(low, high, config.output_init)
        init_weights(self)
        reset_head_conv(self.predict)

    def forward(self, left: Tensor) -> Tensor:
        check_images(left)
        logit = self.predict(self.decoder(self.reduce(self.encoder(self.normalize(left)))))
        logit = F.interpolate(logit, size=left.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(logit)


def fcrn(**overrides: Any) -> FCRN:
    """FCRN (Laina et al. 2016: ResNet-50 + faster up-projections, 63.6M parameters), the
    baseline of the CND paper; ``overrides`` are :class:`FCRNConfig` fields."""
    return FCRN(FCRNConfig(**overrides))
