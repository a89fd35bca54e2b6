"""The indoor world, per-frame rigs and the camera model of the synthetic renderer: exact depth
and stereo consistency in rooms, the 0.3-10 m range, rigs drawn from ranges and stored per frame,
``cnd-depth synth --world/--baseline/--fov``. Real renders at small sizes; no mocks."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from fixtures.stereo_warp import warp_error
from fixtures.synthetic_scenes import simple_scene

from cnd_depth_ros import cli
from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.data.synthetic import SyntheticDataset
from cnd_depth_ros.errors import DatasetError
from cnd_depth_ros.synthetic.dataset_writer import render_frame, write_dataset
from cnd_depth_ros.synthetic.indoor import IndoorStyle, colour_temperature, indoor_scene
from cnd_depth_ros.synthetic.primitives import Boxes, Rooms, Spheres
from cnd_depth_ros.synthetic.raycast import cast_camera_rays, shade_points
from cnd_depth_ros.synthetic.renderer import render_view
from cnd_depth_ros.synthetic.rig import (
    ROBOT_BASELINE_M,
    ROBOT_FOV_DEG,
    RigRanges,
    centred_camera,
    focal_for_fov,
    horizontal_fov,
)
from cnd_depth_ros.synthetic.scene import CameraPose
from cnd_depth_ros.synthetic.sensor import NO_SENSOR_EFFECTS, SensorEffects
from cnd_depth_ros.synthetic.textures import default_bank
from cnd_depth_ros.synthetic.worlds import World, make_worlds

#: A small robot rig: 90 degrees across 96 px, 10 cm baseline.
ROBOT = centred_camera(96, 72, focal_for_fov(96, 90.0), 0.10)
#: What the exactness checks need: no view-dependent highlight, no camera effects.
MATTE_CLEAN = IndoorStyle(glossy_fraction=0.0, sensor=NO_SENSOR_EFFECTS)


def test_room_faces_have_exact_depth_normals_and_their_own_materials() -> None:
    """The inner faces of a room seen from inside: the far wall at its exact distance facing the
    camera, the floor as a ground plane, each face with the material given for it."""
    half = np.array([2.0, 1.5, 4.0])  # x, y (height 3 m), z
    room = Rooms(
        centres=np.array([[0.0, -1.5, 2.0]]),
        half_sizes=half[None],
        yaws=np.zeros(1),
        face_materials=np.array([[0, 1, 2, 3, 4, 5]]),
    )
    height = 1.2
    pose = CameraPose.from_angles(np.array([0.3, -height, 0.0]))
    camera = centred_camera(64, 48, focal_for_fov(64, 90.0), 0.1)
    view = render_view(simple_scene(room, materials=6), default_bank(), camera, pose)
    assert np.isfinite(view.depth).all()  # closed: every ray meets a face
    u, v = np.meshgrid(np.arange(64.0), np.arange(48.0))
    rays = np.stack(
        [(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones_like(u)], -1
    )
    points = pose.position + view.depth[..., None] * rays
    on_far_wall = np.isclose(points[..., 2], 6.0)
    on_floor = np.isclose(points[..., 1], 0.0) & ~on_far_wall
    assert on_far_wall.sum() > 50 and on_floor.sum() > 50
    np.testing.assert_allclose(view.depth[on_far_wall], 6.0, rtol=1e-12)
    np.testing.assert_allclose(
        view.normals[on_far_wall], np.broadcast_to([0, 0, -1.0], (on_far_wall.sum(), 3))
    )
    floor_depth = height / ((v[on_floor] - camera.cy) / camera.fy)
    np.testing.assert_allclose(view.depth[on_floor], floor_depth, rtol=1e-12)
    np.testing.assert_allclose(
        view.normals[on_floor], np.broadcast_to([0, -1.0, 0], (on_floor.sum(), 3))
    )

    # Materials per face: the far wall (+z) is 5, the floor (+y) 3.
    hits = [points[on_far_wall][:3], points[on_floor][:3]]
    _, _, materials = shade_points(
        [room], np.zeros(6, dtype=int), np.zeros(6, dtype=int), np.concatenate(hits)
    )
    np.testing.assert_array_equal(materials, [5, 5, 5, 3, 3, 3])


def test_culling_keeps_the_closest_hit_of_every_ray() -> None:
    """The ray caster's culling (pixel rectangles, rays already nearer than a box) against brute
    force: every primitive tested on every ray."""
    rng = np.random.default_rng(3)
    count = 40
    boxes = Boxes(
        centres=np.stack([rng.uniform(-4, 4, count), rng.uniform(-2, 0, count),
                          rng.uniform(-2, 12, count)], axis=1),
        half_sizes=rng.uniform(0.1, 1.0, (count, 3)),
        yaws=rng.uniform(-np.pi, np.pi, count),
        material_ids=np.zeros(count, dtype=np.int64),
    )
    spheres = Spheres(
        np.stack([rng.uniform(-4, 4, 10), rng.uniform(-2, 0, 10), rng.uniform(1, 12, 10)], axis=1),
        rng.uniform(0.1, 0.8, 10),
        np.zeros(10, dtype=np.int64),
    )
    room = Rooms(np.array([[0.0, -2.0, 4.0]]), np.array([[6.0, 2.0, 9.0]]), np.array([0.2]),
                 np.zeros((1, 6), dtype=np.int64))
    pose = CameraPose.from_angles(np.array([0.0, -1.0, 0.0]), yaw=0.3, pitch=-0.1)
    camera = centred_camera(80, 60, focal_for_fov(80, 100.0), 0.1)
    u, v = np.meshgrid(np.arange(80.0), np.arange(60.0))
    local = np.stack(
        [(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones_like(u)], -1
    )
    directions = local @ pose.rotation.T
    groups = [boxes, spheres, room]
    hits = cast_camera_rays(groups, pose.position, pose.rotation, directions,
                            (camera.fx, camera.fy, camera.cx, camera.cy))
    flat = directions.reshape(-1, 3)
    brute = np.full(len(flat), np.inf)
    for group in groups:
        for k in range(len(group)):
            brute = np.minimum(brute, group.intersect(k, pose.position, flat))
    np.testing.assert_allclose(hits.t.reshape(-1), brute, rtol=1e-12)
    assert (hits.group == 0).any() and (hits.group == 1).any() and (hits.group == 2).any()


def test_indoor_depth_stays_within_0_3_to_10_m_in_both_views() -> None:
    """Rooms and corridors drawn for robot rigs up to 120 degrees wide: no sky, no depth below
    0.3 m or above 10 m in either view, and a good spread of depths in between."""
    bank = default_bank()
    rig = RigRanges(48, 36, ROBOT_BASELINE_M, (60.0, 120.0))
    nearest, farthest, spread = np.inf, 0.0, []
    for index in range(40):
        camera = rig.camera(2, index)
        scene, pose = indoor_scene(np.random.default_rng([2, index]), bank, MATTE_CLEAN, camera)
        assert camera.baseline is not None
        for eye in (pose, pose.shifted(camera.baseline)):
            depth = render_view(scene, bank, camera, eye).depth
            assert np.isfinite(depth).all(), index
            nearest, farthest = min(nearest, depth.min()), max(farthest, depth.max())
        spread.append(np.ptp(depth))
    assert 0.3 <= nearest < 0.6 and 5.0 < farthest <= 10.0, (nearest, farthest)
    assert np.median(spread) > 1.0


def _pooled_warp_errors(
    frames: list, camera: PinholeCamera
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`warp_error` over several frames: errors on every pixel both views see, and on
    those whose disparity is a whole number."""
    parts = [warp_error(f.left, f.right, f.depth, f.right_depth, camera) for f in frames]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def test_warping_right_with_true_disparity_reproduces_left_indoors() -> None:
    """As for the street (test_synthetic.py): without highlights and camera effects the right
    image warped with ``fx * B / Z`` gives the left one back where both views see the surface.
    At 96 x 72 rooms are full of fine, aliased texture and edges that bilinear interpolation
    between pixels blurs (the mean); where the disparity is a whole number the warp reads right
    pixel centres and the error is the 8-bit rounding (median 0.1 levels). A baseline 1.5 times
    too long does not reproduce the left image."""
    frames = [render_frame(seed=7, index=i, camera=ROBOT, style=MATTE_CLEAN) for i in range(4)]
    for frame in frames:
        visible = warp_error(frame.left, frame.right, frame.depth, frame.right_depth, ROBOT)[0]
        assert visible.size > 0.25 * frame.depth.size
    errors, whole = _pooled_warp_errors(frames, ROBOT)
    assert errors.mean() < 2.0 and np.median(errors) < 0.6, (errors.mean(), np.median(errors))
    assert whole.size > 300 and np.median(whole) < 0.3 and np.percentile(whole, 90) < 1.0
    wrong, _ = _pooled_warp_errors(frames, dataclasses.replace(ROBOT, baseline=0.15))
    assert wrong.mean() > 4 * errors.mean()


def test_glossy_surfaces_differ_between_the_views_and_the_ground_truth_does_not() -> None:
    """Highlights depend on the viewpoint (as on real glossy surfaces): with every floor,
    furniture and clutter material glossy the views disagree more where the warp is exact;
    depth and normals are those of the matte scene."""
    glossy = IndoorStyle(glossy_fraction=1.0, dark_fraction=0.0, sensor=NO_SENSOR_EFFECTS)
    matte = IndoorStyle(glossy_fraction=0.0, dark_fraction=0.0, sensor=NO_SENSOR_EFFECTS)
    shiny = [render_frame(seed=4, index=i, camera=ROBOT, style=glossy) for i in range(4)]
    plain = [render_frame(seed=4, index=i, camera=ROBOT, style=matte) for i in range(4)]
    shiny_whole = _pooled_warp_errors(shiny, ROBOT)[1]
    plain_whole = _pooled_warp_errors(plain, ROBOT)[1]
    assert shiny_whole.mean() > 2 * plain_whole.mean(), (shiny_whole.mean(), plain_whole.mean())
    for one, other in zip(shiny, plain, strict=True):
        np.testing.assert_array_equal(one.depth, other.depth)
        np.testing.assert_array_equal(one.normals, other.normals)


def test_camera_effects_change_the_images_never_the_ground_truth() -> None:
    """The default indoor style's vignetting, blur, noise and gain: other pixels, same depth,
    right depth and normals (the effects are drawn after the scene)."""
    clean = render_frame(seed=5, index=1, camera=ROBOT, style=MATTE_CLEAN)
    noisy = render_frame(
        seed=5, index=1, camera=ROBOT, style=IndoorStyle(glossy_fraction=0.0)
    )
    for name in ("depth", "right_depth", "normals"):
        np.testing.assert_array_equal(getattr(clean, name), getattr(noisy, name))
    assert np.abs(clean.left.astype(int) - noisy.left).mean() > 0.5


def test_camera_model_vignettes_corners_gains_the_right_view_and_adds_shot_noise() -> None:
    flat = np.full((41, 61, 3), 0.25)
    vignetted = SensorEffects(vignetting=0.3).through_lens(flat)
    assert vignetted[20, 30, 0] == pytest.approx(0.25, rel=1e-3)
    assert vignetted[0, 0, 0] == pytest.approx(0.25 * 0.7, rel=0.03)
    blurred = SensorEffects(blur_sigma=0.8).through_lens(flat)
    np.testing.assert_allclose(blurred, flat)  # blur keeps a flat field flat

    effects = SensorEffects(shot_noise=0.002, read_noise=0.004, right_gain=1.05)
    rng = np.random.default_rng(0)
    signal = effects.expose(np.full((200, 200, 3), 0.5), 0.8, rng)
    assert signal.mean() == pytest.approx(0.4, abs=1e-3)
    assert signal.std() == pytest.approx(math.sqrt(0.002 * 0.4 + 0.004**2), rel=0.03)
    assert effects.expose(np.full(3, 0.5), 0.8 * effects.right_gain, rng).mean() > 0.41


def test_colour_temperature_is_warm_to_cool_with_unit_luminance() -> None:
    for kelvin in (2700.0, 4000.0, 6500.0):
        r, g, b = colour_temperature(kelvin)
        assert 0.2126 * r + 0.7152 * g + 0.0722 * b == pytest.approx(1.0)
    warm, daylight = colour_temperature(2700.0), colour_temperature(6500.0)
    assert warm[0] / warm[2] > 3.0
    assert daylight[0] / daylight[2] == pytest.approx(1.0, abs=0.1)


def test_rig_ranges_draw_each_frames_camera_reproducibly_within_them() -> None:
    rig = RigRanges(320, 240, (0.05, 0.12), (60.0, 100.0))
    cameras = [rig.camera(seed=1, index=i) for i in range(50)]
    assert cameras[7] == rig.camera(seed=1, index=7) != rig.camera(seed=2, index=7)
    baselines = np.array([c.baseline for c in cameras])
    fovs = np.array([horizontal_fov(c) for c in cameras])
    assert baselines.min() >= 0.05 and baselines.max() <= 0.12 and np.ptp(baselines) > 0.04
    assert fovs.min() >= 60.0 and fovs.max() <= 100.0 and np.ptp(fovs) > 25.0
    for camera in cameras:
        assert camera.fx == camera.fy and (camera.cx, camera.cy) == (159.5, 119.5)
    nominal = rig.nominal()
    assert nominal.baseline == pytest.approx(math.sqrt(0.05 * 0.12))
    assert horizontal_fov(nominal) == pytest.approx(80.0)
    fixed = RigRanges(320, 240, (0.1, 0.1), fx=200.0)
    assert fixed.simplest() == centred_camera(320, 240, 200.0, 0.1)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"baseline": (0.12, 0.05), "fov_deg": (60.0, 90.0)}, "reversed"),
        ({"baseline": (0.0, 0.1), "fov_deg": (60.0, 90.0)}, "baseline must be positive"),
        ({"baseline": (0.1, math.inf), "fov_deg": (60.0, 90.0)}, "finite"),
        ({"baseline": (0.1, 0.1), "fov_deg": (60.0, 175.0)}, "field of view must be strictly"),
        ({"baseline": (0.1, 0.1)}, "not both"),
        ({"baseline": (0.1, 0.1), "fov_deg": (60.0, 90.0), "fx": 100.0}, "not both"),
        ({"baseline": (0.1, 0.1), "fx": -3.0}, "focal length"),
    ],
)
def test_bad_rig_ranges_are_rejected_by_name(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RigRanges(64, 48, **arguments)


def _written_cameras(root: Path) -> list[PinholeCamera]:
    return [frame.camera for frame in SyntheticDataset(root)]


def test_a_set_with_per_frame_rigs_stores_each_frames_camera_and_its_disparity_fits(
    tmp_path: Path,
) -> None:
    """Every frame carries its own camera (``NNNNNN_camera.json``, read into the Frame): the one
    it was rendered with, whose disparity ``fx * B / Z`` warps the right image onto the left."""
    rig = RigRanges(96, 72, (0.05, 0.12), (60.0, 100.0))
    write_dataset(tmp_path, [World(MATTE_CLEAN, rig)], 3, seed=6, workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.glob("*_camera.json")) == [
        f"{i:06d}_camera.json" for i in range(3)
    ]
    dataset = SyntheticDataset(tmp_path)
    assert dataset.camera == rig.nominal()
    for index, frame in enumerate(dataset):
        assert frame.camera == rig.camera(6, index) != dataset.camera
        depth = np.where(np.isnan(frame.depth), np.inf, frame.depth)
        right_depth = np.where(np.isnan(frame.right_depth), np.inf, frame.right_depth)
        _, whole = warp_error(frame.left, frame.right, depth, right_depth, frame.camera)
        assert np.median(whole) < 0.3
        # The stored camera is the one the frame was rendered with.
        again = render_frame(seed=6, index=index, camera=frame.camera, style=MATTE_CLEAN)
        np.testing.assert_array_equal(frame.right, again.right)
        assert np.nanmin(frame.depth) >= 0.3 and np.nanmax(frame.depth) <= 10.0

    # A frame camera of another size is refused, naming the file.
    wrong_size = {**rig.nominal().to_dict(), "width": 90}
    (tmp_path / "000001_camera.json").write_text(json.dumps(wrong_size))
    with pytest.raises(DatasetError, match=r"000001_camera\.json"):
        dataset[1]


def test_a_fixed_rig_writes_no_frame_cameras_and_mixed_alternates_worlds(tmp_path: Path) -> None:
    fixed = make_worlds("indoor", 64, 48, baseline=(0.08, 0.08), fov_deg=(75.0, 75.0))
    assert isinstance(fixed[0].rig, PinholeCamera)
    write_dataset(tmp_path / "fixed", fixed, 2, seed=1, workers=1, progress=False)
    assert not list((tmp_path / "fixed").glob("*_camera.json"))
    assert _written_cameras(tmp_path / "fixed") == [fixed[0].rig] * 2

    mixed = make_worlds("mixed", 64, 48)
    write_dataset(tmp_path / "mixed", mixed, 4, seed=1, workers=1, progress=False)
    dataset = SyntheticDataset(tmp_path / "mixed")
    for index, frame in enumerate(dataset):
        street = index % 2 == 0
        assert (frame.camera.baseline == 0.54) is street
        # Streets have sky (no ground truth); rooms are closed.
        assert bool(np.isnan(frame.depth).any()) is street
        if not street:
            assert ROBOT_BASELINE_M[0] <= frame.camera.baseline <= ROBOT_BASELINE_M[1]
            assert ROBOT_FOV_DEG[0] <= horizontal_fov(frame.camera) <= ROBOT_FOV_DEG[1]


def test_cnd_depth_synth_indoor_with_rig_ranges_and_resume(tmp_path: Path) -> None:
    out, report = tmp_path / "rooms", tmp_path / "r.json"
    argv = [
        "synth", "--out", str(out), "--world", "indoor", "--frames", "2", "--width", "64",
        "--height", "48", "--baseline", "0.06:0.1", "--fov", "70:90", "--workers", "1",
        "--no-progress",
    ]
    assert cli.main([*argv, "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["world"] == "indoor" and result["written"] == 2
    assert result["rigs"]["indoor"]["baseline"] == [0.06, 0.1]
    for camera in _written_cameras(out):
        assert 0.06 <= camera.baseline <= 0.1 and 70.0 <= horizontal_fov(camera) <= 90.0
    manifest = json.loads((out / "synth.json").read_text())
    assert [world["world"] for world in manifest["worlds"]] == ["indoor"]

    assert cli.main([*argv, "--frames", "3", "--resume"]) == 0
    assert len(SyntheticDataset(out)) == 3
    other_rig = [a if a != "70:90" else "70:95" for a in argv]
    assert cli.main([*other_rig, "--frames", "4", "--resume"]) == 2


def test_resume_completes_a_street_set_written_before_there_were_worlds(tmp_path: Path) -> None:
    """A set whose synth.json records only the street style (the earlier format) resumes."""
    size = ["--width", "48", "--height", "32", "--workers", "1", "--no-progress"]
    argv = ["synth", "--out", str(tmp_path / "s"), "--frames", "1", *size]
    assert cli.main(argv) == 0
    manifest_path = tmp_path / "s" / "synth.json"
    manifest = json.loads(manifest_path.read_text())
    (world,) = manifest.pop("worlds")
    manifest_path.write_text(json.dumps({**manifest, "style": world["style"]}))
    assert cli.main([*argv[:4], "2", *size, "--resume"]) == 0
    assert len(SyntheticDataset(tmp_path / "s")) == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--baseline", "0"], "baseline must be positive"),
        (["--baseline", "0.2:0.1"], "reversed"),
        (["--baseline", "0.05:0.1:0.2"], "VALUE or MIN:MAX"),
        (["--baseline", "wide"], "VALUE or MIN:MAX"),
        (["--fov", "50:180"], "field of view must be strictly between 1 and 170"),
        (["--fov", "nan"], "finite"),
        (["--fov", "90", "--fx", "100"], "not allowed with argument"),
        (["--world", "garden"], "invalid choice"),
        (["--world", "indoor", "--style", "foggy_dusk"], "no indoor style"),
    ],
)
def test_cnd_depth_synth_rejects_bad_world_and_rig_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    argv = ["synth", "--out", str(tmp_path / "x"), "--frames", "1", *options]
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse: usage and the message
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
