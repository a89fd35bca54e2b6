"""The CND networks: CNDmicro, CNDmono and CNDstereo.

From Pisoni, "Efficient Convolutional Neural Networks for Depth-Estimation using Atrous Spatial
Pyramid Pooling and Residual Decoder Modules": a MobileNetV2 encoder at output stride 16, the
extended ASPP, and a light transpose-convolution decoder with a 1/4-resolution skip connection.
CNDmono adds extended residual blocks to the decoder; CNDstereo runs one shared-weight encoder on
both images and feeds both encodings to the ASPP. Every net ends in a :class:`PositiveHead`: mono
nets predict depth in metres, the stereo net disparity in pixels (docs/decisions.md, 1 and 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from cnd_depth_ros.models.aspp import ASPP
from cnd_depth_ros.models.backbone import (
    ImageNormalization,
    MobileNetV2Encoder,
    check_images,
    init_weights,
)
from cnd_depth_ros.models.decoder import CNDDecoder, PositiveHead, reset_head_conv

__all__ = [
    "CND",
    "CNDConfig",
    "CNDStereo",
    "CorrelationVolume",
    "cnd_micro",
    "cnd_mono",
    "cnd_stereo",
]


@dataclass
class CNDConfig:
    """Hyperparameters of a CND net; an artifact stores them (``model_config``) to rebuild it.

    ``output_range`` is ``(low, high)`` and ``output_init`` the value an untrained net predicts:
    depth in metres for mono nets, disparity as a fraction of the input width for the stereo net.
    ``None`` takes the network kind's default.
    """

    width_mult: float = 1.0
    atrous_rates: tuple[int, ...] = (6, 12, 18)
    aspp_channels: int = 256
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16)
    skip_channels: int = 32
    residual_after: tuple[int, ...] = ()
    residual_m: int = 2
    residual_n: int = 2
    cost_volume_levels: int = 0
    output_range: tuple[float, float] | None = None
    output_init: float | None = None

    def __post_init__(self) -> None:
        # JSON sidecars give lists back; keep the config hashable and comparable.
        for name in ("atrous_rates", "decoder_channels", "residual_after", "output_range"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        for name in ("aspp_channels", "skip_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.cost_volume_levels < 0:
            raise ValueError(f"cost_volume_levels must be >= 0, got {self.cost_volume_levels}")
        if self.output_range is not None and len(self.output_range) != 2:
            raise ValueError(f"output_range must be (low, high), got {self.output_range}")


class CorrelationVolume(nn.Module):
    """Zero-parameter stereo cost volume: for each disparity ``d < levels``, the channel mean of
    ``left(x) * right(x - d)``, zero where ``x - d`` falls off the image (an extension to the
    paper, docs/decisions.md, 10).

    Built from static slices, channel sums and concatenation only, so it exports to ONNX at
    opset 17 and to TensorRT: opset 18's ``ReduceMean`` and ``Pad`` do not convert down to 17
    (the newest TensorRT 8.5 on JetPack 5 parses).
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


class CND(nn.Module):
    """CND for one camera: ``forward(left)`` -> N x 1 x H x W depth in metres.

    ``left`` is RGB in [0, 1], N x 3 x H x W with H and W multiples of 16.
    """

    is_stereo: ClassVar[bool] = False
    output_kind: ClassVar[Literal["disparity", "depth"]] = "depth"
    default_output: ClassVar[tuple[float, float, float]] = (0.01, 10.0, 1000.0)

    def __init__(self, config: CNDConfig) -> None:
        super().__init__()
        if config.cost_volume_levels and not self.is_stereo:
            raise ValueError(
                f"cost_volume_levels={config.cost_volume_levels} needs a stereo net (cnd_stereo)"
            )
        self.config = config
        self.normalize = ImageNormalization()
        self.encoder = MobileNetV2Encoder(config.width_mult)
        views = 2 if self.is_stereo else 1
        self.aspp = ASPP(
            views * self.encoder.out_channels, config.atrous_rates, config.aspp_channels
        )
        self.decoder = CNDDecoder(
            config.aspp_channels,
            self.encoder.skip_channels + config.cost_volume_levels,
            channels=config.decoder_channels,
            skip_channels=config.skip_channels,
            residual_after=config.residual_after,
            residual_m=config.residual_m,
            residual_n=config.residual_n,
        )
        low, init, high = self.default_output
        if config.output_range is not None:
            low, high = config.output_range
        if config.output_init is not None:
            init = config.output_init
        self.head = PositiveHead(low, high, init, per_width=self.output_kind == "disparity")
        init_weights(self)
        reset_head_conv(self.decoder.final[-1])

    def forward(self, left: Tensor) -> Tensor:
        check_images(left)
        features = self.encoder(self.normalize(left))
        return self.decode(self.aspp(features["out"]), features["skip"])

    def decode(self, context: Tensor, skip: Tensor) -> Tensor:
        """ASPP output and skip features -> the positive output map."""
        return self.head(self.decoder(context, skip))


class CNDStereo(CND):
    """CND for a rectified pair: ``forward(left, right)`` -> N x 1 x H x W disparity in pixels
    at the input resolution (depth = fx * baseline / disparity).

    One encoder (shared weights) runs on both images; their 1/16 encodings are concatenated into
    the ASPP, and a correlation volume of their 1/4 features joins the skip connection.
    """

    is_stereo: ClassVar[bool] = True
    output_kind: ClassVar[Literal["disparity", "depth"]] = "disparity"
    default_output: ClassVar[tuple[float, float, float]] = (1e-4, 1 / 32, 1.0)

    def __init__(self, config: CNDConfig) -> None:
        super().__init__(config)
        levels = config.cost_volume_levels
        self.correlation = CorrelationVolume(levels) if levels else None

    def forward(self, left: Tensor, right: Tensor | None = None) -> Tensor:
        if right is None:
            raise ValueError(
                "CNDStereo is a stereo net: forward(left, right) needs the right image"
            )
        check_images(left, right)
        features = self.encoder(self.normalize(torch.cat([left, right])))
        batch = left.shape[0]
        out_left, out_right = features["out"][:batch], features["out"][batch:]
        skip_left, skip_right = features["skip"][:batch], features["skip"][batch:]
        skip = skip_left
        if self.correlation is not None:
            skip = torch.cat([skip_left, self.correlation(skip_left, skip_right)], dim=1)
        return self.decode(self.aspp(torch.cat([out_left, out_right], dim=1)), skip)


def cnd_micro(**overrides: Any) -> CND:
    """CNDmicro (Pisoni, Table 2: 5.8M parameters, 13.8 ms on a GTX 1080 at 256x160).

    MobileNetV2 + ASPP encoder and the plain four-block decoder; ``overrides`` are
    :class:`CNDConfig` fields.
    """
    return CND(CNDConfig(**overrides))


def cnd_mono(**overrides: Any) -> CND:
    """CNDmono (Pisoni, Table 2: 6.7M parameters, 15.3 ms): CNDmicro with two extended residual
    blocks (m = n = 2) between the first three upsampling blocks."""
    return CND(CNDConfig(**{"residual_after": (0, 1), **overrides}))


def cnd_stereo(**overrides: Any) -> CNDStereo:
    """CNDstereo (Pisoni, Table 2: 11.1M parameters, 27.5 ms): CNDmono's decoder on a
    shared-weight encoder for both images, whose concatenated encodings feed a 320-wide ASPP,
    plus a 24-level correlation volume at 1/4 resolution (this package's extension;
    docs/decisions.md, 10)."""
    defaults = {"residual_after": (0, 1), "aspp_channels": 320, "cost_volume_levels": 24}
    return CNDStereo(CNDConfig(**{**defaults, **overrides}))
