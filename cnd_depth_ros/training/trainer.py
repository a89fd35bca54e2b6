"""Training of the CND networks (and the FCRN baseline) on one process, several GPUs or nodes.

Split as torchvision's ``references/segmentation/train.py``: :func:`train_one_epoch`,
:func:`evaluate`, :func:`main`. Distributed runs use PyTorch DDP with ``env://`` rendezvous, the
variables ``torchrun`` sets (NCCL on CUDA, Gloo on CPU)::

    cnd-depth train --data synthetic:data/synth --out runs/mono             # one process
    cnd-depth train --nproc 8 ...                                           # torchrun, this machine
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 -m cnd_depth_ros.cli train ...           # several machines

The loss is computed on metric depth obtained from the raw output by the artifact's own rule
(:func:`~cnd_depth_ros.models.output.depth_from_output`) with each sample's camera, so what is
optimised is exactly what the deployed model reports. A run is resumable after a kill at any
moment: checkpoints are atomic, the data order and augmentation are functions of (seed, epoch,
index), and the random state of each step is a function of (seed, rank, step).

:func:`fit` is the loop itself, shared with self-supervised fine-tuning
(:mod:`~cnd_depth_ros.training.finetune`): a :class:`TrainingJob` says what is trained and
how it is scored (an :class:`Objective`), :class:`RunConfig` how it is optimised.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from cnd_depth_ros.data.sources import DataSpec
from cnd_depth_ros.errors import CndDepthError
from cnd_depth_ros.evaluation.metrics import EVALUATION_RANGE_M
from cnd_depth_ros.models.artifact import (
    ModelMetadata,
    read_weights,
    save_artifact,
)
from cnd_depth_ros.models.output import OutputKind, depth_from_output
from cnd_depth_ros.training import data as D
from cnd_depth_ros.training.checkpoint import load_checkpoint, save_checkpoint

__all__ = [
    "DistributedEnv",
    "Objective",
    "RunConfig",
    "SupervisedObjective",
    "TrainConfig",
    "TrainingJob",
    "build_criterion",
    "build_scheduler",
    "evaluate",
    "fit",
    "in_training_range",
    "init_distributed",
    "launch",
    "main",
    "matcher_range",
    "predict_depth",
    "run_job",
    "seed_everything",
    "train_one_epoch",
    "warm_start",
]

_LOGGER = logging.getLogger(__name__)

#: Settings that may differ between a run and its resumption without changing the result.
RESUMABLE_CHANGES = frozenset(
    {"out", "resume", "workers", "progress", "checkpoint_every", "log_every", "device"}
)
CHECKPOINT_NAME = "checkpoint.pt"
ARTIFACT_NAME = "model"
REPORT_NAME = "train_report.json"
CONFIG_NAME = "train_config.json"

ConfigT = TypeVar("ConfigT", bound="RunConfig")


@dataclass(kw_only=True)
class RunConfig:
    """How a run optimises, checkpoints and reports: the settings ``cnd-depth train`` and
    ``cnd-depth finetune`` share; stored in checkpoints and the artifact.

    Exactly one of ``steps`` and ``epochs`` is set. ``batch_size`` is per process (the global
    batch is ``batch_size * world_size``).
    """

    out: str
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "poly"] = "cosine"
    warmup_steps: int = 100
    clip_grad: float = 1.0
    amp: bool = True
    channels_last: bool = True
    checkpoint_every: int = 500
    log_every: int = 10
    workers: int = 2
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    resume: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps and epochs")
        positive = {"batch_size": self.batch_size, "checkpoint_every": self.checkpoint_every,
                    "log_every": self.log_every, "steps": self.steps or 1,
                    "epochs": self.epochs or 1}
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.schedule not in ("cosine", "poly"):
            raise ValueError(f"schedule must be 'cosine' or 'poly', got {self.schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("weight_decay", "clip_grad", "warmup_steps", "workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[ConfigT], values: dict[str, Any]) -> ConfigT:
        """Build from :meth:`to_dict` output; unknown keys are rejected by name."""
        unknown = set(values) - {item.name for item in fields(cls)}
        if unknown:
            raise ValueError(f"unknown training settings: {sorted(unknown)}")
        return cls(**values)


def _pair(name: str, value: Any) -> tuple[float, float] | None:
    """``None`` or two numbers as a tuple of floats (JSON and argparse give lists)."""
    if value is None:
        return None
    try:
        low, high = (float(item) for item in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two numbers MIN MAX, got {value!r}") from None
    return low, high


@dataclass(kw_only=True)
class TrainConfig(RunConfig):
    """Everything that defines a training run from scratch.

    ``data`` / ``val_data`` are ``KIND:ROOT`` specs. ``model`` holds keyword overrides for
    ``build_model``. ``init_from`` (an artifact or shipped name) starts the net from its weights
    wherever a tensor's name and shape match (:func:`warm_start`).

    Augmentation (:class:`~cnd_depth_ros.training.data.Augmentation`, docs/training.md):
    ``rescale`` within ``scale_range`` of each frame, for stereo nets so that a frame's 98th
    percentile disparity lands in ``disparity_target`` pixels (default: a sixth of the matcher's
    range to all of it, :func:`matcher_range`); batches at input sizes of ``width * height``
    pixels with aspect ratios within ``crop_aspects`` (``None``: ``width`` x ``height`` only);
    ``camera_effects``, the photometric differences of real cameras.
    """

    variant: str
    data: list[str]
    val_data: list[str] = field(default_factory=list)
    val_fraction: float = 0.05
    width: int = 256
    height: int = 160
    phi: float = 2.0
    model: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    rescale: bool = D.Augmentation.rescale
    scale_range: tuple[float, float] = D.Augmentation.scale_range
    disparity_target: tuple[float, float] | None = None
    crop_aspects: tuple[float, float] | None = (1.0, 3.4)
    camera_effects: bool = D.Augmentation.camera_effects

    def __post_init__(self) -> None:
        for spec in [*self.data, *self.val_data]:
            DataSpec.parse(spec)
        super().__post_init__()
        for name in ("width", "height"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.phi > 0:
            raise ValueError(f"phi must be positive, got {self.phi}")
        self.scale_range = _pair("scale_range", self.scale_range)  # type: ignore[assignment]
        self.disparity_target = _pair("disparity_target", self.disparity_target)
        self.crop_aspects = _pair("crop_aspects", self.crop_aspects)
        D.crop_shapes(self.width, self.height, self.crop_aspects)  # checks size and aspects
        D.train_transform(self.width, self.height, self._augmentation(self.disparity_target))

    def augmentation(self, matcher: float | None) -> D.Augmentation:
        """The training pipeline's settings for a net whose stereo matcher searches ``matcher``
        pixels (``None``: a net without one, whose frames are rescaled log-uniformly).

        :raises ValueError: a ``disparity_target`` for a net without a matcher.
        """
        if matcher is None:
            if self.disparity_target is not None:
                raise ValueError(
                    f"disparity_target applies to stereo nets; {self.variant} has no matcher"
                )
            return self._augmentation(None)
        return self._augmentation(self.disparity_target or (matcher / 6.0, matcher))

    def _augmentation(self, disparity_target: tuple[float, float] | None) -> D.Augmentation:
        return D.Augmentation(
            rescale=self.rescale, scale_range=self.scale_range,
            disparity_target=disparity_target, camera_effects=self.camera_effects,
        )


@dataclass(frozen=True)
class DistributedEnv:
    """Where this process sits in the job (one process: rank 0 of 1)."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistributedEnv:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise CndDepthError(f"device {device!r} asked for, but CUDA is not available")
    if use_cuda:
        target = torch.device(device if ":" in device else f"cuda:{local_rank}")
        torch.cuda.set_device(target)
    else:
        target = torch.device("cpu")
    if world_size > 1:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return DistributedEnv(rank, local_rank, world_size, target)


def seed_everything(seed: int, *, deterministic: bool) -> None:
    """Seed numpy and torch; cuDNN autotuning off and deterministic kernels on if asked."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def _step_seed(seed: int, rank: int, step: int) -> int:
    """The random state of one training step (dropout, ...): the same after a resume."""
    return (seed * 1_000_003 + rank * 7_919 + step) % (2**63)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: RunConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up, then cosine to zero or polynomial (power 0.9) decay, stepped per step.

    :raises ValueError: the warm-up is not shorter than the run.
    """
    if config.warmup_steps >= total_steps:
        raise ValueError(
            f"warmup_steps ({config.warmup_steps}) must be fewer than the {total_steps} steps"
        )
    remaining = total_steps - config.warmup_steps
    schedulers = torch.optim.lr_scheduler
    decay: schedulers.LRScheduler = (
        schedulers.CosineAnnealingLR(optimizer, T_max=remaining)
        if config.schedule == "cosine"
        else schedulers.PolynomialLR(optimizer, total_iters=remaining, power=0.9)
    )
    if config.warmup_steps == 0:
        return decay
    warmup = schedulers.LinearLR(
        optimizer, start_factor=1.0 / config.warmup_steps, total_iters=config.warmup_steps
    )
    return schedulers.SequentialLR(optimizer, [warmup, decay], milestones=[config.warmup_steps])


def build_criterion(variant: str, phi: float, *, stereo: bool = False) -> nn.Module:
    """The paper's extended depth loss for CND nets, plus the disparity term for stereo nets;
    berHu for the FCRN baseline."""
    from cnd_depth_ros.training.losses import BerHuLoss, ExtendedDepthLoss, StereoDepthLoss

    if variant.startswith("fcrn"):
        return BerHuLoss()
    return StereoDepthLoss(phi) if stereo else ExtendedDepthLoss(phi)


def predict_depth(
    model: nn.Module, batch: dict[str, Any], *, output: OutputKind, reference_fx: float
) -> Tensor:
    """Forward ``batch`` and turn the raw output into metric depth with each sample's camera."""
    stereo = output == "disparity"
    raw = model(batch["left"], batch["right"]) if stereo else model(batch["left"])
    camera = batch["camera"].to(torch.float32)
    return depth_from_output(
        raw.float(),
        output,
        fx=camera[:, 0].view(-1, 1, 1, 1),
        baseline=camera[:, 4].view(-1, 1, 1, 1),
        reference_fx=reference_fx,
    )


class Objective(Protocol):
    """What a run minimises. ``predict`` runs the network (under autocast when AMP is on);
    ``loss`` scores its outputs in float32 and returns named terms, ``"loss"`` the one to
    minimise (the others are logged)."""

    def predict(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]: ...

    def loss(
        self, prediction: dict[str, Tensor], batch: dict[str, Any]
    ) -> dict[str, Tensor]: ...


def in_training_range(depth: Tensor, valid: Tensor) -> Tensor:
    """``valid`` limited to ground truth in the evaluated range (EVALUATION_RANGE_M): a net is
    trained on the depths it is scored on, not on a ground plane kilometres away whose disparity
    is a fraction of a pixel."""
    low, high = EVALUATION_RANGE_M
    return valid & (depth >= low) & (depth <= high)


class SupervisedObjective:
    """The depth loss ``criterion`` against ground truth, on metric depth from the output rule."""

    def __init__(self, criterion: nn.Module, *, output: OutputKind, reference_fx: float) -> None:
        self.criterion = criterion
        self.output: OutputKind = output
        self.reference_fx = reference_fx

    def predict(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        return {
            "depth": predict_depth(model, batch, output=self.output, reference_fx=self.reference_fx)
        }

    def loss(self, prediction: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        loss = self.criterion(
            prediction["depth"].float(), batch["depth"], batch["normals"],
            in_training_range(batch["depth"], batch["valid"]), camera=batch["camera"],
        )
        return {"loss": loss}


def train_one_epoch(
    model: nn.Module,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    loader: DataLoader[dict[str, Any]],
    *,
    first_step: int,
    num_steps: int,
    config: RunConfig,
    env: DistributedEnv,
) -> Iterator[tuple[int, dict[str, Tensor]]]:
    """Run ``num_steps`` optimizer steps from ``loader``.

    Yields ``(step, terms)`` after each step (``step`` counts finished steps, ``terms`` are the
    objective's detached loss terms), so the caller can log and checkpoint between steps
    without this loop knowing about either.
    """
    model.train()
    use_amp = config.amp and env.device.type == "cuda"
    step = first_step
    for batch in loader:
        if step == first_step + num_steps:
            break
        torch.manual_seed(_step_seed(config.seed, env.rank, step))
        batch = D.batch_to(batch, env.device, channels_last=config.channels_last)
        autocast = (
            torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()
        )
        with autocast:
            prediction = objective.predict(model, batch)
        terms = objective.loss({k: v.float() for k, v in prediction.items()}, batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["loss"]).backward()
        if config.clip_grad > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        yield step, {name: value.detach() for name, value in terms.items()}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader[dict[str, Any]],
    *,
    output: OutputKind,
    reference_fx: float,
    device: torch.device,
    channels_last: bool = False,
) -> dict[str, float]:
    """The paper's metrics (rel, log10, rmse, ...) of ``model`` over ``loader``, in eval mode,
    with the evaluation range of ``cnd-depth eval`` (ground truth up to 80 m, predictions clipped:
    :func:`~cnd_depth_ros.evaluation.metrics.within_depth_range`), so the numbers compare."""
    from cnd_depth_ros.evaluation.metrics import MetricAccumulator, within_depth_range

    was_training = model.training
    model.eval()
    accumulator = MetricAccumulator()
    for batch in loader:
        batch = D.batch_to(batch, device, channels_last=channels_last)
        depth = predict_depth(model, batch, output=output, reference_fx=reference_fx)
        truth = torch.where(batch["valid"], batch["depth"], torch.nan)
        for predicted, known in zip(depth.float().cpu().numpy(), truth.cpu().numpy(),
                                    strict=True):
            predicted, known = within_depth_range(predicted, known, *EVALUATION_RANGE_M)
            if np.isfinite(known).any():
                accumulator.update(predicted, known, np.isfinite(known))
    model.train(was_training)
    return {name: float(value) for name, value in accumulator.compute().items()}


def _depth_panel(
    model: nn.Module, batch: dict[str, Any], *, output: OutputKind, reference_fx: float,
    count: int = 4,
) -> Tensor:
    """N x 3 x H x 3W images for TensorBoard: left | ground truth | prediction (inverse depth)."""
    from matplotlib import colormaps

    was_training = model.training
    model.eval()
    with torch.no_grad():
        depth = predict_depth(model, batch, output=output, reference_fx=reference_fx)[:count]
    model.train(was_training)
    gt, valid = batch["depth"][:count], batch["valid"][:count]
    inverse_gt = torch.where(valid, 1.0 / gt.clamp_min(1e-6), 0.0)
    scale = inverse_gt.flatten(1).amax(dim=1).clamp_min(1e-6).view(-1, 1, 1, 1)
    colormap = colormaps["magma"]

    def colour(inverse: Tensor) -> Tensor:
        mapped = colormap((inverse / scale).clamp(0, 1)[:, 0].cpu().numpy())[..., :3]
        return torch.from_numpy(mapped).permute(0, 3, 1, 2).float()

    left = batch["left"][:count].float().cpu()
    return torch.cat([left, colour(inverse_gt), colour(1.0 / depth.clamp_min(1e-6))], dim=3)


def _check_resumable(saved: dict[str, Any], config: RunConfig, path: str) -> None:
    current = config.to_dict()
    changed = sorted(
        key for key in set(saved) | set(current)
        if key not in RESUMABLE_CHANGES and saved.get(key) != current.get(key)
    )
    if changed:
        raise ValueError(
            f"{path}: cannot resume with different settings {changed} "
            f"(the checkpoint was made with {({key: saved.get(key) for key in changed})})"
        )


def _restore(
    path: str,
    config: RunConfig,
    env: DistributedEnv,
    parts: dict[str, Any],
) -> tuple[int, int, list[dict[str, Any]]]:
    """Load a checkpoint into ``parts`` (model, optimizer, scheduler, scaler): step, epoch,
    history."""
    state = load_checkpoint(path, map_location=env.device)
    _check_resumable(state["config"], config, path)
    for key, part in parts.items():
        part.load_state_dict(state[key])
    _LOGGER.info("resumed from %s at step %d (epoch %d)", path, state["step"], state["epoch"])
    return int(state["step"]), int(state["epoch"]), json.loads(state.get("history", "[]"))


def _log_validation(
    writer: Any, model: nn.Module, loader: DataLoader[dict[str, Any]], step: int, *,
    output: OutputKind, reference_fx: float, config: RunConfig, env: DistributedEnv,
) -> dict[str, float]:
    """:func:`evaluate`, then the metrics and a few depth images to TensorBoard."""
    metrics = evaluate(
        model, loader, output=output, reference_fx=reference_fx, device=env.device,
        channels_last=config.channels_last,
    )
    for name, value in metrics.items():
        writer.add_scalar(f"val/{name}", value, step)
    first = D.batch_to(next(iter(loader)), env.device, channels_last=False)
    panel = _depth_panel(model, first, output=output, reference_fx=reference_fx)
    writer.add_images("val/left_gt_pred", panel, step)
    return metrics


@dataclass
class TrainingJob:
    """What a run trains and how it scores it; :func:`fit` does the rest (DDP, AMP, schedule,
    checkpoints, resume, validation, TensorBoard, progress, the artifact and the report).

    ``metadata`` is the artifact's sidecar; its ``training`` becomes ``record`` plus the run's
    progress (steps, epochs, complete, global batch, validation metrics). ``report`` adds fields
    to the run's report.
    """

    model: nn.Module
    objective: Objective
    data: D.TrainingData
    metadata: ModelMetadata
    record: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)


def run_job(
    config: ConfigT, make_job: Callable[[ConfigT, DistributedEnv], TrainingJob]
) -> dict[str, Any]:
    """Join the DDP group, seed, build the job and :func:`fit` it; leave the group on any exit.
    Every process of a DDP job calls this (training and fine-tuning alike)."""
    env = init_distributed(config.device)
    try:
        seed_everything(config.seed, deterministic=config.deterministic)
        return fit(make_job(config, env), config, env)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def main(config: TrainConfig) -> dict[str, Any]:
    """Train as ``config`` says; every process of a DDP job calls this. Returns the report
    (complete on rank 0, which also writes the artifact and ``train_report.json``)."""
    return run_job(config, _training_job)


def warm_start(model: nn.Module, source: str) -> None:
    """Copy the weights of artifact ``source`` into ``model`` wherever a tensor's name and shape
    match (a grown or changed net keeps what it can of a trained one); log what stays new.

    :raises CndDepthError: ``source`` shares no tensor with ``model``.
    """
    stored = read_weights(source)
    own = model.state_dict()
    matched = {
        name: tensor for name, tensor in stored.items()
        if name in own and own[name].shape == tensor.shape
    }
    if not matched:
        raise CndDepthError(f"{source}: no weight matches {type(model).__name__} by name and shape")
    model.load_state_dict(matched, strict=False)
    fresh = sorted(own.keys() - matched.keys())
    _LOGGER.info(
        "started from %s: %d of %d tensors taken, %d new (%s)", source, len(matched), len(own),
        len(fresh), ", ".join(fresh[:4]) + (" ..." if len(fresh) > 4 else ""),
    )


#: Input pixels per level of a stereo net's matcher: it correlates the encoder's 1/4-resolution
#: features (``models/stereo_matching.py``).
_MATCHER_STRIDE = 4


def matcher_range(model: nn.Module) -> float | None:
    """The largest disparity, in input pixels, that ``model``'s stereo matcher searches (92 for
    ``cnd_stereo``'s 24 levels); ``None`` for a net without a matcher."""
    matcher = getattr(model, "matcher", None)
    if matcher is None:
        return None
    return float((matcher.levels - 1) * _MATCHER_STRIDE)


def _training_job(config: TrainConfig, env: DistributedEnv) -> TrainingJob:
    """Training from scratch: a new ``config.variant`` on labeled data, the paper's loss."""
    from cnd_depth_ros.models import build_model

    model = build_model(config.variant, **config.model)
    if config.init_from:
        warm_start(model, config.init_from)
    output = cast(OutputKind, model.output_kind)
    stereo = bool(model.is_stereo)
    augmentation = config.augmentation(matcher_range(model))
    data = D.build_training_data(
        config.data, config.val_data, val_fraction=config.val_fraction, width=config.width,
        height=config.height, batch_size=config.batch_size, workers=config.workers,
        seed=config.seed, rank=env.rank, world_size=env.world_size, stereo=stereo,
        pin_memory=env.device.type == "cuda", augmentation=augmentation,
        aspect_range=config.crop_aspects,
    )
    metadata = ModelMetadata(
        variant=config.variant, input_height=config.height, input_width=config.width,
        output=output, training_camera=data.camera, stereo=stereo,
        model_config=dict(config.model),
    )
    criterion = build_criterion(config.variant, config.phi, stereo=stereo)
    record = {
        "data": config.data,
        "val_data": config.val_data or f"last {config.val_fraction:.0%} of data",
        "loss": type(criterion).__name__,
        "augmentation": {
            "pipeline": repr(D.train_transform(config.width, config.height, augmentation)),
            "input_sizes": [list(shape) for shape in
                            D.crop_shapes(config.width, config.height, config.crop_aspects)],
        },
        "config": config.to_dict(),
    }
    objective = SupervisedObjective(criterion, output=output, reference_fx=data.camera.fx)
    return TrainingJob(model, objective, data, metadata, record)


def fit(job: TrainingJob, config: RunConfig, env: DistributedEnv) -> dict[str, Any]:
    """Optimise ``job`` as ``config`` says, in this process of the DDP group ``env``."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    started = time.monotonic()
    out = Path(config.out)
    model, data, metadata = job.model, job.data, job.metadata
    output, reference_fx = metadata.output, metadata.training_camera.fx
    steps_per_epoch = len(data.loader)
    total_steps = config.steps or steps_per_epoch * (config.epochs or 0)
    epochs = math.ceil(total_steps / steps_per_epoch)

    model.to(env.device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model_without_ddp = model
    if env.world_size > 1:
        device_ids = [env.device.index] if env.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=device_ids)
    optimizer = torch.optim.AdamW(
        model_without_ddp.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = build_scheduler(optimizer, config, total_steps)
    scaler = torch.amp.GradScaler(env.device.type, enabled=config.amp and env.device.type == "cuda")
    parts: dict[str, Any] = {
        "model": model_without_ddp, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler
    }
    step, epoch, history = (
        _restore(config.resume, config, env, parts) if config.resume else (0, 0, [])
    )
    latest: dict[str, float] = {}  # the last logged loss terms

    def checkpoint() -> None:
        if env.is_main:
            state = {key: part.state_dict() for key, part in parts.items()}
            state.update(step=step, epoch=epoch, config=config.to_dict(),
                         history=json.dumps(history))
            save_checkpoint(state, out / CHECKPOINT_NAME)

    def write_artifact() -> None:
        """The latest weights as a usable artifact: long runs have a model after every epoch."""
        if env.is_main:
            training = {
                **job.record,
                "steps": step,
                "epochs": epoch,
                "complete": step >= total_steps,
                "global_batch": config.batch_size * env.world_size,
                "val_metrics": history[-1].get("metrics", {}) if history else {},
                "train_loss": latest,
            }
            save_artifact(
                model_without_ddp, replace(metadata, training=training), out / ARTIFACT_NAME
            )

    writer = SummaryWriter(str(out / "tensorboard"), purge_step=step) if env.is_main else None
    progress = tqdm(
        total=total_steps, initial=step, unit="step", desc=f"train {metadata.variant}",
        disable=not (env.is_main and config.progress),
    )
    _LOGGER.info(
        "training %s: %d frames (%d for validation), %d steps of %d x %d process(es) on %s",
        metadata.variant, len(data.train), data.held_out, total_steps, config.batch_size,
        env.world_size, env.device,
    )
    try:
        while epoch < epochs:
            done = step - epoch * steps_per_epoch
            in_epoch = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
            data.set_epoch(epoch, skip_batches=done)
            for finished, terms in train_one_epoch(
                model, job.objective, optimizer, scheduler, scaler, data.loader,
                first_step=step, num_steps=in_epoch - done, config=config, env=env,
            ):
                step = finished
                progress.update(1)
                if step % config.log_every == 0 or step == total_steps:
                    stacked = torch.stack(list(terms.values())).tolist()  # the only host sync
                    latest = dict(zip(terms, stacked, strict=True))
                    if not math.isfinite(latest["loss"]):
                        raise CndDepthError(f"loss is {latest['loss']} at step {step}; lower --lr")
                    progress.set_postfix(loss=f"{latest['loss']:.4f}")
                    if writer is not None:
                        for name, value in latest.items():
                            writer.add_scalar(f"train/{name}", value, step)
                        writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                if step % config.checkpoint_every == 0:
                    checkpoint()
            record: dict[str, Any] = {"epoch": epoch + 1, "step": step}
            if data.val is not None and writer is not None:
                record["metrics"] = _log_validation(
                    writer, model_without_ddp, data.val, step, output=output,
                    reference_fx=reference_fx, config=config, env=env,
                )
                _LOGGER.info("epoch %d, step %d: %s", epoch + 1, step, record["metrics"])
            history.append(record)
            epoch += 1
            checkpoint()
            write_artifact()
            if env.world_size > 1:
                dist.barrier()  # the others wait while rank 0 validates and saves
    finally:
        progress.close()
        if writer is not None:
            writer.close()

    report = {
        "variant": metadata.variant,
        "steps": step,
        "epochs": epoch,
        "world_size": env.world_size,
        "global_batch": config.batch_size * env.world_size,
        "device": env.device.type,
        "val_metrics": history[-1].get("metrics", {}) if history else {},
        "history": history,
        "seconds": round(time.monotonic() - started, 2),
        "artifact": str(out / ARTIFACT_NAME),
        "checkpoint": str(out / CHECKPOINT_NAME),
        "tensorboard": str(out / "tensorboard"),
        **job.report,
    }
    if env.is_main:
        (out / REPORT_NAME).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def launch(config: RunConfig, nproc: int, *, entry: str = __name__) -> dict[str, Any]:
    """Run ``config`` as ``nproc`` DDP processes on this machine through ``torch.distributed.run``.

    The config travels as ``OUT/train_config.json``; each process runs the ``__main__`` of the
    module ``entry`` (this one for training, :mod:`~cnd_depth_ros.training.finetune` for
    fine-tuning), which reads it back.

    :raises CndDepthError: a training process failed.
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / CONFIG_NAME
    config_path.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={nproc}", "-m", entry, str(config_path),
    ]
    _LOGGER.info("launching: %s", " ".join(command))
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise CndDepthError(
            f"training with {nproc} processes failed (exit {completed.returncode}); "
            f"resume with --resume {out / CHECKPOINT_NAME} if a checkpoint was written"
        )
    return json.loads((out / REPORT_NAME).read_text())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(TrainConfig.from_dict(json.loads(Path(sys.argv[1]).read_text())))
