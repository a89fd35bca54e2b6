"""The network input planner and the backend that follows it (real torch and ONNX Runtime)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures.artifacts import SMALL, make_artifact

from cnd_depth_ros import cli
from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.inference.export import export_onnx
from cnd_depth_ros.inference.input_plan import (
    DEFAULT_PIXEL_BUDGET,
    default_pixel_budget,
    model_disparity_range,
    plan_input,
)
from cnd_depth_ros.inference.planned_backend import PlannedBackend
from cnd_depth_ros.models.artifact import read_metadata


def _camera(
    width: int, height: int, fx: float = 500.0, baseline: float | None = 0.1
) -> PinholeCamera:
    return PinholeCamera(width, height, fx, fx, (width - 1) / 2, (height - 1) / 2, baseline)


@pytest.mark.parametrize(
    ("width", "height"),
    [(1226, 370), (1242, 375), (1282, 1110), (741, 500), (640, 480), (1280, 720), (2048, 1536)],
)
@pytest.mark.parametrize("budget", [20_000, 76_800, 307_200])
def test_plans_keep_the_aspect_ratio_within_the_budget(width: int, height: int,
                                                       budget: int) -> None:
    plan = plan_input(_camera(width, height), pixel_budget=budget)
    assert plan.width % 16 == 0 and plan.height % 16 == 0
    assert plan.width * plan.height <= budget
    assert abs(math.log((plan.width / plan.height) / (width / height))) <= math.log(1.08)
    # The budget is used, not only respected: what the rounding to 16 px leaves is small.
    assert plan.width * plan.height > 0.7 * min(budget, width * height)
    assert (plan.camera_width, plan.camera_height) == (width, height)


def test_a_car_camera_is_not_squeezed_into_the_training_size() -> None:
    plan = plan_input(_camera(1226, 370), pixel_budget=DEFAULT_PIXEL_BUDGET["cpu"])
    assert plan.size == (480, 144)
    assert plan.limited_by == "pixel budget"
    assert plan.describe() == ("camera 1226x370 -> network input 480x144 (69120 px, limited by "
                               "the pixel budget)")
    assert plan.to_json() == {"camera": "1226x370", "network": "480x144", "pixel_budget": 76800,
                              "limited_by": "pixel budget"}


def test_a_small_camera_is_never_upsampled() -> None:
    plan = plan_input(_camera(320, 240), pixel_budget=DEFAULT_PIXEL_BUDGET["cuda"])
    assert (plan.size, plan.limited_by) == ((320, 240), "camera size")


def test_the_nearest_depth_fits_the_matcher() -> None:
    """fx * B / min_depth = 500 * 0.1 / 0.25 = 200 px at the camera; 92 px fit the matcher, so
    the scale is at most 0.46."""
    camera = _camera(640, 480)
    plan = plan_input(camera, pixel_budget=307_200, disparity_range=92.0, min_depth=0.25)
    assert plan.limited_by == "disparity range"
    assert plan.size == (288, 224)
    assert plan.scale * camera.fx * camera.baseline / 0.25 <= 92.0
    unlimited = plan_input(camera, pixel_budget=307_200, disparity_range=92.0, min_depth=0.0)
    assert unlimited.size == (640, 480)
    mono = plan_input(_camera(640, 480, baseline=None), pixel_budget=307_200,
                      disparity_range=92.0, min_depth=0.25)
    assert mono.size == (640, 480)


def test_bad_budgets_and_depths_are_rejected() -> None:
    with pytest.raises(ValueError, match="pixel_budget must be at least 1024"):
        plan_input(_camera(640, 480), pixel_budget=1000)
    with pytest.raises(ValueError, match="min_depth"):
        plan_input(_camera(640, 480), pixel_budget=76_800, min_depth=-1.0)


def test_defaults_by_device() -> None:
    assert default_pixel_budget(None) == default_pixel_budget("cpu") == 320 * 240
    assert default_pixel_budget("cuda:1") == 640 * 480
    assert model_disparity_range(read_metadata("cnd_stereo")) == 92.0
    assert model_disparity_range(read_metadata("cnd_mono")) is None


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("plan"), "cnd_micro", **SMALL)


def _pair(camera: PinholeCamera) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    left = rng.integers(0, 256, (camera.height, camera.width, 3), np.uint8)
    return left, np.roll(left, -4, axis=1)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_the_backend_follows_the_camera(micro: Path, backend: str) -> None:
    wide, square = _camera(192, 64), _camera(96, 96)
    runner = PlannedBackend(backend, micro, pixel_budget=64 * 48, camera=wide, threads=1)
    try:
        assert runner.backend.input_size == (96, 32)
        first = runner.plan
        assert first is not None and first.size == (96, 32)
        assert runner.prepare(wide) is None  # the same camera: nothing planned again
        depth = runner.infer(*_pair(square), camera=square)
        assert depth.shape == (96, 96)
        assert runner.backend.input_size == (48, 48)
        assert [plan.size for plan in runner.plans] == [(96, 32), (48, 48)]
        info = runner.info()
        assert info["input"] == "48x48" and info["pixel_budget"] == 64 * 48
        assert info["input plan"].startswith("camera 96x96 -> network input 48x48")
    finally:
        runner.close()


def test_a_fixed_input_size_is_used_for_every_camera(micro: Path) -> None:
    runner = PlannedBackend("torch", micro, input_size=(64, 32), camera=_camera(640, 480))
    assert runner.backend.input_size == (64, 32)
    assert runner.plan is not None and runner.plan.limited_by == "size asked for"
    runner.infer(*_pair(_camera(96, 96)), camera=_camera(96, 96))
    assert runner.backend.input_size == (64, 32)


def test_a_static_onnx_file_keeps_its_size_and_says_what_it_wanted(
    micro: Path, tmp_path: Path
) -> None:
    onnx_path = export_onnx(micro, tmp_path / "micro.onnx", height=48, width=64)
    runner = PlannedBackend("onnxruntime", onnx_path, pixel_budget=96 * 96, threads=1)
    camera = _camera(96, 96)
    depth = runner.infer(*_pair(camera), camera=camera)
    assert depth.shape == (96, 96)
    assert runner.backend.input_size == (64, 48)
    assert runner.plan is not None and runner.plan.limited_by == "fixed by the model file"
    assert runner.wanted is not None and runner.wanted.size == (96, 96)
    assert runner.info()["planned input"] == "96x96"


@pytest.mark.parametrize("name", ["torch", "sgbm"])
@pytest.mark.parametrize(
    ("camera_size", "output_size", "with_image"),
    [((192, 128), None, ()),  # the camera's size: nothing resized to it
     ((192, 128), (96, 64), ("torch", "sgbm")),  # the input's size: area-averaged on the way
     ((192, 128), (48, 32), ()),  # another size
     # Enlarged to the input: bilinear for a network, area-resized for SGBM's matching.
     ((48, 32), (96, 64), ("sgbm",))],
)
def test_the_estimate_is_in_the_camera_at_the_output_size(
    micro: Path, name: str, camera_size: tuple[int, int], output_size: tuple[int, int] | None,
    with_image: tuple[str, ...],
) -> None:
    """Whatever the backend, the estimate's camera is the input camera at the output size, and
    the left image it brings is the one the outputs would make: area-averaged to that size."""
    camera = _camera(*camera_size)
    runner = PlannedBackend(name, micro, input_size=(96, 64), camera=camera, threads=1)
    left, right = _pair(camera)
    estimate = runner.estimate(left, right, camera=camera, output_size=output_size)
    width, height = output_size or camera_size
    assert estimate.depth.shape == (height, width)
    assert estimate.camera == (camera if output_size is None else camera.resized(width, height))
    assert (estimate.image is not None) == (name in with_image)
    if estimate.image is not None:
        expected = cv2.resize(left, (width, height), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(estimate.image, expected)


def test_min_depth_changes_plan_again(tmp_path: Path) -> None:
    stereo = make_artifact(tmp_path, "cnd_stereo", **SMALL)
    camera = _camera(256, 192, fx=200.0, baseline=0.2)
    runner = PlannedBackend("torch", stereo, pixel_budget=256 * 192, camera=camera)
    assert runner.backend.input_size == (256, 192)
    runner.min_depth = 1.0  # 40 px at the camera: fits
    runner.prepare(camera)
    assert runner.backend.input_size == (256, 192)
    runner.min_depth = 0.2  # 200 px at the camera: at most 0.46 of it
    assert runner.prepare(camera) is not None
    assert runner.backend.input_size == (112, 80)  # 0.44 of the camera
    assert runner.plan is not None and runner.plan.limited_by == "disparity range"


def test_eval_records_the_plan(micro: Path, tmp_path: Path) -> None:
    report = tmp_path / "eval.json"
    code = cli.main(["eval", "--model", str(micro), "--data", "motorcycle", "--pixel-budget",
                     "5000", "--no-progress", "--json", str(report)])
    assert code == 0
    assert json.loads(report.read_text())["input_plans"] == [
        {"camera": "741x500", "network": "80x48", "pixel_budget": 5000,
         "limited_by": "pixel budget"}
    ]


@pytest.mark.parametrize("size", ["640", "0x16", "axb"])
def test_bad_input_sizes_are_rejected_by_the_commands(
    size: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["eval", "--model", "cnd_micro", "--data", "motorcycle", "--input-size", size])
    assert exit_info.value.code == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
