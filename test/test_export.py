"""ONNX export: graph rewrites with parity against PyTorch, the file's contract, the TensorRT
operator check, bad input and the `cnd-depth export` command. Real ONNX Runtime throughout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from fixtures.artifacts import SMALL, make_artifact
from onnx import TensorProto, helper
from torch import nn

from cnd_depth_ros import cli
from cnd_depth_ros.errors import ArtifactError
from cnd_depth_ros.inference.export import (
    ONNX_EXPORT_KEY,
    export_onnx,
    load_onnx,
    read_onnx_metadata,
)
from cnd_depth_ros.inference.onnx_checks import TENSORRT_OPERATORS, check_tensorrt_compatible
from cnd_depth_ros.models import load_artifact, read_metadata


def _run_onnx(path: Path, inputs: list[torch.Tensor]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [value.name for value in session.get_inputs()]
    return session.run(None, {n: x.numpy() for n, x in zip(names, inputs, strict=True)})[0]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("artifacts")
    return {
        variant: make_artifact(folder, variant, **SMALL) for variant in ("cnd_micro", "cnd_stereo")
    }


@pytest.fixture(scope="module")
def exported(artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("onnx")
    return {
        variant: export_onnx(path, folder / f"{variant}.onnx")
        for variant, path in artifacts.items()
    }


@pytest.mark.parametrize("variant", ["cnd_micro", "cnd_stereo"])
def test_export_matches_pytorch(variant: str, artifacts: dict, exported: dict) -> None:
    model, metadata = load_artifact(artifacts[variant])
    inputs = [torch.rand(1, 3, 48, 64) for _ in range(2 if metadata.stereo else 1)]
    with torch.no_grad():
        reference = model(*inputs).numpy()
    np.testing.assert_allclose(
        _run_onnx(exported[variant], inputs), reference, rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("variant", ["cnd_micro", "cnd_stereo"])
def test_exported_graph_contract(variant: str, artifacts: dict, exported: dict) -> None:
    proto, metadata = load_onnx(exported[variant])
    assert metadata == read_metadata(artifacts[variant])
    names = ["left", "right"] if metadata.stereo else ["left"]
    assert [value.name for value in proto.graph.input] == names
    for value in [*proto.graph.input, *proto.graph.output]:
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT
    shapes = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.input]
    assert shapes == [[1, 3, 48, 64]] * len(names)
    outputs = ["depth", "confidence"] if metadata.stereo else ["depth"]
    assert [value.name for value in proto.graph.output] == outputs
    assert [[d.dim_value for d in value.type.tensor_type.shape.dim]
            for value in proto.graph.output] == [[1, 1, 48, 64]] * len(outputs)
    assert {entry.version for entry in proto.opset_import if entry.domain == ""} == {18}
    operators = {node.op_type for node in proto.graph.node}
    assert not operators & {"BatchNormalization", "ConvTranspose"}
    assert operators <= TENSORRT_OPERATORS
    info = json.loads({p.key: p.value for p in proto.metadata_props}[ONNX_EXPORT_KEY])
    model, _ = load_artifact(artifacts[variant])
    transposed = sum(isinstance(module, nn.ConvTranspose2d) for module in model.modules())
    assert info["precision"] == "fp32" and info["conv_transposes_rewritten"] == transposed > 0
    assert info["single_output_convs_rewritten"] == 1
    assert info["convs_with_dead_taps_trimmed"] >= 3  # the atrous branches, on a 4x3 map


def test_fp16_export_keeps_float32_io(artifacts: dict, tmp_path: Path) -> None:
    path = export_onnx(artifacts["cnd_micro"], tmp_path / "micro16.onnx", fp16=True)
    proto, _ = load_onnx(path)
    for value in [*proto.graph.input, *proto.graph.output]:
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT
    assert "Cast" in {node.op_type for node in proto.graph.node}
    weights = [t for t in proto.graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == TensorProto.FLOAT16 for t in weights)
    model, _ = load_artifact(artifacts["cnd_micro"])
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        reference = model(x).numpy()
    np.testing.assert_allclose(_run_onnx(path, [x]), reference, rtol=1e-2)


def test_export_at_another_size_rescales_the_training_camera(
    artifacts: dict, tmp_path: Path
) -> None:
    path = export_onnx(artifacts["cnd_micro"], tmp_path / "big.onnx", height=96, width=128)
    metadata = read_onnx_metadata(path)
    original = read_metadata(artifacts["cnd_micro"])
    assert (metadata.input_width, metadata.input_height) == (128, 96)
    assert metadata.training_camera == original.training_camera.resized(128, 96)
    assert _run_onnx(path, [torch.rand(1, 3, 96, 128)]).shape == (1, 1, 96, 128)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"height": 50}, "multiples of 16"),
        ({"width": -16}, "positive"),
        ({"opset": 16}, "opset"),
    ],
)
def test_bad_export_options_are_rejected(
    artifacts: dict, tmp_path: Path, options: dict, message: str
) -> None:
    target = tmp_path / "bad.onnx"
    with pytest.raises(ValueError, match=message):
        export_onnx(artifacts["cnd_micro"], target, **options)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_missing_artifact_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="nothing_here"):
        export_onnx(tmp_path / "nothing_here", tmp_path / "out.onnx")


def test_truncated_or_corrupt_onnx_is_an_artifact_error(exported: dict, tmp_path: Path) -> None:
    data = exported["cnd_micro"].read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\xff\xff\xff garbage" * 100)
    for path in (truncated, corrupt, tmp_path / "missing.onnx"):
        with pytest.raises(ArtifactError, match=path.name):
            load_onnx(path)


def test_onnx_without_metadata_is_refused(exported: dict, tmp_path: Path) -> None:
    proto = onnx.load_model(str(exported["cnd_micro"]))
    del proto.metadata_props[:]
    path = tmp_path / "foreign.onnx"
    onnx.save_model(proto, str(path))
    with pytest.raises(ArtifactError, match="not exported by"):
        load_onnx(path)


def _graph(node: onnx.NodeProto, initializers: list[onnx.TensorProto]) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph([node], "g", [x], [y], initializers))


def test_tensorrt_check_names_an_unsupported_operator() -> None:
    model = _graph(helper.make_node("Hardmax", ["x"], ["y"], name="argmaxish"), [])
    with pytest.raises(ArtifactError, match=r"argmaxish.*'Hardmax'.*TensorRT"):
        check_tensorrt_compatible(model, "graph.onnx")


def test_tensorrt_check_rejects_restricted_uses() -> None:
    weights = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])
    ok = _graph(helper.make_node("Conv", ["x", "w"], ["y"], name="conv"), [weights])
    check_tensorrt_compatible(ok, "graph.onnx")
    computed = _graph(helper.make_node("Conv", ["x", "x"], ["y"], name="conv"), [])
    with pytest.raises(ArtifactError, match="initializers"):
        check_tensorrt_compatible(computed, "graph.onnx")
    scales = helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    cubic = _graph(helper.make_node("Resize", ["x", "", "s"], ["y"], mode="cubic"), [scales])
    with pytest.raises(ArtifactError, match="cubic"):
        check_tensorrt_compatible(cubic, "graph.onnx")


def test_export_command_writes_the_file_and_json(
    artifacts: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, report = tmp_path / "stereo.onnx", tmp_path / "export.json"
    code = cli.main(
        [
            "export",
            "--model",
            str(artifacts["cnd_stereo"]),
            "--onnx",
            str(out),
            "--json",
            str(report),
        ]
    )
    assert code == 0
    result = json.loads(report.read_text())
    assert result["onnx"] == str(out) and result["inputs"] == ["left", "right"]
    assert result["output"] == "disparity" and "Conv" in result["operators"]
    assert read_onnx_metadata(out).variant == "cnd_stereo"
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--height", "50"], "multiples of 16"),
        (["--model", "no_such_model"], "no_such_model"),
    ],
)
def test_export_command_reports_bad_input(
    artifacts: dict,
    tmp_path: Path,
    arguments: list,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["export", "--model", str(artifacts["cnd_micro"]), "--onnx", str(tmp_path / "x.onnx")]
    assert cli.main(base + arguments) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
