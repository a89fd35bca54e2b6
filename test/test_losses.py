"""Properties of the paper's loss (eq. 2-3) and of berHu, on analytic planes and hand-made cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from cnd_depth_ros.training.losses import (
    BerHuLoss,
    ExtendedDepthLoss,
    StereoDepthLoss,
    disparity_loss,
    extended_loss,
    normal_orthogonality_loss,
    scale_invariant_log_loss,
)

HEIGHT, WIDTH = 12, 16
CAMERA = torch.tensor([[20.0, 22.0, 7.5, 5.5, 0.1]], dtype=torch.float64)


def _plane(normal: tuple[float, float, float], offset: float = -3.0) -> tuple[torch.Tensor, ...]:
    """Depth (1 x 1 x H x W) and normals (1 x 3 x H x W) of the plane ``n . P = offset``."""
    fx, fy, cx, cy, _ = CAMERA[0].tolist()
    n = torch.tensor(normal, dtype=torch.float64)
    n = n / n.norm()
    v, u = torch.meshgrid(
        torch.arange(HEIGHT, dtype=torch.float64),
        torch.arange(WIDTH, dtype=torch.float64),
        indexing="ij",
    )
    rays = torch.stack(((u - cx) / fx, (v - cy) / fy, torch.ones_like(u)))
    depth = offset / (rays * n.view(3, 1, 1)).sum(0)
    return depth[None, None], n.view(1, 3, 1, 1).expand(1, 3, HEIGHT, WIDTH).clone()


def _tilted(degrees: float) -> tuple[float, float, float]:
    """A camera-facing normal tilted by ``degrees`` about the x axis."""
    angle = math.radians(degrees)
    return (0.0, math.sin(angle), -math.cos(angle))


def _all_valid(depth: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(depth, dtype=torch.bool)


def test_perfect_prediction_gives_zero() -> None:
    depth, normals = _plane(_tilted(30.0))
    mask = _all_valid(depth)
    assert ExtendedDepthLoss()(depth, depth, normals, mask, CAMERA).item() == pytest.approx(
        0.0, abs=1e-12
    )
    assert BerHuLoss()(depth, depth, normals, mask).item() == 0.0


def test_scale_invariant_log_loss_by_hand() -> None:
    gt = torch.ones(1, 1, 1, 2)
    pred = torch.tensor([[[[2.0, 1.0]]]])
    mask = _all_valid(gt)
    # d = (log 2, 0): mean(d^2) = log(2)^2 / 2, mean(d)^2 = log(2)^2 / 4.
    expected = math.log(2) ** 2 * (1 / 2 - 0.5 / 4)
    assert scale_invariant_log_loss(pred, gt, mask).item() == pytest.approx(expected)


@pytest.mark.parametrize("scale", [0.5, 2.0, 10.0])
def test_second_part_forgives_a_global_scale(scale: float) -> None:
    gt = torch.rand(2, 1, HEIGHT, WIDTH, dtype=torch.float64) * 20 + 1
    mask = _all_valid(gt)
    # For a prediction off by a constant factor d = log(scale) everywhere, so the loss is
    # (1 - lambda) log(scale)^2: fully forgiven at lambda = 1, half at the paper's 0.5.
    for weight in (0.0, 0.5, 1.0):
        loss = scale_invariant_log_loss(gt * scale, gt, mask, scale_invariance=weight)
        assert loss.item() == pytest.approx((1 - weight) * math.log(scale) ** 2, abs=1e-6)
    pred = torch.rand_like(gt) * 20 + 1
    torch.testing.assert_close(
        scale_invariant_log_loss(pred * scale, gt, mask, scale_invariance=1.0),
        scale_invariant_log_loss(pred, gt, mask, scale_invariance=1.0),
    )


@pytest.mark.parametrize("phi", [1.0, 1.5, 2.0, 3.0])
def test_phi_relation(phi: float) -> None:
    depth, normals = _plane(_tilted(20.0))
    pred, _ = _plane(_tilted(35.0), offset=-2.5)
    mask = _all_valid(depth)
    loss = ExtendedDepthLoss(phi)
    depth_loss = scale_invariant_log_loss(pred, depth, mask) + normal_orthogonality_loss(
        pred, normals, mask, CAMERA
    )
    assert depth_loss.item() > 0.01
    torch.testing.assert_close(loss.depth_loss(pred, depth, normals, mask, CAMERA), depth_loss)
    expected = (abs(depth_loss.item()) + 1) ** phi - 1
    assert loss(pred, depth, normals, mask, CAMERA).item() == pytest.approx(expected)
    assert extended_loss(depth_loss, phi).item() == pytest.approx(expected)
    if phi == 1.0:
        assert expected == pytest.approx(depth_loss.item())


def test_normal_term_is_zero_for_an_exact_plane_and_grows_with_the_slope_error() -> None:
    gt_depth, normals = _plane(_tilted(25.0))
    mask = _all_valid(gt_depth)
    assert normal_orthogonality_loss(gt_depth, normals, mask, CAMERA).item() == pytest.approx(
        0.0, abs=1e-12
    )
    # A predicted plane through the same centre point but with a wrong tilt.
    losses = []
    for error in (2.0, 5.0, 10.0, 20.0):
        pred, _ = _plane(_tilted(25.0 + error))
        losses.append(normal_orthogonality_loss(pred, normals, mask, CAMERA).item())
    assert all(a < b for a, b in itertools.pairwise(losses)), losses
    assert losses[0] > 0


def test_normal_term_without_camera_is_the_image_plane_approximation() -> None:
    facing, facing_normals = _plane((0.0, 0.0, -1.0))
    mask = _all_valid(facing)
    assert normal_orthogonality_loss(facing, facing_normals, mask).item() == 0.0
    small, _ = _plane(_tilted(5.0))
    large, _ = _plane(_tilted(15.0))
    assert (
        0
        < normal_orthogonality_loss(small, facing_normals, mask).item()
        < normal_orthogonality_loss(large, facing_normals, mask).item()
    )


def test_values_under_the_mask_change_nothing() -> None:
    gt, normals = _plane(_tilted(20.0))
    pred = gt * (1 + 0.1 * torch.rand_like(gt))
    mask = torch.rand_like(gt) < 0.6
    garbage = ~mask
    noisy_gt = torch.where(garbage, torch.nan, gt)
    noisy_pred = torch.where(garbage, -1e6, pred)
    noisy_normals = torch.where(garbage, torch.inf, normals)
    for loss in (ExtendedDepthLoss(), BerHuLoss()):
        clean_pred = pred.clone().requires_grad_(True)
        dirty_pred = noisy_pred.clone().requires_grad_(True)
        clean = loss(clean_pred, gt, normals, mask, CAMERA)
        dirty = loss(dirty_pred, noisy_gt, noisy_normals, mask, CAMERA)
        torch.testing.assert_close(dirty, clean)
        clean.backward()
        dirty.backward()
        assert clean_pred.grad is not None and dirty_pred.grad is not None
        torch.testing.assert_close(dirty_pred.grad, clean_pred.grad)
        assert (dirty_pred.grad[garbage] == 0).all()


def test_images_are_weighted_equally_and_empty_ones_skipped() -> None:
    gt = torch.ones(3, 1, 4, 4)
    pred = gt.clone()
    pred[0] = 2.0
    mask = torch.zeros_like(gt, dtype=torch.bool)
    mask[0, 0, 0, 0] = True  # one valid pixel, log error log(2)
    mask[1] = True  # sixteen perfect pixels
    # Image 2 has no valid pixel at all.
    per_image_mean = (0.5 * math.log(2) ** 2 + 0.0) / 2
    assert scale_invariant_log_loss(pred, gt, mask).item() == pytest.approx(per_image_mean)


def test_sparse_ground_truth_uses_only_pairs_of_valid_pixels() -> None:
    gt, normals = _plane(_tilted(10.0))
    wrong, _ = _plane(_tilted(40.0))
    rows, cols = torch.meshgrid(torch.arange(HEIGHT), torch.arange(WIDTH), indexing="ij")
    checkerboard = ((rows + cols) % 2 == 0)[None, None]
    # No two valid pixels are neighbours, so there is no tangent to judge.
    assert normal_orthogonality_loss(wrong, normals, checkerboard, CAMERA).item() == 0.0
    lidar = torch.rand_like(gt) < 0.3
    pred = wrong.clone().requires_grad_(True)
    loss = ExtendedDepthLoss()(pred, gt, normals, lidar, CAMERA)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    assert (pred.grad[~lidar] == 0).all()


def test_unknown_normals_skip_only_the_normal_term() -> None:
    gt, normals = _plane(_tilted(10.0))
    wrong, _ = _plane(_tilted(40.0))
    mask = _all_valid(gt)
    unknown = torch.zeros_like(normals)
    assert normal_orthogonality_loss(wrong, unknown, mask, CAMERA).item() == 0.0
    loss = ExtendedDepthLoss()
    torch.testing.assert_close(
        loss.depth_loss(wrong, gt, unknown, mask, CAMERA), scale_invariant_log_loss(wrong, gt, mask)
    )


def test_no_valid_pixel_gives_zero_and_a_usable_graph() -> None:
    pred = torch.rand(2, 1, HEIGHT, WIDTH, requires_grad=True)
    nothing = torch.zeros_like(pred, dtype=torch.bool)
    for loss in (ExtendedDepthLoss(), BerHuLoss()):
        value = loss(pred, torch.zeros_like(pred), torch.zeros(2, 3, HEIGHT, WIDTH), nothing)
        value.backward()
        assert value.item() == 0.0
        assert pred.grad is not None and (pred.grad == 0).all()


def test_gradients_are_finite_for_a_net_at_initialisation() -> None:
    gt, normals = _plane(_tilted(15.0))
    pred = (torch.randn_like(gt) * 0.1).requires_grad_(True)  # about half the depths are <= 0
    for camera in (CAMERA, None):
        pred.grad = None
        ExtendedDepthLoss()(pred, gt, normals, _all_valid(gt), camera).backward()
        assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_minimising_the_loss_recovers_a_plane() -> None:
    """The loss is usable for training: gradient descent finds a plane's tilt and distance."""
    gt, normals = _plane(_tilted(20.0), offset=-3.0)
    _, fy, _, cy, _ = CAMERA[0].tolist()
    ray_y = ((torch.arange(HEIGHT, dtype=torch.float64) - cy) / fy).view(1, 1, HEIGHT, 1)
    tilt = torch.zeros((), dtype=torch.float64, requires_grad=True)
    log_distance = torch.tensor(math.log(5.0), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.Adam([tilt, log_distance], lr=0.05)
    loss_fn = ExtendedDepthLoss()
    mask = _all_valid(gt)
    for _ in range(150):
        optimiser.zero_grad()
        # The plane (0, sin t, -cos t) . P = -distance, seen through each pixel's ray.
        pred = log_distance.exp() / (torch.cos(tilt) - torch.sin(tilt) * ray_y)
        loss_fn(pred.expand(1, 1, HEIGHT, WIDTH), gt, normals, mask, CAMERA).backward()
        optimiser.step()
    assert math.degrees(tilt.item()) == pytest.approx(20.0, abs=1.5)
    assert log_distance.exp().item() == pytest.approx(3.0, rel=0.01)


def test_berhu_by_hand() -> None:
    gt = torch.full((1, 1, 1, 3), 5.0)
    pred = torch.tensor([[[[5.1, 6.0, 100.0]]]])
    mask = torch.tensor([[[[True, True, False]]]])
    # Residuals 0.1 and 1.0, c = 0.2: 0.1 stays linear, 1.0 is (1 + 0.04) / 0.4 = 2.6.
    loss = BerHuLoss()(pred, gt, torch.zeros(1, 3, 1, 3), mask)
    assert loss.item() == pytest.approx((0.1 + 2.6) / 2)


def test_disparity_loss_by_hand() -> None:
    """fx * B = 2 px m: ground truth 1 m and 2 m is disparity 2 and 1 px; predictions 0.5 m and
    2 m are 4 and 1 px, so the errors are 2 px (Huber: 1.5) and 0; the masked pixel is skipped."""
    camera = torch.tensor([[20.0, 20.0, 1.0, 0.0, 0.1]])
    gt = torch.tensor([[[[1.0, 2.0, 4.0]]]])
    pred = torch.tensor([[[[0.5, 2.0, 1e-9]]]])
    mask = torch.tensor([[[[True, True, False]]]])
    assert disparity_loss(pred, gt, mask, camera).item() == pytest.approx(1.5 / 2)


def test_stereo_loss_adds_the_disparity_term() -> None:
    depth, normals = _plane(_tilted(30.0))
    mask = _all_valid(depth)
    stereo = StereoDepthLoss(disparity_weight=2.0)
    assert stereo(depth, depth, normals, mask, CAMERA).item() == pytest.approx(0.0, abs=1e-9)
    wrong = depth * 1.3
    expected = ExtendedDepthLoss()(wrong, depth, normals, mask, CAMERA) + 2.0 * disparity_loss(
        wrong, depth, mask, CAMERA
    )
    assert stereo(wrong, depth, normals, mask, CAMERA).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="camera"):
        stereo(depth, depth, normals, mask)
    with pytest.raises(ValueError, match="disparity_weight"):
        StereoDepthLoss(disparity_weight=-1.0)


def test_bad_arguments_are_rejected() -> None:
    depth = torch.ones(1, 1, 4, 4)
    normals = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="bool"):
        ExtendedDepthLoss()(depth, depth, normals, torch.ones_like(depth))
    with pytest.raises(ValueError, match="gt_depth has shape"):
        ExtendedDepthLoss()(depth, torch.ones(1, 1, 4, 5), normals, _all_valid(depth))
    with pytest.raises(ValueError, match="gt_normals"):
        ExtendedDepthLoss()(depth, depth, torch.zeros(1, 1, 4, 4), _all_valid(depth))
    with pytest.raises(ValueError, match="N x 5"):
        ExtendedDepthLoss()(depth, depth, normals, _all_valid(depth), torch.ones(1, 4))
    for bad in (0.0, -1.0, np.inf):
        with pytest.raises(ValueError, match="phi"):
            ExtendedDepthLoss(bad)
    with pytest.raises(ValueError, match="scale_invariance"):
        ExtendedDepthLoss(scale_invariance=1.5)
    with pytest.raises(ValueError, match="threshold"):
        BerHuLoss(threshold=0.0)
