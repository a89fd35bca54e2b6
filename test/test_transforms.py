"""Augmentations keep the camera, the ground truth and the stereo geometry consistent."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from cnd_depth_ros import geometry
from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.data.frame import Frame
from cnd_depth_ros.synthetic.dataset_writer import kitti_like_camera, render_frame
from cnd_depth_ros.training.data import Augmentation, crop_shapes, to_sample, train_transform
from cnd_depth_ros.training.self_supervised import reconstruction_mask, sample_horizontally
from cnd_depth_ros.training.transforms import (
    ColorJitter,
    Compose,
    GaussianBlur,
    JpegArtifacts,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRescale,
    Resize,
    SensorNoise,
    ViewGainGamma,
)

WIDTH, HEIGHT, SHIFT = 48, 30, 4  # SHIFT: the pair's constant disparity in pixels


def stereo_frame(with_right_depth: bool = True) -> Frame:
    """A textured fronto-parallel pair: ``left(x) == right(x - SHIFT)``, a slanted depth with
    a NaN hole, and a right depth that differs from the left one so a swap is visible."""
    rng = np.random.default_rng(1)
    texture = rng.integers(0, 256, (HEIGHT, WIDTH + SHIFT, 3), dtype=np.uint8)
    camera = PinholeCamera(WIDTH, HEIGHT, 40.0, 42.0, 23.2, 14.7, baseline=0.1)
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    depth = 2.0 + 0.05 * u + 0.02 * v
    depth[5:9, 10:20] = np.nan
    normals = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    normals[..., 0], normals[..., 2] = 0.6, -0.8
    return Frame(
        left=np.ascontiguousarray(texture[:, :WIDTH]),
        right=np.ascontiguousarray(texture[:, SHIFT:]),
        camera=camera,
        depth=depth.astype(np.float32),
        normals=normals,
        right_depth=(depth + 1.0).astype(np.float32) if with_right_depth else None,
        name="pair",
    )


def plane_pair() -> Frame:
    """:func:`stereo_frame`'s pair with ground truth that matches its images: a fronto-parallel
    plane at ``fx * B / SHIFT``, so every pixel's disparity is ``SHIFT``. The two views' depth
    holes differ, so a swap of the views is visible."""
    frame = stereo_frame()
    depth = np.full((HEIGHT, WIDTH), frame.camera.fx * 0.1 / SHIFT, np.float32)
    right_depth = depth.copy()
    depth[5:9, 10:20] = np.nan
    right_depth[20:26, 30:34] = np.nan
    return Frame(left=frame.left, right=frame.right, camera=frame.camera, depth=depth,
                 right_depth=right_depth, name="plane")


def mono_frame() -> Frame:
    frame = stereo_frame()
    return Frame(left=frame.left, camera=frame.camera, depth=frame.depth, normals=frame.normals)


def test_resize_keeps_back_projected_points() -> None:
    """A 1/3 nearest resize samples source pixel (3u + 1, 3v + 1) exactly; with the resized
    camera it back-projects to the very same 3D point."""
    frame = stereo_frame()
    out = Resize(WIDTH // 3, HEIGHT // 3)(frame, np.random.default_rng(0))
    assert out.left.shape == (HEIGHT // 3, WIDTH // 3, 3) and out.right is not None
    assert (out.camera.width, out.camera.height) == (WIDTH // 3, HEIGHT // 3)
    assert out.depth is not None and out.right_depth is not None and out.normals is not None
    points = geometry.backproject(frame.depth, frame.camera)[1::3, 1::3]
    np.testing.assert_allclose(
        geometry.backproject(out.depth, out.camera), points, rtol=1e-5, equal_nan=True
    )
    np.testing.assert_array_equal(out.right_depth, frame.right_depth[1::3, 1::3])


def test_resize_mean_never_mixes_valid_and_missing_depth() -> None:
    frame = stereo_frame()
    depth = np.full((HEIGHT, WIDTH), np.nan, np.float32)
    depth[:, : WIDTH // 2] = 3.0
    depth[0:3, 0:3] = np.nan  # a hole that covers one whole output pixel
    frame = Frame(left=frame.left, camera=frame.camera, depth=depth)
    out = Resize(WIDTH // 3, HEIGHT // 3, depth_mode="mean")(frame, np.random.default_rng(0))
    finite = np.isfinite(out.depth)
    np.testing.assert_array_equal(out.depth[finite], 3.0)
    assert np.isnan(out.depth[0, 0]) and finite[:, : WIDTH // 6].sum() == finite.shape[0] * 8 - 1
    assert not finite[:, WIDTH // 6 :].any()


def test_enlarge_keeps_depth_values() -> None:
    frame = stereo_frame()
    out = Resize(WIDTH * 2, HEIGHT * 2)(frame, np.random.default_rng(0))
    assert set(np.unique(out.depth[np.isfinite(out.depth)])) <= set(
        np.unique(frame.depth[np.isfinite(frame.depth)])
    )
    assert out.camera == frame.camera.resized(WIDTH * 2, HEIGHT * 2)


def test_random_crop_keeps_back_projected_points_and_disparity() -> None:
    frame = stereo_frame()
    out = RandomCrop(20, 12)(frame, np.random.default_rng(3))
    top, left = round(frame.camera.cy - out.camera.cy), round(frame.camera.cx - out.camera.cx)
    assert out.left.shape == (12, 20, 3) and (out.camera.width, out.camera.height) == (20, 12)
    np.testing.assert_array_equal(out.left, frame.left[top : top + 12, left : left + 20])
    np.testing.assert_allclose(
        geometry.backproject(out.depth, out.camera),
        geometry.backproject(frame.depth, frame.camera)[top : top + 12, left : left + 20],
        rtol=1e-5,
        atol=1e-6,
        equal_nan=True,
    )
    assert out.right is not None
    np.testing.assert_array_equal(out.left[:, SHIFT:], out.right[:, :-SHIFT])


def test_random_crop_rejects_a_window_larger_than_the_frame() -> None:
    with pytest.raises(ValueError, match="larger than frame"):
        RandomCrop(WIDTH + 1, 10)(stereo_frame(), np.random.default_rng(0))


def test_flip_swaps_and_mirrors_a_stereo_pair() -> None:
    frame = stereo_frame()
    out = RandomHorizontalFlip(p=1.0)(frame, np.random.default_rng(0))
    assert out.right is not None and out.right_depth is not None and out.depth is not None
    np.testing.assert_array_equal(out.left, frame.right[:, ::-1])
    np.testing.assert_array_equal(out.right, frame.left[:, ::-1])
    np.testing.assert_array_equal(out.depth, frame.right_depth[:, ::-1])
    np.testing.assert_array_equal(out.right_depth, frame.depth[:, ::-1])
    assert out.normals is None  # the dataset has none for the old right view
    # Still a valid rectified pair with the same disparity: new_left(x) == new_right(x - SHIFT).
    np.testing.assert_array_equal(out.left[:, SHIFT:], out.right[:, :-SHIFT])
    assert out.camera.cx == pytest.approx(WIDTH - 1 - frame.camera.cx)
    assert out.camera.baseline == frame.camera.baseline


def test_flip_leaves_stereo_without_right_depth_alone() -> None:
    frame = stereo_frame(with_right_depth=False)
    assert RandomHorizontalFlip(p=1.0)(frame, np.random.default_rng(0)) is frame


def test_flip_mirrors_a_mono_frame_and_its_geometry() -> None:
    frame = mono_frame()
    out = RandomHorizontalFlip(p=1.0)(frame, np.random.default_rng(0))
    assert out.normals is not None
    np.testing.assert_array_equal(out.left, frame.left[:, ::-1])
    points = geometry.backproject(frame.depth, frame.camera)[:, ::-1]
    flipped = geometry.backproject(out.depth, out.camera)
    np.testing.assert_allclose(flipped[..., 0], -points[..., 0], atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(flipped[..., 1:], points[..., 1:], rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(out.normals[0, 0], [-0.6, 0.0, -0.8], rtol=1e-6)


def test_color_jitter_maps_both_views_identically() -> None:
    frame = stereo_frame()
    out = ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3)(frame, np.random.default_rng(5))
    assert out.right is not None
    assert not np.array_equal(out.left, frame.left)
    np.testing.assert_array_equal(out.left[:, SHIFT:], out.right[:, :-SHIFT])
    assert out.depth is frame.depth and out.camera == frame.camera


def test_compose_is_deterministic_for_a_seed() -> None:
    pipeline = Compose(
        [
            Resize(36, 24),
            RandomCrop(32, 20),
            RandomHorizontalFlip(),
            ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        ]
    )
    runs = [pipeline(stereo_frame(), np.random.default_rng(seed)) for seed in (7, 7, 8)]
    np.testing.assert_array_equal(runs[0].left, runs[1].left)
    np.testing.assert_array_equal(runs[0].depth, runs[1].depth)
    assert runs[0].camera == runs[1].camera
    assert not np.array_equal(runs[0].left, runs[2].left)


@pytest.mark.parametrize("scale", [2.0, 0.5])
def test_rescale_scales_disparity_with_the_image(scale: float) -> None:
    """fx scales with the image, baseline and depth stay: the pair's disparity fx * B / Z is
    ``scale * SHIFT`` pixels, and the rescaled images agree with it."""
    frame = plane_pair()
    out = RandomRescale(8, 8, scale_range=(scale, scale))(frame, np.random.default_rng(0))
    assert (out.camera.width, out.camera.height) == (WIDTH * scale, HEIGHT * scale)
    assert out.camera.fx == pytest.approx(frame.camera.fx * scale)
    assert out.camera.fy == pytest.approx(frame.camera.fy * scale)
    assert out.camera.baseline == frame.camera.baseline
    disparity = geometry.depth_to_disparity(out.depth, out.camera.fx, out.camera.baseline)
    np.testing.assert_allclose(disparity[np.isfinite(disparity)], SHIFT * scale, rtol=1e-6)
    shift = round(SHIFT * scale)
    assert out.right is not None
    # Interior columns, where neither view's resampling reads past the image border.
    np.testing.assert_array_equal(out.left[:, shift + 2 : -2], out.right[:, 2 : -shift - 2])


@pytest.mark.parametrize("scale", [3.0, 1.0 / 3.0])
def test_rescale_keeps_back_projected_points_and_never_mixes_depth_with_holes(
    scale: float,
) -> None:
    """At 3x, output pixel 3u + 1 is source pixel u; at 1/3, output pixel u is source pixel
    3u + 1: there, with the new camera, ground truth back-projects to the very same points,
    both depths and the normals are the source's values, and holes stay holes."""
    frame = stereo_frame()
    out = RandomRescale(8, 8, scale_range=(scale, scale))(frame, np.random.default_rng(0))
    assert out.depth is not None and out.right_depth is not None and out.normals is not None
    enlarged, source = (np.s_[1::3, 1::3], np.s_[:, :]) if scale > 1 else (
        np.s_[:, :], np.s_[1::3, 1::3]
    )
    np.testing.assert_allclose(
        geometry.backproject(out.depth, out.camera)[enlarged],
        geometry.backproject(frame.depth, frame.camera)[source],
        rtol=1e-5, atol=1e-6, equal_nan=True,
    )
    np.testing.assert_array_equal(out.depth[enlarged], frame.depth[source])
    np.testing.assert_array_equal(out.right_depth[enlarged], frame.right_depth[source])
    np.testing.assert_array_equal(out.normals[enlarged], frame.normals[source])
    # Everywhere: every depth is a source value (nothing interpolated), the valid mask of the
    # training sample is exactly the finite depth, and a pixel without depth trains nothing.
    finite = np.isfinite(out.depth)
    assert set(np.unique(out.depth[finite])) <= set(np.unique(frame.depth[frame.valid]))
    assert (~finite).any()
    sample = to_sample(out)
    np.testing.assert_array_equal(sample["valid"][0].numpy(), finite)
    assert bool((sample["depth"][0].numpy()[~finite] == 0).all())


def _warp_error(frame: Frame, fx: float) -> float:
    """Mean error of the left view rebuilt from the right one with the disparity ``fx * B / Z``
    of ``frame``'s depth, over the pixels the right camera sees (in view, not occluded)."""
    assert frame.right is not None and frame.camera.baseline is not None
    disparity = torch.from_numpy(
        np.nan_to_num(geometry.depth_to_disparity(frame.depth, fx, frame.camera.baseline))
    )[None, None]
    left, right = (torch.from_numpy(view).permute(2, 0, 1)[None].float()
                   for view in (frame.left, frame.right))
    warped, inside = sample_horizontally(right, disparity)
    keep = (inside & reconstruction_mask(disparity) & (disparity > 0))[0, 0]
    return float((warped - left).abs().mean(dim=1)[0][keep].mean())


@pytest.mark.parametrize("scale", [0.6, 2.5])
def test_rescaled_street_pair_agrees_with_the_rescaled_disparity(scale: float) -> None:
    """A rendered street, rescaled: the right view warped with the disparity of the rescaled
    depth and camera rebuilds the left view as well as at full size (the invariant holds on
    real content, occlusions and all); with the original camera's disparity it does not."""
    camera = kitti_like_camera(128, 80)
    rendering = render_frame(seed=3, index=1, camera=camera)
    frame = Frame(left=rendering.left, right=rendering.right, camera=camera,
                  depth=rendering.depth.astype(np.float32))
    out = RandomRescale(64, 48, scale_range=(scale, scale))(frame, np.random.default_rng(0))
    assert out.camera.width == round(128 * scale)
    full_size = _warp_error(frame, camera.fx)  # 2.8 levels of 255: interpolation, noise
    rescaled, unscaled = _warp_error(out, out.camera.fx), _warp_error(out, camera.fx)
    assert rescaled < 1.25 * full_size, (full_size, rescaled)
    assert unscaled > 2.5 * rescaled, (rescaled, unscaled)


def ramp_frame(fx: float, baseline: float, top: float, bottom: float) -> Frame:
    """A 400 x 400 pair whose disparity runs linearly from ``top`` to ``bottom`` pixels over
    the rows (so a nearest-neighbour resize keeps its distribution)."""
    size = 400
    disparity = np.linspace(top, bottom, size, dtype=np.float32)[:, None]
    depth = np.repeat(fx * baseline / disparity, size, axis=1)
    camera = PinholeCamera(size, size, fx, fx, (size - 1) / 2, (size - 1) / 2, baseline)
    image = np.random.default_rng(2).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Frame(left=image, right=image.copy(), camera=camera, depth=depth)


@pytest.mark.parametrize(
    "rig",
    [
        (400.0, 0.54, 2.0, 30.0),  # a far street rig: 29.4 px at the 98th percentile
        (300.0, 0.12, 10.0, 200.0),  # a near indoor rig: 196 px at the 98th percentile
    ],
    ids=["far", "near"],
)
def test_disparity_target_spreads_near_and_far_rigs_over_the_matcher_range(rig) -> None:
    """Whatever the rig, the rescaled frame's 98th-percentile disparity lands in the target
    range, spread over all of it; a narrower scale range clamps the factor."""
    frame = ramp_frame(*rig)
    rescale = RandomRescale(16, 16, scale_range=(0.04, 4.0), disparity_target=(15.0, 92.0))
    full_size = rescale.high_disparity(frame)
    assert full_size == pytest.approx(rig[2] + 0.98 * (rig[3] - rig[2]), rel=1e-3)
    factors = np.array([rescale.factor(frame, np.random.default_rng(seed)) for seed in range(120)])
    targets = factors * full_size  # what disparity scaling with the image makes of it
    assert targets.min() >= 15.0 and targets.max() <= 92.0
    assert targets.min() < 22.0 and targets.max() > 85.0
    assert 43.0 < np.median(targets) < 64.0  # uniform over 15-92: median 53.5
    for seed in range(0, 120, 10):  # the rescaled frames really have those disparities
        out = rescale(frame, np.random.default_rng(seed))
        landed = rescale.high_disparity(out)
        assert landed == pytest.approx(targets[seed], rel=0.04)

    clamped = RandomRescale(16, 16, scale_range=(0.5, 1.0), disparity_target=(15.0, 92.0))
    scales = {clamped.factor(frame, np.random.default_rng(seed)) for seed in range(60)}
    assert min(scales) >= 0.5 and max(scales) <= 1.0
    assert (0.5 in scales) == (15.0 / full_size < 0.5)
    assert (1.0 in scales) == (92.0 / full_size > 1.0)


def test_rescale_always_leaves_room_for_the_crop() -> None:
    """Frames without ground truth take a log-uniform factor; no factor is below the one at
    which the crop fits, and without a scale range that one is taken."""
    frame = mono_frame()
    rescale = RandomRescale(64, 24, scale_range=(0.1, 2.0), disparity_target=(15.0, 92.0))
    cover = 64 / WIDTH
    factors = [rescale.factor(frame, np.random.default_rng(seed)) for seed in range(50)]
    assert min(factors) >= cover and max(factors) <= 2.0 and len(set(factors)) == 50
    out = RandomRescale(64, 24, scale_range=None)(frame, np.random.default_rng(0))
    assert (out.camera.width, out.camera.height) == (64, 40)
    assert RandomCrop(64, 24)(out, np.random.default_rng(0)).left.shape == (24, 64, 3)


def test_the_training_pipeline_keeps_a_valid_pair_flipped_or_not() -> None:
    """Rescale, crop, flip and colour jitter of the default pipeline, at 2x: every output is a
    rectified pair whose images agree with its ground truth's disparity (2 * SHIFT); a flip swaps
    the views, so the new left view's depth (and hole) is the old right view's."""
    frame = plane_pair()
    pipeline = train_transform(
        WIDTH * 2, HEIGHT * 2, Augmentation(scale_range=(2.0, 2.0), camera_effects=False)
    )
    flipped = 0
    for seed in range(12):
        out = pipeline(frame, np.random.default_rng(seed))
        assert out.right is not None and out.depth is not None
        shift = 2 * SHIFT
        np.testing.assert_array_equal(out.left[:, shift + 2 : -2], out.right[:, 2 : -shift - 2])
        disparity = geometry.depth_to_disparity(out.depth, out.camera.fx, out.camera.baseline)
        np.testing.assert_allclose(disparity[np.isfinite(disparity)], shift, rtol=1e-6)
        holes = np.argwhere(np.isnan(out.depth))
        if out.camera.cx == pytest.approx(WIDTH * 2 - 1 - (frame.camera.cx + 0.5) * 2 + 0.5):
            flipped += 1  # the right view's hole (columns 30-33), mirrored: 2x columns 28-35
            assert holes[:, 1].min() == WIDTH * 2 - 1 - 67 and holes[:, 0].min() == 40
        else:
            assert holes[:, 1].min() == 20 and holes[:, 0].min() == 10
    assert 0 < flipped < 12


def test_view_gain_gamma_maps_each_view_by_its_own_curve() -> None:
    frame = stereo_frame()
    out = ViewGainGamma(gain=0.2, gamma=0.2, white_balance=0.1)(frame, np.random.default_rng(4))
    assert out.right is not None and out.depth is frame.depth and out.camera == frame.camera
    source = frame.left[:, SHIFT:]  # == frame.right[:, :-SHIFT]
    left, right = out.left[:, SHIFT:], out.right[:, :-SHIFT]
    for channel in range(3):
        values = source[..., channel].ravel()
        order = np.argsort(values, kind="stable")
        for view in (left, right):  # one value in, one value out, never reordered
            mapped = view[..., channel].ravel()[order]
            assert (np.diff(mapped.astype(int)) >= 0).all()
    assert not np.array_equal(left, right)  # the two cameras differ


def test_blur_is_the_same_on_both_views_and_moves_nothing() -> None:
    frame = stereo_frame()
    out = GaussianBlur(p=1.0, sigma_range=(1.0, 1.0))(frame, np.random.default_rng(0))
    assert out.right is not None and not np.array_equal(out.left, frame.left)
    np.testing.assert_array_equal(out.left[:, SHIFT + 4 : -4], out.right[:, 4 : -SHIFT - 4])
    assert GaussianBlur(p=0.0)(frame, np.random.default_rng(0)) is frame


def test_sensor_noise_is_independent_per_view() -> None:
    frame = stereo_frame()
    grey = np.full_like(frame.left, 128)
    frame = Frame(left=grey, right=grey.copy(), camera=frame.camera)
    out = SensorNoise(sigma=8.0)(frame, np.random.default_rng(1))
    assert out.right is not None
    left, right = (view.astype(float) - 128.0 for view in (out.left, out.right))
    level = np.random.default_rng(1).uniform(0.0, 8.0)
    assert left.std() == pytest.approx(level, rel=0.1) and abs(left.mean()) < 0.3
    assert abs(np.corrcoef(left.ravel(), right.ravel())[0, 1]) < 0.05


def test_jpeg_artifacts_grow_as_quality_drops() -> None:
    frame = mono_frame()
    smooth = cv2.GaussianBlur(frame.left, (0, 0), 2.0)
    frame = Frame(left=smooth, camera=frame.camera)
    errors = []
    for quality in (95, 20):
        jpeg = JpegArtifacts(p=1.0, quality_range=(quality, quality))
        out = jpeg(frame, np.random.default_rng(0))
        assert out.left.shape == frame.left.shape and out.left.dtype == np.uint8
        errors.append(np.abs(out.left.astype(int) - smooth).mean())
    assert 0 < errors[0] < errors[1] < 20


def test_training_pipeline_is_reproducible_and_keeps_ground_truth_exact() -> None:
    """The whole default pipeline, camera effects included: the same seed gives the same
    sample; the images change, ground truth is only ever resampled, never altered."""
    frame = stereo_frame()
    pipeline = train_transform(32, 16, Augmentation(disparity_target=(15.0, 92.0)))
    runs = [pipeline(frame, np.random.default_rng(seed)) for seed in (3, 3, 4)]
    np.testing.assert_array_equal(runs[0].left, runs[1].left)
    np.testing.assert_array_equal(runs[0].depth, runs[1].depth)
    assert runs[0].camera == runs[1].camera and not np.array_equal(runs[0].left, runs[2].left)
    known = set(np.unique(frame.depth[frame.valid])) | set(np.unique(frame.right_depth))
    for out in runs:
        assert out.left.shape == (16, 32, 3) and out.left.dtype == np.uint8
        assert set(np.unique(out.depth[np.isfinite(out.depth)])) <= known


def test_crop_shapes_vary_the_aspect_at_a_constant_pixel_count() -> None:
    shapes = crop_shapes(256, 160, (1.0, 3.4))
    assert (256, 160) in shapes and (368, 112) in shapes and len(shapes) >= 8
    for width, height in shapes:
        assert width % 16 == 0 and height % 16 == 0
        assert 1.0 <= width / height <= 3.4
        assert abs(width * height - 256 * 160) <= 0.15 * 256 * 160
    aspects = [width / height for width, height in shapes]
    assert aspects == sorted(aspects) and aspects[0] < 1.1 and aspects[-1] > 3.2
    assert crop_shapes(256, 160, None) == [(256, 160)]
    with pytest.raises(ValueError, match="must contain"):
        crop_shapes(256, 160, (2.0, 3.0))
    with pytest.raises(ValueError, match="multiples of 16"):
        crop_shapes(250, 160, None)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Resize(0, 10),
        lambda: Resize(10, 10, depth_mode="linear"),
        lambda: RandomCrop(10, -1),
        lambda: RandomHorizontalFlip(p=1.5),
        lambda: ColorJitter(brightness=1.0),
        lambda: RandomRescale(10, 10, scale_range=(2.0, 1.0)),
        lambda: RandomRescale(10, 10, disparity_target=(0.0, 92.0)),
        lambda: RandomRescale(10, 10, percentile=0.0),
        lambda: ViewGainGamma(gamma=-0.1),
        lambda: GaussianBlur(p=2.0),
        lambda: SensorNoise(sigma=float("nan")),
        lambda: JpegArtifacts(quality_range=(90, 40)),
        lambda: crop_shapes(256, 160, (3.0, 1.0)),
    ],
)
def test_bad_parameters_raise_value_error(build) -> None:
    with pytest.raises(ValueError):
        build()
