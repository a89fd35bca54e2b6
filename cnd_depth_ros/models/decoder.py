"""The CND decoder (Pisoni, section 3.2) and the positive output head every network ends with.

The decoder takes the ASPP output at 1/16 resolution through four blocks of 2x upsampling +
3x3 transpose conv + BN + ReLU (256 -> 128 -> 64 -> 32 -> 16 channels), joins the encoder's
1/4-resolution features through a separable conv after the second block, optionally runs extended
residual blocks between upsampling blocks (CNDmono, CNDstereo), and ends with the paper's 2x
upsampling and 7x7 stride-2 conv to one channel at input resolution, computed here as the 5x5
conv at input resolution it equals (docs/decisions.md #14): the same function away from the
image border, without the 2x feature map (a third of INT8 CNDmicro's time in ONNX Runtime).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from cnd_depth_ros.models.aspp import SeparableConv

__all__ = [
    "CNDDecoder",
    "DisparityHead",
    "ExtendedResidualBlock",
    "PositiveHead",
    "UpBlock",
    "fold_upsampled_stride2_kernel",
    "reset_head_conv",
    "upgrade_legacy_decoder_state",
]

# Blocks 0 and 1 take the 1/16 context to 1/4, the resolution of the encoder's skip features.
_SKIP_AFTER_BLOCK = 1

# 2x bilinear upsampling (align_corners=False) puts sample 2j + t of the upsampled row at input
# position j + t/2 - 1/4, so tap t (-3..3) of a stride-2 conv's 7-wide kernel reads input offsets
# r (-2..2) with these weights (rows t, columns r).
_UPSAMPLED_TAPS = (
    (0.75, 0.25, 0.0, 0.0, 0.0),
    (0.25, 0.75, 0.0, 0.0, 0.0),
    (0.0, 0.75, 0.25, 0.0, 0.0),
    (0.0, 0.25, 0.75, 0.0, 0.0),
    (0.0, 0.0, 0.75, 0.25, 0.0),
    (0.0, 0.0, 0.25, 0.75, 0.0),
    (0.0, 0.0, 0.0, 0.75, 0.25),
)
# Where artifacts written before decision 14 kept the 7x7 kernel of the paper's final layer.
_LEGACY_FINAL = "decoder.final.1."


def fold_upsampled_stride2_kernel(weight: Tensor) -> Tensor:
    """The 5x5 kernel (stride 1, padding 2) equal to 2x bilinear upsampling followed by the 7x7
    ``weight`` (stride 2, padding 3) everywhere but the two outermost rows and columns, where the
    upsampling's edge clamping and the padding of the 2x map differ."""
    if weight.shape[-2:] != (7, 7):
        raise ValueError(f"expected a 7x7 kernel, got {tuple(weight.shape)}")
    taps = torch.tensor(_UPSAMPLED_TAPS, device=weight.device)
    return taps.T @ weight.float() @ taps


def upgrade_legacy_decoder_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Weights saved with the paper's upsample + 7x7 stride-2 final layer (``final.1.*``), folded
    into today's input-resolution conv (``final.*``); other states are returned as they are."""
    upgraded = {}
    for name, tensor in state.items():
        head, legacy, parameter = name.rpartition(_LEGACY_FINAL)
        if not legacy:
            upgraded[name] = tensor
            continue
        if parameter == "weight" and tensor.shape[-2:] == (7, 7):  # else a shape error later
            tensor = fold_upsampled_stride2_kernel(tensor)
        upgraded[f"{head}decoder.final.{parameter}"] = tensor
    return upgraded


def _transpose_conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.ConvTranspose2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class UpBlock(nn.Sequential):
    """2x bilinear upsampling, 3x3 transpose conv (stride 1), BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            *_transpose_conv_bn_relu(in_channels, out_channels),
        )


class _ResidualUnit(nn.Module):
    """``n`` transpose-conv/BN/ReLU layers around an identity; the last ReLU follows the sum."""

    def __init__(self, channels: int, n: int) -> None:
        super().__init__()
        layers = [
            module for _ in range(n) for module in _transpose_conv_bn_relu(channels, channels)
        ]
        self.body = nn.Sequential(*layers[:-1])
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(x + self.body(x))


class ExtendedResidualBlock(nn.Sequential):
    """The paper's extended residual block: ``m`` residual units of ``n`` layers each."""

    def __init__(self, channels: int, m: int = 2, n: int = 2) -> None:
        if m < 1 or n < 1:
            raise ValueError(f"an extended residual block needs m, n >= 1, got m={m}, n={n}")
        super().__init__(*(_ResidualUnit(channels, n) for _ in range(m)))


class CNDDecoder(nn.Module):
    """ASPP features at 1/16 + skip features at 1/4 -> one-channel logit at input resolution.

    ``residual_after`` lists the upsampling blocks (0-based) followed by an extended residual
    block; the skip features join after block 1, where the decoder reaches 1/4 resolution.
    """

    def __init__(
        self,
        in_channels: int,
        skip_in_channels: int,
        *,
        channels: tuple[int, ...] = (128, 64, 32, 16),
        skip_channels: int = 32,
        residual_after: tuple[int, ...] = (),
        residual_m: int = 2,
        residual_n: int = 2,
    ) -> None:
        super().__init__()
        if len(channels) != 4 or min(channels) < 1:
            raise ValueError(f"decoder_channels must be four positive widths, got {channels}")
        if any(not 0 <= index < len(channels) - 1 for index in residual_after):
            raise ValueError(
                f"residual_after must index the gaps between the four upsampling blocks (0, 1, 2),"
                f" got {residual_after}"
            )
        self.skip = SeparableConv(skip_in_channels, skip_channels)
        self.blocks = nn.ModuleList()
        self.residuals = nn.ModuleDict()
        previous = in_channels
        for index, width in enumerate(channels):
            self.blocks.append(UpBlock(previous, width))
            previous = width
            if index in residual_after:
                self.residuals[str(index)] = ExtendedResidualBlock(width, residual_m, residual_n)
            if index == _SKIP_AFTER_BLOCK:
                previous += skip_channels
        # The paper's 2x upsampling + 7x7 stride-2 conv, folded (fold_upsampled_stride2_kernel).
        self.final = nn.Conv2d(previous, 1, 5, padding=2)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        for index, block in enumerate(self.blocks):
            x = block(x)
            if str(index) in self.residuals:
                x = self.residuals[str(index)](x)
            if index == _SKIP_AFTER_BLOCK:
                x = torch.cat([x, self.skip(skip)], dim=1)
        return self.final(x)


class PositiveHead(nn.Module):
    """Logit -> strictly positive output, bounded and well conditioned for a log-depth loss.

    ``log y = log lo + (log hi - log lo) * sigmoid(logit + offset)``, with the constant offset
    chosen so that a zero logit gives ``init``: an untrained net predicts a typical value and the
    log-output moves at most ``(log hi - log lo) / 4`` per unit logit, so losses on log depth start
    finite and gradients never explode.
    """

    def __init__(self, low: float, high: float, init: float) -> None:
        super().__init__()
        if not 0 < low < init < high:
            raise ValueError(f"output range needs 0 < low < init < high, got {low}, {init}, {high}")
        self.log_low = math.log(low)
        self.log_span = math.log(high) - self.log_low
        fraction = (math.log(init) - self.log_low) / self.log_span
        self.offset = math.log(fraction / (1 - fraction))

    def forward(self, logit: Tensor) -> Tensor:
        return torch.exp(self.log_low + self.log_span * torch.sigmoid(logit + self.offset))

    def extra_repr(self) -> str:
        low, high = math.exp(self.log_low), math.exp(self.log_low + self.log_span)
        return f"low={low:g}, high={high:g}"


class DisparityHead(nn.Module):
    """Disparity estimate (pixels) -> strictly positive disparity: a softplus with a sharp knee,
    the identity above about a pixel, positive below, so the log-depth loss has a gradient
    everywhere (a clamp would have none); ``floor`` keeps depth = fx * B / disparity finite where
    the softplus underflows.

    The softplus is written as ``relu(x) + log1p(exp(-beta |x|)) / beta``: the same function,
    overflow-free without the threshold branch of torch's ``softplus``, and made of elementwise
    operators ONNX Runtime vectorises (0.13 ms instead of 0.51 at 256x160; docs/benchmarks.md)."""

    def __init__(self, sharpness: float = 4.0, floor: float = 1e-3) -> None:
        super().__init__()
        self.sharpness = sharpness
        self.floor = floor

    def forward(self, disparity: Tensor) -> Tensor:
        knee = torch.log1p(torch.exp(-self.sharpness * disparity.abs())) / self.sharpness
        return torch.relu(disparity) + knee + self.floor

    def extra_repr(self) -> str:
        return f"sharpness={self.sharpness:g}, floor={self.floor:g}"


def reset_head_conv(conv: nn.Conv2d) -> None:
    """Small weights and a zero bias for the conv before a :class:`PositiveHead`: an untrained
    net predicts close to the head's ``init`` everywhere, yet every layer gets a gradient."""
    nn.init.normal_(conv.weight, std=0.01)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
