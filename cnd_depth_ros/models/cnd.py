"""The CND networks: CNDmicro, CNDmono and CNDstereo.

From Pisoni, "Efficient Convolutional Neural Networks for Depth-Estimation using Atrous Spatial
Pyramid Pooling and Residual Decoder Modules": a MobileNetV2 encoder at output stride 16, the
extended ASPP, and a light transpose-convolution decoder with a 1/4-resolution skip connection.
CNDmono adds extended residual blocks to the decoder; CNDstereo runs one shared-weight encoder on
both images and feeds both encodings to the ASPP. Every net ends in a :class:`PositiveHead`: mono
nets predict depth in metres; the stereo net matches the two views and predicts disparity in
pixels (docs/decisions.md, 1, 10 and 13).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cnd_depth_ros.models.aspp import ASPP
from cnd_depth_ros.models.backbone import (
    ImageNormalization,
    MobileNetV2Encoder,
    check_images,
    init_weights,
)
from cnd_depth_ros.models.decoder import CNDDecoder, DisparityHead, PositiveHead, reset_head_conv
from cnd_depth_ros.models.stereo_matching import StereoMatcher, StereoRefiner, match_confidence

__all__ = [
    "CND",
    "CNDConfig",
    "CNDStereo",
    "cnd_micro",
    "cnd_mono",
    "cnd_stereo",
    "stereo_disparity_range",
]

# cnd_stereo's settings beyond CNDConfig's defaults: the paper's residual decoder, a wider ASPP
# for two encodings, and 24 matching levels at 1/4 resolution.
_STEREO_DEFAULTS: dict[str, Any] = {
    "residual_after": (0, 1),
    "aspp_channels": 320,
    "cost_volume_levels": 24,
}
# The matcher's correlation volume is at 1/4 of the input resolution.
_MATCHING_STRIDE = 4


@dataclass
class CNDConfig:
    """Hyperparameters of a CND net; an artifact stores them (``model_config``) to rebuild it.

    ``output_range`` is ``(low, high)`` and ``output_init`` the depth in metres an untrained mono
    net predicts (``None``: the default); the stereo net's disparity comes from its matcher over
    ``cost_volume_levels`` disparities of ``matching_channels`` features at 1/4 resolution, and
    with ``refine`` is sharpened at 1/2 resolution.
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
    matching_channels: int = 32
    refine: bool = True
    output_range: tuple[float, float] | None = None
    output_init: float | None = None

    def __post_init__(self) -> None:
        # JSON sidecars give lists back; keep the config hashable and comparable.
        for name in ("atrous_rates", "decoder_channels", "residual_after", "output_range"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        for name in ("aspp_channels", "skip_channels", "matching_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.cost_volume_levels < 0:
            raise ValueError(f"cost_volume_levels must be >= 0, got {self.cost_volume_levels}")
        if self.output_range is not None and len(self.output_range) != 2:
            raise ValueError(f"output_range must be (low, high), got {self.output_range}")


class CND(nn.Module):
    """CND for one camera: ``forward(left)`` -> N x 1 x H x W depth in metres.

    ``left`` is RGB in [0, 1], N x 3 x H x W with H and W multiples of 16.
    """

    is_stereo: ClassVar[bool] = False
    output_kind: ClassVar[Literal["disparity", "depth"]] = "depth"
    default_output: ClassVar[tuple[float, float, float]] = (0.01, 10.0, 1000.0)

    def __init__(self, config: CNDConfig) -> None:
        super().__init__()
        self.check_config(config)
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
        self.head = self.make_head(config)
        init_weights(self)
        reset_head_conv(self.decoder.final)

    @classmethod
    def check_config(cls, config: CNDConfig) -> None:
        """Reject settings this kind of net cannot take, naming them."""
        if config.cost_volume_levels:
            raise ValueError(
                f"cost_volume_levels={config.cost_volume_levels} needs a stereo net (cnd_stereo)"
            )

    @classmethod
    def make_head(cls, config: CNDConfig) -> nn.Module:
        low, init, high = cls.default_output
        if config.output_range is not None:
            low, high = config.output_range
        if config.output_init is not None:
            init = config.output_init
        return PositiveHead(low, high, init)

    def forward(self, left: Tensor) -> Tensor:
        check_images(left)
        features = self.encoder(self.normalize(left))
        return self.head(self.decoder(self.aspp(features["out"]), features["skip"]))


class CNDStereo(CND):
    """CND for a rectified pair: ``forward(left, right)`` -> N x 1 x H x W disparity in pixels
    at the input resolution (depth = fx * baseline / disparity).

    One encoder (shared weights) runs on both images; their 1/16 encodings are concatenated into
    the ASPP (the paper's CNDstereo). A :class:`StereoMatcher` on their 1/4 features gives a
    soft-argmin disparity and its matching probabilities, a :class:`StereoRefiner` sharpens the
    disparity at 1/2 resolution, the probabilities join the decoder's skip connection, and the
    decoder's output is a full-resolution correction to the matched disparity
    (docs/decisions.md, 13).
    """

    is_stereo: ClassVar[bool] = True
    output_kind: ClassVar[Literal["disparity", "depth"]] = "disparity"

    def __init__(self, config: CNDConfig) -> None:
        super().__init__(config)
        self.matcher = StereoMatcher(
            self.encoder.skip_channels, config.cost_volume_levels, config.matching_channels
        )
        self.refiner = (
            StereoRefiner(self.encoder.half_channels, 2 * config.cost_volume_levels)
            if config.refine
            else None
        )
        init_weights(self.matcher)
        self.matcher.reset_aggregation()
        if self.refiner is not None:
            init_weights(self.refiner)

    @classmethod
    def check_config(cls, config: CNDConfig) -> None:
        if config.cost_volume_levels < 1:
            raise ValueError(
                "cnd_stereo matches through a correlation volume: cost_volume_levels must be"
                f" >= 1, got {config.cost_volume_levels}"
            )
        if config.output_range is not None or config.output_init is not None:
            raise ValueError(
                "cnd_stereo predicts disparity from its matcher: output_range and output_init"
                " apply to mono nets only"
            )

    @classmethod
    def make_head(cls, config: CNDConfig) -> nn.Module:
        return DisparityHead()

    def forward(self, left: Tensor, right: Tensor | None = None) -> Tensor:
        return self.predict(left, right)["disparity"]

    def predict(self, left: Tensor, right: Tensor | None = None) -> dict[str, Tensor]:
        """``{"disparity": ..., "confidence": ...}``, both N x 1 x H x W at the input
        resolution: the disparity in pixels (what ``forward`` returns) and the matcher's
        confidence in [0, 1] (:func:`match_confidence`)."""
        if right is None:
            raise ValueError(
                "CNDStereo is a stereo net: forward(left, right) needs the right image"
            )
        check_images(left, right)
        features = self.encoder(self.normalize(torch.cat([left, right])))
        batch = left.shape[0]
        out_left, out_right = features["out"][:batch], features["out"][batch:]
        probabilities, matched, confidence = self.match(features, batch, left.shape[-2:])
        context = self.aspp(torch.cat([out_left, out_right], dim=1))
        correction = self.decoder(
            context, torch.cat([features["skip"][:batch], probabilities], dim=1)
        )
        return {"disparity": self.head(matched + correction), "confidence": confidence}

    def match(
        self, features: dict[str, Tensor], batch: int, size: torch.Size
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Encoder features of the batch-concatenated pair -> the matcher's probabilities, the
        matched disparity (refined where configured) in pixels of an input of ``size``, and the
        matcher's confidence at that size."""
        skip = features["skip"]
        probabilities, matched = self.matcher(skip[:batch], skip[batch:])
        confidence = F.interpolate(match_confidence(probabilities, matched), size=size,
                                   mode="bilinear", align_corners=False)
        if self.refiner is not None:
            half = features["half"]
            prior = _upsampled_disparity(matched, half.shape[-2:])
            matched = self.refiner(half[:batch], half[batch:], prior)
        return probabilities, _upsampled_disparity(matched, size), confidence


def _upsampled_disparity(disparity: Tensor, size: torch.Size) -> Tensor:
    """Bilinear upsampling of a disparity map, its values scaled to the new width's pixels."""
    scale = size[-1] / disparity.shape[-1]
    return F.interpolate(disparity * scale, size=size, mode="bilinear", align_corners=False)


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
    plus a stereo matcher over 24 disparities at 1/4 resolution (up to 92 px at the input;
    this package's extension, docs/decisions.md, 10 and 13)."""
    return CNDStereo(CNDConfig(**{**_STEREO_DEFAULTS, **overrides}))


def stereo_disparity_range(**overrides: Any) -> float:
    """The largest disparity (pixels at the network input) that :func:`cnd_stereo` with
    ``overrides`` matches: its highest matching level at 1/4 resolution, 92 px by default.
    Nearer surfaces are beyond what the net can represent."""
    levels = int({**_STEREO_DEFAULTS, **overrides}["cost_volume_levels"])
    return float(_MATCHING_STRIDE * (levels - 1))
