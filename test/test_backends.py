"""The backend contract: every backend that imports here against the torch reference, on the real
Middlebury motorcycle pair, plus the registry, ``auto`` and bad input.

Real ONNX Runtime sessions throughout. TensorRT cannot be installed on these machines: its backend
joins the parametrisation automatically wherever ``tensorrt`` imports. The torch backend's CUDA
path (FP16, CUDA graphs, pinned staging) is tested against the CPU reference where a GPU is
present (``benchmarks/gpu_checks.sh`` runs those tests on the GPU machine); without one, it is
checked to refuse cleanly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.artifacts import SMALL, make_artifact, motorcycle

from cnd_depth_ros.data.frame import Frame
from cnd_depth_ros.errors import ArtifactError, BackendError
from cnd_depth_ros.evaluation.metrics import EVALUATION_RANGE_M
from cnd_depth_ros.inference.backend import DepthBackend
from cnd_depth_ros.inference.export import export_onnx
from cnd_depth_ros.inference.registry import (
    BACKENDS,
    available_backends,
    choose_backend,
    create_backend,
    takes_model,
)

VARIANTS = ("cnd_micro", "cnd_stereo")
#: The network backends that import here (sgbm, without a model, has its own tests: test_sgbm.py).
NETWORK_BACKENDS = [name for name in available_backends() if takes_model(name)]
#: Relative depth tolerance per precision against the FP32 torch reference.
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}
#: The same on CUDA, as a median: FP32 there differs by the convolution algorithms cuDNN picks
#: (TF32 where allowed), FP16 by its rounding.
CUDA_TOLERANCE = {"fp32": 5e-3, "fp16": 3e-2}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def frame() -> Frame:
    return motorcycle()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each variant as an artifact and as an exported ONNX file."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for variant in VARIANTS:
        artifact = make_artifact(folder, variant, **SMALL)
        paths[variant] = artifact
        paths[f"{variant}.onnx"] = export_onnx(artifact, folder / f"{variant}.onnx")
    return paths


@pytest.fixture(scope="module")
def references(models: dict[str, Path], frame: Frame) -> dict[str, np.ndarray]:
    """Torch backend depth for each variant on the motorcycle pair."""
    depths = {}
    for variant in VARIANTS:
        backend = create_backend("torch", models[variant], threads=1)
        depths[variant] = backend.infer(frame.left, frame.right, camera=frame.camera)
        backend.close()
    return depths


@pytest.fixture
def backend_factory() -> Iterator:
    """``create_backend`` whose backends are closed after the test."""
    made: list[DepthBackend] = []

    def create(*args, **options) -> DepthBackend:
        made.append(create_backend(*args, **options))
        return made[-1]

    yield create
    for backend in made:
        backend.close()


def _precisions(name: str) -> list[str]:
    return ["fp16"] if name == "tensorrt" else ["fp32"]


CONTRACT = [
    (name, variant, precision)
    for name in NETWORK_BACKENDS
    for variant in VARIANTS
    for precision in _precisions(name)
]


@pytest.mark.parametrize(("name", "variant", "precision"), CONTRACT)
def test_backend_matches_the_torch_reference(
    name, variant, precision, models, references, frame, backend_factory
) -> None:
    # Exported ONNX files where the backend takes them (the artifact path is covered below).
    source = models[variant] if name == "torch" else models[f"{variant}.onnx"]
    backend = backend_factory(name, source, precision=precision)
    depth = backend.infer(frame.left, frame.right, camera=frame.camera)
    reference = references[variant]
    assert depth.shape == (frame.camera.height, frame.camera.width)
    assert depth.dtype == np.float32
    assert np.isfinite(reference).mean() > 0.99
    np.testing.assert_array_equal(np.isnan(depth), np.isnan(reference))
    np.testing.assert_allclose(depth, reference, rtol=TOLERANCE[precision], equal_nan=True)
    info = backend.info()
    assert info["backend"] == name and info["variant"] == variant


@pytest.mark.parametrize("variant", VARIANTS)
def test_onnxruntime_exports_an_artifact_on_the_fly(
    variant, models, references, frame, backend_factory
) -> None:
    backend = backend_factory("onnxruntime", models[variant], threads=1)
    depth = backend.infer(frame.left, frame.right, camera=frame.camera)
    np.testing.assert_allclose(depth, references[variant], rtol=1e-4, equal_nan=True)


def test_int8_onnxruntime_stays_close_to_fp32(models, references, frame, backend_factory) -> None:
    """Scored where depth is in the evaluated range: at the left edge, where nothing matches,
    the random net's disparity sits near its floor and a rounding moves depth by tens of %."""
    backend = backend_factory(
        "onnxruntime", models["cnd_stereo.onnx"], precision="int8", calibration=[frame], threads=1
    )
    assert backend.info()["precision"] == "int8"
    depth = backend.infer(frame.left, frame.right, camera=frame.camera)
    reference = references["cnd_stereo"]
    scored = reference <= EVALUATION_RANGE_M[1]
    relative = (np.abs(depth - reference) / reference)[scored]
    assert scored.mean() > 0.9
    assert np.nanmedian(relative) < 0.03 and np.nanpercentile(relative, 99) < 0.15


def test_depth_follows_the_live_camera(models, frame, backend_factory) -> None:
    """Same images, half the baseline: a disparity model's depth halves (DESIGN camera rule)."""
    backend = backend_factory("onnxruntime", models["cnd_stereo.onnx"])
    depth = backend.infer(frame.left, frame.right, camera=frame.camera)
    narrow = replace(frame.camera, baseline=frame.camera.baseline / 2)
    np.testing.assert_allclose(
        backend.infer(frame.left, frame.right, camera=narrow), depth / 2, rtol=1e-6, equal_nan=True
    )


@pytest.mark.parametrize("name", NETWORK_BACKENDS)
def test_backends_reject_bad_images(name, models, frame, backend_factory) -> None:
    source = models["cnd_stereo"] if name == "torch" else models["cnd_stereo.onnx"]
    backend = backend_factory(name, source)
    camera, left, right = frame.camera, frame.left, frame.right
    with pytest.raises(ValueError, match="right image"):
        backend.infer(left, camera=camera)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        backend.infer(left[..., :2], right, camera=camera)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        backend.infer(left.astype(np.float32), right, camera=camera)
    with pytest.raises(ValueError, match="but the camera is"):
        backend.infer(left[:100], right[:100], camera=camera)
    mono = replace(camera, baseline=None)
    with pytest.raises(ValueError, match="baseline"):
        backend.infer(left, right, camera=mono)
    with pytest.raises(ValueError, match="network input"):
        backend.run(np.zeros((1, 3, 10, 10), np.float32), np.zeros((1, 3, 10, 10), np.float32))
    backend.close()
    backend.close()


def test_torch_backend_refuses_onnx_and_unavailable_options(models) -> None:
    with pytest.raises(ArtifactError, match=r"cnd_micro\.onnx"):
        create_backend("torch", models["cnd_micro.onnx"])
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        create_backend("torch", models["cnd_micro"], precision="fp16")
    with pytest.raises(ValueError, match="int8"):
        create_backend("torch", models["cnd_micro"], precision="int8")
    with pytest.raises(ValueError, match="'gpu'"):
        create_backend("torch", models["cnd_micro"], device="gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on CUDA-less machines")
def test_cuda_is_refused_cleanly_without_a_gpu(models) -> None:
    with pytest.raises(BackendError, match="CUDA is not available"):
        create_backend("torch", models["cnd_micro"], device="cuda")


def test_onnxruntime_refuses_bad_files_and_options(models, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.onnx"
    data = models["cnd_micro.onnx"].read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(ArtifactError, match=r"truncated\.onnx"):
        create_backend("onnxruntime", truncated)
    with pytest.raises(ArtifactError, match="no such file"):
        create_backend("onnxruntime", tmp_path / "absent.onnx")
    with pytest.raises(ValueError, match="static shapes"):
        create_backend("onnxruntime", models["cnd_micro.onnx"], height=96)
    with pytest.raises(ValueError, match="calibration"):
        create_backend("onnxruntime", models["cnd_micro.onnx"], precision="int8")
    with pytest.raises(ValueError, match="fp16 needs device cuda"):
        create_backend("onnxruntime", models["cnd_micro.onnx"], precision="fp16")


def test_registry_names_and_options(models) -> None:
    assert {"torch", "onnxruntime"} <= set(available_backends()) <= set(BACKENDS)
    with pytest.raises(ValueError, match="unknown backend 'cudnn'"):
        create_backend("cudnn", models["cnd_micro"])
    with pytest.raises(ValueError, match="does not take"):
        create_backend("onnxruntime", models["cnd_micro.onnx"], colour="blue")
    if "tensorrt" not in available_backends():
        with pytest.raises(BackendError, match="tensorrt"):
            create_backend("tensorrt", models["cnd_micro.onnx"])


def test_auto_picks_onnxruntime_on_a_cpu_machine_and_says_why(
    models, caplog: pytest.LogCaptureFixture, backend_factory
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: auto picks a GPU backend")
    assert choose_backend(models["cnd_micro"])[0] == "onnxruntime"
    assert choose_backend(models["cnd_micro"], "cpu")[1].startswith("device 'cpu'")
    with caplog.at_level(logging.INFO, logger="cnd_depth_ros.inference.registry"):
        backend = backend_factory("auto", models["cnd_micro.onnx"], threads=1)
    assert backend.name == "onnxruntime"
    assert "using onnxruntime (no CUDA GPU" in caplog.text


def test_backends_run_at_another_network_size(models, frame, backend_factory) -> None:
    """``height``/``width`` options: the fully convolutional net at 96x64 instead of 64x48."""
    depths = []
    for name in ("torch", "onnxruntime"):
        backend = backend_factory(name, models["cnd_micro"], height=64, width=96, threads=1)
        assert backend.input_size == (96, 64)
        depths.append(backend.infer(frame.left, camera=frame.camera))
    np.testing.assert_allclose(depths[1], depths[0], rtol=1e-4)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_an_engine_file_is_refused_by_non_tensorrt_backends(tmp_path: Path, backend: str) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match="only the tensorrt backend runs it"):
        create_backend(backend, engine)


def _median_relative(depth: np.ndarray, reference: np.ndarray) -> float:
    return float(np.nanmedian(np.abs(depth - reference) / reference))


@needs_cuda
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_cuda_matches_the_cpu_reference(
    variant, precision, cuda_graphs, models, references, frame, backend_factory
) -> None:
    backend = backend_factory(
        "torch", models[variant], device="cuda", precision=precision, cuda_graphs=cuda_graphs
    )
    depth = backend.infer(frame.left, frame.right, camera=frame.camera)
    reference = references[variant]
    assert depth.shape == reference.shape and depth.dtype == np.float32
    assert np.isfinite(depth).mean() > 0.99
    assert _median_relative(depth, reference) < CUDA_TOLERANCE[precision]
    assert backend.info()["cuda_graph"] is cuda_graphs


@needs_cuda
def test_cuda_graph_replay_reads_each_new_frame(models, frame, backend_factory) -> None:
    """The graph reads fixed input buffers: each frame must be copied into them, not captured
    once. Three different pairs in turn, graph against eager execution."""
    pairs = [
        (frame.left, frame.right),
        (frame.left[:, ::-1].copy(), frame.right[:, ::-1].copy()),
        (frame.left // 2, frame.right // 2),
    ]
    graphed = backend_factory("torch", models["cnd_stereo"], device="cuda", cuda_graphs=True)
    eager = backend_factory("torch", models["cnd_stereo"], device="cuda", cuda_graphs=False)
    outputs = []
    for left, right in pairs:
        depth = graphed.infer(left, right, camera=frame.camera)
        expected = eager.infer(left, right, camera=frame.camera)
        np.testing.assert_allclose(depth, expected, rtol=1e-3, equal_nan=True)
        outputs.append(depth)
    assert _median_relative(outputs[0], outputs[1]) > 1e-3  # the frames really differ


@needs_cuda
def test_cuda_auto_picks_the_gpu(models) -> None:
    name, reason = choose_backend(models["cnd_micro"])
    assert name in ("tensorrt", "torch"), reason


@needs_cuda
def test_cuda_bad_input_is_refused_and_the_graph_survives(models, frame, backend_factory) -> None:
    backend = backend_factory("torch", models["cnd_stereo"], device="cuda", precision="fp16")
    with pytest.raises(ValueError, match="right image"):
        backend.infer(frame.left, camera=frame.camera)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        backend.infer(frame.left[..., :2], frame.right, camera=frame.camera)
    depth = backend.infer(frame.left, frame.right, camera=frame.camera)
    assert np.isfinite(depth).mean() > 0.99
