"""The self-supervised stereo objective: reconstruction, masks, smoothness, consistency.

Pairs are real renderings of the synthetic street (exact depth in both views, so the true
disparity and the true occlusions are known) and an exactly shifted image (where a perfect
disparity must rebuild the left view exactly). Nothing is mocked.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.synthetic.dataset_writer import kitti_like_camera, render_frame
from cnd_depth_ros.synthetic.scene import STREET_STYLES, StreetStyle
from cnd_depth_ros.training.self_supervised import (
    SelfSupervisedLoss,
    edge_aware_smoothness,
    photometric_error,
    reconstruction_mask,
    sample_horizontally,
    visible_in_right,
)

WIDTH, HEIGHT = 96, 64


@dataclass(frozen=True)
class Pair:
    camera: PinholeCamera
    left: torch.Tensor
    right: torch.Tensor
    disparity: torch.Tensor  # of the left view, 0 on sky
    right_disparity: torch.Tensor


def _image(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.transpose(2, 0, 1).copy()).float()[None] / 255.0


def _disparity(depth: np.ndarray, camera: PinholeCamera) -> torch.Tensor:
    assert camera.baseline is not None
    values = np.where(np.isfinite(depth), camera.fx * camera.baseline / depth, 0.0)
    return torch.from_numpy(values).float()[None, None]


@pytest.fixture(scope="module")
def rendered() -> Pair:
    """A noiseless rendered street: the left view is exactly the right one seen through the
    true disparity, up to bilinear interpolation."""
    camera = kitti_like_camera(WIDTH, HEIGHT)
    frame = render_frame(5, 0, camera, StreetStyle(sensor_noise=(0.0, 0.0)))
    return Pair(
        camera,
        _image(frame.left),
        _image(frame.right),
        _disparity(frame.depth, camera),
        _disparity(frame.right_depth, camera),
    )


def _shifted_pair(shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random image and its copy ``shift`` pixels to the left: a pair whose true
    disparity is ``shift`` everywhere, rebuilt without interpolation."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, HEIGHT // 4, WIDTH // 4 + 4, generator=generator)
    scene = torch.nn.functional.interpolate(coarse, scale_factor=4, mode="bilinear")
    left = scene[..., shift : shift + WIDTH]
    right = scene[..., 2 * shift : 2 * shift + WIDTH]
    return left, right


def test_photometric_loss_is_zero_for_the_perfect_disparity_and_grows_with_error() -> None:
    left, right = _shifted_pair(3)
    loss = SelfSupervisedLoss()
    truth = torch.full((1, 1, HEIGHT, WIDTH), 3.0)
    terms = loss(left, right, truth, truth)
    assert terms["photometric"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["consistency"].item() == 0.0
    assert terms["smoothness"].item() == 0.0
    errors = [loss(left, right, truth + e, truth + e)["photometric"].item() for e in (0.5, 1, 2)]
    assert 0.01 < errors[0] < errors[1] < errors[2]


def test_true_disparity_reconstructs_a_rendered_pair_and_wrong_ones_do_not(rendered: Pair) -> None:
    def error(disparity: torch.Tensor) -> float:
        warped, _ = sample_horizontally(rendered.right, disparity)
        mask = reconstruction_mask(disparity)
        return photometric_error(warped, rendered.left)[mask].mean().item()

    truth = error(rendered.disparity)
    assert truth < 0.04  # interpolation between pixel centres only
    wrong = [error(rendered.disparity * scale) for scale in (1.1, 1.3, 1.6)]
    assert 1.5 * truth < wrong[0] < wrong[1] < wrong[2]
    assert error(rendered.disparity + 1.0) > 3 * truth


def test_the_foggy_domain_shift_keeps_the_stereo_geometry_exact() -> None:
    """Fog fades by depth along the optical axis, which both views share: the true disparity
    still rebuilds the left view, so the shifted domain is fair ground for self-supervision."""
    camera = kitti_like_camera(WIDTH, HEIGHT)
    foggy = replace(STREET_STYLES["foggy_dusk"], sensor_noise=(0.0, 0.0))
    frame = render_frame(5, 0, camera, foggy)
    clear = render_frame(5, 0, camera, StreetStyle(sensor_noise=(0.0, 0.0)))
    assert np.abs(frame.left.astype(int) - clear.left.astype(int)).mean() > 20
    disparity = _disparity(frame.depth, camera)
    warped, _ = sample_horizontally(_image(frame.right), disparity)
    error = photometric_error(warped, _image(frame.left))[reconstruction_mask(disparity)]
    assert error.mean().item() < 0.04


def test_masks_exclude_occluded_and_out_of_view_pixels_exactly() -> None:
    # Background at disparity 2, a nearer box at disparity 8 over columns 20-29: the right
    # camera cannot see the 6 background columns left of the box (14-19), nor columns 0-1
    # whose match falls off the right image.
    disparity = torch.full((1, 1, 4, 40), 2.0)
    disparity[..., 20:30] = 8.0
    visible = visible_in_right(disparity)[0, 0, 0]
    hidden = [column for column in range(40) if not visible[column]]
    assert hidden == list(range(14, 20))
    mask = reconstruction_mask(disparity)[0, 0, 1]
    # Out of view (0-1) and occluded (14-19), grown by the 3x3 SSIM window.
    excluded = [column for column in range(40) if not mask[column]]
    assert excluded == [0, 1, 2, *range(13, 21)]
    _, in_view = sample_horizontally(torch.zeros(1, 3, 4, 40), disparity)
    assert not in_view[0, 0, 0, :2].any() and in_view[0, 0, 0, 2:].all()


def test_occlusion_mask_matches_the_renderers_exact_occlusions(rendered: Pair) -> None:
    left, right = rendered.disparity[0, 0].numpy(), rendered.right_disparity[0, 0].numpy()
    landing = np.arange(WIDTH)[None, :] - left
    in_view = (landing >= 0) & (landing <= WIDTH - 1)
    rows = np.arange(HEIGHT)[:, None]
    below = np.clip(np.floor(landing).astype(int), 0, WIDTH - 1)
    above = np.clip(below + 1, 0, WIDTH - 1)
    # Seen by the right camera: its own disparity at the match agrees with the left one.
    seen = (np.abs(right[rows, below] - left) < 0.5) | (np.abs(right[rows, above] - left) < 0.5)
    occluded = in_view & ~seen
    assert occluded.sum() > 10  # the scene has occlusions to find
    visible = visible_in_right(rendered.disparity)[0, 0].numpy()
    assert (visible & occluded).sum() <= 0.001 * in_view.sum()
    assert (~visible & seen & in_view).sum() <= 0.01 * in_view.sum()
    mask = reconstruction_mask(rendered.disparity)[0, 0].numpy()
    assert not (mask & occluded).any()
    assert not (mask & ~in_view).any()


def test_left_right_consistency_sees_a_disagreeing_right_disparity(rendered: Pair) -> None:
    loss = SelfSupervisedLoss()
    agreeing = loss(rendered.left, rendered.right, rendered.disparity, rendered.right_disparity)
    disagreeing = loss(
        rendered.left, rendered.right, rendered.disparity, rendered.right_disparity * 1.5
    )
    assert agreeing["consistency"].item() < 1e-3
    assert disagreeing["consistency"].item() > 5 * agreeing["consistency"].item()


def test_smoothness_forgives_disparity_edges_at_image_edges() -> None:
    image = torch.zeros(1, 3, 8, 16)
    image[..., 8:] = 1.0  # an image edge between columns 7 and 8
    step_at_edge = torch.ones(1, 1, 8, 16)
    step_at_edge[..., 8:] = 2.0
    step_elsewhere = torch.ones(1, 1, 8, 16)
    step_elsewhere[..., 4:] = 2.0
    assert edge_aware_smoothness(step_at_edge, image) < edge_aware_smoothness(step_elsewhere, image)
    # Mean-normalised: scaling the disparity changes nothing.
    assert edge_aware_smoothness(3 * step_elsewhere, image).item() == pytest.approx(
        edge_aware_smoothness(step_elsewhere, image).item()
    )


def test_gradient_descent_on_the_loss_finds_the_true_disparity() -> None:
    left, right = _shifted_pair(3)
    disparity = torch.full((1, 1, 1, 1), 1.5, requires_grad=True)
    optimizer = torch.optim.Adam([disparity], lr=0.1)
    loss = SelfSupervisedLoss()
    for _ in range(60):
        full = disparity.expand(1, 1, HEIGHT, WIDTH)
        optimizer.zero_grad()
        loss(left, right, full, full)["loss"].backward()
        optimizer.step()
    assert disparity.item() == pytest.approx(3.0, abs=0.15)


def test_automask_drops_pixels_the_unwarped_right_image_explains() -> None:
    left, _ = _shifted_pair(3)
    flat = torch.full((1, 1, HEIGHT, WIDTH), 3.0)
    # The right image equals the left one (all at infinity): a disparity of 3 explains less
    # than no warp at all, so auto-masking leaves nothing to learn from.
    plain = SelfSupervisedLoss()(left, left, flat, flat)
    masked = SelfSupervisedLoss(automask=True)(left, left, flat, flat)
    assert plain["photometric"].item() > 0.01
    assert masked["photometric"].item() == 0.0
    assert masked["masked_out"].item() == 1.0


def test_bad_arguments_are_value_errors_naming_them() -> None:
    with pytest.raises(ValueError, match="alpha"):
        SelfSupervisedLoss(alpha=1.5)
    with pytest.raises(ValueError, match="smoothness_weight"):
        SelfSupervisedLoss(smoothness_weight=-1.0)
    with pytest.raises(ValueError, match="disparity"):
        sample_horizontally(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="differ in size"):
        sample_horizontally(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 5))
