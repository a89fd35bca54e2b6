"""The synthetic stereo renderer: exact geometry, stereo consistency, the folder format, the
loader and ``cnd-depth synth``. Real renders at 96 x 64; no mocks."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures.stereo_warp import warp_right_to_left
from fixtures.synthetic_scenes import simple_scene

from cnd_depth_ros import cli
from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.data.registry import open_dataset
from cnd_depth_ros.data.synthetic import SyntheticDataset
from cnd_depth_ros.errors import DatasetError
from cnd_depth_ros.synthetic.dataset_writer import kitti_like_camera, render_frame, write_dataset
from cnd_depth_ros.synthetic.primitives import Boxes, GroundPlane, Spheres
from cnd_depth_ros.synthetic.raycast import shadowed
from cnd_depth_ros.synthetic.renderer import render_view
from cnd_depth_ros.synthetic.scene import (
    CameraPose,
    StreetStyle,
)
from cnd_depth_ros.synthetic.textures import TextureBank, default_bank
from cnd_depth_ros.training.data import to_sample

CAMERA = kitti_like_camera(96, 64)
NOISELESS = StreetStyle(sensor_noise=(0.0, 0.0))


def _pixel_grid(camera: PinholeCamera) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(camera.width, dtype=float), np.arange(camera.height, dtype=float))


def test_road_plane_depth_and_normals_are_exact() -> None:
    height = 1.6
    pose = CameraPose.from_angles(np.array([0.3, -height, 0.0]))
    view = render_view(simple_scene(GroundPlane(material=0)), default_bank(), CAMERA, pose)
    _, v = _pixel_grid(CAMERA)
    below = v > CAMERA.cy
    expected = height / ((v[below] - CAMERA.cy) / CAMERA.fy)
    np.testing.assert_allclose(view.depth[below], expected, rtol=1e-12)
    assert np.isinf(view.depth[~below]).all()
    np.testing.assert_allclose(
        view.normals[below], np.broadcast_to([0.0, -1.0, 0.0], (below.sum(), 3))
    )
    assert np.isnan(view.normals[~below]).all()


def test_pitched_camera_sees_the_plane_through_its_own_rotation() -> None:
    """Pitch moves the horizon; depth still follows from the ray's angle below it."""
    pitch, height = 0.05, 1.5
    pose = CameraPose.from_angles(np.array([0.0, -height, 0.0]), pitch=pitch)
    view = render_view(simple_scene(GroundPlane(material=0)), default_bank(), CAMERA, pose)
    _, v = _pixel_grid(CAMERA)
    slope = (v - CAMERA.cy) / CAMERA.fy  # camera-frame y of the ray with unit z
    world_down = slope * np.cos(pitch) - np.sin(pitch)  # looking up tilts every ray up
    hits = world_down > 0
    np.testing.assert_allclose(view.depth[hits], height / world_down[hits], rtol=1e-9)
    assert np.isinf(view.depth[~hits]).all()
    up_in_camera = pose.rotation.T @ np.array([0.0, -1.0, 0.0])
    np.testing.assert_allclose(view.normals[hits], np.broadcast_to(up_in_camera, (hits.sum(), 3)))


def test_box_face_and_sphere_depth_and_normals_are_exact() -> None:
    wall = Boxes(
        centres=np.array([[-2.0, -1.0, 12.0]]),
        half_sizes=np.array([[1.5, 1.0, 0.5]]),
        yaws=np.zeros(1),
        material_ids=np.zeros(1, dtype=int),
    )
    centre, radius = np.array([1.5, -1.2, 6.0]), 0.8
    ball = Spheres(centre[None], np.array([radius]), np.zeros(1, dtype=int))
    pose = CameraPose.from_angles(np.array([0.0, -1.5, 0.0]))
    view = render_view(simple_scene(wall, ball), default_bank(), CAMERA, pose)
    u, v = _pixel_grid(CAMERA)
    rays = np.stack([(u - CAMERA.cx) / CAMERA.fx, (v - CAMERA.cy) / CAMERA.fy, np.ones_like(u)], -1)
    points = pose.position + view.depth[..., None] * rays

    on_wall = np.isclose(view.depth, 11.5)
    on_ball = np.isfinite(view.depth) & ~on_wall
    assert on_wall.sum() > 20 and on_ball.sum() > 20
    np.testing.assert_allclose(
        view.normals[on_wall], np.broadcast_to([0, 0, -1.0], (on_wall.sum(), 3))
    )
    np.testing.assert_allclose(np.linalg.norm(points[on_ball] - centre, axis=1), radius, rtol=1e-9)
    np.testing.assert_allclose(
        view.normals[on_ball], (points[on_ball] - centre) / radius, atol=1e-9
    )


def test_warping_right_with_true_disparity_reproduces_left() -> None:
    """Mean error about 1 level of 8 bits (median 0.4): what is left is bilinear interpolation of
    the right image between pixel centres. A 10 % wrong baseline gives 2 to 3 levels."""
    for index in range(3):
        frame = render_frame(seed=7, index=index, camera=CAMERA, style=NOISELESS)
        warped, visible = warp_right_to_left(
            frame.left.astype(float),
            frame.right.astype(float),
            frame.depth,
            frame.right_depth,
            CAMERA,
        )
        error = np.abs(warped - frame.left).mean(axis=2)[visible]
        assert visible.mean() > 0.25
        assert error.mean() < 1.5 and np.median(error) < 0.6, (index, error.mean())
        # Occluded pixels exist and the mask finds them: the check is not vacuous.
        assert (np.isfinite(frame.depth) & ~visible).any()


def test_a_wrong_disparity_does_not_reproduce_left() -> None:
    """Control for the test above: with a wrong disparity (depth scaled by 1.5) the error grows."""
    frame = render_frame(seed=7, index=0, camera=CAMERA, style=NOISELESS)
    warped, visible = warp_right_to_left(
        frame.left.astype(float), frame.right.astype(float), frame.depth, frame.right_depth, CAMERA
    )
    wrong, _ = warp_right_to_left(
        frame.left.astype(float),
        frame.right.astype(float),
        frame.depth * 1.5,
        frame.right_depth,
        CAMERA,
    )
    good = np.abs(warped - frame.left).mean(axis=2)[visible].mean()
    bad = np.abs(wrong - frame.left).mean(axis=2)[visible].mean()
    assert bad > 3 * good


def test_frames_are_a_function_of_seed_and_index() -> None:
    first = render_frame(seed=3, index=5, camera=CAMERA)
    again = render_frame(seed=3, index=5, camera=CAMERA)
    for name in ("left", "right", "depth", "right_depth", "normals"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    other_seed = render_frame(seed=4, index=5, camera=CAMERA)
    other_index = render_frame(seed=3, index=6, camera=CAMERA)
    assert not np.array_equal(first.left, other_seed.left)
    assert not np.array_equal(first.left, other_index.left)


def test_sun_is_blocked_under_a_box_and_not_beside_it() -> None:
    roof = Boxes(
        np.array([[0.0, -3.0, 10.0]]), np.array([[1.0, 0.5, 1.0]]), np.zeros(1), np.zeros(1, int)
    )
    points = np.array([[0.0, 0.0, 10.0], [0.9, 0.0, 10.5], [3.0, 0.0, 10.0], [0.0, -4.0, 10.0]])
    blocked = shadowed([GroundPlane(material=0), roof], points, np.array([0.0, -1.0, 0.0]))
    np.testing.assert_array_equal(blocked, [True, True, False, False])


def test_texture_sampling_hits_texels_at_their_centres_and_mirrors_at_the_edges() -> None:
    rng = np.random.default_rng(0)
    images = [rng.uniform(0, 1, (8, 8, 3)).astype(np.float32) for _ in range(2)]
    bank = TextureBank.from_images(["a", "b"], images)
    ones = np.ones(3)
    for texture in (0, 1):
        ids = np.full(3, texture)
        centres = bank.sample(ids, np.array([0.5, 3.5, 7.5]), np.array([0.5, 2.5, 7.5]), ones)
        np.testing.assert_allclose(centres, images[texture][[0, 2, 7], [0, 3, 7]], rtol=1e-6)
    # Mirrored repeat: just across the edge reads the edge texel again.
    np.testing.assert_allclose(
        bank.sample(np.zeros(1, int), np.array([8.5]), np.array([0.5]), np.ones(1)),
        images[0][[0], [7]],
        rtol=1e-6,
    )


def test_writer_output_is_the_documented_format_and_independent_of_workers(tmp_path: Path) -> None:
    one = write_dataset(tmp_path / "one", CAMERA, 3, seed=11, workers=1, progress=False)
    two = write_dataset(tmp_path / "two", CAMERA, 3, seed=11, workers=2, progress=False)
    assert (one.written, two.written, one.skipped) == (3, 3, 0)
    camera = json.loads((tmp_path / "one" / "camera.json").read_text())
    assert set(camera) == {"fx", "fy", "cx", "cy", "baseline", "width", "height"}
    assert camera["baseline"] == 0.54 and (camera["width"], camera["height"]) == (96, 64)
    names = sorted(path.name for path in (tmp_path / "one").iterdir())
    expected = [
        f"{i:06d}_{suffix}"
        for i in range(3)
        for suffix in ("depth.npy", "left.png", "normals.npy", "right.png", "right_depth.npy")
    ]
    assert names == sorted(["camera.json", "synth.json", *expected])
    for name in expected:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), (
            name
        )

    left = cv2.imread(str(tmp_path / "one" / "000001_left.png"), cv2.IMREAD_UNCHANGED)
    assert left.shape == (64, 96, 3) and left.dtype == np.uint8
    depth = np.load(tmp_path / "one" / "000001_depth.npy")
    normals = np.load(tmp_path / "one" / "000001_normals.npy").astype(np.float32)
    assert depth.dtype == np.float32 and depth.shape == (64, 96)
    assert np.isinf(depth).any() and (depth[np.isfinite(depth)] > 0).all()  # sky and surfaces
    assert normals.shape == (64, 96, 3)
    surface = np.isfinite(depth)
    np.testing.assert_allclose(np.linalg.norm(normals[surface], axis=1), 1.0, atol=2e-3)
    assert np.isnan(normals[~surface]).all()
    assert np.load(tmp_path / "one" / "000001_right_depth.npy").dtype == np.float32


def test_synthetic_dataset_yields_frames_with_exact_ground_truth(tmp_path: Path) -> None:
    write_dataset(tmp_path, CAMERA, 2, seed=5, workers=1, progress=False)
    dataset = open_dataset("synthetic", tmp_path)
    assert isinstance(dataset, SyntheticDataset) and len(dataset) == 2
    frame = dataset[1]
    rendered = render_frame(seed=5, index=1, camera=CAMERA)
    assert frame.camera == CAMERA and frame.name.endswith("000001")
    np.testing.assert_array_equal(frame.left, rendered.left)
    np.testing.assert_array_equal(frame.right, rendered.right)
    sky = np.isinf(rendered.depth)
    assert np.isnan(frame.depth[sky]).all() and np.isnan(frame.normals[sky]).all()
    np.testing.assert_array_equal(frame.depth[~sky], rendered.depth[~sky])
    assert frame.right_depth is not None and frame.right_depth.dtype == np.float32
    assert frame.valid.sum() == (~sky).sum()
    sample = to_sample(frame)
    assert sample["left"].shape == (3, 64, 96) and sample["right"].shape == (3, 64, 96)
    assert sample["valid"].sum().item() == (~sky).sum()


def test_synthetic_dataset_rejects_a_folder_that_is_not_one(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"camera\.json"):
        SyntheticDataset(tmp_path)
    (tmp_path / "camera.json").write_text(json.dumps(CAMERA.to_dict()))
    with pytest.raises(DatasetError, match="no complete frame"):
        SyntheticDataset(tmp_path)
    (tmp_path / "camera.json").write_text('{"fx": 1}')
    with pytest.raises(DatasetError, match=r"camera\.json"):
        SyntheticDataset(tmp_path)


def test_cnd_depth_synth_end_to_end_with_resume(tmp_path: Path, capsys) -> None:
    out, report = tmp_path / "set", tmp_path / "synth.json"
    size = ["--width", "96", "--height", "64", "--workers", "1", "--no-progress"]
    argv = ["synth", "--out", str(out), "--frames", "2", "--seed", "9", *size]
    assert cli.main([*argv, "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert (result["frames"], result["written"], result["skipped"]) == (2, 2, 0)
    assert result["camera"] == CAMERA.to_dict() and result["frames_per_second"] > 0
    assert len(SyntheticDataset(out)) == 2

    # An interrupted run leaves frames without their left image: not complete, redone on resume.
    first_left = (out / "000001_left.png").read_bytes()
    (out / "000001_left.png").unlink()
    assert len(SyntheticDataset(out)) == 1
    assert cli.main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli.main([*argv, "--frames", "3", "--resume", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert (result["written"], result["skipped"]) == (2, 1)
    assert (out / "000001_left.png").read_bytes() == first_left

    other_seed = ["synth", "--out", str(out), "--frames", "2", "--seed", "10", *size]
    assert cli.main([*other_seed, "--resume"]) == 2
    assert "another seed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([*argv, "--frames", "0"])
