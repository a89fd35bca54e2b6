"""The TensorRT engine flow end to end, on a machine without TensorRT or a GPU.

Mocked, because they cannot exist here: TensorRT (``fixtures.fake_tensorrt``, which follows the
10.x and 11.x API and is checked against the stubs) and the GPU: ``build_target`` (the GPU's
identity) and ``torch.cuda.device`` (selecting it). Everything else is real: artifacts exported
to ONNX, Q/DQ calibration with ONNX Runtime, the engine cache on disk, the backend registry and
the ``bench``/``eval``/``build-engine`` command lines. The backend stops where device buffers are
allocated (``torch.cuda.Stream``: torch here has no CUDA), with the package's error; by then the
engine is built, cached and deserialized.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from fixtures import fake_tensorrt as fake
from fixtures.artifacts import SMALL, make_artifact, motorcycle
from fixtures.calibration_frames import FailingFrames, random_frames
from fixtures.tiny_onnx import tiny_export

from cnd_depth_ros import cli
from cnd_depth_ros.errors import ArtifactError, BackendError
from cnd_depth_ros.inference import engine_plan
from cnd_depth_ros.inference.calibration import CalibrationSet
from cnd_depth_ros.inference.engine_cache import (
    CACHE_ENV,
    BuildTarget,
    EngineCache,
    StaleEngineError,
    copy_engine_file,
)
from cnd_depth_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from cnd_depth_ros.inference.registry import with_calibration

MODULES = ("cnd_depth_ros.inference.tensorrt_builder", "cnd_depth_ros.inference.tensorrt_backend")
GPU = BuildTarget("", "NVIDIA H200", "9.0", 132, 140)
NO_CUDA_BUFFERS = "TensorRT cannot run on cuda:0: torch.cuda.Stream requires CUDA support"


class _SelectDevice:
    """``torch.cuda.device`` for the pretend GPU: selecting it does nothing."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture
def tensorrt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Callable[[types.ModuleType], types.SimpleNamespace]]:
    """``install(fake module)`` -> the builder and backend modules imported against it, on the
    pretend GPU, with the engine cache in ``tmp_path/engines``. Installing another module (a
    TensorRT upgrade) re-imports them; the real state is restored afterwards."""
    package = importlib.import_module("cnd_depth_ros.inference")
    monkeypatch.setattr(torch.cuda, "device", _SelectDevice)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "engines"))

    def forget() -> None:
        for name in MODULES:
            sys.modules.pop(name, None)
            if hasattr(package, name.rpartition(".")[2]):
                delattr(package, name.rpartition(".")[2])

    def install(module: types.ModuleType) -> types.SimpleNamespace:
        monkeypatch.setitem(sys.modules, "tensorrt", module)
        forget()
        loaded = [importlib.import_module(name) for name in MODULES]
        target = replace(GPU, tensorrt_version=module.__version__)
        for imported in loaded:
            monkeypatch.setattr(imported, "build_target", lambda device=0: target)
        return types.SimpleNamespace(builder=loaded[0], backend=loaded[1], target=target)

    yield install
    forget()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("artifacts")
    return {variant: make_artifact(folder, variant, **SMALL)
            for variant in ("cnd_micro", "cnd_stereo")}


def _engines(root: Path) -> dict[Path, Any]:
    """Each cached engine file -> (its record, its fake-engine JSON)."""
    return {path: (record, json.loads(path.read_bytes()))
            for path, record in EngineCache(root).entries()}


# --- the command lines reach the backend with their options -----------------------------------

def _only_int8_engine(root: Path) -> tuple[Any, dict[str, Any]]:
    (record, engine), = _engines(root).values()
    assert record.key.precision == "int8"
    return record, engine


def test_bench_with_tensorrt_int8_calibrates_on_its_frames(
    tensorrt: Callable[..., Any], artifacts: dict[str, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tensorrt(fake.fake_tensorrt())
    code = cli.main(["bench", "--model", str(artifacts["cnd_stereo"]), "--backends",
                     "tensorrt:int8", "--device", "cuda", "--input-size", "64x48",
                     "--iters", "1", "--warmup", "0"])
    assert code == 2
    assert NO_CUDA_BUFFERS in capsys.readouterr().err  # past the options, the build, the cache
    record, engine = _only_int8_engine(tmp_path / "engines")
    expected = CalibrationSet.for_model([motorcycle()], record.metadata).fingerprint()
    assert record.key.calibration == expected  # bench's default calibration: the motorcycle
    assert engine["graph"]["quantize_nodes"] > 0


def test_eval_with_tensorrt_int8_calibrates_on_calib_data(
    tensorrt: Callable[..., Any], artifacts: dict[str, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tensorrt(fake.fake_tensorrt(weakly_typed=False, version="11.0.0.1"))
    code = cli.main(["eval", "--model", str(artifacts["cnd_stereo"]), "--data", "motorcycle",
                     "--backend", "tensorrt", "--precision", "int8", "--calib-data",
                     "motorcycle:-", "--device", "cuda", "--no-progress"])
    assert code == 2
    assert NO_CUDA_BUFFERS in capsys.readouterr().err
    record, _ = _only_int8_engine(tmp_path / "engines")
    expected = CalibrationSet.for_model([motorcycle()], record.metadata).fingerprint()
    assert record.key.calibration == expected


def test_int8_calibration_frames_go_by_the_option_name_the_backends_take(
    tensorrt: Callable[..., Any], artifacts: dict[str, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The INT8 path of ``eval`` and ``bench`` (``registry.with_calibration``) passes the
    calibration frames as ``calibration``, the option the tensorrt and onnxruntime backends both
    take, whether INT8 is asked for by ``--precision`` or in the spec (``tensorrt:int8``).
    TensorRT is faked (``fixtures.fake_tensorrt``) because it cannot be installed here."""
    trt = tensorrt(fake.fake_tensorrt())
    frames = [motorcycle()]
    for backend in (trt.backend.TensorRTBackend, OnnxRuntimeBackend):
        assert "calibration" in inspect.signature(backend).parameters
    for spec, options in (("tensorrt:int8", {}), ("tensorrt", {"precision": "int8"}),
                          ("onnxruntime:int8", {"device": "cpu"})):
        assert with_calibration(spec, options, frames) == {**options, "calibration": frames}
    for spec in ("tensorrt", "tensorrt:fp16", "sgbm"):
        assert "calibration" not in with_calibration(spec, {}, frames)
    code = cli.main(["eval", "--model", str(artifacts["cnd_stereo"]), "--data", "motorcycle",
                     "--backend", "tensorrt:int8", "--calib-data", "motorcycle:-", "--device",
                     "cuda", "--no-progress"])
    assert code == 2
    assert NO_CUDA_BUFFERS in capsys.readouterr().err  # past the options, the build, the cache
    record, _ = _only_int8_engine(tmp_path / "engines")
    expected = CalibrationSet.for_model([motorcycle()], record.metadata).fingerprint()
    assert record.key.calibration == expected


def test_build_engine_per_shape_with_its_json(
    tensorrt: Callable[..., Any], artifacts: dict[str, Path], tmp_path: Path,
) -> None:
    tensorrt(fake.fake_tensorrt())
    out = tmp_path / "robot.engine"
    assert cli.main(["build-engine", "--model", str(artifacts["cnd_micro"]), "--height", "64",
                     "--width", "96", "--engine", str(out), "--json",
                     str(tmp_path / "build.json")]) == 0
    result = json.loads((tmp_path / "build.json").read_text())
    assert (result["input"], result["precision"]) == ("96x64", "fp16")
    engine = json.loads(out.read_bytes())
    assert engine["io"][0] == ["left", "INPUT", [1, 3, 64, 96], "FLOAT"]
    assert cli.main(["build-engine", "--model", str(artifacts["cnd_micro"]), "--height",
                     "50"]) == 2  # not a multiple of 16: one message, no traceback
    # --camera plans the shape as the node does: 1226x370 within a 6144-px budget.
    assert cli.main(["build-engine", "--model", str(artifacts["cnd_micro"]), "--camera",
                     "1226x370", "--pixel-budget", "6144", "--json",
                     str(tmp_path / "planned.json")]) == 0
    assert json.loads((tmp_path / "planned.json").read_text())["input"] == "112x32"
    assert cli.main(["build-engine", "--model", str(artifacts["cnd_micro"]), "--camera",
                     "1226x370", "--height", "64"]) == 2  # one or the other


# --- one engine per shape ---------------------------------------------------------------------

def test_the_backend_builds_and_caches_one_engine_per_shape(
    tensorrt: Callable[..., Any], artifacts: dict[str, Path], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    trt = tensorrt(fake.fake_tensorrt())
    model = artifacts["cnd_micro"]
    for _ in range(2):  # built the first time, loaded the second
        for width, height in ((64, 48), (96, 64)):
            with caplog.at_level(logging.INFO), pytest.raises(BackendError,
                                                              match=NO_CUDA_BUFFERS):
                trt.backend.TensorRTBackend(model, height=height, width=width)
    engines = _engines(tmp_path / "engines")
    shapes = sorted((record.key.width, record.key.height) for record, _ in engines.values())
    assert shapes == [(64, 48), (96, 64)]
    for path, (record, engine) in engines.items():
        width, height = record.key.width, record.key.height
        assert f"-{width}x{height}-" in path.name
        assert (record.metadata.input_width, record.metadata.input_height) == (width, height)
        assert engine["io"][-1] == ["depth", "OUTPUT", [1, 1, height, width], "FLOAT"]
    builds = [line for line in caplog.messages if line.startswith("building a fp16 engine")]
    assert len(builds) == 2, builds
    assert "at 96x64" in builds[1] and "no engine for this model, shape and precision" in builds[1]
    assert "--height 64 --width 96` builds it ahead of time" in builds[1]
    assert caplog.text.count("using cached engine") == 2


def test_an_engine_file_for_another_shape_or_build_is_refused(
    tensorrt: Callable[..., Any], tmp_path: Path
) -> None:
    trt = tensorrt(fake.fake_tensorrt(build="jetpack-6.0"))
    model = tiny_export(tmp_path / "tiny.onnx")
    cached = trt.builder.cached_engine(model)
    engine = copy_engine_file(cached.path, tmp_path / "robot.engine")
    with pytest.raises(StaleEngineError, match=r"robot\.engine is built for 32x16, not 64x16.*"
                       r"build-engine --model MODEL --height 16 --width 64"):
        trt.backend.TensorRTBackend(engine, width=64)
    with pytest.raises(StaleEngineError, match="a fp16 engine, not int8"):
        trt.backend.TensorRTBackend(engine, precision="int8")
    with pytest.raises(BackendError, match=NO_CUDA_BUFFERS):
        trt.backend.TensorRTBackend(engine, width=32, height=16)  # its own shape: loads
    trt = tensorrt(fake.fake_tensorrt(build="jetpack-6.1"))  # same version string, other build
    with pytest.raises(ArtifactError, match=r"robot\.engine: TensorRT cannot deserialize"):
        trt.backend.TensorRTBackend(engine)


# --- stale plans, export recipes, calibration data --------------------------------------------

def test_a_cached_engine_tensorrt_cannot_deserialize_is_rebuilt(
    tensorrt: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = tiny_export(tmp_path / "tiny.onnx")
    tensorrt(fake.fake_tensorrt(build="jetpack-6.0")).builder.cached_engine(model)
    trt = tensorrt(fake.fake_tensorrt(build="jetpack-6.1"))
    with caplog.at_level(logging.WARNING), pytest.raises(BackendError, match=NO_CUDA_BUFFERS):
        trt.backend.TensorRTBackend(model)
    assert "TensorRT cannot deserialize the cached engine" in caplog.text
    (_, engine), = _engines(tmp_path / "engines").values()
    assert engine["build"] == "jetpack-6.1"


def test_a_changed_export_recipe_rebuilds_the_engine(
    tensorrt: Callable[..., Any], artifacts: dict[str, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """Same weights, changed exporter code: the old engine is stale, not a cache hit."""
    code = tmp_path / "code"
    code.mkdir()
    copies = []
    for path in engine_plan.EXPORT_CODE:
        if path.is_file():
            copies.append(code / path.name)
            copies[-1].write_bytes(path.read_bytes())
    monkeypatch.setattr(engine_plan, "EXPORT_CODE", tuple(copies))
    trt = tensorrt(fake.fake_tensorrt())
    first = trt.builder.cached_engine(artifacts["cnd_micro"])
    assert trt.builder.cached_engine(artifacts["cnd_micro"]).path == first.path
    rewrites = code / "layer_rewrites.py"
    rewrites.write_text(rewrites.read_text() + "\n# a changed rewrite\n")
    with caplog.at_level(logging.WARNING):
        second = trt.builder.cached_engine(artifacts["cnd_micro"])
    assert second.path != first.path and not first.path.exists()
    assert second.record.key.recipe != first.record.key.recipe
    assert "built by export recipe" in caplog.text


@pytest.mark.parametrize("weak", [True, False], ids=["tensorrt10", "tensorrt11"])
def test_int8_is_a_strongly_typed_qdq_build_over_fp16(
    tensorrt: Callable[..., Any], artifacts: dict[str, Path], tmp_path: Path, weak: bool,
) -> None:
    """The same on TensorRT 10 and 11: no INT8 flag or calibrator, a strongly typed network of
    the Q/DQ graph; the layers not quantised in FP16 and the stereo matcher's MatMul in float."""
    trt = tensorrt(fake.fake_tensorrt(weakly_typed=weak, version="10.3.0" if weak else "11.0"))
    frame = motorcycle()
    cached = trt.builder.cached_engine(artifacts["cnd_stereo"], precision="int8",
                                       calibration=[frame])
    engine = json.loads(cached.data)
    assert (engine["network_flags"], engine["builder_flags"]) == (2, [])
    assert engine["graph"]["quantize_nodes"] > 0 and engine["graph"]["float16"]
    assert not engine["graph"]["matmul_reads_dequantized"]
    if weak:  # later INT8 without frames: the cached engine, whatever it was calibrated on
        assert trt.builder.cached_engine(artifacts["cnd_stereo"], precision="int8").path == (
            cached.path)
        other = trt.builder.cached_engine(artifacts["cnd_stereo"], precision="int8",
                                          calibration=[frame, frame, frame])
        assert other.path != cached.path and cached.path.exists()


def test_int8_without_frames_or_cached_engine_asks_for_calib_data(
    tensorrt: Callable[..., Any], tmp_path: Path
) -> None:
    trt = tensorrt(fake.fake_tensorrt())
    with pytest.raises(ValueError, match=r"INT8 needs calibration images: no INT8 engine of "
                       r".*tiny\.onnx at 32x16 is cached .*--calib-data"):
        trt.builder.cached_engine(tiny_export(tmp_path / "tiny.onnx"), precision="int8")


def test_a_calibration_frame_that_fails_stops_the_build(
    tensorrt: Callable[..., Any], tmp_path: Path
) -> None:
    """Read once for the cache key, failing while calibrating: the error names the frame, and no
    engine calibrated on part of the data is cached."""
    trt = tensorrt(fake.fake_tensorrt())
    frames = FailingFrames(random_frames(6, stereo=False), bad=4, fail_from=2)
    with pytest.raises(ValueError, match=r"calibration batch 5/6 \(dataset frame\(s\) 4\): "
                       r"/data/left/000004\.png: truncated PNG"):
        trt.builder.cached_engine(tiny_export(tmp_path / "tiny.onnx"), precision="int8",
                                  calibration=frames)
    assert _engines(tmp_path / "engines") == {}


# --- precision and engine types ---------------------------------------------------------------

def test_default_precision_follows_what_the_graph_can_do(
    tensorrt: Callable[..., Any], tmp_path: Path
) -> None:
    fp32 = tiny_export(tmp_path / "fp32.onnx")
    fp16 = tiny_export(tmp_path / "fp16.onnx", precision="fp16")
    trt = tensorrt(fake.fake_tensorrt(weakly_typed=False, version="11.0"))
    assert trt.builder.cached_engine(fp32).record.key.precision == "fp32"
    assert trt.builder.cached_engine(fp16).record.key.precision == "fp16"
    with pytest.raises(ValueError, match=r"fp32\.onnx is an FP32 export.*export --fp16"):
        trt.builder.cached_engine(fp32, precision="fp16")
    trt = tensorrt(fake.fake_tensorrt())  # TensorRT 10: the FP16 flag takes an FP32 graph
    assert trt.builder.cached_engine(fp32).record.key.precision == "fp16"


def test_an_engine_with_unsupported_io_types_is_the_packages_error(
    tensorrt: Callable[..., Any], tmp_path: Path
) -> None:
    trt = tensorrt(fake.fake_tensorrt())
    model = tiny_export(tmp_path / "bf16.onnx", output_type=onnx.TensorProto.BFLOAT16)
    with pytest.raises(ArtifactError, match=r"tensor 'depth' is DataType\.BF16; this backend "
                       r"binds FLOAT and HALF"):
        trt.backend.TensorRTBackend(model)
