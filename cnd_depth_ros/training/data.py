"""DataLoaders for training and validation, built from ``KIND:ROOT`` data specs.

Everything random about the data is a function of the run's seed, the epoch and the sample index:
the shuffle order (a :class:`~torch.utils.data.DistributedSampler` seeded per epoch), each
batch's network input size (seeded with ``(seed, epoch, batch)``, the same on every process)
and each sample's augmentation (a generator seeded with ``(seed, epoch, index)``). So a resumed
run sees the very batches an uninterrupted run would, whatever the number of loader workers.

The training pipeline (:func:`train_transform`) rescales each frame at random (for stereo nets so
that its disparities spread over the matcher's range), cuts the batch's input size out of it,
flips, and adds the photometric differences of real cameras; the batches' input sizes vary in
aspect ratio at a constant pixel count (:func:`crop_shapes`), as the per-camera input sizes of a
deployed network do (docs/training.md, "Augmentation").
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    Sampler,
    Subset,
)

from cnd_depth_ros import geometry
from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.data.frame import Frame
from cnd_depth_ros.data.sources import DataSpec, open_frames
from cnd_depth_ros.training import transforms as T

__all__ = [
    "CAMERA_FIELDS",
    "SIZE_MULTIPLE",
    "Augmentation",
    "EpochBatchSampler",
    "ResumableDistributedSampler",
    "SampleDataset",
    "SampleKey",
    "TrainingData",
    "batch_to",
    "build_training_data",
    "crop_shapes",
    "eval_transform",
    "split_validation",
    "to_sample",
    "train_loader",
    "train_transform",
    "val_loader",
]


#: Order of the per-sample camera vector in :func:`to_sample` (baseline 0 for a single camera).
CAMERA_FIELDS = ("fx", "fy", "cx", "cy", "baseline")


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


def to_sample(frame: Frame) -> dict[str, torch.Tensor | str]:
    """Tensors for the trainer: ``left``/``right`` 3xHxW in [0, 1], ``depth`` 1xHxW (0 where
    invalid), ``valid`` 1xHxW bool, ``normals`` 3xHxW (0 where unknown, so the loss's normal term
    ignores those pixels; with sparse LiDAR most are), ``camera`` the :data:`CAMERA_FIELDS`
    vector, ``name``. Normals missing from the dataset come from depth.
    """
    height, width = frame.left.shape[:2]
    depth = (
        frame.depth.astype(np.float32)
        if frame.depth is not None
        else np.full((height, width), np.nan, np.float32)
    )
    normals = frame.normals
    if normals is None:
        normals = geometry.normals_from_depth(depth, frame.camera)
    valid = frame.valid
    normals_known = np.isfinite(normals).all(axis=2, keepdims=True)
    camera = frame.camera
    sample: dict[str, torch.Tensor | str] = {
        "left": _image_tensor(frame.left),
        "depth": torch.from_numpy(np.where(valid, depth, 0.0).astype(np.float32))[None],
        "valid": torch.from_numpy(valid)[None],
        "normals": torch.from_numpy(
            np.where(normals_known, normals, 0.0).astype(np.float32).transpose(2, 0, 1).copy()
        ),
        "camera": torch.tensor(
            [camera.fx, camera.fy, camera.cx, camera.cy, camera.baseline or 0.0],
            dtype=torch.float32,
        ),
        "name": frame.name,
    }
    if frame.right is not None:
        sample["right"] = _image_tensor(frame.right)
    return sample


def split_validation(
    frames: Sequence[Frame], fraction: float
) -> tuple[Sequence[Frame], Sequence[Frame]]:
    """Hold out the last ``fraction`` of ``frames`` (at least one) for validation.

    :raises ValueError: ``fraction`` outside [0, 1) or too few frames to split.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return frames, []
    held_out = max(1, round(len(frames) * fraction))
    if held_out >= len(frames):
        raise ValueError(f"cannot hold out {held_out} of {len(frames)} frames for validation")
    cut = len(frames) - held_out
    return (
        Subset(frames, range(cut)),  # type: ignore[arg-type,return-value]
        Subset(frames, range(cut, len(frames))),  # type: ignore[arg-type]
    )


#: Network input sides are multiples of this (the encoder's output stride; ``check_images``).
SIZE_MULTIPLE = 16


@dataclass(frozen=True)
class Augmentation:
    """What :func:`train_transform` does besides cutting the network's input size out of a
    frame, flipping and colour jitter.

    ``rescale``: scale each frame by a random factor first (:class:`~.transforms.RandomRescale`),
    within ``scale_range`` of the incoming frame; with ``disparity_target`` (pixels at the
    network input, a stereo net's matcher range) stereo frames are scaled so that their 98th
    percentile disparity is drawn uniformly from it. Off: each frame is scaled to the widest
    view the crop allows. ``camera_effects``: per-view gain, gamma and white balance, blur,
    sensor noise and JPEG artefacts (the differences of real cameras and links).
    """

    rescale: bool = True
    scale_range: tuple[float, float] = (0.1, 2.0)
    disparity_target: tuple[float, float] | None = None
    camera_effects: bool = True


def train_transform(
    width: int, height: int, augmentation: Augmentation | None = None
) -> T.Compose:
    """Rescale (``augmentation``, default :class:`Augmentation`), cut a random ``width`` x
    ``height`` window (square pixels kept), flip (stereo-aware), jitter colours the same on both
    views, then add the camera effects that differ between them."""
    augmentation = augmentation or Augmentation()
    steps: list[T.Transform] = [
        T.RandomRescale(
            width, height,
            scale_range=augmentation.scale_range if augmentation.rescale else None,
            disparity_target=augmentation.disparity_target,
        ),
        T.RandomCrop(width, height),
        T.RandomHorizontalFlip(0.5),
        T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
    ]
    if augmentation.camera_effects:
        steps += [T.ViewGainGamma(), T.GaussianBlur(), T.SensorNoise(), T.JpegArtifacts()]
    return T.Compose(steps)


def crop_shapes(
    width: int, height: int, aspect_range: tuple[float, float] | None
) -> list[tuple[int, int]]:
    """Network input sizes of about ``width * height`` pixels (within 15 %), sides multiples of
    :data:`SIZE_MULTIPLE`, aspect ratios (width / height) within ``aspect_range``, narrowest
    first; ``width`` x ``height`` is always one. ``None``: that size alone.

    :raises ValueError: a size that is not a positive multiple of :data:`SIZE_MULTIPLE`, or an
        ``aspect_range`` that is not ``0 < low <= high`` or leaves out ``width / height``.
    """
    if width <= 0 or height <= 0 or width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:
        raise ValueError(
            f"network input must be positive multiples of {SIZE_MULTIPLE}, got {width}x{height}"
        )
    if aspect_range is None:
        return [(width, height)]
    low, high = aspect_range
    if not 0 < low <= high:
        raise ValueError(f"aspect range must be 0 < low <= high, got {tuple(aspect_range)}")
    if not low <= width / height <= high:
        raise ValueError(
            f"aspect range {low}-{high} must contain the network input's {width}x{height} "
            f"({width / height:.3g})"
        )
    pixels = width * height
    shapes = {(width, height)}
    widest = math.ceil(math.sqrt(pixels * high * 1.15) / SIZE_MULTIPLE) * SIZE_MULTIPLE
    for side in range(SIZE_MULTIPLE, widest + 1, SIZE_MULTIPLE):
        other = max(1, round(pixels / side / SIZE_MULTIPLE)) * SIZE_MULTIPLE
        if low <= side / other <= high and abs(side * other - pixels) <= 0.15 * pixels:
            shapes.add((side, other))
    return sorted(shapes, key=lambda shape: shape[0] / shape[1])


def eval_transform(width: int, height: int) -> T.Compose:
    """Resize to the network, nothing random."""
    return T.Compose([T.Resize(width, height)])


class SampleKey(NamedTuple):
    """A sample index with the network input size of its batch (:class:`EpochBatchSampler`)."""

    index: int
    width: int
    height: int


class SampleDataset(Dataset[dict[str, Any]]):
    """Frames -> training tensors (:func:`to_sample`), augmented reproducibly.

    Each sample's augmentation draws from a generator seeded with ``(seed, epoch, index)``; call
    :meth:`set_epoch` before iterating a new epoch (the DataLoader copies the dataset into its
    workers when an iterator is made, so workers see the new epoch too). An ``int`` key goes
    through ``transform``; a :class:`SampleKey` through ``sized(width, height)``, the pipeline
    for its batch's input size.
    """

    def __init__(
        self,
        frames: Sequence[Frame],
        transform: T.Compose,
        *,
        seed: int = 0,
        sized: Callable[[int, int], T.Compose] | None = None,
    ) -> None:
        self.frames = frames
        self.transform = transform
        self.sized = sized
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any]:
        transform = self.transform
        if isinstance(key, SampleKey):
            assert self.sized is not None, "per-batch input sizes need a dataset with sized"
            transform = self.sized(key.width, key.height)
            key = key.index
        rng = np.random.default_rng((self.seed, self.epoch, key))
        return to_sample(transform(self.frames[key], rng))


class ResumableDistributedSampler(DistributedSampler):
    """A :class:`DistributedSampler` that can start part-way through an epoch.

    ``set_start(n)`` skips the first ``n`` indices of this rank's epoch order, so a run resumed
    after ``k`` batches continues with batch ``k + 1`` of the same permutation. The skip applies to
    the next iteration only.
    """

    def __init__(self, dataset: Dataset[Any], **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.start = 0

    def set_start(self, start: int) -> None:
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start {start} outside this rank's {self.num_samples} samples")
        self.start = start

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return itertools.islice(super().__iter__(), start, None)


class EpochBatchSampler(Sampler[list[Any]]):
    """Whole batches of ``sampler``'s indices, each with its network input size.

    With ``shapes``, batch ``k`` of epoch ``e`` takes one of them, chosen by a generator seeded
    with ``(seed, e, k)``: log-uniformly in aspect ratio (the nearest shape to a ratio drawn
    uniformly in log space), the same on every process of a DDP job, and the same after a
    resume. Its keys are then :class:`SampleKey`; without ``shapes`` they are plain indices.
    :meth:`set_start` skips the first batches of the next iteration (a resumed run).
    """

    def __init__(
        self,
        sampler: ResumableDistributedSampler,
        batch_size: int,
        *,
        seed: int,
        shapes: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.seed = seed
        self.shapes = None if shapes is None else list(shapes)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def set_start(self, batches: int) -> None:
        self.sampler.set_start(batches * self.batch_size)
        self.start = batches

    def shape(self, batch: int) -> tuple[int, int]:
        """The input size of batch ``batch`` of the current epoch (``shapes`` given)."""
        assert self.shapes, "shape() needs shapes"
        ratios = np.log([width / height for width, height in self.shapes])
        drawn = np.random.default_rng((self.seed, self.epoch, batch, 1)).uniform(
            ratios[0], ratios[-1]
        )
        return self.shapes[int(np.argmin(np.abs(ratios - drawn)))]

    def __len__(self) -> int:
        return self.sampler.num_samples // self.batch_size

    def __iter__(self) -> Iterator[list[Any]]:
        start, self.start = self.start, 0
        return self._batches(iter(self.sampler), start)

    def _batches(self, indices: Iterator[int], start: int) -> Iterator[list[Any]]:
        for number in itertools.count(start):
            batch = list(itertools.islice(indices, self.batch_size))
            if len(batch) < self.batch_size:
                return
            if self.shapes is None:
                yield batch
            else:
                width, height = self.shape(number)
                yield [SampleKey(index, width, height) for index in batch]


def train_loader(
    dataset: SampleDataset,
    *,
    batch_size: int,
    workers: int,
    rank: int,
    world_size: int,
    seed: int,
    pin_memory: bool = False,
    shapes: Sequence[tuple[int, int]] | None = None,
) -> DataLoader[dict[str, Any]]:
    """Shuffled, sharded over ``world_size`` ranks, whole batches only; with ``shapes``, each
    batch at one of these input sizes (:class:`EpochBatchSampler`; ``dataset`` needs ``sized``).

    :raises ValueError: fewer samples per rank than one batch.
    """
    sampler = ResumableDistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed
    )
    if sampler.num_samples < batch_size:
        raise ValueError(
            f"{len(dataset)} training frames over {world_size} process(es) give "
            f"{sampler.num_samples} per process, fewer than the batch size {batch_size}"
        )
    return DataLoader(
        dataset,
        batch_sampler=EpochBatchSampler(sampler, batch_size, seed=seed, shapes=shapes),
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def val_loader(
    dataset: SampleDataset, *, batch_size: int, workers: int, pin_memory: bool = False
) -> DataLoader[dict[str, Any]]:
    """In order, every frame once."""
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory
    )


def batch_to(batch: dict[str, Any], device: torch.device, *, channels_last: bool) -> dict[str, Any]:
    """Move a collated batch's tensors to ``device`` (images in channels-last if asked), nested
    batches (a fine-tuning batch carries a labeled one) included."""
    moved: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, dict):
            value = batch_to(value, device, channels_last=channels_last)
        elif isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and key in ("left", "right"):
                value = value.contiguous(memory_format=torch.channels_last)
        moved[key] = value
    return moved


@dataclass
class TrainingData:
    """What the trainer iterates: the training set and loader, the validation loader, and the
    training camera (the first training frame's camera at network resolution, the reference a
    mono net's depth is normalised to)."""

    train: SampleDataset
    loader: DataLoader[dict[str, Any]]
    val: DataLoader[dict[str, Any]] | None
    held_out: int
    camera: PinholeCamera

    def set_epoch(self, epoch: int, *, skip_batches: int = 0) -> None:
        """Prepare the next iteration of :attr:`loader`: epoch ``epoch``, from batch
        ``skip_batches`` on (a resumed run)."""
        batches = self.loader.batch_sampler
        assert isinstance(batches, EpochBatchSampler)
        self.train.set_epoch(epoch)
        batches.set_epoch(epoch)
        batches.set_start(skip_batches)


def build_training_data(
    data: Sequence[str],
    val_data: Sequence[str] = (),
    *,
    val_fraction: float,
    width: int,
    height: int,
    batch_size: int,
    workers: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    stereo: bool,
    pin_memory: bool = False,
    augmentation: Augmentation | None = None,
    aspect_range: tuple[float, float] | None = None,
) -> TrainingData:
    """Open ``data`` (``KIND:ROOT`` specs) for training and ``val_data`` for validation, or hold
    out ``val_fraction`` of ``data`` when no ``val_data`` is given. Training batches go through
    :func:`train_transform` with ``augmentation``, at the :func:`crop_shapes` of
    ``aspect_range`` (``None``: ``width`` x ``height`` only); validation at ``width`` x
    ``height``.

    :raises ValueError: a malformed spec, an empty or mono source for a stereo net, too few
        frames for one batch per process, an ``aspect_range`` without ``width / height``.
    """
    shapes = crop_shapes(width, height, aspect_range)
    frames = open_frames([DataSpec.parse(spec) for spec in data], stereo=stereo)
    if val_data:
        held_out = open_frames([DataSpec.parse(spec) for spec in val_data], stereo=stereo)
    else:
        frames, held_out = split_validation(frames, val_fraction)
    camera = eval_transform(width, height)(frames[0], np.random.default_rng(0)).camera
    pipeline = functools.partial(train_transform, augmentation=augmentation)
    train = SampleDataset(frames, pipeline(width, height), seed=seed, sized=pipeline)
    loader = train_loader(
        train, batch_size=batch_size, workers=workers, rank=rank, world_size=world_size,
        seed=seed, pin_memory=pin_memory, shapes=shapes if len(shapes) > 1 else None,
    )
    val = (
        val_loader(
            SampleDataset(held_out, eval_transform(width, height), seed=seed),
            batch_size=batch_size, workers=workers, pin_memory=pin_memory,
        )
        if len(held_out)
        else None
    )
    return TrainingData(train, loader, val, len(held_out), camera)
