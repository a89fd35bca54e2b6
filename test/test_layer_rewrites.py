"""Layer rewrites for inference: each rewritten layer computes what the original computes
(parity in PyTorch, on single layers and on whole small networks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from fixtures.artifacts import SMALL, make_artifact
from torch import nn

from cnd_depth_ros.inference.layer_rewrites import (
    conv_transpose_as_conv,
    conv_without_dead_taps,
    replace_conv_transposes,
    replace_convs_with_dead_taps,
    replace_single_output_convs,
    single_output_conv_as_depthwise,
)
from cnd_depth_ros.models import load_artifact


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("artifacts"), "cnd_micro", **SMALL)


@pytest.mark.parametrize(
    ("kernel", "padding", "dilation", "groups", "bias"),
    [
        (3, 1, 1, 1, False),
        (3, 0, 1, 1, True),
        (5, 2, 1, 2, True),
        (3, 2, 2, 1, False),
        (1, 0, 1, 4, True),
        ((3, 5), (1, 2), 1, 1, True),
    ],
)
def test_stride1_conv_transpose_equals_its_conv(kernel, padding, dilation, groups, bias) -> None:
    layer = nn.ConvTranspose2d(
        8, 12, kernel, padding=padding, dilation=dilation, groups=groups, bias=bias
    )
    conv = conv_transpose_as_conv(layer)
    assert isinstance(conv, nn.Conv2d)
    x = torch.randn(2, 8, 11, 13)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "layer",
    [
        nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1),
        nn.ConvTranspose2d(4, 4, 3, padding=3),
        nn.ConvTranspose2d(4, 4, 3, stride=2, output_padding=1),
    ],
    ids=["stride2", "padding-wider-than-kernel", "output-padding"],
)
def test_conv_transposes_without_a_conv_twin_are_kept(layer: nn.ConvTranspose2d) -> None:
    assert conv_transpose_as_conv(layer) is None
    model = nn.Sequential(layer)
    assert replace_conv_transposes(model) == 0
    assert model[0] is layer


def test_every_decoder_conv_transpose_is_rewritten(micro: Path) -> None:
    model, _ = load_artifact(micro)
    before = sum(isinstance(m, nn.ConvTranspose2d) for m in model.modules())
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        reference = model(x)
        assert before > 0 and replace_conv_transposes(model) == before
        torch.testing.assert_close(model(x), reference, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation", "bias"),
    [(5, 1, 2, 1, True), (7, 2, 3, 1, False), ((3, 5), 1, (1, 2), 2, True)],
)
def test_single_output_conv_equals_its_depthwise_twin(
    kernel: Any, stride: int, padding: Any, dilation: int, bias: bool
) -> None:
    layer = nn.Conv2d(16, 1, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias)
    twin = single_output_conv_as_depthwise(layer)
    assert twin is not None and twin[0].groups == 16
    x = torch.randn(2, 16, 21, 30)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "layer", [nn.Conv2d(16, 2, 5), nn.Conv2d(16, 1, 1)], ids=["two-outputs", "1x1"]
)
def test_convs_without_a_depthwise_twin_are_kept(layer: nn.Conv2d) -> None:
    assert single_output_conv_as_depthwise(layer) is None


def test_the_decoders_last_conv_is_made_depthwise(micro: Path) -> None:
    model, _ = load_artifact(micro)
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        reference = model(x)
        assert replace_single_output_convs(model) == 1
        torch.testing.assert_close(model(x), reference, rtol=1e-4, atol=1e-4)
    assert not any(
        isinstance(m, nn.Conv2d) and m.out_channels == 1 and m.kernel_size != (1, 1)
        for m in model.modules()
    )


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "dilation", "trimmed"),
    [
        ((10, 16), 3, 1, 18, 18, (1, 1)),  # the ASPP's rate 18 at 256x160: only the centre
        ((10, 16), 3, 1, 12, 12, (1, 3)),  # rate 12: only the middle row
        ((10, 16), 5, 1, (2, 16), (1, 8), (5, 3)),
        ((7, 7), 5, 2, 8, 4, (3, 3)),
    ],
)
def test_conv_without_dead_taps_equals_the_conv_at_its_size(
    size: tuple[int, int], kernel: int, stride: int, padding: Any, dilation: Any,
    trimmed: tuple[int, int],
) -> None:
    layer = nn.Conv2d(6, 4, kernel, stride=stride, padding=padding, dilation=dilation)
    twin = conv_without_dead_taps(layer, size)
    assert twin is not None and twin.kernel_size == trimmed
    x = torch.randn(2, 6, *size)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), layer(x), rtol=1e-5, atol=1e-5)
        larger = torch.randn(1, 6, 4 * size[0], 4 * size[1])
        assert not torch.allclose(twin(larger), layer(larger), atol=1e-3)  # that size only


@pytest.mark.parametrize(
    ("layer", "size"),
    [
        (nn.Conv2d(4, 4, 3, padding=6, dilation=6), (10, 16)),  # every tap reads the map
        (nn.Conv2d(4, 4, 3, padding=(0, 12), dilation=12), (10, 16)),  # no rows padded
        (nn.Conv2d(4, 4, 3, padding=12, dilation=12, padding_mode="reflect"), (10, 16)),
        (nn.Conv2d(4, 4, 2, padding=3, dilation=3), (2, 2)),  # live taps off-centre
    ],
    ids=["all-live", "no-padding", "reflect", "asymmetric"],
)
def test_convs_without_dead_taps_are_kept(layer: nn.Conv2d, size: tuple[int, int]) -> None:
    assert conv_without_dead_taps(layer, size) is None


def test_the_aspps_dead_taps_are_trimmed_at_a_small_input(micro: Path) -> None:
    """At 64x48 the ASPP sees a 4x3 map: each atrous branch reads its centre tap only, and the
    3x3 layers around them (rate 1) keep their kernels."""
    model, _ = load_artifact(micro)
    model.eval()
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        reference = model(x)
        assert replace_convs_with_dead_taps(model, [x]) >= 3
        torch.testing.assert_close(model(x), reference, rtol=1e-4, atol=1e-4)
    convs = [conv for conv in model.aspp.modules() if isinstance(conv, nn.Conv2d)]
    assert [conv.kernel_size for conv in convs if conv.dilation[0] > 1] == [(1, 1)] * 3
    assert {conv.kernel_size for conv in convs if conv.dilation[0] == 1} == {(1, 1), (3, 3)}
