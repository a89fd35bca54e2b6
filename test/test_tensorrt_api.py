"""The TensorRT backend against the TensorRT API it is written for, on a machine without TensorRT.

TensorRT itself cannot be installed here, so its API is checked two ways:

* TensorRT 10: mypy type-checks the two TensorRT modules against the ``tensorrt-stubs`` 10.13
  stubs (patched copies: as shipped they do not parse), so every class, method, attribute and
  enum member they touch must exist with that name. A deliberately misspelt module run through
  the same check proves it catches mistakes.
* TensorRT 11: the APIs NVIDIA removed (:data:`REMOVED_IN_TENSORRT_11`, from its migration
  guide) may only be reached on the weakly typed TensorRT 10 path.

The build flow (flags, progress, timing cache, parse and build failures) runs against
``fixtures.fake_tensorrt`` because the real module cannot run here; the fake's names are
themselves checked against the stubs. The engine flow around it (cache, shapes, INT8,
deserialisation, the CLI) is in ``test_tensorrt_engines.py``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import json
import logging
import os
import re
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures import fake_tensorrt as fake
from fixtures.tiny_onnx import tiny_export

from cnd_depth_ros import cli
from cnd_depth_ros.errors import ArtifactError, BackendError
from cnd_depth_ros.inference import engine_plan
from cnd_depth_ros.inference.engine_cache import PRECISIONS
from cnd_depth_ros.inference.engine_plan import plan_precision
from cnd_depth_ros.inference.registry import available_backends

ROOT = Path(__file__).resolve().parent.parent
TENSORRT_MODULES = [
    ROOT / "cnd_depth_ros" / "inference" / "tensorrt_builder.py",
    ROOT / "cnd_depth_ros" / "inference" / "tensorrt_backend.py",
]
STUB_FILES = ("tensorrt/__init__.pyi", "tensorrt_bindings/__init__.pyi",
              "tensorrt_bindings/tensorrt.pyi")

#: Python APIs removed in TensorRT 11, from NVIDIA's "Removed Python APIs and Replacements"
#: (https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/
#: tensorrt-10x-to-11x-python-api-reference.html), plus the INT8 calibrator classes that are
#: deprecated since 10.1 ("Superseded by explicit quantization") and useless without the
#: calibrator attribute.
REMOVED_IN_TENSORRT_11 = {
    "BuilderFlag": {"FP16", "INT8", "FP8", "BF16", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                    "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO"},
    "IBuilderConfig": {"int8_calibrator", "set_calibration_profile", "get_calibration_profile",
                       "set_quantization_flag", "get_quantization_flag", "quantization_flags",
                       "clear_quantization_flag"},
    "ICudaEngine": {"device_memory_size", "device_memory_size_v2"},
    "Builder": {"platform_has_fast_fp16", "platform_has_fast_int8"},
    "tensorrt": {"IInt8Calibrator", "IInt8EntropyCalibrator", "IInt8EntropyCalibrator2",
                 "IInt8MinMaxCalibrator", "IInt8LegacyCalibrator", "IAlgorithmSelector"},
}


def _stub_root() -> Path:
    try:
        distribution = importlib.metadata.distribution("tensorrt-stubs")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("tensorrt-stubs is not installed (the Makefile installs it with --no-deps)")
    return Path(str(distribution.locate_file("")))


def _patch_signature(line: str) -> str:
    """Make one generated ``def`` line valid Python: rename keyword parameters (``in``) and give
    parameters after a defaulted one a default."""
    match = re.match(r"^(\s*def \w+\()(.*)(\)\s*(?:->.*)?:\s*)$", line)
    if match is None:
        return line
    head, params, tail = match.groups()
    params = re.sub(r"(?<![\w.])(in|from|is|lambda|not|and|or|as|with|global)(?=\s*:)",
                    r"\1_", params)
    parts, depth, current = [], 0, ""
    for char in params:
        depth += (char in "[(") - (char in "])")
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    defaulted = False
    for index, part in enumerate(parts):
        if part.startswith("*"):
            defaulted = False
        elif "=" in part:
            defaulted = True
        elif defaulted:
            parts[index] = f"{part} = ..."
    return head + ", ".join(parts) + tail


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Patched, parseable copies of the TensorRT 10.13 stubs."""
    source, target = _stub_root(), tmp_path_factory.mktemp("stubs")
    for name in STUB_FILES:
        text = (source / name).read_text()
        text = "\n".join(_patch_signature(line) for line in text.splitlines())
        text = text.replace("import tensorrt_libs as tensorrt_libs\n", "")
        if "typing_extensions." in text and "import typing_extensions" not in text:
            text = "import typing_extensions\n" + text
        ast.parse(text, filename=name)  # the patched stub must parse
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text(text)
    return target


@pytest.fixture(scope="module")
def stub_members(stubs: Path) -> dict[str, set[str]]:
    """class name -> names defined in its body, from the patched stubs."""
    tree = ast.parse((stubs / "tensorrt_bindings" / "tensorrt.pyi").read_text())
    members: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names = members.setdefault(node.name, set())
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.ClassDef)):
                    names.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add(item.target.id)
    return members


def _mypy(stubs: Path, files: list[Path], workdir: Path) -> list[str]:
    """mypy errors in ``files``; TensorRT from the stubs, everything else unchecked (Any)."""
    config = workdir / "mypy.ini"
    config.write_text(
        "[mypy]\nfollow_imports = skip\nignore_missing_imports = True\n"
        "[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]\n"
        "follow_imports = silent\n"
    )
    completed = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir",
         str(workdir / "cache"), "--show-error-codes", "--no-color-output",
         *map(str, files)],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
        env={**os.environ, "MYPYPATH": str(stubs)},
    )
    checked = {str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
               for path in files}
    return [line for line in completed.stdout.splitlines()
            if line.split(":", 1)[0] in checked and ": error:" in line]


@pytest.mark.slow
def test_tensorrt_modules_use_only_real_tensorrt_10_api(stubs: Path, tmp_path: Path) -> None:
    misspelt = tmp_path / "misspelt.py"
    misspelt.write_text(
        "import tensorrt as trt\n"
        "def build(config: trt.IBuilderConfig, engine: trt.ICudaEngine) -> None:\n"
        "    config.set_flag(trt.BuilderFlag.FP61)\n"
        "    config.progres_monitor = None\n"
        "    engine.get_tensor_nmae(0)\n"
    )
    errors = _mypy(stubs, [*TENSORRT_MODULES, misspelt], tmp_path)
    ours = [line for line in errors if not line.startswith(str(misspelt))]
    assert ours == []
    caught = "\n".join(line for line in errors if line.startswith(str(misspelt)))
    for name in ("FP61", "progres_monitor", "get_tensor_nmae"):
        assert name in caught, f"the stub check missed a misspelt {name}"


def test_builder_flag_names_looked_up_by_string_exist(stub_members: dict[str, set[str]]) -> None:
    flags = {flag for precision in PRECISIONS
             for flag in plan_precision(precision, weakly_typed=True).builder_flags}
    assert flags == {"FP16"}
    assert flags <= stub_members["BuilderFlag"]
    assert {"IProgressMonitor", "NetworkDefinitionCreationFlag"} <= set(stub_members)
    assert "STRONGLY_TYPED" in stub_members["NetworkDefinitionCreationFlag"]


def test_strongly_typed_plans_need_nothing_tensorrt_11_removed() -> None:
    for precision in PRECISIONS:
        plan = plan_precision(precision, weakly_typed=False)
        assert plan.strongly_typed and plan.builder_flags == ()
        assert plan.graph == {"fp32": "fp32", "fp16": "fp16", "int8": "qdq"}[precision]
    removed = set().union(*REMOVED_IN_TENSORRT_11.values())
    assert not removed & set(vars(engine_plan))


def test_int8_is_explicit_quantization_on_tensorrt_10_and_11() -> None:
    """No implicit calibration on TensorRT 10 (it may run any layer in INT8, the stereo
    matcher's MatMul included): a strongly typed build of the Q/DQ graph on both."""
    plans = {plan_precision("int8", weakly_typed=weak) for weak in (True, False)}
    assert len(plans) == 1
    (plan,) = plans
    assert plan.strongly_typed and plan.graph == "qdq" and plan.builder_flags == ()
    assert plan.onnx_precisions == ("fp16", "fp32")  # the rest of the graph in FP16


def _guards(tree: ast.Module) -> dict[ast.AST, list[str]]:
    """Each node -> the source of every ``if`` test it is nested under."""
    guards: dict[ast.AST, list[str]] = {}

    def visit(node: ast.AST, tests: list[str]) -> None:
        guards[node] = tests
        for child in ast.iter_child_nodes(node):
            guarded = isinstance(node, ast.If) and child in node.body
            visit(child, [*tests, ast.unparse(node.test)] if guarded else tests)

    visit(tree, [])
    return guards


def _annotation_nodes(tree: ast.Module) -> set[ast.AST]:
    """Nodes inside type annotations: never evaluated (``from __future__ import annotations``)."""
    roots: list[ast.AST | None] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            roots.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            roots.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
    return {inner for root in roots if root is not None for inner in ast.walk(root)}


def test_apis_removed_in_tensorrt_11_are_only_used_behind_a_check() -> None:
    removed = set().union(*REMOVED_IN_TENSORRT_11.values())
    for module in TENSORRT_MODULES:
        tree = ast.parse(module.read_text())
        guards, annotations = _guards(tree), _annotation_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in removed \
                    and node not in annotations:
                tests = " ".join(guards[node])
                assert "calibrator" in tests or "hasattr(trt" in tests, (
                    f"{module.name}:{node.lineno} uses {node.attr}, removed in TensorRT 11, "
                    "outside a weak-typing or hasattr check"
                )


def test_registry_does_not_offer_tensorrt_without_its_runtime() -> None:
    """`import tensorrt` succeeds here (the stubs install a namespace package); the backend
    module must still refuse to import so `auto` and the contract test skip it."""
    assert "tensorrt" not in available_backends()


def test_build_engine_without_tensorrt_is_one_clear_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["build-engine", "--model", "cnd_stereo", "--precision", "int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnd-depth build-engine: error: TensorRT is not available")
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_fake_tensorrt_only_defines_real_names(stub_members: dict[str, set[str]]) -> None:
    module = fake.fake_tensorrt()
    for name, value in vars(module).items():
        if name.startswith("__"):
            continue
        assert name in stub_members, f"fake tensorrt.{name} is not in TensorRT 10.13"
        own = {member for member in vars(value) if not member.startswith("_")}
        own |= {member for member in getattr(value, "__annotations__", {})}
        own -= {"initialised", "last_config", "data", "flags", "pools", "timing_cache",
                "network", "errors", "logger", "parsed", "path", "io"}  # the fake's bookkeeping
        assert own <= stub_members[name], f"tensorrt.{name} lacks {own - stub_members[name]}"


BUILDER = "cnd_depth_ros.inference.tensorrt_builder"


@pytest.fixture
def builder_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[types.ModuleType], Any]]:
    """Import the builder module against a given ``tensorrt`` module; forget it afterwards, so
    later tests (and the registry) see this machine's real state again."""
    package = importlib.import_module("cnd_depth_ros.inference")

    def forget() -> None:
        sys.modules.pop(BUILDER, None)
        if hasattr(package, "tensorrt_builder"):
            delattr(package, "tensorrt_builder")

    def load(module: types.ModuleType) -> Any:
        monkeypatch.setitem(sys.modules, "tensorrt", module)
        forget()
        return importlib.import_module(BUILDER)

    yield load
    forget()


@pytest.mark.parametrize("weak", [True, False], ids=["tensorrt10", "tensorrt11"])
def test_build_flow_flags_progress_and_timing_cache(
    builder_on: Callable[[types.ModuleType], Any], tmp_path: Path,
    caplog: pytest.LogCaptureFixture, weak: bool,
) -> None:
    builder = builder_on(fake.fake_tensorrt(weakly_typed=weak))
    assert builder.weakly_typed() is weak
    plan = plan_precision("fp16", weakly_typed=builder.weakly_typed())
    onnx_path = tiny_export(tmp_path / "model.onnx", "fp32" if weak else "fp16")
    timing = tmp_path / "cache" / "timing.cache"
    with caplog.at_level(logging.INFO):
        engine = json.loads(builder.build_serialized_engine(onnx_path, plan, workspace_mb=64,
                                                            timing_cache=timing))
    config = fake.Builder.last_config
    assert config is not None and config.pools == {"WORKSPACE": 64 << 20}
    if weak:
        assert (engine["network_flags"], engine["builder_flags"]) == (0, ["FP16"])
    else:  # 1 << STRONGLY_TYPED, no precision flags: the FP16 graph says it
        assert (engine["network_flags"], engine["builder_flags"]) == (2, [])
        assert engine["graph"]["float16"]
    assert "build: Building engine (20 steps)" in caplog.text
    assert "build: Building engine 20/20" in caplog.text
    assert timing.read_bytes() == b"|timed"
    builder.build_serialized_engine(onnx_path, plan, timing_cache=timing)
    assert timing.read_bytes() == b"|timed|timed"  # the saved cache was fed back in


def test_an_unreadable_timing_cache_is_replaced_by_an_empty_one(
    builder_on: Callable[[types.ModuleType], Any], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    builder = builder_on(fake.fake_tensorrt())
    timing = tmp_path / "timing.cache"
    timing.write_bytes(b"\x00 half-written by a killed build")
    onnx_path = tiny_export(tmp_path / "model.onnx")
    with caplog.at_level(logging.WARNING):
        builder.build_serialized_engine(onnx_path, plan_precision("fp32", weakly_typed=True),
                                        timing_cache=timing)
    assert "timing cache unreadable or rejected by TensorRT, starting an empty one" in caplog.text
    assert timing.read_bytes() == b"|timed"


def test_build_flow_failures_name_the_file(
    builder_on: Callable[[types.ModuleType], Any], tmp_path: Path
) -> None:
    builder = builder_on(fake.fake_tensorrt())
    plan = plan_precision("fp32", weakly_typed=True)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match=r"broken\.onnx: TensorRT cannot parse.*INVALID_GRAPH"):
        builder.build_serialized_engine(broken, plan)
    unbuildable = tiny_export(tmp_path / "big.onnx", doc_string="unbuildable")
    with pytest.raises(BackendError, match=r"could not build .*big\.onnx"):
        builder.build_serialized_engine(unbuildable, plan)


def test_a_build_out_of_tactic_memory_names_the_workspace_setting(
    builder_on: Callable[[types.ModuleType], Any], tmp_path: Path
) -> None:
    builder = builder_on(fake.fake_tensorrt(workspace_needed_mb=512))
    plan = plan_precision("fp16", weakly_typed=True)
    onnx_path = tiny_export(tmp_path / "model.onnx")
    with pytest.raises(BackendError) as raised:
        builder.build_serialized_engine(onnx_path, plan, workspace_mb=256)
    message = str(raised.value)
    assert "ran out of memory" in message and "insufficient workspace" in message
    assert "workspace is 256 MB (build-engine --workspace-mb" in message
    assert json.loads(builder.build_serialized_engine(onnx_path, plan, workspace_mb=512))
