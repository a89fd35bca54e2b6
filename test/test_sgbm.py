"""The StereoSGBM baseline, backend ``sgbm``: hole filling, metric depth on a pair with known
disparity, accuracy on the real Middlebury motorcycle pair, bad input, the registry's spelling
(``sgbm``, ``sgbm:PRESET``), and the same depth as before it became a backend."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
from fixtures.artifacts import motorcycle

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.inference.benchmark import StereoInput
from cnd_depth_ros.inference.planned_backend import PlannedBackend
from cnd_depth_ros.inference.registry import (
    available_backends,
    choose_backend,
    create_backend,
    parse_backend_spec,
    takes_model,
)
from cnd_depth_ros.inference.sgbm import SgbmBackend, fill_disparity_holes

NAN = np.nan


def test_holes_take_the_farther_neighbour() -> None:
    disparity = np.array(
        [
            [NAN, 5.0, NAN, NAN, 2.0, NAN],  # left border, gap between 5 and 2, right border
            [NAN, NAN, NAN, NAN, NAN, NAN],  # no valid pixel: the image's smallest disparity
            [3.0, 3.0, 3.0, 3.0, 3.0, 3.0],
        ],
        dtype=np.float32,
    )
    filled = fill_disparity_holes(disparity)
    np.testing.assert_array_equal(
        filled, [[5, 5, 2, 2, 2, 2], [2, 2, 2, 2, 2, 2], [3, 3, 3, 3, 3, 3]]
    )
    assert filled.dtype == np.float32


def test_nothing_to_fill_from_stays_nan() -> None:
    assert np.isnan(fill_disparity_holes(np.full((2, 3), NAN, np.float32))).all()


def test_known_shift_gives_metric_depth() -> None:
    """A random texture shifted by 8 px is a fronto-parallel plane at fx * B / 8."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (96, 200, 3), dtype=np.uint8), (3, 3), 0)
    left, right = texture[:, :128], texture[:, 8:136]
    camera = PinholeCamera(128, 96, 100.0, 100.0, 63.5, 47.5, baseline=0.2)
    depth = SgbmBackend().infer(left, right, camera=camera)
    assert depth.shape == (96, 128) and np.isfinite(depth).all()
    inner = depth[8:-8, 40:-8]
    assert np.median(inner) == pytest.approx(100.0 * 0.2 / 8, rel=1e-3)
    assert np.mean(np.abs(inner - 2.5) < 0.1) > 0.95


@pytest.mark.parametrize("size", [(256, 160), None], ids=["network-size", "camera-size"])
def test_motorcycle_is_dense_and_accurate(size: tuple[int, int] | None) -> None:
    frame = motorcycle()
    matcher = SgbmBackend() if size is None else SgbmBackend(width=size[0], height=size[1])
    depth = matcher.infer(frame.left, frame.right, camera=frame.camera)
    valid = frame.valid
    assert depth.shape == frame.depth.shape
    assert np.isfinite(depth[valid]).all()  # every ground-truth pixel gets an estimate
    relative = np.abs(depth[valid] - frame.depth[valid]) / frame.depth[valid]
    assert np.median(relative) < 0.05
    assert np.mean(relative < 0.25) > 0.85


def test_the_stereo_image_proc_preset_is_its_disparity_node_as_shipped() -> None:
    """image_pipeline's disparity_node defaults with stereo_algorithm:=1, whatever the size,
    and still a usable depth map on the motorcycle."""
    frame = motorcycle()
    matcher = SgbmBackend(preset="stereo_image_proc", width=256, height=160)
    depth = matcher.infer(frame.left, frame.right, camera=frame.camera)
    (created,) = matcher._matchers.values()
    assert (created.getBlockSize(), created.getNumDisparities(), created.getP1(),
            created.getP2()) == (15, 64, 200, 400)
    assert created.getMode() == cv2.STEREO_SGBM_MODE_SGBM
    assert (created.getUniquenessRatio(), created.getSpeckleWindowSize(),
            created.getSpeckleRange(), created.getPreFilterCap()) == (15, 100, 4, 31)
    relative = np.abs(depth[frame.valid] - frame.depth[frame.valid]) / frame.depth[frame.valid]
    assert np.median(relative) < 0.1
    assert matcher.info()["preset"] == "stereo_image_proc"
    with pytest.raises(ValueError, match="unknown SGBM preset 'stereo_proc'"):
        SgbmBackend(preset="stereo_proc")


def test_without_filling_holes_are_nan() -> None:
    frame = motorcycle()
    depth = SgbmBackend(fill_holes=False, width=256, height=160).infer(
        frame.left, frame.right, camera=frame.camera
    )
    assert 0.05 < np.isnan(depth).mean() < 0.5


def test_bad_input_is_rejected() -> None:
    frame = motorcycle()
    with pytest.raises(ValueError, match="right image"):
        SgbmBackend().infer(frame.left, camera=frame.camera)
    with pytest.raises(ValueError, match="baseline"):
        SgbmBackend().infer(frame.left, frame.right, camera=replace(frame.camera, baseline=None))
    with pytest.raises(ValueError, match="right image must be HxWx3 uint8"):
        SgbmBackend().infer(frame.left, frame.right[:, :, 0], camera=frame.camera)
    with pytest.raises(ValueError, match="right image is 741x400 but the camera is 741x500"):
        SgbmBackend().infer(frame.left, frame.right[:400], camera=frame.camera)
    with pytest.raises(ValueError, match="block_size"):
        SgbmBackend(block_size=4)
    with pytest.raises(ValueError, match="max_disparity"):
        SgbmBackend(max_disparity=0)


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="both height and width"):
        SgbmBackend(width=64)
    with pytest.raises(ValueError, match="threads"):
        SgbmBackend(threads=0)
    with pytest.raises(ValueError, match="'gpu'"):
        SgbmBackend(device="gpu")


def test_registered_as_sgbm_with_its_preset_after_a_colon() -> None:
    """``sgbm`` is a backend of the registry, without a model; ``sgbm:PRESET`` picks the
    preset, plain ``sgbm`` is ``tuned``, an unknown preset is named with the known ones."""
    assert "sgbm" in available_backends()
    assert not takes_model("sgbm") and not takes_model("sgbm:stereo_image_proc")
    assert takes_model("torch") and takes_model("auto")
    assert parse_backend_spec("sgbm") == ("sgbm", {})
    assert parse_backend_spec("sgbm:stereo_image_proc") == ("sgbm", {"preset": "stereo_image_proc"})
    assert create_backend("sgbm").info()["preset"] == "tuned"
    backend = create_backend("sgbm:stereo_image_proc", "any model: ignored")
    assert isinstance(backend, SgbmBackend) and backend.preset == "stereo_image_proc"
    known = "known: tuned, stereo_image_proc"
    with pytest.raises(ValueError, match=f"unknown SGBM preset 'fast'; {known}"):
        create_backend("sgbm:fast")
    with pytest.raises(ValueError, match="does not take"):
        create_backend("sgbm", precision="int8")
    with pytest.raises(ValueError, match="give one"):
        create_backend("sgbm:tuned", preset="stereo_image_proc")


def test_auto_never_picks_sgbm() -> None:
    for device in (None, "cpu", "cuda"):
        assert choose_backend("cnd_stereo", device)[0] != "sgbm"


def test_planned_at_the_camera_size_or_the_size_asked_for() -> None:
    """Nothing to plan: without ``input_size`` SGBM matches at each camera's size, whatever the
    pixel budget; the model a caller passes is ignored."""
    frame = motorcycle()
    runner = PlannedBackend("sgbm", "cnd_stereo", pixel_budget=1024, camera=frame.camera)
    assert runner.model is None and runner.metadata is None and runner.stereo
    assert runner.prepare(frame.camera) is None and runner.plans == []
    assert runner.backend.input_size is None
    depth = runner.infer(frame.left, frame.right, camera=frame.camera)
    direct = SgbmBackend().infer(frame.left, frame.right, camera=frame.camera)
    np.testing.assert_array_equal(depth, direct)
    assert "pixel_budget" not in runner.info()
    sized = PlannedBackend("sgbm", None, input_size=(256, 160))
    assert sized.backend.input_size == (256, 160)
    assert sized.info()["input"] == "256x160"


@pytest.mark.parametrize(
    ("preset", "size", "finite", "total"),
    [("tuned", (64, 48), 21600, 65228.28486871719),
     ("stereo_image_proc", (128, 80), 21600, 62356.24548482895)],
)
def test_bench_depth_as_before_it_became_a_backend(
    preset: str, size: tuple[int, int], finite: int, total: float
) -> None:
    """What ``bench`` times, from a 180x120 camera at a network's input size: the numbers the
    old ``SgbmMatcher(preset=..., working_size=size)`` gave on this machine's OpenCV."""
    frame = motorcycle()
    pair = StereoInput(frame.left, frame.right, frame.camera).resized(180, 120)
    runner = PlannedBackend(f"sgbm:{preset}", None, input_size=size, camera=pair.camera)
    depth = runner.infer(pair.left, pair.right, camera=pair.camera)
    assert depth.shape == (120, 180) and int(np.isfinite(depth).sum()) == finite
    assert float(np.nansum(depth.astype(np.float64))) == pytest.approx(total, rel=1e-9)
