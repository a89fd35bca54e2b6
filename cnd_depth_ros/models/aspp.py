"""Atrous spatial pyramid pooling as the CND paper extends it (Pisoni, section 3.1).

DeepLabv3's ASPP (Chen et al., 2017) has a 1x1 conv, three 3x3 atrous convs and an image-pooling
branch. CND keeps the three atrous convs (rates 6, 12, 18), replaces the 1x1 conv by a
depthwise-separable conv and the average pooling by max pooling, batch-normalises every branch,
reduces the concatenation to 256 channels with a separable conv, then concatenates that with a
separable-conv bypass of the encoder output and reduces to 256 again.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ASPP", "ASPPConv", "ASPPMaxPooling", "SeparableConv"]


class SeparableConv(nn.Sequential):
    """Depthwise 3x3 conv + BN + ReLU, then pointwise 1x1 conv + BN + ReLU (DeepLabv3+ style)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                in_channels,
                3,
                padding=dilation,
                dilation=dilation,
                groups=in_channels,
                bias=False,
            ),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ASPPConv(nn.Sequential):
    """One atrous branch: 3x3 conv at ``dilation``, BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ASPPMaxPooling(nn.Sequential):
    """The max-pool branch: 3x3 max pool (stride 1), 1x1 conv, BN, ReLU.

    Local rather than global pooling: at output stride 16 the rate-18 branch already spans the
    whole 256x160 input, and a 1x1 map would break batch norm for a batch of one in training.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.MaxPool2d(3, stride=1, padding=1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ASPP(nn.Module):
    """Encoder features (C_in x H/16 x W/16) -> ``out_channels`` x H/16 x W/16 context features."""

    def __init__(
        self,
        in_channels: int,
        atrous_rates: tuple[int, ...] = (6, 12, 18),
        out_channels: int = 256,
    ) -> None:
        super().__init__()
        if not atrous_rates or min(atrous_rates) < 1:
            raise ValueError(f"atrous_rates must be positive integers, got {atrous_rates}")
        self.branches = nn.ModuleList(
            [
                *(ASPPConv(in_channels, out_channels, rate) for rate in atrous_rates),
                SeparableConv(in_channels, out_channels),
                ASPPMaxPooling(in_channels, out_channels),
            ]
        )
        self.project = SeparableConv(len(self.branches) * out_channels, out_channels)
        self.bypass = SeparableConv(in_channels, out_channels)
        self.fuse = SeparableConv(2 * out_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        pyramid = self.project(torch.cat([branch(x) for branch in self.branches], dim=1))
        return self.fuse(torch.cat([pyramid, self.bypass(x)], dim=1))
