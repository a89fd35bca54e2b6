"""Self-supervised fine-tuning: adapt a trained model to a robot's own unlabeled stereo recordings.

A model trained on synthetic streets meets other textures, light, lenses and rigs on a real
vehicle, where nobody has ground-truth depth; what there is, is hours of rectified stereo. This
module fine-tunes an artifact on such recordings with the photometric objective of
:mod:`~cnd_depth_ros.training.self_supervised` (Godard et al., CVPR 2017 and ICCV 2019) and
writes a new artifact whose metadata records what it was adapted on::

    cnd-depth finetune --model cnd_stereo --data rosbag:drive.bag --out runs/adapted

It is the trainer's loop (:func:`~cnd_depth_ros.training.trainer.fit`: DDP, AMP, checkpoints,
exact resume, TensorBoard, progress) with another objective.
Both views of every pair are scored: the right view as the mirrored, swapped pair (a mirrored
rectified pair with its views swapped is again a rectified pair), so a stereo net predicts the
right disparity with the same weights, and a mono net simply sees the mirrored right image; the
right image only supervises. Depth nets become disparity through the rig, ``d = fx * B / depth``.
Optionally labeled (synthetic) batches are mixed into every step with the paper's extended loss,
so the model keeps its metric scale while it adapts.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cnd_depth_ros.data.frame import Frame
from cnd_depth_ros.data.sources import DataSpec, open_frames
from cnd_depth_ros.models.artifact import (
    ModelMetadata,
    load_artifact,
    resolve_artifact,
    weights_sha256,
)
from cnd_depth_ros.models.output import OutputKind
from cnd_depth_ros.training import data as D
from cnd_depth_ros.training import transforms as T
from cnd_depth_ros.training.self_supervised import SelfSupervisedLoss
from cnd_depth_ros.training.trainer import (
    DistributedEnv,
    RunConfig,
    TrainingJob,
    build_criterion,
    in_training_range,
    predict_depth,
    run_job,
)

__all__ = [
    "FinetuneConfig",
    "MixedSampleDataset",
    "SelfSupervisedObjective",
    "build_finetune_data",
    "main",
]

_LOGGER = logging.getLogger(__name__)


@dataclass(kw_only=True)
class FinetuneConfig(RunConfig):
    """A fine-tuning run: ``model`` (an artifact path or shipped name) adapted on ``data``.

    ``data`` are ``KIND:ROOT`` stereo sources read without ground truth (``rosbag:BAG`` needs
    no depth topic; any ground truth another source has is dropped). ``mix_data`` are labeled
    sources whose batches join every step with the extended loss weighted ``mix_weight``;
    ``val_data`` labeled sources for validation metrics. The objective's weights are those of
    :class:`~cnd_depth_ros.training.self_supervised.SelfSupervisedLoss`.
    """

    model: str
    data: list[str]
    mix_data: list[str] = field(default_factory=list)
    mix_weight: float = 0.1
    val_data: list[str] = field(default_factory=list)
    lr: float = 1e-4
    warmup_steps: int = 10
    alpha: float = 0.85
    smoothness_weight: float = 1e-3
    consistency_weight: float = 1.0
    automask: bool = False
    phi: float = 2.0

    def __post_init__(self) -> None:
        for spec in [*self.data, *self.mix_data, *self.val_data]:
            DataSpec.parse(spec)
        if not self.data:
            raise ValueError("fine-tuning needs at least one unlabeled stereo source (data)")
        super().__post_init__()
        if not self.mix_weight >= 0:
            raise ValueError(f"mix_weight must not be negative, got {self.mix_weight}")
        if not self.phi > 0:
            raise ValueError(f"phi must be positive, got {self.phi}")
        self.objective()  # checks alpha and the weights by name

    def objective(self) -> SelfSupervisedLoss:
        return SelfSupervisedLoss(
            alpha=self.alpha, smoothness_weight=self.smoothness_weight,
            consistency_weight=self.consistency_weight, automask=self.automask,
        )


def _without_ground_truth(frame: Frame, rng: np.random.Generator) -> Frame:
    """The unlabeled view of a frame: fine-tuning must never see depth, whatever the source."""
    return replace(frame, depth=None, normals=None, right_depth=None)


class MixedSampleDataset(D.SampleDataset):
    """Unlabeled samples, each carrying a labeled one under ``"labeled"``.

    Sample ``i`` of epoch ``e`` takes labeled frame ``(i + e * len(self)) % len(labeled)``, so
    the pairing, like everything else in a run, is a function of (seed, epoch, index) and a
    resumed run sees the same batches.
    """

    def __init__(
        self, frames: Any, transform: T.Compose, labeled: D.SampleDataset, *, seed: int = 0
    ) -> None:
        super().__init__(frames, transform, seed=seed)
        self.labeled = labeled

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.labeled.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        labeled = (index + self.epoch * len(self)) % len(self.labeled)
        return {**super().__getitem__(index), "labeled": self.labeled[labeled]}


def build_finetune_data(
    config: FinetuneConfig, metadata: ModelMetadata, *, rank: int = 0, world_size: int = 1,
    pin_memory: bool = False,
) -> D.TrainingData:
    """Loaders for ``config``: unlabeled pairs (plus labeled ones with ``mix_data``) resized to
    the network, and ``val_data`` for validation.

    :raises ValueError: a malformed or empty source, a source without right images (the
        objective needs them, mono models included), too few frames for one batch per process.
    """
    width, height = metadata.input_width, metadata.input_height
    unlabeled = open_frames(
        [DataSpec.parse(spec) for spec in config.data], stereo=True, labeled=False
    )
    # Photometric jitter only: flips are part of the objective (the mirrored, swapped pair).
    transform = T.Compose([
        _without_ground_truth,
        T.Resize(width, height),
        T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
    ])
    train: D.SampleDataset
    if config.mix_data:
        labeled = open_frames(
            [DataSpec.parse(spec) for spec in config.mix_data], stereo=metadata.stereo
        )
        mixed = D.SampleDataset(labeled, D.train_transform(width, height), seed=config.seed)
        train = MixedSampleDataset(unlabeled, transform, mixed, seed=config.seed)
    else:
        train = D.SampleDataset(unlabeled, transform, seed=config.seed)
    loader = D.train_loader(
        train, batch_size=config.batch_size, workers=config.workers, rank=rank,
        world_size=world_size, seed=config.seed, pin_memory=pin_memory,
    )
    val = None
    held_out = 0
    if config.val_data:
        frames = open_frames(
            [DataSpec.parse(spec) for spec in config.val_data], stereo=metadata.stereo
        )
        held_out = len(frames)
        val = D.val_loader(
            D.SampleDataset(frames, D.eval_transform(width, height), seed=config.seed),
            batch_size=config.batch_size, workers=config.workers, pin_memory=pin_memory,
        )
    return D.TrainingData(train, loader, val, held_out, metadata.training_camera)


class SelfSupervisedObjective:
    """Photometric self-supervision on both views of each unlabeled pair, plus the supervised
    ``criterion`` weighted ``supervised_weight`` on the labeled batch a mixed batch carries.

    One forward pass per step runs the pairs, their mirrored swaps and the labeled pairs
    together (DDP wants one forward per backward).
    """

    def __init__(
        self,
        loss: SelfSupervisedLoss,
        *,
        output: OutputKind,
        reference_fx: float,
        criterion: nn.Module | None = None,
        supervised_weight: float = 0.0,
    ) -> None:
        self.self_supervised = loss
        self.output: OutputKind = output
        self.reference_fx = reference_fx
        self.criterion = criterion
        self.supervised_weight = supervised_weight

    @staticmethod
    def _views(batch: dict[str, Any]) -> dict[str, Tensor]:
        """Each pair and its mirrored, swapped twin, then the labeled pairs if any."""
        left, right, camera = batch["left"], batch["right"], batch["camera"]
        views = {
            "left": [left, right.flip(-1)],
            "right": [right, left.flip(-1)],
            "camera": [camera, camera],
        }
        labeled = batch.get("labeled")
        if labeled is not None:
            # A mono source has no right view; a mono net, the only one it may feed, reads none.
            views["left"].append(labeled["left"])
            views["right"].append(labeled.get("right", labeled["left"]))
            views["camera"].append(labeled["camera"])
        return {key: torch.cat(tensors) for key, tensors in views.items()}

    def predict(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        depth = predict_depth(
            model, self._views(batch), output=self.output, reference_fx=self.reference_fx
        )
        return {"depth": depth}

    def loss(self, prediction: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        count = batch["left"].shape[0]
        depth = prediction["depth"]
        views = self._views({key: batch[key] for key in ("left", "right", "camera")})
        camera = views["camera"]
        rig = (camera[:, 0] * camera[:, 4]).view(-1, 1, 1, 1)  # fx * B per view
        disparity = rig / depth[: 2 * count].clamp_min(1e-6)
        # The right view's disparity of pair i is the mirrored left disparity of its twin.
        other = torch.cat((disparity[count:], disparity[:count])).flip(-1)
        terms = self.self_supervised(views["left"], views["right"], disparity, other)
        labeled = batch.get("labeled")
        if labeled is not None and self.criterion is not None:
            supervised = self.criterion(
                depth[2 * count :], labeled["depth"], labeled["normals"],
                in_training_range(labeled["depth"], labeled["valid"]), camera=labeled["camera"],
            )
            terms["loss"] = terms["loss"] + self.supervised_weight * supervised
            terms["supervised"] = supervised.detach()
        return terms


def _finetune_job(config: FinetuneConfig, env: DistributedEnv) -> TrainingJob:
    source = resolve_artifact(config.model)
    model, metadata = load_artifact(source)
    data = build_finetune_data(
        config, metadata, rank=env.rank, world_size=env.world_size,
        pin_memory=env.device.type == "cuda",
    )
    loss = config.objective()
    criterion = (
        build_criterion(metadata.variant, config.phi, stereo=metadata.stereo)
        if config.mix_data
        else None
    )
    objective = SelfSupervisedObjective(
        loss, output=metadata.output, reference_fx=metadata.training_camera.fx,
        criterion=criterion, supervised_weight=config.mix_weight,
    )
    provenance = {
        "artifact": str(source),
        "weights_sha256": weights_sha256(source),
        "variant": metadata.variant,
        "training": {key: value for key, value in metadata.training.items() if key != "config"},
    }
    record = {
        "finetuned_from": provenance,
        "adapted_on": config.data,
        "mix_data": config.mix_data,
        "val_data": config.val_data,
        "loss": repr(loss) + (f" + {config.mix_weight} * {criterion!r}" if criterion else ""),
        "config": config.to_dict(),
    }
    _LOGGER.info("fine-tuning %s (%s) on %s", source, metadata.variant, ", ".join(config.data))
    return TrainingJob(
        model, objective, data, metadata, record, report={"finetuned_from": provenance}
    )


def main(config: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune as ``config`` says; every process of a DDP job calls this. Returns the report
    (complete on rank 0, which also writes the artifact and ``train_report.json``)."""
    return run_job(config, _finetune_job)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(FinetuneConfig.from_dict(json.loads(Path(sys.argv[1]).read_text())))
