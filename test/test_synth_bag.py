"""``cnd-depth synth --bag``: a synthetic drive (street or room) as a real rosbag2 (sqlite3 and
MCAP), read back with ``rosbags`` and the rosbag dataset loader; deterministic, never half
written."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from cnd_depth_ros import cli
from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.data.registry import open_dataset
from cnd_depth_ros.messages.bag import BagWriteError
from cnd_depth_ros.synthetic import bag_writer
from cnd_depth_ros.synthetic.bag_writer import write_sequence_bag
from cnd_depth_ros.synthetic.dataset_writer import kitti_like_camera
from cnd_depth_ros.synthetic.indoor import IndoorStyle
from cnd_depth_ros.synthetic.primitives import Boxes, GroundPlane
from cnd_depth_ros.synthetic.rig import horizontal_fov
from cnd_depth_ros.synthetic.scene import street_scene
from cnd_depth_ros.synthetic.sequence import free_distance, render_sequence
from cnd_depth_ros.synthetic.textures import default_bank

CAMERA = kitti_like_camera(48, 32)
TYPESTORE = get_typestore(Stores.LATEST)


def _messages(path: Path) -> dict[str, list[object]]:
    with Reader(path) as reader:
        found: dict[str, list[object]] = {c.topic: [] for c in reader.connections}
        for connection, _, raw in reader.messages():
            found[connection.topic].append(TYPESTORE.deserialize_cdr(raw, connection.msgtype))
    return found


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_synth_bag_holds_the_drive_with_exact_depth(tmp_path: Path, storage: str) -> None:
    bag = tmp_path / "drive"
    code = cli.main([
        "synth", "--bag", str(bag), "--frames", "3", "--width", "48", "--height", "32",
        "--seed", "4", "--storage", storage, "--no-progress",
    ])
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drive"]  # no scratch folder left

    messages = _messages(bag)
    assert {topic: len(found) for topic, found in messages.items()} == {
        "/left/image_rect": 3, "/left/camera_info": 3, "/right/image_rect": 3,
        "/right/camera_info": 3, "/ground_truth/depth": 3, "/tf_static": 1,
    }
    right_info = messages["/right/camera_info"][0]
    assert right_info.p[3] == pytest.approx(-CAMERA.fx * 0.54)  # type: ignore[attr-defined]
    left_image = messages["/left/image_rect"][1]
    assert left_image.encoding == "rgb8"  # type: ignore[attr-defined]
    assert left_image.header.frame_id == "left_camera_optical_frame"  # type: ignore[attr-defined]
    transforms = messages["/tf_static"][0].transforms  # type: ignore[attr-defined]
    right = next(t for t in transforms if t.child_frame_id == "right_camera_optical_frame")
    assert right.transform.translation.x == pytest.approx(0.54)

    # The ground truth is the renderer's depth of the same poses, and the loader reads it.
    frames = list(render_sequence(CAMERA, 3, seed=4))
    dataset = open_dataset("rosbag", bag)
    assert len(dataset) == 3
    for frame, rendered in zip(dataset, frames, strict=True):
        expected = np.where(np.isfinite(rendered.rendering.depth), rendered.rendering.depth, np.nan)
        np.testing.assert_array_equal(frame.depth, expected)
        np.testing.assert_array_equal(frame.left, rendered.rendering.left)
        assert frame.camera == CAMERA
    # The rig drives forward at the default 8 m/s: 1.6 m in the 0.2 s from frame 0 to 2.
    travelled = frames[2].pose.position - frames[0].pose.position
    np.testing.assert_allclose(travelled, [0.0, 0.0, 1.6], atol=1e-9)


def test_synth_bag_is_deterministic_and_humble_gets_version_8(tmp_path: Path) -> None:
    paths = [tmp_path / "a", tmp_path / "b"]
    for path in paths:
        write_sequence_bag(path, CAMERA, 2, seed=7, storage="mcap", distro="humble",
                           progress=False)
    first, second = (_messages(path) for path in paths)
    for topic, found in first.items():
        for one, other in zip(found, second[topic], strict=True):
            assert TYPESTORE.serialize_cdr(one, one.__msgtype__) == TYPESTORE.serialize_cdr(  # type: ignore[attr-defined]
                other, other.__msgtype__  # type: ignore[attr-defined]
            )
    metadata = yaml.safe_load((paths[0] / "metadata.yaml").read_text())
    assert metadata["rosbag2_bagfile_information"]["version"] == 8


def test_synth_bag_refuses_an_existing_path_and_leaves_nothing_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "taken"
    existing.mkdir()
    assert cli.main(["synth", "--bag", str(existing), "--frames", "1", "--no-progress"]) == 2
    assert "exists already" in capsys.readouterr().err

    def broken_sequence(*args: object, **kwargs: object) -> object:
        yield from render_sequence(CAMERA, 1, seed=0)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bag_writer, "render_sequence", broken_sequence)
    target = tmp_path / "full"
    with pytest.raises(BagWriteError, match="No space left"):
        write_sequence_bag(target, CAMERA, 2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_the_rig_stops_short_of_an_obstacle_in_its_lane() -> None:
    scene, pose = street_scene(np.random.default_rng(0), default_bank())
    x, _, z = pose.position
    lane_box = Boxes(
        centres=np.array([[x, -1.0, z + 12.0]]),
        half_sizes=np.array([[1.0, 1.0, 2.0]]),
        yaws=np.zeros(1),
        material_ids=np.zeros(1, np.int64),
    )
    aside = Boxes(  # beside the lane: not in the way
        centres=np.array([[x + 5.0, -1.0, z + 4.0]]),
        half_sizes=np.array([[1.0, 1.0, 1.0]]),
        yaws=np.zeros(1),
        material_ids=np.zeros(1, np.int64),
    )
    blocked = dataclasses.replace(scene, primitives=(GroundPlane(material=0), lane_box, aside))
    assert free_distance(blocked, pose) == pytest.approx(10.0)
    assert free_distance(dataclasses.replace(scene, primitives=(GroundPlane(0), aside)), pose) \
        == np.inf


def test_synth_bag_of_a_robot_crossing_a_room(tmp_path: Path) -> None:
    """--world indoor: a rig drawn once from the robot ranges, 1 m/s, depth within 0.3-10 m."""
    bag, report = tmp_path / "room", tmp_path / "room.json"
    code = cli.main([
        "synth", "--bag", str(bag), "--world", "indoor", "--frames", "3", "--width", "48",
        "--height", "36", "--seed", "2", "--storage", "mcap", "--no-progress",
        "--json", str(report),
    ])
    assert code == 0
    camera = PinholeCamera.from_dict(json.loads(report.read_text())["camera"])
    assert camera.baseline is not None and 0.05 <= camera.baseline <= 0.12
    assert 60.0 <= horizontal_fov(camera) <= 100.0
    right_info = _messages(bag)["/right/camera_info"][0]
    assert right_info.p[3] == pytest.approx(-camera.fx * camera.baseline)  # type: ignore[attr-defined]
    frames = list(render_sequence(camera, 3, seed=2, style=IndoorStyle()))
    dataset = open_dataset("rosbag", bag)
    for frame, rendered in zip(dataset, frames, strict=True):
        assert frame.camera == camera and frame.depth is not None
        np.testing.assert_array_equal(frame.depth, rendered.rendering.depth)
        assert frame.depth.min() >= 0.3 and frame.depth.max() <= 10.0  # a closed room: no sky
    travelled = frames[2].pose.position - frames[0].pose.position
    assert travelled[0] == travelled[1] == 0.0 and 0.0 <= travelled[2] <= 0.2 + 1e-9


def test_synth_bag_is_one_world(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["synth", "--bag", str(tmp_path / "b"), "--world", "mixed", "--no-progress"]
    assert cli.main(argv) == 2
    assert "one world" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
