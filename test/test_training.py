"""The trainer: a real 2-process DDP run over Gloo, exact resume, schedules, checkpoints, CLI.

Everything runs for real on the CPU: a tiny synthetic folder from the renderer, torchrun's
launcher with the Gloo backend, the real networks and loss. Only the kill of the resume test is
simulated, by raising from inside the training loop after the checkpoint on disk has been made
(the checkpoint file is what a real kill leaves behind; it is written atomically).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from fixtures.artifacts import SMALL, make_artifact
from fixtures.training import one_torch_thread, synthetic_folder  # noqa: F401

from cnd_depth_ros import cli
from cnd_depth_ros.commands import train as train_command
from cnd_depth_ros.data.sources import DataSpec
from cnd_depth_ros.errors import ArtifactError, CndDepthError
from cnd_depth_ros.models import build_model
from cnd_depth_ros.models.artifact import load_artifact, read_metadata
from cnd_depth_ros.synthetic.dataset_writer import kitti_like_camera
from cnd_depth_ros.training import trainer
from cnd_depth_ros.training.checkpoint import load_checkpoint, save_checkpoint
from cnd_depth_ros.training.data import (
    TrainingData,
    build_training_data,
    split_validation,
)

WIDTH, HEIGHT = 64, 48


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_folder(tmp_path_factory.mktemp("synthetic"), WIDTH, HEIGHT, 8, seed=3)


def _config(root: Path, out: Path, **changes: Any) -> trainer.TrainConfig:
    settings: dict[str, Any] = {
        "variant": "cnd_micro",
        "data": [f"synthetic:{root}"],
        "out": str(out),
        "width": WIDTH,
        "height": HEIGHT,
        "steps": 6,
        "batch_size": 2,
        "warmup_steps": 1,
        "workers": 0,
        "checkpoint_every": 4,
        "log_every": 1,
        "progress": False,
        "model": SMALL,
    }
    settings.update(changes)
    return trainer.TrainConfig(**settings)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_process_ddp_over_gloo_writes_a_loadable_artifact(
    synthetic_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result_path = tmp_path / "result.json"
    code = cli.main(
        [
            "train", "--nproc", "2", "--variant", "cnd_stereo",
            "--model-config", json.dumps(SMALL), "--data", f"synthetic:{synthetic_root}",
            "--width", str(WIDTH), "--height", str(HEIGHT), "--steps", "2", "--batch-size", "2",
            "--warmup-steps", "1", "--workers", "0", "--device", "cpu", "--no-progress",
            "--out", str(out), "--json", str(result_path),
        ]
    )
    assert code == 0
    report = json.loads(result_path.read_text())
    assert report["world_size"] == 2
    assert report["global_batch"] == 4
    assert report["steps"] == 2
    assert set(report["val_metrics"]) >= {"rel", "log10", "rmse"}
    assert (out / "tensorboard").is_dir()
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2

    model, metadata = load_artifact(out / "model")
    assert metadata.variant == "cnd_stereo"
    assert metadata.output == "disparity"
    assert (metadata.input_width, metadata.input_height) == (WIDTH, HEIGHT)
    assert metadata.training_camera == kitti_like_camera(WIDTH, HEIGHT)
    assert metadata.training["steps"] == 2
    assert metadata.training["global_batch"] == 4
    assert metadata.training["data"] == [f"synthetic:{synthetic_root}"]
    images = torch.rand(1, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        disparity = model(images, images)
    assert disparity.shape == (1, 1, HEIGHT, WIDTH)
    assert bool((disparity > 0).all())


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_resume_after_a_kill_continues_exactly(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 7 training frames (1 held out), batch 2: 3 steps per epoch. The kill comes after step 5;
    # the last checkpoint is step 4, in the middle of the second epoch.
    reference = trainer.main(_config(synthetic_root, tmp_path / "reference"))

    original = trainer.train_one_epoch

    def killed_after_step_5(*args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        for step, loss in original(*args, **kwargs):
            yield step, loss
            if step == 5:
                raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train_one_epoch", killed_after_step_5)
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        trainer.main(_config(synthetic_root, out))
    monkeypatch.setattr(trainer, "train_one_epoch", original)
    saved = load_checkpoint(out / "checkpoint.pt")
    assert (saved["step"], saved["epoch"]) == (4, 1)
    interim = read_metadata(out / "model")  # written after epoch 1: usable, marked incomplete
    assert (interim.training["steps"], interim.training["complete"]) == (3, False)

    resumed = trainer.main(_config(synthetic_root, out, resume=str(out / "checkpoint.pt")))
    assert resumed["steps"] == reference["steps"] == 6
    assert [record["step"] for record in resumed["history"]] == [3, 6]
    assert resumed["val_metrics"] == reference["val_metrics"]
    expected = load_checkpoint(tmp_path / "reference" / "checkpoint.pt")
    actual = load_checkpoint(out / "checkpoint.pt")
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, actual["model"][name]), name
    assert actual["optimizer"]["param_groups"][0]["lr"] == (
        expected["optimizer"]["param_groups"][0]["lr"]
    )
    assert actual["scheduler"] == expected["scheduler"]
    assert read_metadata(out / "model").training["complete"] is True


def test_resume_with_other_settings_is_refused(synthetic_root: Path, tmp_path: Path) -> None:
    config = _config(synthetic_root, tmp_path)
    save_checkpoint(
        {"model": {}, "optimizer": {}, "scheduler": {}, "scaler": {}, "step": 1, "epoch": 0,
         "config": config.to_dict()},
        tmp_path / "checkpoint.pt",
    )
    changed = _config(synthetic_root, tmp_path, lr=0.5, resume=str(tmp_path / "checkpoint.pt"))
    with pytest.raises(ValueError, match="'lr'"):
        trainer.main(changed)


def test_warm_start_takes_every_tensor_whose_name_and_shape_match(tmp_path: Path) -> None:
    """A CNDmono artifact starts a CNDmicro: the encoder, ASPP and decoder blocks they share
    are copied, the mono net's residual blocks are left out."""
    source = make_artifact(tmp_path, "cnd_mono", **SMALL)
    stored = load_artifact(source)[0].state_dict()
    model = build_model("cnd_micro", **SMALL)
    trainer.warm_start(model, str(source))
    own = model.state_dict()
    shared = [n for n in own if n in stored and own[n].shape == stored[n].shape]
    assert len(shared) == len(own)
    assert all(torch.equal(own[name], stored[name]) for name in shared)
    with pytest.raises(CndDepthError, match="no weight matches"):
        trainer.warm_start(torch.nn.Linear(2, 2), str(source))


def test_training_scores_ground_truth_in_the_evaluated_range_only() -> None:
    depth = torch.tensor([[[[0.0, 5.0, 80.0, 80.5, 3000.0]]]])
    valid = torch.tensor([[[[True, True, True, True, False]]]])
    assert trainer.in_training_range(depth, valid).flatten().tolist() == [
        False, True, True, False, False
    ]


@pytest.mark.parametrize("schedule", ["cosine", "poly"])
def test_schedule_warms_up_to_the_peak_then_decays_to_zero(schedule: str) -> None:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=0.1)
    config = trainer.TrainConfig(
        variant="cnd_micro", data=["synthetic:x"], out="x", steps=20, warmup_steps=5,
        lr=0.1, schedule=schedule,  # type: ignore[arg-type]
    )
    scheduler = trainer.build_scheduler(optimizer, config, total_steps=20)
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.02)
    assert max(rates) == pytest.approx(0.1)
    assert rates.index(max(rates)) == 5
    assert all(later <= earlier for earlier, later in itertools.pairwise(rates[5:]))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="warmup_steps"):
        trainer.build_scheduler(optimizer, config, total_steps=5)


def test_checkpoint_is_read_with_weights_only_and_errors_name_the_file(tmp_path: Path) -> None:
    state = {"model": {"w": torch.ones(2)}, "optimizer": {}, "scheduler": {}, "scaler": {},
             "step": 3, "epoch": 1, "config": {"lr": 0.1}}
    path = save_checkpoint(state, tmp_path / "checkpoint.pt")
    assert load_checkpoint(path)["step"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ArtifactError, match=r"corrupt\.pt"):
        load_checkpoint(corrupt)
    torch.save({"model": {}}, tmp_path / "partial.pt")
    with pytest.raises(ArtifactError, match="missing"):
        load_checkpoint(tmp_path / "partial.pt")
    with pytest.raises(ArtifactError, match=r"absent\.pt"):
        load_checkpoint(tmp_path / "absent.pt")


def test_config_rejects_bad_values_by_name() -> None:
    base = {"variant": "cnd_micro", "data": ["synthetic:x"], "out": "x", "steps": 2}
    with pytest.raises(ValueError, match="exactly one"):
        trainer.TrainConfig(**{**base, "epochs": 1})
    with pytest.raises(ValueError, match="multiples of 16"):
        trainer.TrainConfig(**{**base, "width": 100})
    with pytest.raises(ValueError, match="KIND:ROOT"):
        trainer.TrainConfig(**{**base, "data": ["no-kind"]})
    with pytest.raises(ValueError, match="unknown training settings"):
        trainer.TrainConfig.from_dict({**base, "learning_rate": 1.0})
    with pytest.raises(ValueError, match="must contain the network input"):
        trainer.TrainConfig(**{**base, "crop_aspects": (2.0, 3.0)})
    with pytest.raises(ValueError, match="scale_range must be two numbers"):
        trainer.TrainConfig(**{**base, "scale_range": [0.5]})
    with pytest.raises(ValueError, match="disparity_target must be two numbers 0 < low"):
        trainer.TrainConfig(**{**base, "disparity_target": (50.0, 10.0)})
    with pytest.raises(ValueError, match="applies to stereo nets"):
        trainer.TrainConfig(**{**base, "disparity_target": (10.0, 50.0)}).augmentation(None)


@pytest.mark.timeout(240)
def test_a_stereo_run_with_the_default_augmentation_records_it(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """A tiny real run of `cnd-depth train` with nothing but defaults: disparity-targeted
    rescale, per-batch input sizes, camera effects; the artifact records what was done."""
    out = tmp_path / "run"
    code = cli.main(
        [
            "train", "--variant", "cnd_stereo", "--model-config", json.dumps(SMALL),
            "--data", f"synthetic:{synthetic_root}", "--width", str(WIDTH), "--height",
            str(HEIGHT), "--steps", "4", "--batch-size", "2", "--warmup-steps", "1",
            "--workers", "0", "--device", "cpu", "--no-progress", "--out", str(out),
        ]
    )
    assert code == 0
    training = read_metadata(out / "model").training
    assert training["steps"] == 4 and math.isfinite(training["train_loss"]["loss"])
    pipeline = training["augmentation"]["pipeline"]
    assert "disparity_target=(15.333333333333334, 92.0)" in pipeline
    for step in ("RandomCrop", "RandomHorizontalFlip", "ViewGainGamma", "SensorNoise"):
        assert step in pipeline
    assert training["augmentation"]["input_sizes"] == [[WIDTH, HEIGHT], [96, 32]]
    config = load_checkpoint(out / "checkpoint.pt")["config"]
    assert config["rescale"] and config["camera_effects"]
    assert tuple(config["crop_aspects"]) == (1.0, 3.4) and config["disparity_target"] is None


def test_each_batch_has_one_input_size_the_same_on_every_process_and_after_a_resume(
    synthetic_root: Path,
) -> None:
    """Per-batch input sizes are a function of (seed, epoch, batch): every sample of a batch
    has its batch's size, the ranks of a DDP job agree on it, and a resumed epoch continues
    with the sizes (and samples) of the uninterrupted one."""

    def open_rank(rank: int) -> TrainingData:
        return build_training_data(
            [f"synthetic:{synthetic_root}"], val_fraction=0.0, width=WIDTH, height=HEIGHT,
            batch_size=2, workers=0, seed=5, rank=rank, world_size=2, stereo=True,
            aspect_range=(1.0, 3.4),
        )

    def epoch_batches(data: TrainingData, epoch: int, skip: int = 0) -> list[Any]:
        data.set_epoch(epoch, skip_batches=skip)
        batches = []
        for batch in data.loader:
            height, width = batch["left"].shape[-2:]
            assert batch["right"].shape[-2:] == batch["depth"].shape[-2:] == (height, width)
            batches.append(((int(width), int(height)), list(batch["name"])))
        return batches

    ranks = [open_rank(0), open_rank(1)]
    assert len(ranks[0].loader) == 2  # 8 frames, 4 per process, batch 2
    sizes: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
    for epoch in range(6):
        for rank, data in enumerate(ranks):
            batches = epoch_batches(data, epoch)
            sizes[rank] += [size for size, _ in batches]
            assert epoch_batches(data, epoch, skip=1) == batches[1:]
    assert sizes[0] == sizes[1]
    assert set(sizes[0]) == {(WIDTH, HEIGHT), (96, 32)}


def test_augmentation_flags_reach_the_config_and_each_switches_off() -> None:
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    base = ["--data", "synthetic:x", "--steps", "2", "--out", "x", "--variant", "cnd_stereo"]

    def config(*flags: str) -> trainer.TrainConfig:
        settings = vars(parser.parse_args([*base, *flags]))
        settings.pop("nproc")
        return trainer.TrainConfig(**settings)

    default = config()
    assert (default.rescale, default.camera_effects) == (True, True)
    assert (default.scale_range, default.crop_aspects) == ((0.1, 2.0), (1.0, 3.4))
    assert default.augmentation(92.0).disparity_target == (92.0 / 6, 92.0)
    off = config("--no-rescale", "--no-crop-aspects", "--no-camera-effects")
    assert (off.rescale, off.crop_aspects, off.camera_effects) == (False, None, False)
    pipeline = repr(trainer.D.train_transform(WIDTH, HEIGHT, off.augmentation(92.0)))
    assert "scale_range=None" in pipeline and "ViewGainGamma" not in pipeline
    ranges = config("--scale-range", "0.5", "1.5", "--disparity-target", "10", "60",
                    "--crop-aspects", "1.2", "2.5")
    assert ranges.scale_range == (0.5, 1.5) and ranges.crop_aspects == (1.2, 2.5)
    assert ranges.augmentation(92.0).disparity_target == (10.0, 60.0)
    # The JSON a multi-process run hands over gives lists; the config reads them back the same.
    assert trainer.TrainConfig.from_dict(json.loads(json.dumps(ranges.to_dict()))) == ranges


def test_validation_split_holds_out_the_tail() -> None:
    frames = list(range(20))
    train, val = split_validation(frames, 0.1)  # type: ignore[arg-type]
    assert list(train) == list(range(18))
    assert list(val) == [18, 19]
    assert DataSpec.parse("KITTI:/data/kitti") == DataSpec("kitti", Path("/data/kitti"))
    with pytest.raises(ValueError, match="cannot hold out"):
        split_validation([0], 0.5)  # type: ignore[list-item]


def test_cli_reports_bad_input_without_a_traceback(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["train", "--data", "no-kind", "--steps", "1", "--out", str(tmp_path)])
    assert "KIND:ROOT" in capsys.readouterr().err
    code = cli.main(
        ["train", "--data", f"nosuchkind:{synthetic_root}", "--steps", "1", "--out",
         str(tmp_path)]
    )
    assert code == 2
    assert "nosuchkind" in capsys.readouterr().err
