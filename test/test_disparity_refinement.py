"""The stereo net's disparity refined against the camera images (inference/disparity_refinement.py):
exact on a textured pair with a known disparity, an object the net missed found again without a
repeated texture luring it, a no-op where there is nothing to match, and, with the shipped net on
the real KITTI pairs, better than the net alone."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fixtures.shared import SHARED

from cnd_depth_ros.data.registry import open_dataset
from cnd_depth_ros.evaluation.dataset_eval import evaluate_dataset, open_predictor
from cnd_depth_ros.inference.disparity_refinement import DisparityRefinement

KITTI = SHARED / "data" / "kitti2012_stereo"


def _rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _textured_pair(disparity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A left image of smooth random texture and the right image that sees it with
    ``disparity`` (left pixel x matches right pixel x - disparity)."""
    height, width = disparity.shape
    rng = np.random.default_rng(3)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (height, width + 64)).astype(np.float32),
                               (0, 0), 1.2)
    columns = np.arange(width, dtype=np.float32)[None, :] + 32
    rows = np.repeat(np.arange(height, dtype=np.float32)[:, None], width, axis=1)
    left = texture[:, 32:32 + width]
    # The right pixel u shows what the left pixel u + d shows (d taken at the right pixel: the
    # disparity varies along rows only, so it is the same).
    right = cv2.remap(texture, columns + disparity, rows, cv2.INTER_CUBIC)
    return _rgb(left), _rgb(right)


def _ground_plane(height: int = 120, width: int = 160) -> np.ndarray:
    """Disparity growing down the image, 8 to 20 px, at no whole number in particular."""
    return np.repeat(np.linspace(8.0, 20.0, height, dtype=np.float32)[:, None], width, axis=1)


def test_an_error_within_the_search_is_removed_to_a_fraction_of_a_pixel() -> None:
    truth = _ground_plane()
    left, right = _textured_pair(truth)
    net = truth + 1.3  # a net off by 1.3 px: within the 3 px searched at downscale 1
    refined = DisparityRefinement().refine(left, right, net, downscale=1.0)
    inside = np.s_[8:-8, 30:-8]  # away from the borders the window and the right camera miss
    assert np.median(np.abs(refined - truth)[inside]) < 0.1
    assert np.mean(np.abs(refined - truth)[inside] < 0.5) > 0.95


def test_the_search_grows_with_the_downscale() -> None:
    refinement = DisparityRefinement(network_radius=3.0)
    assert [refinement.radius(scale) for scale in (0.5, 1.0, 2.0, 4.45)] == [3, 3, 6, 14]
    truth = _ground_plane()
    left, right = _textured_pair(truth)
    net = truth - 4.0  # out of reach at downscale 1 (3 px), within it at 2 (6 px)
    near = refinement.refine(left, right, net, downscale=1.0)
    far = refinement.refine(left, right, net, downscale=2.0)
    inside = np.s_[8:-8, 30:-8]
    assert np.median(np.abs(near - truth)[inside]) > 1.0
    assert np.median(np.abs(far - truth)[inside]) < 0.1


def test_after_the_half_size_pass_the_full_size_one_restores_sub_pixel_precision() -> None:
    """A net 3x smaller than the camera and off by 5.3 camera pixels: the half-size pass finds
    the surface, the full-size one its fraction."""
    truth = _ground_plane(160, 240) * 2.0
    left, right = _textured_pair(truth)
    refined = DisparityRefinement().refine(left, right, truth + 5.3, downscale=3.0)
    inside = np.s_[10:-10, 60:-10]
    assert np.median(np.abs(refined - truth)[inside]) < 0.1
    assert np.mean(np.abs(refined - truth)[inside] < 0.5) > 0.9


def _foreground_over_background(
    height: int = 100, width: int = 200, board: tuple[slice, slice] = np.s_[30:70, 90:140],
    wall_disparity: int = 10, board_disparity: int = 24, blur: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured board in front of a textured wall: left, right, disparity."""
    rng = np.random.default_rng(5)
    wall, front = (
        cv2.GaussianBlur(rng.uniform(0, 255, (height, width + 2 * wall_disparity)), (0, 0), blur)
        for _ in range(2)
    )
    truth = np.full((height, width), wall_disparity, np.float32)
    truth[board] = board_disparity
    left = wall[:, wall_disparity:wall_disparity + width].copy()
    left[board] = front[board]
    right = wall[:, 2 * wall_disparity:2 * wall_disparity + width].copy()
    rows, columns = board
    right[rows, columns.start - board_disparity:columns.stop - board_disparity] = front[board]
    return _rgb(left), _rgb(right), truth


def test_a_foreground_smeared_over_the_background_is_taken_back() -> None:
    left, right, truth = _foreground_over_background()
    net = cv2.GaussianBlur(truth, (0, 0), 6.0)  # the board bleeds 10-15 px into the wall
    visible = np.zeros_like(truth, bool)
    visible[8:-8, 40:-8] = True
    visible[30:70, 90 - 14:90] = False  # the wall the board hides from the right camera
    wrong = np.abs(net - truth)[visible] > 1.0
    refined = DisparityRefinement(propagation_steps=(8.0, 4.0, 2.0)).refine(
        left, right, net, downscale=2.0)
    still_wrong = np.abs(refined - truth)[visible] > 1.0
    assert wrong.mean() > 0.15
    assert still_wrong.mean() < 0.25 * wrong.mean()  # what is left: the board's top and bottom
    searched_only = DisparityRefinement(propagation_steps=()).refine(left, right, net,
                                                                    downscale=2.0)
    assert (np.abs(searched_only - truth)[visible] > 1.0).mean() > 1.5 * still_wrong.mean()


def test_an_object_the_net_missed_is_found_by_re_seeding() -> None:
    """A pole 32 px wide at 40 px in front of a wall at 12 px, and a net 3x smaller than the
    camera that saw the wall, and something at 40 px elsewhere (the sweep covers the range the
    net uses), but not the pole: 28 px is beyond any search around it."""
    left, right, truth = _foreground_over_background(
        160, 320, np.s_[30:130, 150:182], wall_disparity=12, board_disparity=40, blur=2.0)
    net = np.full_like(truth, 12.0)
    net[-10:, -10:] = 40.0
    pole = np.s_[40:120, 154:178]
    found = DisparityRefinement().refine(left, right, net, downscale=3.0)
    missed = DisparityRefinement(reseed=False).refine(left, right, net, downscale=3.0)
    assert np.mean(np.abs(found - truth)[pole] < 1.0) > 0.9
    assert np.mean(np.abs(missed - truth)[pole] < 1.0) < 0.1
    wall = np.s_[8:-8, 60:120]
    assert np.mean(np.abs(found - truth)[wall] < 1.0) > 0.95


def test_a_repeated_texture_does_not_lure_a_right_disparity_away() -> None:
    """Stripes repeating every 16 px: 8 px, within the range the net uses, matches as well as the
    true 24, and re-seeding keeps the net's."""
    height, width = 120, 240
    columns = np.arange(width + 48, dtype=np.float32)
    rng = np.random.default_rng(9)
    stripes = np.repeat(128 + 80 * np.sin(2 * np.pi * columns / 16.0)[None, :], height, axis=0)
    left, right = (_rgb(image + rng.normal(0, 4, image.shape))
                   for image in (stripes[:, 24:24 + width], stripes[:, 48:48 + width]))
    net = np.full((height, width), 24.0, np.float32)
    net[-10:, -10:] = 4.0
    inside = np.s_[10:-20, 40:-20]
    refined = DisparityRefinement().refine(left, right, net, downscale=3.0)
    assert np.mean(np.abs(refined - 24.0)[inside] < 1.0) > 0.95
    lured = DisparityRefinement(seed_margin=-1.0).refine(left, right, net, downscale=3.0)
    assert np.mean(np.abs(lured - 24.0)[inside] < 1.0) < 0.5  # what the margin is there for


def test_nothing_to_match_keeps_the_nets_disparity_and_unknown_stays_unknown() -> None:
    grey = np.full((60, 80, 3), 128, np.uint8)
    net = np.repeat(np.linspace(5.0, 9.0, 80, dtype=np.float32)[None, :], 60, axis=0)
    net[10:20, 10:20] = np.nan
    refined = DisparityRefinement().refine(grey, grey, net, downscale=2.0)
    assert np.isnan(refined[10:20, 10:20]).all()
    known = np.isfinite(net)
    known[5:25, 5:25] = False  # the 5x5 median next to the unknown block
    np.testing.assert_allclose(refined[known], net[known], atol=1e-5)


def test_a_refined_disparity_is_never_zero_or_negative() -> None:
    truth = np.full((60, 120), 0.4, np.float32)  # far away: under a pixel
    left, right = _textured_pair(truth)
    refined = DisparityRefinement().refine(left, right, truth, downscale=1.0)
    assert (refined > 0).all()


@pytest.mark.parametrize(
    "options",
    [{"window": 1}, {"window": 4}, {"network_radius": 0}, {"propagation_steps": (4, 0)},
     {"fine_radius": 0}, {"seed_window": 6}],
)
def test_bad_settings_are_refused(options: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        DisparityRefinement(**options)


@pytest.mark.skipif(not KITTI.is_dir(), reason=f"shared KITTI sample not at {KITTI}")
def test_the_shipped_net_is_better_refined_on_the_real_kitti_pairs() -> None:
    frames = open_dataset("kitti", KITTI)
    scores = {}
    for refine in (False, True):
        options = {} if refine else {"refinement": None}
        with open_predictor("cnd_stereo", backend="onnxruntime", camera=frames[0].camera,
                            threads=1, **options) as (predict, info):
            scores[refine] = evaluate_dataset(predict, frames)["metrics"]
        assert info["refinement"] == ("on" if refine else "off")
    assert scores[True]["rel"] < 0.9 * scores[False]["rel"]
    assert scores[True]["delta1"] > scores[False]["delta1"]
