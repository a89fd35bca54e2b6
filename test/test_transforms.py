"""Augmentations keep the camera, the ground truth and the stereo geometry consistent."""

from __future__ import annotations

import numpy as np
import pytest

from cnd_depth_ros import geometry
from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.training.datasets.frame import Frame
from cnd_depth_ros.training.transforms import (
    ColorJitter,
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
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


@pytest.mark.parametrize(
    "build",
    [
        lambda: Resize(0, 10),
        lambda: Resize(10, 10, depth_mode="linear"),
        lambda: RandomCrop(10, -1),
        lambda: RandomHorizontalFlip(p=1.5),
        lambda: ColorJitter(brightness=1.0),
    ],
)
def test_bad_parameters_raise_value_error(build) -> None:
    with pytest.raises(ValueError):
        build()
