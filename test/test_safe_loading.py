"""Loading files never runs code from them, and malformed files are refused before use.

* An audit of the package's own source: weights only through safetensors or
  ``torch.load(weights_only=True)``; no pickle, ``allow_pickle=True``, ``torch.jit.load``,
  ``yaml.load``, ``eval`` or ``exec``. The audit is shown to catch each pattern it looks for.
* Artifact sidecars and ONNX-embedded metadata are validated against the schema
  (:meth:`ModelMetadata.from_json`) before anything is built from them; a sidecar cannot make
  the loader allocate more than its weights file holds.
* Engines: only with their sidecar and checksum, as the node sees them.
* Checkpoints: a pickle that would run code is refused; an interrupted save leaves the previous
  checkpoint intact. (Resuming a killed training run exactly: test_training.py.)
"""

from __future__ import annotations

import ast
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from fixtures.artifacts import SMALL, make_artifact

from cnd_depth_ros.errors import ArtifactError
from cnd_depth_ros.inference.engine_cache import (
    BuildTarget,
    EngineKey,
    load_engine_file,
    save_engine_file,
)
from cnd_depth_ros.inference.export import ONNX_METADATA_KEY, export_onnx, load_onnx
from cnd_depth_ros.models.artifact import (
    MAX_INPUT_SIDE,
    artifact_paths,
    load_artifact,
    read_metadata,
)
from cnd_depth_ros.training.checkpoint import CHECKPOINT_KEYS, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
AUDITED = ("cnd_depth_ros", "benchmarks", "scripts", "launch")

# call (as written, dotted) -> why it is unsafe; keyword checks below
_FORBIDDEN_CALLS = {
    "pickle.load": "unpickling runs code",
    "pickle.loads": "unpickling runs code",
    "pickle.Unpickler": "unpickling runs code",
    "torch.jit.load": "TorchScript archives run code",
    "yaml.load": "use yaml.safe_load",
    "yaml.unsafe_load": "use yaml.safe_load",
    "marshal.loads": "code objects",
    "eval": "runs text as code",
    "exec": "runs text as code",
}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str) -> Any:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else keyword
    return None


def unsafe_loads(source: str, filename: str = "<source>") -> list[str]:
    """Every call in ``source`` that could run code from a file it loads, as ``file:line why``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{filename}:{node.lineno}"
        if name in _FORBIDDEN_CALLS:
            found.append(f"{where} {name}: {_FORBIDDEN_CALLS[name]}")
        elif name.endswith("torch.load") and _keyword(node, "weights_only") is not True:
            found.append(f"{where} torch.load without weights_only=True")
        elif name.endswith(("np.load", "numpy.load")) and _keyword(node, "allow_pickle") not in (
            None, False
        ):
            found.append(f"{where} {name} with allow_pickle")
    return found


def test_the_package_loads_nothing_that_runs_code() -> None:
    found = []
    for folder in AUDITED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            found += unsafe_loads(path.read_text(), str(path.relative_to(ROOT)))
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "import torch\ntorch.load(path)",
        "import torch\ntorch.load(path, weights_only=False)",
        "import torch\ntorch.load(path, weights_only=flag)",
        "import pickle\npickle.loads(data)",
        "import numpy as np\nnp.load(path, allow_pickle=True)",
        "import yaml\nyaml.load(text, Loader=yaml.Loader)",
        "import torch\ntorch.jit.load(path)",
        "eval(text)",
    ],
)
def test_the_audit_catches_each_pattern(source: str) -> None:
    assert unsafe_loads(source)


def test_the_audit_accepts_the_safe_forms() -> None:
    safe = ("torch.load(p, map_location='cpu', weights_only=True)\n"
            "np.load(p)\nnp.load(p, allow_pickle=False)\nyaml.safe_load(t)\n")
    assert unsafe_loads(safe) == []


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("safe"), "cnd_mono", **SMALL)


@pytest.fixture
def sidecar(artifact: Path, tmp_path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A private copy of the artifact; the test edits its sidecar (path, original JSON)."""
    for source in artifact_paths(artifact):
        shutil.copy(source, tmp_path / source.name)
    path = artifact_paths(tmp_path / artifact.name)[1]
    yield path, json.loads(path.read_text())


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data[key] = value

    return edit


def _in_config(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["model_config"][key] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("input_height", "48"), "field 'input_height' must be int, got str"),
        (_set("stereo", 1), "field 'stereo' must be bool, got int"),
        (_set("input_width", True), "field 'input_width' must be int, got bool"),
        (_set("training_camera", [1, 2]), "field 'training_camera' must be dict"),
        (_set("__class__", "os.system"), "unknown field '__class__'"),
        (lambda data: data.pop("variant"), "missing field 'variant'"),
        (lambda data: data["training_camera"].pop("fx"), "missing fields: ['fx']"),
        (_set("output", "disparity_then_rm_rf"), "output must be 'disparity' or 'depth'"),
        (_set("input_height", 16 * 10**9), f"multiples of 16 up to {MAX_INPUT_SIDE}"),
        (_set("format", 99), "format 99 is not supported"),
        (_set("variant", "resnet152"), "unknown model 'resnet152'"),
        (_in_config("aspp_channels", 10**9), "cannot build 'cnd_mono'"),
        (_in_config("aspp_channels", 64), "the sidecar describes another network"),
        (_in_config("rm_rf", True), "has no setting 'rm_rf'"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_malformed_sidecars_are_refused(
    sidecar: tuple[Path, dict[str, Any]], edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    path, data = sidecar
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError) as raised:
        load_artifact(path.with_suffix(""))
    assert str(path.with_suffix("")) in str(raised.value)
    assert message in str(raised.value)


def test_weights_that_are_a_pickle_are_refused(sidecar: tuple[Path, dict[str, Any]]) -> None:
    path, _ = sidecar
    weights = artifact_paths(path)[0]
    torch.save({"aspp.weight": torch.zeros(1)}, weights)  # a zip of pickles, not safetensors
    with pytest.raises(ArtifactError, match="unreadable weights"):
        load_artifact(path.with_suffix(""))


def test_onnx_metadata_is_validated(artifact: Path, tmp_path: Path) -> None:
    exported = export_onnx(artifact, tmp_path / "model.onnx")
    read_back = load_onnx(exported)[1]
    assert read_back == read_metadata(artifact)
    model = onnx.load_model(str(exported))
    for entry in model.metadata_props:
        if entry.key == ONNX_METADATA_KEY:
            data = json.loads(entry.value)
            data["input_height"] = -16
            entry.value = json.dumps(data)
    tampered = tmp_path / "tampered.onnx"
    onnx.save_model(model, str(tampered))
    with pytest.raises(ArtifactError, match="multiples of 16") as raised:
        load_onnx(tampered)
    assert str(tampered) in str(raised.value)


def test_engines_load_only_intact_with_their_sidecar(artifact: Path, tmp_path: Path) -> None:
    """What the TensorRT backend calls before TensorRT sees a byte of an engine given by path."""
    target = BuildTarget("10.13.0", "NVIDIA Orin", "8.7", 16, 61)
    key = EngineKey("ab" * 32, "fp16", 48, 64, target, recipe="cd" * 32)
    engine = tmp_path / "model.engine"
    save_engine_file(engine, b"engine bytes" * 100, key=key, metadata=read_metadata(artifact),
                     build_seconds=1.0, source=str(artifact))
    assert load_engine_file(engine, target=target)[0] == b"engine bytes" * 100

    engine.write_bytes(b"engine bytes" * 99 + b"ENGINE BYTES")
    with pytest.raises(ArtifactError, match="checksum does not match"):
        load_engine_file(engine, target=target)
    engine.write_bytes(b"engine bytes")
    with pytest.raises(ArtifactError, match="truncated"):
        load_engine_file(engine, target=target)
    engine.with_suffix(".json").unlink()
    with pytest.raises(ArtifactError, match="no sidecar"):
        load_engine_file(engine, target=target)


class _RunsCode:
    """Unpickling this calls ``Path.touch`` on a marker file: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _checkpoint(step: int) -> dict[str, Any]:
    state = {key: {} for key in CHECKPOINT_KEYS}
    state.update(model={"weight": torch.full((2,), float(step))}, step=step, epoch=0)
    return state


def test_a_checkpoint_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    state = {**_checkpoint(1), "config": _RunsCode(marker)}
    torch.save(state, path)  # written with full pickle, as an attacker would
    with pytest.raises(ArtifactError, match="unreadable checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the control: a plain load runs the payload
    assert marker.exists()


def test_an_interrupted_checkpoint_save_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(_checkpoint(1), tmp_path / "checkpoint.pt")
    real_save = torch.save

    def killed_halfway(state: Any, file: Any, *args: Any, **kwargs: Any) -> None:
        real_save(state, file, *args, **kwargs)
        Path(file).write_bytes(Path(file).read_bytes()[:100])
        raise KeyboardInterrupt  # the process is killed while writing

    monkeypatch.setattr(torch, "save", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_checkpoint(2), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [entry.name for entry in tmp_path.iterdir()] == ["checkpoint.pt"]
