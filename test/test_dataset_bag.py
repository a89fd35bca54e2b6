"""``cnd-depth bag``: real dataset files (the motorcycle pair scikit-image ships, KITTI 2012
folders written in KITTI's own formats) as real rosbag2 files (sqlite3 and MCAP), read back with
``rosbags``, with the node's own camera_info parser on rclpy messages, with the rosbag dataset
loader, and played through a real depth_node subprocess by ``cnd-depth replay``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures.artifacts import SMALL, make_artifact
from fixtures.dataset_files import write_rgb, write_uint16
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo

from cnd_depth_ros import cli
from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.data.frame import Frame
from cnd_depth_ros.data.kitti import DEFAULT_BASELINE, DEFAULT_FX
from cnd_depth_ros.data.registry import open_dataset
from cnd_depth_ros.data.rosbag import RosbagDataset
from cnd_depth_ros.messages.bag import BagReader, BagWriteError
from cnd_depth_ros.messages.camera_info import camera_from_info
from cnd_depth_ros.messages.tf_static import StaticTransforms
from cnd_depth_ros.synthetic.bag_writer import FRAME_IDS, START_NS, write_frames_bag

TYPESTORE = get_typestore(Stores.LATEST)
CAMERA_TOPICS = ("/left/image_rect", "/left/camera_info", "/right/image_rect",
                 "/right/camera_info")
#: Two KITTI 2012 pairs of different sizes; the second with its own calibration (B = 0.5 m).
SIZES = ((64, 48), (96, 32))
FX, BASELINE = 700.0, 0.5


def bag(*arguments: str) -> int:
    return cli.main(["bag", *arguments, "--no-progress"])


def stamp_of(message: Any) -> int:
    return int(message.header.stamp.sec) * 10**9 + int(message.header.stamp.nanosec)


def messages(path: Path) -> dict[str, list[tuple[int, bytes]]]:
    """Topic -> ``(log time, CDR bytes)`` of each message, in log-time order."""
    with Reader(path) as reader:
        found: dict[str, list[tuple[int, bytes]]] = {c.topic: [] for c in reader.connections}
        for connection, log_time, raw in reader.messages():
            found[connection.topic].append((log_time, bytes(raw)))
    return found


def decoded(found: dict[str, list[tuple[int, bytes]]], topic: str, msgtype: str) -> list[Any]:
    return [TYPESTORE.deserialize_cdr(raw, msgtype) for _, raw in found[topic]]


def ros_cameras(found: dict[str, list[tuple[int, bytes]]]) -> list[PinholeCamera]:
    """Each frame's camera as the node reads it: rclpy CameraInfo messages through
    ``camera_from_info``."""
    left, right = (
        [deserialize_message(raw, CameraInfo) for _, raw in found[topic]]
        for topic in ("/left/camera_info", "/right/camera_info")
    )
    return [camera_from_info(one, other) for one, other in zip(left, right, strict=True)]


def kitti_folder(root: Path, sizes: tuple[tuple[int, int], ...] = SIZES) -> Path:
    """A KITTI 2012 training folder: pair ``i`` is ``sizes[i]``, its right view the left one
    moved by a disparity of 8 px (0 = unknown in the top rows); the last pair has a
    ``calib/`` file, the others take the loader's default rig."""
    rng = np.random.default_rng(0)
    for index, (width, height) in enumerate(sizes):
        name = f"{index:06d}_10.png"
        scene = rng.integers(0, 256, (height, width + 8, 3), dtype=np.uint8)
        write_rgb(root / "colored_0" / name, scene[:, :-8])
        write_rgb(root / "colored_1" / name, scene[:, 8:])
        disparity = np.full((height, width), 8 * 256, np.uint16)
        disparity[:4] = 0
        write_uint16(root / "disp_occ" / name, disparity)
    projection = [FX, 0, (width - 1) / 2, 0, 0, FX, (height - 1) / 2, 0, 0, 0, 1, 0]
    right = [*projection[:3], -FX * BASELINE, *projection[4:]]
    (root / "calib").mkdir()
    (root / "calib" / f"{len(sizes) - 1:06d}.txt").write_text(
        "".join(f"P{i}: " + " ".join(map(str, p)) + "\n" for i, p in ((2, projection),
                                                                        (3, right)))
    )
    return root


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_the_motorcycle_pair_reads_back_the_same(tmp_path: Path, storage: str) -> None:
    """Images, depth (NaN where unknown) and camera come back bit for bit, through the node's
    camera_info parser and through the rosbag dataset alike; repeats are 1 / rate apart."""
    out, report = tmp_path / "motorcycle", tmp_path / "bag.json"
    assert bag("--data", "motorcycle:-", "--out", str(out), "--repeat", "3", "--rate", "5",
               "--storage", storage, "--json", str(report)) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag.json", "motorcycle"]
    source = open_dataset("motorcycle")[0]
    assert source.depth is not None and source.camera.baseline is not None
    result = json.loads(report.read_text())
    assert (result["frames"], result["dataset_frames"], result["repeat"]) == (3, 1, 3)
    assert result["cameras"] == [source.camera.to_dict()]

    found = messages(out)
    assert {topic: len(rows) for topic, rows in found.items()} == {
        **dict.fromkeys(CAMERA_TOPICS, 3), "/ground_truth/depth": 3, "/tf_static": 1,
    }
    stamps = [START_NS + i * 200_000_000 for i in range(3)]
    for topic in CAMERA_TOPICS:
        assert [log_time for log_time, _ in found[topic]] == stamps
    images = decoded(found, "/left/image_rect", "sensor_msgs/msg/Image")
    assert [stamp_of(image) for image in images] == stamps
    assert images[0].encoding == "rgb8" and images[0].header.frame_id == FRAME_IDS["left"]
    depth = decoded(found, "/ground_truth/depth", "sensor_msgs/msg/Image")[0]
    assert depth.encoding == "32FC1" and (depth.width, depth.height) == (741, 500)
    assert ros_cameras(found) == [source.camera] * 3
    right_info = decoded(found, "/right/camera_info", "sensor_msgs/msg/CameraInfo")[0]
    assert right_info.p[3] == pytest.approx(-source.camera.fx * source.camera.baseline)
    with BagReader(out) as reader:
        optical = StaticTransforms(reader).lookup(FRAME_IDS["left"], FRAME_IDS["right"])
    np.testing.assert_allclose(optical[:3, 3], [source.camera.baseline, 0.0, 0.0])

    frames = RosbagDataset(out)
    assert len(frames) == 3
    for frame in frames:
        assert frame.camera == source.camera
        np.testing.assert_array_equal(frame.left, source.left)
        np.testing.assert_array_equal(frame.right, source.right)
        np.testing.assert_array_equal(frame.depth, np.where(source.valid, source.depth, np.nan))
        assert frame.depth is not None and np.isnan(frame.depth).any()


def test_frames_of_different_sizes_and_rigs_share_a_bag(tmp_path: Path) -> None:
    """Every camera_info describes its own image; /tf_static follows the baseline."""
    root = kitti_folder(tmp_path / "kitti")
    out = tmp_path / "kitti_bag"
    assert bag("--data", f"kitti:{root}", "--out", str(out), "--repeat", "2",
               "--storage", "mcap") == 0
    sources = open_dataset("kitti", root)
    expected = [sources[0].camera, sources[0].camera, sources[1].camera, sources[1].camera]
    assert [(c.width, c.height) for c in expected] == [SIZES[0]] * 2 + [SIZES[1]] * 2
    assert expected[0].baseline == DEFAULT_BASELINE and expected[0].fx == DEFAULT_FX
    assert expected[2].baseline == pytest.approx(BASELINE) and expected[2].fx == FX

    found = messages(out)
    assert ros_cameras(found) == expected
    for topic in ("/left/image_rect", "/right/image_rect", "/ground_truth/depth"):
        sizes = [(m.width, m.height) for m in decoded(found, topic, "sensor_msgs/msg/Image")]
        assert sizes == [(c.width, c.height) for c in expected], topic
    frames = RosbagDataset(out)
    assert [frame.camera for frame in frames] == expected
    for frame, index in zip(frames, (0, 0, 1, 1), strict=True):
        np.testing.assert_array_equal(frame.left, sources[index].left)
        np.testing.assert_array_equal(frame.depth, sources[index].depth)

    # tf2 latches the newest message: each one holds the optical frames at that baseline.
    tf = decoded(found, "/tf_static", "tf2_msgs/msg/TFMessage")
    assert [log_time for log_time, _ in found["/tf_static"]] == [START_NS, START_NS + 2 * 10**8]
    assert [m.transforms[0].transform.translation.x for m in tf] == pytest.approx(
        [DEFAULT_BASELINE, BASELINE]
    )
    assert all(m.transforms[0].child_frame_id == FRAME_IDS["right"] for m in tf)

    # --max-frames counts dataset frames, before the repeats.
    first = tmp_path / "first"
    assert bag("--data", f"kitti:{root}", "--out", str(first), "--max-frames", "1",
               "--repeat", "3") == 0
    assert [frame.camera for frame in RosbagDataset(first)] == [expected[0]] * 3


def test_a_mono_dataset_gives_a_bag_without_right_topics(tmp_path: Path) -> None:
    stereo = tmp_path / "stereo"
    assert bag("--data", f"kitti:{kitti_folder(tmp_path / 'kitti')}", "--out", str(stereo)) == 0
    mono = tmp_path / "mono"
    assert bag("--data", f"rosbag:{stereo},right_topic=none", "--out", str(mono)) == 0
    assert set(messages(mono)) == {"/left/image_rect", "/left/camera_info", "/ground_truth/depth"}
    frames = RosbagDataset(mono, right_topic=None)
    assert [frame.right for frame in frames] == [None, None]
    assert [frame.camera for frame in frames] == [
        dataclasses.replace(frame.camera, baseline=None) for frame in RosbagDataset(stereo)
    ]


def test_bad_arguments_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for arguments in (["--repeat", "0"], ["--rate", "0"], ["--rate", "inf"],
                      ["--max-frames", "-1"], ["--storage", "zip"]):
        with pytest.raises(SystemExit) as exit_info:
            bag("--data", "motorcycle:-", "--out", str(tmp_path / "b"), *arguments)
        assert exit_info.value.code == 2
        assert f"argument {arguments[0]}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bag("--data", "kitti", "--out", str(tmp_path / "b"))
    assert "must be KIND:ROOT" in capsys.readouterr().err

    assert bag("--data", "lidar:x", "--out", str(tmp_path / "b")) == 2
    assert "unknown dataset kind 'lidar'" in capsys.readouterr().err
    assert bag("--data", "kitti:/no/such/folder", "--out", str(tmp_path / "b")) == 2
    assert "is not a KITTI stereo folder" in capsys.readouterr().err
    assert bag("--data", "motorcycle:-,focal=3", "--out", str(tmp_path / "b")) == 2
    assert "bad options ['focal']" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    assert bag("--data", "motorcycle:-", "--out", str(tmp_path / "taken")) == 2
    assert "exists already" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]

    frames = open_dataset("motorcycle")
    for options, message in (({"rate": float("nan")}, "rate must be positive"),
                             ({"repeat": 0}, "repeat must be at least 1"),
                             ({"max_frames": 0}, "max_frames must be at least 1"),
                             ({"storage": "rosbag1"}, "storage must be one of"),
                             ({"distro": "noetic"}, "distro must be one of")):
        with pytest.raises(ValueError, match=message):
            write_frames_bag(tmp_path / "b", frames, progress=False, **options)
    with pytest.raises(ValueError, match="no frames"):
        write_frames_bag(tmp_path / "b", [], progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_a_failure_part_way_leaves_no_bag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A frame that cannot be read, or cannot be a stereo frame, after others were written:
    the error names it and neither the bag nor its hidden scratch folder is left."""
    root = kitti_folder(tmp_path / "kitti", sizes=((32, 16),) * 3)
    (root / "colored_1" / "000002_10.png").write_bytes(b"not a png")
    assert bag("--data", f"kitti:{root}", "--out", str(tmp_path / "out")) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kitti"]

    good = open_dataset("kitti", root)[0]
    no_baseline = PinholeCamera(32, 16, 30.0, 30.0, 15.5, 7.5)
    broken = Frame(left=good.left, right=good.right, camera=no_baseline, name="kitti/broken")
    with pytest.raises(ValueError, match="frame kitti/broken: a stereo frame needs a camera "
                                         "with a baseline"):
        write_frames_bag(tmp_path / "out", [good, broken], progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kitti"]
    with pytest.raises(BagWriteError, match="cannot write the bag"):
        write_frames_bag(tmp_path / "kitti" / "calib" / "000002.txt" / "bag", [good],
                         progress=False)


@pytest.mark.timeout(300)
def test_replay_scores_the_node_on_a_dataset_bag(tmp_path: Path) -> None:
    """The KITTI folder of two sizes, each pair twice, through a real depth_node subprocess
    (a tiny random stereo net on torch) and SGBM: every frame answered at its own size and
    scored."""
    out_bag = tmp_path / "kitti_bag"
    assert bag("--data", f"kitti:{kitti_folder(tmp_path / 'kitti')}", "--out", str(out_bag),
               "--repeat", "2") == 0
    artifact = make_artifact(tmp_path / "models", "cnd_stereo", **SMALL)
    out, record = tmp_path / "replay", tmp_path / "outputs"
    code = cli.main([
        "replay", str(out_bag), "--out", str(out), "--model", str(artifact), "--backend",
        "torch", "--param", "threads:=1", "--startup-timeout", "120", "--frame-timeout", "30",
        "--max-depth", "1000", "--max-rate", "--baseline", "sgbm", "--record", str(record),
        "--no-progress",
    ])
    assert code == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["frames"] == {"in": 4, "out": 4, "dropped": 0, "unmatched": 0, "scored": 4}
    assert len(result["per_frame"]) == 4
    # An untrained net may give no valid depth (an infinite error, written as null).
    assert all(v is None or v >= 0 for v in result["overall"].values())
    assert result["baseline"]["backend"] == "sgbm"
    assert 0.0 <= result["baseline"]["overall"]["rel"] < 0.5  # the pairs are 8 px apart
    depth = decoded(messages(record), "/depth/image", "sensor_msgs/msg/Image")
    answered = {stamp_of(image): (image.width, image.height) for image in depth}
    stamps = [START_NS + i * 100_000_000 for i in range(4)]
    assert answered == dict(zip(stamps, [SIZES[0]] * 2 + [SIZES[1]] * 2, strict=True))
