"""`cnd-depth finetune`: self-supervised adaptation on unlabeled recordings, end to end.

Everything is real on the CPU: a rosbag2 of a synthetic drive written by the package and copied
without its depth topic (an unlabeled recording), tiny seeded artifacts, torchrun's launcher with
the Gloo backend, the real networks and objective.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixtures.artifacts import SMALL, make_artifact
from fixtures.training import one_torch_thread, synthetic_folder  # noqa: F401

from cnd_depth_ros import cli
from cnd_depth_ros.data.registry import open_dataset
from cnd_depth_ros.data.rosbag import DEFAULT_TOPICS
from cnd_depth_ros.models.artifact import load_artifact, read_metadata, weights_sha256
from cnd_depth_ros.synthetic.bag_writer import write_sequence_bag
from cnd_depth_ros.synthetic.dataset_writer import kitti_like_camera
from cnd_depth_ros.training.finetune import FinetuneConfig, build_finetune_data

WIDTH, HEIGHT = 64, 48

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _without_depth(source: Path, target: Path) -> Path:
    """Copy the bag ``source`` to ``target`` leaving out the ground-truth depth topic."""
    from rosbags.rosbag2 import Reader, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    with Reader(source) as reader, Writer(target, version=9) as writer:
        kept = [c for c in reader.connections if c.topic != DEFAULT_TOPICS["depth_topic"]]
        added = {
            c.id: writer.add_connection(c.topic, c.msgtype, typestore=store) for c in kept
        }
        for connection, timestamp, raw in reader.messages(connections=kept):
            writer.write(added[connection.id], timestamp, raw)
    return target


@pytest.fixture(scope="module")
def unlabeled_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bags")
    labeled = write_sequence_bag(
        folder / "drive", kitti_like_camera(WIDTH, HEIGHT), 6, seed=4, progress=False
    ).path
    return _without_depth(labeled, folder / "unlabeled")


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_folder(tmp_path_factory.mktemp("synthetic"), WIDTH, HEIGHT, 4, seed=3)


def test_an_unlabeled_bag_opens_without_depth(unlabeled_bag: Path) -> None:
    with pytest.raises(ValueError, match="/ground_truth/depth"):
        open_dataset("rosbag", unlabeled_bag)
    frames = open_dataset("rosbag", unlabeled_bag, depth_topic=None)
    assert len(frames) == 6
    frame = frames[0]
    assert frame.depth is None and frame.right is not None
    assert frame.camera == kitti_like_camera(WIDTH, HEIGHT)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_process_finetune_on_an_unlabeled_bag_records_its_provenance(
    unlabeled_bag: Path, tmp_path: Path
) -> None:
    source = make_artifact(tmp_path, "cnd_stereo", width=WIDTH, height=HEIGHT, **SMALL)
    out, result_path = tmp_path / "adapted", tmp_path / "result.json"
    code = cli.main(
        [
            "finetune", "--nproc", "2", "--model", str(source),
            "--data", f"rosbag:{unlabeled_bag}", "--steps", "2", "--batch-size", "2",
            "--warmup-steps", "1", "--workers", "0", "--device", "cpu", "--no-progress",
            "--out", str(out), "--json", str(result_path),
        ]
    )
    assert code == 0
    report = json.loads(result_path.read_text())
    assert (report["world_size"], report["global_batch"], report["steps"]) == (2, 4, 2)

    model, metadata = load_artifact(out / "model")
    _, original = load_artifact(source)
    assert metadata.variant == "cnd_stereo" and metadata.output == "disparity"
    assert metadata.training_camera == original.training_camera  # the output rule is kept
    training = metadata.training
    assert training["finetuned_from"]["weights_sha256"] == weights_sha256(source)
    assert training["finetuned_from"]["artifact"] == str(source)
    assert training["adapted_on"] == [f"rosbag:{unlabeled_bag}"]
    assert (training["steps"], training["global_batch"], training["complete"]) == (2, 4, True)
    assert training["loss"].startswith("SelfSupervisedLoss(alpha=0.85")
    assert set(training["train_loss"]) >= {"loss", "photometric", "smoothness", "consistency"}
    assert weights_sha256(out / "model") != weights_sha256(source)
    images = torch.rand(1, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        assert bool((model(images, images) > 0).all())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_mono_model_learns_from_stereo_with_synthetic_batches_mixed_in(
    unlabeled_bag: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    source = make_artifact(tmp_path, "cnd_mono", width=WIDTH, height=HEIGHT, **SMALL)
    out = tmp_path / "adapted"
    code = cli.main(
        [
            "finetune", "--model", str(source), "--data", f"rosbag:{unlabeled_bag}",
            "--mix-data", f"synthetic:{synthetic_root}", "--val-data",
            f"synthetic:{synthetic_root}", "--steps", "2", "--batch-size", "2",
            "--warmup-steps", "1", "--workers", "0", "--device", "cpu", "--no-progress",
            "--out", str(out),
        ]
    )
    assert code == 0
    training = read_metadata(out / "model").training
    assert training["mix_data"] == [f"synthetic:{synthetic_root}"]
    assert "ExtendedDepthLoss" in training["loss"]
    assert training["train_loss"]["supervised"] > 0
    assert set(training["val_metrics"]) >= {"rel", "log10", "rmse"}


def test_finetuning_never_sees_ground_truth(synthetic_root: Path, tmp_path: Path) -> None:
    source = make_artifact(tmp_path, "cnd_stereo", width=WIDTH, height=HEIGHT, **SMALL)
    config = FinetuneConfig(
        model=str(source), data=[f"synthetic:{synthetic_root}"], out=str(tmp_path), steps=1,
        batch_size=2, workers=0,
    )
    data = build_finetune_data(config, read_metadata(source))
    batch = next(iter(data.loader))
    assert batch["left"].shape == batch["right"].shape == (2, 3, HEIGHT, WIDTH)
    assert not batch["valid"].any()  # the synthetic folder has exact depth; it is dropped
    assert data.val is None


def test_bad_input_is_reported_by_name_without_a_traceback(
    unlabeled_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["finetune", "--model", "x", "--data", "no-kind", "--steps", "1",
                  "--out", str(tmp_path)])
    assert "KIND:ROOT" in capsys.readouterr().err
    code = cli.main(["finetune", "--model", str(tmp_path / "absent"), "--data",
                     f"rosbag:{unlabeled_bag}", "--steps", "1", "--out", str(tmp_path)])
    assert code == 2
    assert "absent" in capsys.readouterr().err
    code = cli.main(["finetune", "--model", "x", "--data", f"rosbag:{unlabeled_bag}",
                     "--steps", "1", "--smoothness-weight", "-1", "--out", str(tmp_path)])
    assert code == 2
    assert "smoothness_weight" in capsys.readouterr().err
