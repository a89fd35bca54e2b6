"""Geometry against analytic scenes: a known point, a tilted plane, a sphere in front of a wall."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnd_depth_ros import geometry
from cnd_depth_ros.camera import PinholeCamera

CAMERA = PinholeCamera(width=64, height=48, fx=50.0, fy=55.0, cx=31.5, cy=23.0)


def _rays(camera: PinholeCamera) -> np.ndarray:
    """H x W x 3 viewing rays with z = 1."""
    v, u = np.mgrid[0 : camera.height, 0 : camera.width].astype(np.float64)
    return np.stack(
        [(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones_like(u)], axis=-1
    )


def _plane_depth(camera: PinholeCamera, normal: np.ndarray, offset: float) -> np.ndarray:
    """Depth of the plane ``normal . P = offset`` (offset < 0 for a normal facing the camera)."""
    return offset / (_rays(camera) @ normal)


def _sphere_depth(
    camera: PinholeCamera, centre: np.ndarray, radius: float, background: float
) -> np.ndarray:
    """Depth of the near side of a sphere, a fronto-parallel wall at ``background`` elsewhere."""
    rays = _rays(camera)
    a = (rays * rays).sum(-1)
    b = -2.0 * rays @ centre
    c = centre @ centre - radius**2
    disc = b * b - 4 * a * c
    hit = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
    return np.where(disc > 0, hit, background)


def _camera_tensor(camera: PinholeCamera) -> torch.Tensor:
    return torch.tensor([[camera.fx, camera.fy, camera.cx, camera.cy, 0.0]], dtype=torch.float64)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))


def test_depth_disparity_round_trip_numpy() -> None:
    depth = np.array([0.5, 1.0, 7.25, 80.0], dtype=np.float32)
    disparity = geometry.depth_to_disparity(depth, fx=720.0, baseline=0.54)
    assert disparity.dtype == np.float32
    np.testing.assert_allclose(disparity, 720.0 * 0.54 / depth, rtol=1e-6)
    round_trip = geometry.disparity_to_depth(disparity, 720.0, 0.54)
    np.testing.assert_allclose(round_trip, depth, rtol=1e-6)


def test_depth_disparity_round_trip_torch_with_per_image_rig() -> None:
    depth = torch.rand(2, 1, 4, 5, dtype=torch.float64) * 50 + 0.5
    fx = torch.tensor([700.0, 350.0], dtype=torch.float64).view(2, 1, 1, 1)
    disparity = geometry.depth_to_disparity(depth, fx, 0.12)
    torch.testing.assert_close(disparity[1], 350.0 * 0.12 / depth[1])
    torch.testing.assert_close(geometry.disparity_to_depth(disparity, fx, 0.12), depth)


@pytest.mark.parametrize("bad", [0.0, -3.0, np.inf, -np.inf, np.nan])
def test_invalid_input_converts_to_nan(bad: float) -> None:
    values = np.array([bad, 2.0])
    for convert in (geometry.disparity_to_depth, geometry.depth_to_disparity):
        out = convert(values, 100.0, 0.1)
        assert np.isnan(out[0]) and out[1] == pytest.approx(5.0)
        out_t = convert(torch.from_numpy(values), 100.0, 0.1)
        assert torch.isnan(out_t[0]) and out_t[1].item() == pytest.approx(5.0)


def test_integer_disparity_gives_float_depth() -> None:
    depth = geometry.disparity_to_depth(np.array([0, 4], dtype=np.uint16), 100.0, 0.1)
    assert depth.dtype == np.float64
    assert np.isnan(depth[0]) and depth[1] == pytest.approx(2.5)


@pytest.mark.parametrize(("fx", "baseline"), [(0.0, 0.1), (100.0, -0.1), (np.nan, 0.1)])
def test_bad_rig_is_rejected(fx: float, baseline: float) -> None:
    with pytest.raises(ValueError, match="must be finite and positive"):
        geometry.disparity_to_depth(np.ones(3), fx, baseline)


def test_backproject_known_point() -> None:
    depth = np.full((CAMERA.height, CAMERA.width), np.nan, dtype=np.float32)
    depth[5, 10] = 2.0
    depth[0, 0] = 0.0
    points = geometry.backproject(depth, CAMERA)
    assert points.shape == (48, 64, 3) and points.dtype == np.float32
    expected = [(10 - 31.5) / 50.0 * 2.0, (5 - 23.0) / 55.0 * 2.0, 2.0]
    np.testing.assert_allclose(points[5, 10], expected, rtol=1e-6)
    assert np.isnan(points[0, 0]).all() and np.isnan(points[7, 7]).all()


def test_backproject_torch_uses_each_images_camera() -> None:
    depth = torch.full((2, 1, 3, 4), 4.0)
    camera = torch.tensor([[2.0, 2.0, 0.0, 0.0, 0.1], [4.0, 1.0, 1.0, 2.0, 0.1]])
    points = geometry.backproject_torch(depth, camera)
    assert points.shape == (2, 3, 3, 4)
    torch.testing.assert_close(points[0, :, 2, 3], torch.tensor([6.0, 4.0, 4.0]))
    torch.testing.assert_close(points[1, :, 2, 3], torch.tensor([2.0, 0.0, 4.0]))


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="does not match the 64x48 camera"):
        geometry.backproject(np.ones((48, 63)), CAMERA)
    with pytest.raises(ValueError, match="N x 1 x H x W"):
        geometry.normals_from_depth_torch(torch.ones(1, 3, 4), torch.ones(1, 5))
    with pytest.raises(ValueError, match="N x 5"):
        geometry.backproject_torch(torch.ones(2, 1, 3, 4), torch.ones(1, 5))


@pytest.mark.parametrize(("dtype", "atol"), [(np.float64, 1e-9), (np.float32, 1e-4)])
def test_normals_of_a_tilted_plane_are_exact_everywhere(dtype: type, atol: float) -> None:
    normal = np.array([0.3, -0.4, -1.0])
    normal /= np.linalg.norm(normal)
    depth = _plane_depth(CAMERA, normal, offset=-3.0).astype(dtype)
    normals = geometry.normals_from_depth(depth, CAMERA)
    assert normals.dtype == dtype
    assert np.isfinite(normals).all(), "a dense plane has a normal at every pixel, borders too"
    np.testing.assert_allclose(normals, np.broadcast_to(normal, normals.shape), atol=atol)
    # Oriented toward the camera: the normal opposes the viewing ray.
    assert ((geometry.backproject(depth, CAMERA) * normals).sum(-1) < 0).all()


def test_normals_of_a_sphere_before_a_wall() -> None:
    camera = PinholeCamera(width=128, height=96, fx=100.0, fy=100.0, cx=63.5, cy=47.5)
    centre, radius = np.array([0.2, -0.1, 3.0]), 1.0
    depth = _sphere_depth(camera, centre, radius, background=6.0)
    normals = geometry.normals_from_depth(depth, camera)
    points = geometry.backproject(depth, camera)
    on_sphere = np.linalg.norm(points - centre, axis=-1) < radius + 1e-9
    truth = (points - centre) / radius
    error = _angle_deg(normals, truth)
    assert error[on_sphere].mean() < 0.5
    # Where the sphere faces the camera (not at the grazing silhouette) the blend is the central
    # difference, second-order accurate.
    sight = points / np.linalg.norm(points, axis=-1, keepdims=True)
    facing = on_sphere & ((truth * -sight).sum(-1) > 0.5)
    assert error[facing].max() < 0.2
    # The wall next to the occlusion edge takes its tangents from the wall, not across the edge.
    wall_error = _angle_deg(normals[~on_sphere], np.array([0.0, 0.0, -1.0]))
    assert wall_error.max() < 0.01


def test_numpy_and_torch_normals_agree() -> None:
    depth = _sphere_depth(CAMERA, np.array([0.0, 0.0, 2.5]), 0.8, background=4.0)
    depth[10:14, 20:30] = np.nan
    numpy_normals = geometry.normals_from_depth(depth, CAMERA)
    torch_normals = geometry.normals_from_depth_torch(
        torch.from_numpy(np.nan_to_num(depth, nan=0.0))[None, None], _camera_tensor(CAMERA)
    )[0].permute(1, 2, 0).numpy()
    unknown = np.isnan(numpy_normals).any(-1)
    assert unknown[10:14, 20:30].all() and not unknown[30:, :].any()
    np.testing.assert_allclose(torch_normals[~unknown], numpy_normals[~unknown], atol=1e-12)
    assert (torch_normals[unknown] == 0).all()


def test_pixel_without_valid_neighbours_has_no_normal() -> None:
    depth = np.full((CAMERA.height, CAMERA.width), np.nan)
    depth[10, 10] = 2.0
    depth[20, 20:23] = 2.0  # a row, but no valid pixel above or below
    normals = geometry.normals_from_depth(depth, CAMERA)
    assert np.isnan(normals).all()


def test_normals_gradient_is_finite_through_holes() -> None:
    depth = torch.from_numpy(_plane_depth(CAMERA, np.array([0.0, 0.6, -0.8]), -2.0))[None, None]
    depth = depth.clone().requires_grad_(True)
    holes = torch.rand_like(depth) < 0.5
    normals = geometry.normals_from_depth_torch(
        torch.where(holes, 0.0, depth), _camera_tensor(CAMERA)
    )
    normals[:, 2].sum().backward()
    assert depth.grad is not None and torch.isfinite(depth.grad).all()
