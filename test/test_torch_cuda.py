"""The torch backend's CUDA path (FP16, CUDA graphs, pinned staging) against its CPU reference.

Skipped where CUDA is absent (CI, the 2-core machine); runs on the GPU machine through
``benchmarks/gpu_checks.sh``. Nothing is mocked: a real GPU or no test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.artifacts import SMALL, make_artifact, motorcycle

from cnd_depth_ros.inference.registry import choose_backend, create_backend
from cnd_depth_ros.inference.torch_backend import TorchBackend
from cnd_depth_ros.training.datasets.frame import Frame

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

VARIANTS = ("cnd_micro", "cnd_stereo")
#: Relative depth tolerance against the FP32 CPU reference. FP32 on the GPU differs by the
#: convolution algorithms cuDNN picks (TF32 where it is allowed).
TOLERANCE = {"fp32": 5e-3, "fp16": 3e-2}


@pytest.fixture(scope="module")
def frame() -> Frame:
    return motorcycle()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cuda_models")
    return {variant: make_artifact(folder, variant, **SMALL) for variant in VARIANTS}


@pytest.fixture(scope="module")
def references(artifacts: dict[str, Path], frame: Frame) -> dict[str, np.ndarray]:
    depths = {}
    for variant, path in artifacts.items():
        backend = create_backend("torch", path, device="cpu")
        depths[variant] = backend.infer(frame.left, frame.right, camera=frame.camera)
        backend.close()
    return depths


@pytest.fixture
def cuda_backend() -> Iterator:
    made: list[TorchBackend] = []

    def create(path: Path, **options) -> TorchBackend:
        made.append(create_backend("torch", path, device="cuda", **options))
        return made[-1]

    yield create
    for backend in made:
        backend.close()


def _median_relative(depth: np.ndarray, reference: np.ndarray) -> float:
    return float(np.nanmedian(np.abs(depth - reference) / reference))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_cuda_matches_the_cpu_reference(
    variant, precision, cuda_graphs, artifacts, references, frame, cuda_backend
) -> None:
    backend = cuda_backend(artifacts[variant], precision=precision, cuda_graphs=cuda_graphs)
    depth = backend.infer(frame.left, frame.right, camera=frame.camera)
    reference = references[variant]
    assert depth.shape == reference.shape and depth.dtype == np.float32
    assert np.isfinite(depth).mean() > 0.99
    assert _median_relative(depth, reference) < TOLERANCE[precision]
    assert backend.info()["cuda_graph"] is cuda_graphs


def test_a_replayed_graph_reads_each_new_frame(artifacts, frame, cuda_backend) -> None:
    """The graph reads fixed input buffers: each frame must be copied into them, not captured
    once. Three different pairs in turn, graph against plain eager execution."""
    pairs = [
        (frame.left, frame.right),
        (frame.left[:, ::-1].copy(), frame.right[:, ::-1].copy()),
        (frame.left // 2, frame.right // 2),
    ]
    graphed = cuda_backend(artifacts["cnd_stereo"], cuda_graphs=True)
    eager = cuda_backend(artifacts["cnd_stereo"], cuda_graphs=False)
    outputs = []
    for left, right in pairs:
        depth = graphed.infer(left, right, camera=frame.camera)
        expected = eager.infer(left, right, camera=frame.camera)
        np.testing.assert_allclose(depth, expected, rtol=1e-3, equal_nan=True)
        outputs.append(depth)
    assert _median_relative(outputs[0], outputs[1]) > 1e-3  # the frames really differ


def test_auto_picks_the_gpu(artifacts) -> None:
    name, reason = choose_backend(artifacts["cnd_micro"])
    assert name in ("tensorrt", "torch"), reason


def test_bad_input_is_refused_on_the_gpu_too(artifacts, frame, cuda_backend) -> None:
    backend = cuda_backend(artifacts["cnd_stereo"], precision="fp16")
    with pytest.raises(ValueError, match="right image"):
        backend.infer(frame.left, camera=frame.camera)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        backend.infer(frame.left[..., :2], frame.right, camera=frame.camera)
    # The refusals left the captured graph intact.
    depth = backend.infer(frame.left, frame.right, camera=frame.camera)
    assert np.isfinite(depth).mean() > 0.99
