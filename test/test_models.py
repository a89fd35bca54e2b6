"""The networks: every registered builder's contract (shapes, positivity, parameter counts,
gradients, input checks), the building blocks' defining properties, the registry, ONNX export run
in ONNX Runtime, and ``cnd-depth models``."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnd_depth_ros.cli import main as cli_main
from cnd_depth_ros.models import MODEL_NAMES, build_model
from cnd_depth_ros.models.decoder import (
    DisparityHead,
    PositiveHead,
    fold_upsampled_stride2_kernel,
)
from cnd_depth_ros.models.fcrn import FastUpConv
from cnd_depth_ros.models.registry import model_entry
from cnd_depth_ros.models.stereo_matching import CorrelationVolume, StereoMatcher, StereoRefiner

HEIGHT, WIDTH = 48, 64


def _inputs(model: nn.Module, batch: int = 2) -> tuple[torch.Tensor, ...]:
    left = torch.rand(batch, 3, HEIGHT, WIDTH)
    return (left, torch.rand_like(left)) if model.is_stereo else (left,)


@functools.cache
def _built(name: str) -> nn.Module:
    """One default-config net per name for the whole module: FCRN alone has 64M parameters."""
    return build_model(name)


def _parameter_count(name: str) -> int:
    with torch.device("meta"):
        return sum(parameter.numel() for parameter in build_model(name).parameters())


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_shape_and_positive_output(name: str, train: bool) -> None:
    model = _built(name).train(train)
    with torch.no_grad():
        output = model(*_inputs(model))
    assert output.shape == (2, 1, HEIGHT, WIDTH)
    assert output.dtype == torch.float32
    assert torch.isfinite(output).all()
    assert (output > 0).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_declares_stereo_and_output_kind(name: str) -> None:
    model = _built(name)
    assert model.is_stereo == (name == "cnd_stereo")
    assert model.output_kind == ("disparity" if model.is_stereo else "depth")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_count_matches_the_paper(name: str) -> None:
    ratio = _parameter_count(name) / model_entry(name).paper_parameters
    tolerance = 0.02 if name == "fcrn" else 0.2
    assert abs(ratio - 1) <= tolerance, f"{name}: {ratio:.3f} x the paper's count"


def test_residual_blocks_and_stereo_encoding_add_parameters() -> None:
    micro, mono, stereo = (_parameter_count(n) for n in ("cnd_micro", "cnd_mono", "cnd_stereo"))
    assert micro < mono < stereo
    # The shared encoder is counted once: the stereo net must not hold a second MobileNetV2.
    stereo_net = _built("cnd_stereo")
    assert len([m for m in stereo_net.modules() if type(m).__name__ == "MobileNetV2Encoder"]) == 1


# FCRN at a tenth of its width: the same layer types, without a 64M-parameter backward.
SMALL = {"fcrn": {"layers": (1, 1, 1, 1), "decoder_channels": (64, 32, 16, 8)}}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gradient_reaches_every_parameter(name: str) -> None:
    model = build_model(name, **SMALL.get(name, {})).train()
    output = model(*_inputs(model))
    target = torch.rand_like(output) + 0.5
    (torch.log(output) - torch.log(target)).square().mean().backward()
    missing = [
        parameter_name
        for parameter_name, parameter in model.named_parameters()
        if parameter.grad is None
        or not torch.isfinite(parameter.grad).all()
        or parameter.grad.abs().sum() == 0
    ]
    assert not missing, f"{name}: no gradient for {missing}"


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape", [(1, 3, 50, 64), (1, 3, 48, 72), (1, 4, 48, 64), (3, 48, 64)])
def test_rejects_wrong_input_shapes(name: str, shape: tuple[int, ...]) -> None:
    model = _built(name).eval()
    bad = torch.rand(shape)
    with pytest.raises(ValueError, match=r"N x 3 x H x W|multiples of 16"):
        model(bad, bad) if model.is_stereo else model(bad)


def test_stereo_needs_a_matching_right_image() -> None:
    model = _built("cnd_stereo").eval()
    left = torch.rand(1, 3, HEIGHT, WIDTH)
    with pytest.raises(ValueError, match="right image"):
        model(left)
    with pytest.raises(ValueError, match="same shape"):
        model(left, torch.rand(1, 3, HEIGHT, WIDTH + 16))


def test_untrained_mono_net_predicts_the_typical_depth() -> None:
    """The head starts near its ``init`` (10 m), so a log-depth loss starts small and finite."""
    model = build_model("cnd_micro").eval()
    with torch.no_grad():
        median = model(*_inputs(model, batch=1)).median().item()
    assert 5.0 < median < 20.0


def test_untrained_stereo_net_predicts_its_matched_disparity() -> None:
    """The decoder's correction starts near zero: the output is the (refined) soft-argmin
    disparity, in input pixels, within the disparities the matcher searches."""
    model = build_model("cnd_stereo").eval()
    left, right = _inputs(model, batch=1)
    with torch.no_grad():
        output = model(left, right)
        features = model.encoder(model.normalize(torch.cat([left, right])))
        _, matched, _ = model.match(features, 1, left.shape[-2:])
    assert torch.allclose(output, F.softplus(matched, beta=4.0) + 1e-3, atol=0.5)
    assert output.max() <= 4 * (model.config.cost_volume_levels - 1) + 0.5


def test_positive_head_is_bounded_and_starts_at_init() -> None:
    head = PositiveHead(0.01, 1000.0, 10.0)
    logits = torch.tensor([[[[-1e4, 0.0, 1e4]]]])
    low, init, high = head(logits).flatten().tolist()
    assert low == pytest.approx(0.01, rel=1e-5)
    assert init == pytest.approx(10.0, rel=1e-5)
    assert high == pytest.approx(1000.0, rel=1e-5)
    # d log(y) / d logit is at most log(high / low) / 4: no exploding log-depth gradients.
    logit = torch.linspace(-20, 20, 401).view(1, 1, 1, -1).requires_grad_()
    torch.log(head(logit)).sum().backward()
    assert logit.grad.max().item() <= math.log(1e5) / 4 + 1e-5


def test_positive_head_rejects_an_init_outside_its_range() -> None:
    with pytest.raises(ValueError, match="low < init < high"):
        PositiveHead(1.0, 10.0, 20.0)


def test_disparity_head_is_positive_and_the_identity_above_a_pixel() -> None:
    head = DisparityHead()
    disparity = torch.tensor([-50.0, -1.0, 0.0, 1.0, 2.0, 60.0])
    out = head(disparity)
    assert (out > 0).all()
    assert torch.allclose(out[3:], disparity[3:], atol=1e-2)


def test_disparity_head_is_torchs_softplus_everywhere() -> None:
    """The overflow-free form equals ``F.softplus`` on both sides of its threshold branch (which
    returns x itself once beta x > 20, 5e-10 below the exact value, well under float32's step)."""
    disparity = torch.linspace(-300.0, 300.0, 20001, dtype=torch.float64)
    expected = F.softplus(disparity, beta=4.0) + 1e-3
    torch.testing.assert_close(DisparityHead()(disparity), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("disparity", [2, 5])
def test_stereo_matcher_soft_argmin_finds_the_shift(disparity: int) -> None:
    """Any translation-equivariant features of a shifted pair correlate best at the shift, so
    even an untrained matcher's soft-argmin lands on it (to a fraction of a pixel)."""
    torch.manual_seed(0)
    levels, width = 8, 32
    scene = torch.randn(1, 6, 12, width + 2 * levels)
    left = scene[..., levels : levels + width]
    right = scene[..., levels + disparity : levels + disparity + width]  # left(x) == right(x - d)
    matcher = StereoMatcher(6, levels).eval()
    with torch.no_grad():
        matcher.temperature.fill_(50.0)
        probabilities, matched = matcher(left, right)
    assert probabilities.shape == (1, levels, 12, width)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(1, 12, width), atol=1e-5)
    inside = matched[..., 2 * levels : width - 2]  # away from the zero-padded borders
    assert (inside - disparity).abs().mean() < 0.25


@pytest.mark.parametrize("disparity", [0, 3, 7])
def test_correlation_volume_peaks_at_the_true_disparity(disparity: int) -> None:
    levels, width = 8, 24
    scene = torch.randn(1, 16, 5, width + 2 * levels)
    left = scene[..., levels : levels + width]
    right = scene[..., levels + disparity : levels + disparity + width]  # left(x) == right(x - d)
    volume = CorrelationVolume(levels)(left, right)
    assert volume.shape == (1, levels, 5, width)
    assert (volume[..., disparity:].argmax(dim=1) == disparity).all()
    assert (volume[:, disparity, :, :disparity] == 0).all()


def test_correlation_volume_is_the_channel_mean_of_shifted_products() -> None:
    """The row-matrix-product form equals the definition, level by level."""
    levels = 6
    left, right = torch.randn(2, 2, 8, 3, 10)
    volume = CorrelationVolume(levels)(left, right)
    for d in range(levels):
        expected = torch.zeros(2, 3, 10)
        expected[..., d:] = (left[..., d:] * right[..., : 10 - d]).mean(dim=1)
        assert torch.allclose(volume[:, d], expected, atol=1e-6)


def test_correlation_volume_wider_than_the_image_is_zero_padded() -> None:
    features = torch.randn(1, 4, 3, 5)
    volume = CorrelationVolume(8)(features, features)
    assert volume.shape == (1, 8, 3, 5)
    assert (volume[:, 5:] == 0).all()


def test_stereo_refiner_keeps_to_the_window_around_its_prior() -> None:
    """Uniform features (no match anywhere): the refined disparity is the prior's, pulled only
    by the window; with a shifted textured pair it moves from a prior off by one level to the
    true shift."""
    torch.manual_seed(0)
    refiner = StereoRefiner(6, 16).eval()
    flat = torch.ones(1, 6, 8, 40)
    prior = torch.full((1, 1, 8, 40), 7.3)
    with torch.no_grad():
        refined = refiner(flat, flat, prior)
    assert torch.allclose(refined[..., 20:], prior[..., 20:], atol=0.05)

    scene = torch.randn(1, 6, 8, 40 + 32)
    left, right = scene[..., 16:56], scene[..., 16 + 6 : 56 + 6]  # left(x) == right(x - 6)
    with torch.no_grad():
        refiner.temperature.fill_(50.0)
        refined = refiner(left, right, torch.full((1, 1, 8, 40), 5.0))
    assert (refined[..., 20:-2] - 6.0).abs().mean() < 0.25


def test_fast_up_convolution_equals_unpooling_plus_5x5_convolution() -> None:
    """Laina et al.'s claim: the four small kernels interleaved are exactly a 5x5 conv on the
    zero-unpooled input (values at the top-left of each 2x2 cell)."""
    x = torch.randn(2, 3, 4, 6)
    kernel = torch.randn(5, 3, 5, 5)
    up = FastUpConv(3, 5)
    with torch.no_grad():
        for conv, (rows, columns) in zip(up.convs, [(0, 0), (0, 1), (1, 0), (1, 1)], strict=True):
            conv.weight.copy_(kernel[:, :, rows::2, columns::2])
        unpooled = torch.zeros(2, 3, 8, 12)
        unpooled[..., ::2, ::2] = x
        expected = F.conv2d(unpooled, kernel, padding=2)
        assert torch.allclose(up(x), expected, atol=1e-5)


def test_folded_final_layer_equals_the_papers_upsampling_and_stride_2_convolution() -> None:
    """Decision 14: the paper's 2x bilinear upsampling + 7x7 stride-2 conv is one 5x5 conv at
    input resolution; only the two outermost rows and columns see the edges differently."""
    x = torch.randn(2, 16, 20, 32)
    kernel, bias = torch.randn(1, 16, 7, 7), torch.randn(1)
    upsampled = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    papers = F.conv2d(upsampled, kernel, bias, stride=2, padding=3)
    folded = F.conv2d(x, fold_upsampled_stride2_kernel(kernel), bias, padding=2)
    assert folded.shape == papers.shape
    assert torch.allclose(folded[..., 2:-2, 2:-2], papers[..., 2:-2, 2:-2], atol=1e-4)
    assert not torch.allclose(folded, papers, atol=1e-2)
    with pytest.raises(ValueError, match="7x7"):
        fold_upsampled_stride2_kernel(torch.randn(1, 16, 5, 5))


def test_build_model_rejects_unknown_names_and_settings() -> None:
    with pytest.raises(ValueError, match="'cnd_huge'"):
        build_model("cnd_huge")
    with pytest.raises(ValueError, match="'depth_multiplier'"):
        build_model("cnd_micro", depth_multiplier=2)
    with pytest.raises(ValueError, match="cost_volume_levels"):
        build_model("cnd_mono", cost_volume_levels=8)
    with pytest.raises(ValueError, match="cost_volume_levels must be >= 1"):
        build_model("cnd_stereo", cost_volume_levels=0)
    with pytest.raises(ValueError, match="mono nets only"):
        build_model("cnd_stereo", output_range=(1.0, 100.0))
    with pytest.raises(ValueError, match="window"):
        StereoRefiner(4, 8, window=0.0)
    with pytest.raises(ValueError, match="residual_after"):
        build_model("cnd_mono", residual_after=(3,))


def test_width_multiplier_shrinks_the_encoder() -> None:
    full = build_model("cnd_micro")
    half = build_model("cnd_micro", width_mult=0.5)
    count = lambda model: sum(p.numel() for p in model.encoder.parameters())  # noqa: E731
    assert count(half) < 0.5 * count(full)
    assert half(torch.rand(1, 3, HEIGHT, WIDTH)).shape == (1, 1, HEIGHT, WIDTH)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_survives_json(name: str) -> None:
    """Artifacts store ``asdict(model.config)`` as JSON; it must rebuild the same net."""
    overrides: dict[str, object] = {"output_range": (1e-3, 500.0)}
    if name == "cnd_stereo":
        overrides = {"matching_channels": 16}
    with torch.device("meta"):
        model = build_model(name, **overrides)
        stored = json.loads(json.dumps(asdict(model.config)))
        rebuilt = build_model(name, **stored)
    assert rebuilt.config == model.config
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # inside torch.export
@pytest.mark.parametrize(
    ("name", "overrides"),
    [("cnd_micro", {}), ("cnd_stereo", {"width_mult": 0.5, "cost_volume_levels": 4})],
)
def test_onnx_export_matches_torch_in_onnxruntime(
    name: str, overrides: dict[str, object], tmp_path: Path
) -> None:
    """Static-shape export with the exporter the inference package uses, at opset 17 (the
    newest TensorRT 8.5 on JetPack 5 parses), run by ONNX Runtime's CPU provider."""
    model = build_model(name, **overrides).eval()
    inputs = _inputs(model, batch=1)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, inputs, str(path), dynamo=True, opset_version=17, verbose=False)
    opsets = {entry.domain: entry.version for entry in onnx.load(str(path)).opset_import}
    assert opsets.get("", opsets.get("ai.onnx")) == 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {arg.name: x.numpy() for arg, x in zip(session.get_inputs(), inputs, strict=True)}
    (output,) = session.run(None, feeds)
    with torch.no_grad():
        expected = model(*inputs).numpy()
    assert output.shape == (1, 1, HEIGHT, WIDTH)
    np.testing.assert_allclose(output, expected, rtol=1e-4)


def test_models_command_writes_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "models.json"
    assert cli_main(["models", "--json", str(path)]) == 0
    rows = {row["name"]: row for row in json.loads(path.read_text())["models"]}
    assert list(rows) == list(MODEL_NAMES)
    assert rows["cnd_stereo"]["inputs"] == "left, right"
    assert rows["cnd_stereo"]["output"] == "disparity"
    assert rows["fcrn"]["paper_parameters"] == 63_600_000
    for name, row in rows.items():
        assert row["parameters"] == _parameter_count(name)
        assert row["ratio"] == pytest.approx(row["parameters"] / row["paper_parameters"], abs=1e-3)
    printed = capsys.readouterr().out
    assert all(name in printed for name in MODEL_NAMES)


def test_models_command_rejects_an_unknown_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["models", "cnd_huge"])
    assert exit_info.value.code == 2
    assert "unknown model 'cnd_huge'" in capsys.readouterr().err
