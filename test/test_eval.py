"""`cnd-depth eval` and the dataset evaluation behind it, on a tiny rendered synthetic set.

Real parts only: the renderer's folder, a real (untrained, seeded) network saved as an artifact
and run through the torch backend, OpenCV's SGBM.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from fixtures.artifacts import SMALL, make_artifact
from fixtures.training import one_torch_thread, synthetic_folder  # noqa: F401

from cnd_depth_ros import cli
from cnd_depth_ros.data.frame import Frame
from cnd_depth_ros.data.registry import open_dataset
from cnd_depth_ros.evaluation.dataset_eval import evaluate_dataset, open_predictor
from cnd_depth_ros.evaluation.metrics import METRIC_NAMES
from cnd_depth_ros.inference.depth_estimate import DepthEstimate
from cnd_depth_ros.synthetic.bag_writer import write_sequence_bag
from cnd_depth_ros.synthetic.dataset_writer import kitti_like_camera

WIDTH, HEIGHT = 128, 80


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_folder(tmp_path_factory.mktemp("synthetic"), WIDTH, HEIGHT, 3, seed=11)


@pytest.fixture(scope="module")
def stereo_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("model"), "cnd_stereo", width=96, height=64,
                         **SMALL)


def _eval(tmp_path: Path, *arguments: str) -> tuple[int, dict]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    result = tmp_path / "eval.json"
    code = cli.main(["eval", *arguments, "--no-progress", "--json", str(result)])
    return code, (json.loads(result.read_text()) if code == 0 else {})


def test_artifact_through_the_torch_backend(
    synthetic_root: Path, stereo_artifact: Path, tmp_path: Path
) -> None:
    code, result = _eval(
        tmp_path, "--model", str(stereo_artifact), "--data", "synthetic",
        "--data-root", str(synthetic_root), "--device", "cpu",
    )
    assert code == 0
    assert result["frames"] == 3
    assert result["backend"] == "torch"
    assert result["model"] == str(stereo_artifact)
    assert result["data"] == {"kind": "synthetic", "root": str(synthetic_root)}
    assert set(result["metrics"]) == set(METRIC_NAMES)
    assert all(math.isfinite(value) for value in result["metrics"].values())
    assert result["metrics"]["invalid"] == 0.0


def test_sgbm_baseline_scores_every_pixel_and_max_frames(
    synthetic_root: Path, tmp_path: Path
) -> None:
    code, result = _eval(
        tmp_path, "--backend", "sgbm", "--data", "synthetic", "--data-root", str(synthetic_root),
        "--max-frames", "2",
    )
    assert code == 0
    assert result["frames"] == 2
    assert result["backend"] == "sgbm"
    # Holes are filled, so no pixel fails; on exact synthetic ground truth SGBM is decent.
    assert result["metrics"]["invalid"] == 0.0
    assert result["metrics"]["rel"] < 0.5
    assert result["metrics"]["delta3"] > 0.5


def test_data_options_reach_the_loader_and_the_result(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--data-option NAME=VALUE`` goes to the loader (a rosbag's slop here) and into the
    result; an option the loader lacks is named with those it takes."""
    bag = tmp_path / "drive"
    write_sequence_bag(bag, kitti_like_camera(96, 64), 2, seed=5, progress=False)
    code, result = _eval(tmp_path, "--backend", "sgbm", "--data", "rosbag", "--data-root",
                         str(bag), "--data-option", "slop=0.01")
    assert code == 0 and result["frames"] == 2
    assert result["data"]["options"] == {"slop": 0.01}
    code, _ = _eval(tmp_path, "--backend", "sgbm", "--data", "synthetic", "--data-root",
                    str(synthetic_root), "--data-option", "left_topic=/x")
    assert code == 2
    assert "bad options ['left_topic']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["eval", "--backend", "sgbm", "--data", "synthetic", "--data-option", "oops"])
    assert "must be NAME=VALUE" in capsys.readouterr().err


def test_sgbm_as_stereo_image_proc_ships_it_as_backend_and_baseline(
    synthetic_root: Path, stereo_artifact: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, result = _eval(tmp_path, "--backend", "sgbm:stereo_image_proc", "--data", "synthetic",
                         "--data-root", str(synthetic_root), "--max-frames", "1")
    assert code == 0 and result["model_info"]["preset"] == "stereo_image_proc"
    code, result = _eval(
        tmp_path, "--model", str(stereo_artifact), "--data", "synthetic", "--data-root",
        str(synthetic_root), "--max-frames", "1", "--baseline", "sgbm:stereo_image_proc",
        "--report", str(tmp_path / "report"),
    )
    assert code == 0 and result["baseline"]["backend"] == "sgbm:stereo_image_proc"
    assert "sgbm:stereo_image_proc" in (tmp_path / "report" / "report.html").read_text()
    code, _ = _eval(tmp_path, "--backend", "sgbm:fast", "--data", "synthetic", "--data-root",
                    str(synthetic_root))
    assert code == 2
    assert "unknown SGBM preset 'fast'; known: tuned, stereo_image_proc" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["eval", "--backend", "sgbn", "--data", "synthetic"])
    assert "unknown backend 'sgbn'" in capsys.readouterr().err
    code, _ = _eval(tmp_path, "--data", "synthetic", "--data-root", str(synthetic_root))
    assert code == 2
    assert "backend 'torch' runs a model" in capsys.readouterr().err


#: ``cnd-depth eval --model sgbm[:PRESET]`` on ``synthetic_root`` before SGBM became a backend
#: (OpenCV 5.1.0).
METRICS_BEFORE = {
    "sgbm": {"delta1": 0.7927784170778717, "delta2": 0.9092754389489751,
             "delta3": 0.9359732415437829, "invalid": 0.0, "log10": 0.07964610098915098,
             "rel": 0.24995598831629876, "rmse": 7.67066342892182,
             "rmse_log": 0.3620377066140145, "sq_rel": 4.901521608639917},
    "sgbm:stereo_image_proc": {"delta1": 0.6289860421323988, "delta2": 0.7568367430513397,
                               "delta3": 0.8064500508455584, "invalid": 0.0,
                               "log10": 0.15863646675188606, "rel": 0.6920637292908038,
                               "rmse": 16.006371179128422, "rmse_log": 0.6099026249111499,
                               "sq_rel": 24.515810916557456},
}


@pytest.mark.parametrize("spec", sorted(METRICS_BEFORE))
def test_sgbm_backend_scores_as_before(spec: str, synthetic_root: Path, tmp_path: Path) -> None:
    code, result = _eval(tmp_path, "--backend", spec, "--data", "synthetic", "--data-root",
                         str(synthetic_root))
    assert code == 0 and result["frames"] == 3 and result["model"] is None
    assert result["metrics"] == pytest.approx(METRICS_BEFORE[spec], rel=1e-9, abs=1e-12)


def test_ground_truth_as_prediction_scores_perfectly(synthetic_root: Path) -> None:
    frames = open_dataset("synthetic", synthetic_root)
    result = evaluate_dataset(lambda frame: DepthEstimate(frame.depth, camera=frame.camera),
                             frames)
    assert result["frames"] == 3
    assert result["metrics"]["rel"] == 0.0
    assert result["metrics"]["rmse"] == 0.0
    assert result["metrics"]["delta1"] == 1.0
    doubled = evaluate_dataset(lambda frame: DepthEstimate(2.0 * frame.depth, camera=frame.camera),
                               frames, max_frames=1, max_depth=1e6)
    assert doubled["frames"] == 1
    assert doubled["metrics"]["rel"] == pytest.approx(1.0)
    assert doubled["metrics"]["log10"] == pytest.approx(np.log10(2.0))


def test_only_ground_truth_in_range_is_scored_against_clipped_predictions(
    synthetic_root: Path,
) -> None:
    frame = open_dataset("synthetic", synthetic_root)[0]
    result = evaluate_dataset(
        lambda frame: DepthEstimate(np.full_like(frame.depth, 1e4), camera=frame.camera), [frame],
        min_depth=1.0, max_depth=20.0)
    truth = frame.depth[frame.valid]
    truth = truth[(truth >= 1.0) & (truth <= 20.0)]
    assert result["metrics"]["rel"] == pytest.approx(np.mean((20.0 - truth) / truth), rel=1e-5)
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        evaluate_dataset(lambda frame: DepthEstimate(frame.depth, camera=frame.camera), [frame],
                         min_depth=5.0, max_depth=5.0)


def test_predictor_for_an_artifact_matches_its_camera(
    synthetic_root: Path, stereo_artifact: Path
) -> None:
    frame = open_dataset("synthetic", synthetic_root)[0]
    with open_predictor(str(stereo_artifact), backend="torch", device="cpu") as (predict, info):
        estimate = predict(frame)
    assert info["stereo"] is True
    assert estimate.depth.shape == (HEIGHT, WIDTH)
    assert estimate.depth.dtype == np.float32
    assert estimate.confidence is not None and estimate.confidence.shape == (HEIGHT, WIDTH)


def test_int8_onnxruntime_calibrates_on_other_frames(
    synthetic_root: Path, stereo_artifact: Path, tmp_path: Path
) -> None:
    """INT8's accuracy is measured the way FP32's is, calibrated on a set given apart."""
    calibration = synthetic_folder(tmp_path / "calibration", WIDTH, HEIGHT, 2, seed=12)
    arguments = ["--model", str(stereo_artifact), "--data", "synthetic", "--data-root",
                 str(synthetic_root), "--backend", "onnxruntime"]
    code, fp32 = _eval(tmp_path, *arguments)
    assert code == 0
    code, int8 = _eval(tmp_path, *arguments, "--precision", "int8",
                       "--calib-data", f"synthetic:{calibration}")
    assert code == 0
    assert int8["model_info"]["precision"] == "int8"
    assert int8["frames"] == fp32["frames"] == 3
    # A random net's INT8 error says nothing (docs/models.md has the trained one's); scored alike.
    assert all(math.isfinite(value) for value in int8["metrics"].values())
    assert int8["metrics"] != fp32["metrics"]


def test_bad_input_is_reported_without_a_traceback(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _eval(tmp_path, "--backend", "sgbm", "--data", "nosuchkind", "--data-root", "x")
    assert code == 2
    assert "nosuchkind" in capsys.readouterr().err
    missing = tmp_path / "missing_model"
    code, _ = _eval(
        tmp_path, "--model", str(missing), "--data", "synthetic", "--data-root",
        str(synthetic_root),
    )
    assert code == 2
    assert "missing_model" in capsys.readouterr().err
    code, _ = _eval(
        tmp_path, "--backend", "sgbm", "--data", "synthetic", "--data-root", str(synthetic_root),
        "--max-frames", "0",
    )
    assert code == 2
    assert "max_frames" in capsys.readouterr().err
    code, _ = _eval(
        tmp_path, "--model", str(missing), "--data", "synthetic", "--data-root",
        str(synthetic_root), "--precision", "int8",
    )
    assert code == 2
    assert "--calib-data" in capsys.readouterr().err


def test_a_confidence_threshold_scores_only_the_confident_pixels(synthetic_root: Path) -> None:
    """Half of each frame wrong, and the estimate says so: below the threshold those pixels are
    not scored (the node marks them invalid), and the result says how much was kept."""
    frames = open_dataset("synthetic", synthetic_root)

    def predict(frame: Frame) -> DepthEstimate:
        depth = frame.depth.copy()
        confidence = np.ones_like(depth)
        depth[:, ::2] *= 3.0
        confidence[:, ::2] = 0.2
        return DepthEstimate(depth, confidence, camera=frame.camera)

    everything = evaluate_dataset(predict, frames)
    assert everything["metrics"]["rel"] > 0.5 and "confidence" not in everything
    confident = evaluate_dataset(predict, frames, confidence_threshold=0.5)
    assert confident["metrics"]["rel"] == 0.0
    assert confident["confidence"]["threshold"] == 0.5
    assert 0.45 < confident["confidence"]["kept"] < 0.55
    with pytest.raises(ValueError, match="confidence_threshold"):
        evaluate_dataset(predict, frames, confidence_threshold=1.5)


def test_no_refinement_scores_the_nets_disparity_as_it_is(
    synthetic_root: Path, stereo_artifact: Path, tmp_path: Path
) -> None:
    """``--no-refinement`` (the node's ``disparity_refinement:=false``) reaches the backend and
    the JSON says which ran; the refined and the unrefined scores differ."""
    common = ("--model", str(stereo_artifact), "--data", "synthetic", "--data-root",
              str(synthetic_root), "--device", "cpu")
    (code_on, refined), (code_off, unrefined) = (
        _eval(tmp_path / name, *common, *flags)
        for name, flags in (("on", ()), ("off", ("--no-refinement",)))
    )
    assert code_on == code_off == 0
    assert refined["model_info"]["refinement"] == "on"
    assert unrefined["model_info"]["refinement"] == "off"
    assert refined["metrics"]["rel"] != unrefined["metrics"]["rel"]
