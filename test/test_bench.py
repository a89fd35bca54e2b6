"""`cnd-depth bench`: its JSON rows, measured for real on tiny models and the motorcycle pair."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.artifacts import SMALL, make_artifact

from cnd_depth_ros import cli
from cnd_depth_ros.data.registry import open_dataset
from cnd_depth_ros.inference import benchmark, planned_backend
from cnd_depth_ros.inference.benchmark import StereoInput, max_abs_diff
from cnd_depth_ros.inference.disparity_refinement import DisparityRefinement
from cnd_depth_ros.inference.registry import create_backend, parse_backend_spec

FIELDS = {"backend", "model", "height", "width", "p50_ms", "p95_ms", "fps", "max_abs_diff_vs_torch"}


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("bench"), "cnd_micro", **SMALL)


def test_bench_times_every_backend_and_writes_json(
    micro: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "bench.json"
    code = cli.main(
        [
            "bench",
            "--model",
            str(micro),
            "--backends",
            "torch,onnxruntime,sgbm",
            "--input-size",
            "64x48",
            "--camera",
            "180x120",
            "--iters",
            "3",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--json",
            str(report),
        ]
    )
    assert code == 0
    results = json.loads(report.read_text())["results"]
    assert list(json.loads(report.read_text())) == ["results"]
    assert [row["backend"] for row in results] == ["torch", "onnxruntime", "sgbm"]
    for row in results:
        assert set(row) == FIELDS
        assert (row["height"], row["width"], row["model"]) == (48, 64, str(micro))
        assert 0 < row["p50_ms"] <= row["p95_ms"] and row["fps"] > 0
    torch_row, onnx_row, sgbm_row = results
    # The reference is the torch backend with the same weights, input and thread count: oneDNN
    # is bit-reproducible for a fixed thread count, so exactly 0 (not across thread counts).
    assert torch_row["max_abs_diff_vs_torch"] == 0.0
    assert 0.0 <= onnx_row["max_abs_diff_vs_torch"] < 1e-2
    assert sgbm_row["max_abs_diff_vs_torch"] > 0.0  # a different algorithm, compared all the same
    assert "onnxruntime" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("backends", "message"),
    [
        ("torch,cudnn", "unknown backend 'cudnn'"),
        ("onnxruntime:int4", "precision"),
        ("torch:fp16:x", "NAME:VALUE"),
        ("torch,sgbm:fast", "unknown SGBM preset 'fast'"),
    ],
)
def test_bench_reports_bad_backends(
    micro: Path, backends: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        [
            "bench",
            "--model",
            str(micro),
            "--backends",
            backends,
            "--input-size",
            "64x48",
            "--iters",
            "1",
        ]
    )
    assert code == 2
    assert message in capsys.readouterr().err


def test_backend_specs_and_difference() -> None:
    assert parse_backend_spec("sgbm") == ("sgbm", {})
    assert parse_backend_spec("sgbm:stereo_image_proc") == ("sgbm", {"preset": "stereo_image_proc"})
    assert parse_backend_spec(" onnxruntime:int8") == ("onnxruntime", {"precision": "int8"})
    a = np.array([1.0, np.nan, 3.0, 4.0])
    b = np.array([1.5, 2.0, np.nan, 2.0])
    assert max_abs_diff(a, b) == 2.0
    assert np.isnan(max_abs_diff(a[1:3], b[1:3]))


def test_the_reference_runs_with_the_timed_backends_settings(
    micro: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The torch reference (on the CPU) and every timed backend get the same threads (results
    of one network differ in the last bits between thread counts on some CPUs). A spy on the
    real factory records the options; the backends run for real."""
    created: list[tuple[str, dict[str, object]]] = []

    def spy(name: str, model: object, **options: object) -> object:
        created.append((name, options))
        return create_backend(name, model, **options)

    monkeypatch.setattr(planned_backend, "create_backend", spy)
    frame = open_dataset("motorcycle")[0]
    assert frame.right is not None
    pair = StereoInput(frame.left, frame.right, frame.camera).resized(96, 64)
    benchmark.run_benchmark(micro, ["onnxruntime", "torch"], pair, input_size=(64, 48),
                            iterations=1, warmup=0, options={"device": "cpu", "threads": 1})
    assert [name for name, _ in created] == ["torch", "onnxruntime", "torch"]
    for _, options in created:
        assert options["device"] == "cpu" and options["threads"] == 1


@pytest.mark.parametrize("refinement", [None, DisparityRefinement()])
def test_the_reference_and_every_backend_refine_alike(
    micro: Path, monkeypatch: pytest.MonkeyPatch, refinement: DisparityRefinement | None
) -> None:
    """``bench --no-refinement`` gives ``refinement=None`` to the reference and to every timed
    backend, so the difference column compares like with like. A spy on the real class records
    it; the backends run for real."""
    seen: list[object] = []

    class Spy(planned_backend.PlannedBackend):
        def __init__(self, *args: object, **options: object) -> None:
            seen.append(options.get("refinement", "missing"))
            super().__init__(*args, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(benchmark, "PlannedBackend", Spy)
    frame = open_dataset("motorcycle")[0]
    assert frame.right is not None
    pair = StereoInput(frame.left, frame.right, frame.camera).resized(96, 64)
    benchmark.run_benchmark(micro, ["onnxruntime"], pair, input_size=(64, 48), iterations=1,
                            warmup=0, options={"device": "cpu", "threads": 1},
                            refinement=refinement)
    assert seen == [refinement, refinement]
