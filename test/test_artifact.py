"""The model artifact: weight storage precisions, sidecar validation, shipped-name resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixtures.artifacts import SMALL, make_artifact
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cnd_depth_ros.errors import ArtifactError
from cnd_depth_ros.models.artifact import (
    SHIPPED_MODELS,
    WEIGHTS_DIR,
    _restore_state,
    _storage_state,
    artifact_paths,
    load_artifact,
    read_metadata,
    read_weights,
    resolve_artifact,
    save_artifact,
)
from cnd_depth_ros.models.decoder import fold_upsampled_stride2_kernel


@pytest.fixture(scope="module")
def stereo_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("artifact"), "cnd_stereo", **SMALL)


@pytest.mark.parametrize(("storage", "size_ratio", "tolerance"),
                         [("fp16", 0.5, 1e-2), ("int8", 0.25, 5e-2)])
def test_smaller_storage_loads_as_fp32_close_to_the_original(
    stereo_artifact: Path, tmp_path: Path, storage: str, size_ratio: float, tolerance: float
) -> None:
    model, metadata = load_artifact(stereo_artifact)
    saved = save_artifact(model, metadata, tmp_path / storage, storage=storage)
    full_size = artifact_paths(stereo_artifact)[0].stat().st_size
    assert artifact_paths(saved)[0].stat().st_size < 1.15 * size_ratio * full_size
    with safe_open(str(artifact_paths(saved)[0]), framework="pt") as stored:
        assert stored.metadata() == {"storage": storage}
    loaded, _ = load_artifact(saved)
    assert all(p.dtype == torch.float32 for p in loaded.state_dict().values()
               if p.is_floating_point())
    left, right = torch.rand(2, 1, 3, 48, 64)
    with torch.no_grad():
        expected, actual = model(left, right), loaded(left, right)
    # A soft-argmin over near-equal matches (random weights) moves a few pixels more than the
    # weights do: bound the typical and the worst error separately.
    relative = (actual - expected).abs() / expected
    assert relative.median() < tolerance / 10 and relative.max() < 2 * tolerance


def test_int8_quantises_each_output_channel_to_its_own_scale(tmp_path: Path) -> None:
    conv = torch.nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, -0.5], [100.0, 25.0]]).reshape(2, 2, 1, 1))
    model = torch.nn.Sequential(conv)
    stored_state = _storage_state(model, "int8")
    assert stored_state["0.weight"].dtype == torch.int8
    restored = _restore_state(stored_state, "model.safetensors")["0.weight"]
    # One scale per channel keeps the small channel exact although the other is 100x larger.
    assert torch.allclose(restored, conv.weight, rtol=1e-2, atol=0)


def test_int8_scales_that_do_not_fit_their_tensor_name_the_file(
    stereo_artifact: Path, tmp_path: Path
) -> None:
    model, metadata = load_artifact(stereo_artifact)
    int8 = save_artifact(model, metadata, tmp_path / "int8", storage="int8")
    weights = artifact_paths(int8)[0]
    with safe_open(str(weights), framework="pt") as stored:
        header = stored.metadata()
    state = load_file(str(weights))
    scale = next(name for name in state if name.endswith("__int8_scale"))
    state[scale] = state[scale][:-1]
    save_file(state, str(weights), metadata=header)
    for read in (load_artifact, read_weights):
        with pytest.raises(ArtifactError, match="int8 scales for shape"):
            read(int8)


def test_read_weights_gives_the_loaded_tensors_without_building_a_net(
    stereo_artifact: Path, tmp_path: Path
) -> None:
    model, metadata = load_artifact(stereo_artifact)
    int8 = save_artifact(model, metadata, tmp_path / "int8", storage="int8")
    expected = load_artifact(int8)[0].state_dict()
    weights = read_weights(int8)
    assert weights.keys() == expected.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, expected[name]), name
    with pytest.raises(ArtifactError, match="nowhere"):
        read_weights(tmp_path / "nowhere")


def test_an_artifact_with_the_papers_final_layer_loads_folded(
    stereo_artifact: Path, tmp_path: Path
) -> None:
    """Artifacts written before decision 14 hold the 7x7 stride-2 kernel as ``final.1``: they
    load (and warm-start) as today's net, with that kernel folded to input resolution."""
    model, metadata = load_artifact(stereo_artifact)
    legacy = save_artifact(model, metadata, tmp_path / "legacy")
    weights = artifact_paths(legacy)[0]
    state = load_file(str(weights))
    kernel = torch.randn(1, state["decoder.final.weight"].shape[1], 7, 7)
    state["decoder.final.1.weight"] = kernel
    state["decoder.final.1.bias"] = state.pop("decoder.final.bias")
    del state["decoder.final.weight"]
    save_file(state, str(weights))
    folded = fold_upsampled_stride2_kernel(kernel)
    assert torch.equal(load_artifact(legacy)[0].decoder.final.weight, folded)
    assert torch.equal(read_weights(legacy)["decoder.final.weight"], folded)


def test_unknown_storage_is_rejected(stereo_artifact: Path, tmp_path: Path) -> None:
    model, metadata = load_artifact(stereo_artifact)
    with pytest.raises(ValueError, match="bf16"):
        save_artifact(model, metadata, tmp_path / "x", storage="bf16")  # type: ignore[arg-type]


def test_missing_and_corrupt_files_name_the_file(stereo_artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"nope\.safetensors"):
        resolve_artifact(tmp_path / "nope")
    weights, sidecar = artifact_paths(stereo_artifact)
    broken = tmp_path / "broken"
    (tmp_path / "broken.json").write_text(sidecar.read_text())
    (tmp_path / "broken.safetensors").write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ArtifactError, match=r"broken\.safetensors"):
        load_artifact(broken)
    data = json.loads(sidecar.read_text())
    data["variant"] = 3
    (tmp_path / "broken.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="'variant' must be str"):
        read_metadata(broken)
    data["format"] = 99
    (tmp_path / "broken.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"broken\.json: artifact format 99 is not supported"):
        read_metadata(broken)


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_models_resolve_by_name_and_fit_the_package_budget(name: str) -> None:
    metadata = read_metadata(name)
    assert metadata.variant == name
    assert resolve_artifact(name) == WEIGHTS_DIR / name
    shipped = sum(path.stat().st_size for path in WEIGHTS_DIR.glob("*.safetensors"))
    assert shipped < 40e6  # git keeps every version: shipped weights stay small
