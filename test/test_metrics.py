"""Depth metrics against hand-computed cases, failure accounting and per-frame averaging."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cnd_depth_ros.evaluation.metrics import METRIC_NAMES, MetricAccumulator, depth_metrics


def _hand_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """gt (2, 4, 10, 1) against pred (2, 5, 10, 1.5); the last pixel is masked out and wrong."""
    gt = np.array([[2.0, 4.0], [10.0, 1.0]])
    pred = np.array([[2.0, 5.0], [10.0, 1.5]])
    mask = np.array([[True, True], [True, False]])
    return pred, gt, mask


def test_values_by_hand() -> None:
    metrics = depth_metrics(*_hand_case())
    # Valid errors: 0, 1, 0 metres against 2, 4, 10.
    assert metrics["rel"] == pytest.approx((0 + 1 / 4 + 0) / 3)
    assert metrics["sq_rel"] == pytest.approx((0 + 1 / 4 + 0) / 3)
    assert metrics["rmse"] == pytest.approx(math.sqrt(1 / 3))
    assert metrics["log10"] == pytest.approx(math.log10(5 / 4) / 3)
    assert metrics["rmse_log"] == pytest.approx(math.sqrt(math.log(5 / 4) ** 2 / 3))
    # The ratio 5/4 = 1.25 is not below 1.25.
    assert metrics["delta1"] == pytest.approx(2 / 3)
    assert metrics["delta2"] == 1.0 and metrics["delta3"] == 1.0
    assert metrics["invalid"] == 0.0
    assert tuple(metrics) == METRIC_NAMES


def test_deltas_are_symmetric_in_over_and_under_estimation() -> None:
    gt = np.full(4, 10.0)
    pred = np.array([10.0 * 1.2, 10.0 / 1.2, 10.0 * 1.3, 10.0 / 1.3])
    metrics = depth_metrics(pred, gt, np.ones(4, dtype=bool))
    assert metrics["delta1"] == 0.5 and metrics["delta2"] == 1.0


def test_perfect_prediction() -> None:
    gt = np.random.uniform(1, 80, size=(6, 8))
    metrics = depth_metrics(gt, gt, np.ones_like(gt, dtype=bool))
    for name in ("rel", "sq_rel", "rmse", "log10", "rmse_log", "invalid"):
        assert metrics[name] == 0.0
    for name in ("delta1", "delta2", "delta3"):
        assert metrics[name] == 1.0


def test_torch_and_numpy_inputs_agree() -> None:
    pred, gt, mask = _hand_case()
    from_torch = depth_metrics(
        torch.from_numpy(pred).float()[None, None].requires_grad_(True),
        torch.from_numpy(gt).float()[None, None],
        torch.from_numpy(mask)[None, None],
    )
    for name, value in depth_metrics(pred, gt, mask).items():
        assert from_torch[name] == pytest.approx(value, rel=1e-6)


@pytest.mark.parametrize("failure", [np.nan, np.inf, 0.0, -2.0])
def test_failed_predictions_count_as_failures(failure: float) -> None:
    gt = np.array([1.0, 2.0, 4.0, 8.0])
    pred = np.array([1.0, 2.0, 4.0, failure])
    metrics = depth_metrics(pred, gt, np.ones(4, dtype=bool))
    assert metrics["invalid"] == 0.25
    assert metrics["delta1"] == 0.75 and metrics["delta3"] == 0.75
    for name in ("rel", "sq_rel", "rmse", "log10", "rmse_log"):
        assert metrics[name] == math.inf, name


def test_failed_prediction_outside_the_mask_is_ignored() -> None:
    gt = np.array([1.0, 2.0])
    metrics = depth_metrics(np.array([1.0, np.nan]), gt, np.array([True, False]))
    assert metrics["rmse"] == 0.0 and metrics["invalid"] == 0.0


def test_bad_input_is_rejected_with_a_clear_message() -> None:
    gt = np.ones((3, 3))
    with pytest.raises(ValueError, match="selects no pixel"):
        depth_metrics(gt, gt, np.zeros((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="same shape"):
        depth_metrics(gt, np.ones((3, 4)), np.ones((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="must be bool"):
        depth_metrics(gt, gt, np.ones((3, 3)))
    holes = gt.copy()
    holes[0, 0] = np.nan
    with pytest.raises(ValueError, match="1 pixels whose ground truth"):
        depth_metrics(gt, holes, np.ones((3, 3), dtype=bool))


def test_accumulator_averages_per_frame() -> None:
    accumulator = MetricAccumulator()
    gt = np.full((2, 2), 2.0)
    small = np.array([[True, False], [False, False]])
    accumulator.update(np.full((2, 2), 3.0), gt, small)  # one pixel, error 1 m
    accumulator.update(gt, gt, np.ones((2, 2), dtype=bool))  # four perfect pixels
    assert accumulator.frames == 2
    result = accumulator.compute()
    # Per-frame mean (Eigen / KITTI), not the pixel-pooled 1/5 or sqrt(1/5).
    assert result["rmse"] == pytest.approx(0.5)
    assert result["rel"] == pytest.approx(0.25)
    assert result["delta1"] == pytest.approx(0.5)


def test_accumulator_splits_batches() -> None:
    gt = torch.rand(3, 1, 4, 5) * 10 + 1
    pred = gt * torch.tensor([1.0, 1.1, 2.0]).view(3, 1, 1, 1)
    mask = torch.ones_like(gt, dtype=torch.bool)
    batched = MetricAccumulator()
    batched.update(pred, gt, mask)
    one_by_one = MetricAccumulator()
    for index in range(3):
        one_by_one.update(pred[index, 0], gt[index, 0], mask[index, 0])
    assert batched.frames == one_by_one.frames == 3
    assert batched.compute() == pytest.approx(one_by_one.compute())
    assert batched.compute()["rel"] == pytest.approx((0.0 + 0.1 + 1.0) / 3, rel=1e-5)


def test_accumulator_names_the_bad_frame_and_needs_frames() -> None:
    accumulator = MetricAccumulator()
    with pytest.raises(ValueError, match="no frames"):
        accumulator.compute()
    gt = np.ones((2, 3, 3))
    mask = np.ones_like(gt, dtype=bool)
    mask[1] = False
    with pytest.raises(ValueError, match="frame 1 of the batch: valid_mask selects no pixel"):
        accumulator.update(gt, gt, mask)
    assert accumulator.frames == 0, "a rejected batch adds nothing"
    with pytest.raises(ValueError, match="N x 1 x H x W"):
        accumulator.update(np.ones(3), np.ones(3), np.ones(3, dtype=bool))
