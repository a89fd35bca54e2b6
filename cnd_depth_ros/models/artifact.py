"""The model artifact: safetensors weights plus a JSON sidecar that says how to use them.

An artifact ``NAME`` is the pair ``NAME.safetensors`` / ``NAME.json``. The sidecar holds everything
export, the backends and the node need to rebuild the network and turn its output into metric
depth for *any* camera, without importing the trainer:

* ``variant`` and ``model_config``: ``build_model(variant, **model_config)`` rebuilds the net.
* ``input_height`` / ``input_width``: the network resolution; images are resized to it.
* ``normalisation``: the net takes RGB in [0, 1]; mean/std normalisation is inside the graph.
* ``output``: ``"disparity"`` (stereo: pixels at network resolution, depth = fx_net * B / d) or
  ``"depth"`` (mono: metres for a camera whose network-resolution focal length is
  ``training_camera.fx``; for another camera depth scales by fx_net / training_camera.fx).
* ``training_camera``: the rig the net was trained on, at network resolution.
* ``training``: data, steps, metrics, and anything else the trainer wants to record.

Weights load with ``safetensors`` only: nothing in an artifact can run code.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from cnd_depth_ros import __version__
from cnd_depth_ros.atomic_file import write_atomically
from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.errors import ArtifactError
from cnd_depth_ros.models.backbone import IMAGENET_NORMALISATION
from cnd_depth_ros.models.decoder import upgrade_legacy_decoder_state
from cnd_depth_ros.models.output import OutputKind, metric_depth

__all__ = [
    "ARTIFACT_FORMAT",
    "SHIPPED_MODELS",
    "ModelMetadata",
    "artifact_paths",
    "check_json_format",
    "load_artifact",
    "read_metadata",
    "read_weights",
    "resolve_artifact",
    "save_artifact",
    "weights_sha256",
]

ARTIFACT_FORMAT = 1
WeightStorage = Literal["fp32", "fp16", "int8"]
_SCALE_SUFFIX = ".__int8_scale"
SHIPPED_MODELS = ("cnd_micro", "cnd_mono", "cnd_stereo")
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
# A sidecar cannot ask for more: every backend allocates buffers of the network input size.
MAX_INPUT_SIDE = 4096


@dataclass(frozen=True)
class ModelMetadata:
    """The JSON sidecar of an artifact (see the module docstring)."""

    variant: str
    input_height: int
    input_width: int
    output: OutputKind
    training_camera: PinholeCamera
    stereo: bool
    model_config: dict[str, Any] = field(default_factory=dict)
    normalisation: dict[str, Any] = field(
        default_factory=lambda: {**IMAGENET_NORMALISATION, "in_graph": True}
    )
    training: dict[str, Any] = field(default_factory=dict)
    code_version: str = __version__
    format: int = ARTIFACT_FORMAT

    def __post_init__(self) -> None:
        if self.output not in ("disparity", "depth"):
            raise ValueError(f"output must be 'disparity' or 'depth', got {self.output!r}")
        if self.input_height % 16 or self.input_width % 16 or not (
            min(self.input_height, self.input_width) > 0
            and max(self.input_height, self.input_width) <= MAX_INPUT_SIDE
        ):
            raise ValueError(
                f"network input must be positive multiples of 16 up to {MAX_INPUT_SIDE}, got "
                f"{self.input_width}x{self.input_height}"
            )
        if (self.training_camera.width, self.training_camera.height) != (
            self.input_width,
            self.input_height,
        ):
            raise ValueError("training_camera must be given at the network resolution")
        if self.output == "disparity" and not self.training_camera.is_stereo:
            raise ValueError("a disparity model needs a training camera with a baseline")

    def metric_depth(self, raw: np.ndarray, camera: PinholeCamera) -> np.ndarray:
        """Metric depth (metres) from the network's raw output, for ``camera`` at the resolution
        of ``raw``. This is the one place the artifact's output parametrisation is applied."""
        return metric_depth(raw, self.output, camera, reference_fx=self.training_camera.fx)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["training_camera"] = self.training_camera.to_dict()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "metadata") -> ModelMetadata:
        """Validate and build; every problem is an :class:`ArtifactError` naming ``source``."""
        check_json_format(data, source, kind="artifact", version=ARTIFACT_FORMAT)
        required = {"variant": str, "input_height": int, "input_width": int, "output": str,
                    "training_camera": dict, "stereo": bool}
        optional = {"model_config": dict, "normalisation": dict, "training": dict,
                    "code_version": str, "format": int}
        for key in required:
            if key not in data:
                raise ArtifactError(f"{source}: missing field {key!r}")
        for key, value in data.items():
            kind = required.get(key) or optional.get(key)
            if kind is None:
                raise ArtifactError(f"{source}: unknown field {key!r}")
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ArtifactError(
                    f"{source}: field {key!r} must be {kind.__name__}, got {type(value).__name__}"
                )
        try:
            camera = PinholeCamera.from_dict(data["training_camera"])
            return cls(**{**data, "training_camera": camera})
        except (TypeError, ValueError) as error:
            raise ArtifactError(f"{source}: {error}") from error


def check_json_format(data: Any, source: str, *, kind: str, version: int) -> None:
    """Check that a sidecar read from ``source`` is a JSON object of format ``version``, the one
    this code reads (artifact and engine sidecars carry a ``format`` number).

    :raises ArtifactError: another JSON value, or another format, naming ``source``.
    """
    if not isinstance(data, dict):
        raise ArtifactError(f"{source}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != version:
        raise ArtifactError(
            f"{source}: {kind} format {data.get('format')!r} is not supported "
            f"(this version reads format {version})"
        )


def artifact_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(weights, sidecar)`` for an artifact given as ``NAME``, ``NAME.json`` or
    ``NAME.safetensors``."""
    path = Path(path)
    if path.suffix in (".json", ".safetensors"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def resolve_artifact(name_or_path: str | os.PathLike[str]) -> Path:
    """A shipped model's name (``cnd_stereo``) or a path, as the artifact's base path.

    :raises ArtifactError: neither a shipped name nor an existing artifact.
    """
    text = str(name_or_path)
    base = WEIGHTS_DIR / text if text in SHIPPED_MODELS else artifact_paths(text)[0].with_suffix("")
    weights, sidecar = artifact_paths(base)
    for needed in (weights, sidecar):
        if not needed.is_file():
            shipped = ", ".join(SHIPPED_MODELS)
            raise ArtifactError(
                f"{needed}: no such file (a model is an artifact path or one of: {shipped})"
            )
    return base


def read_metadata(path: str | os.PathLike[str]) -> ModelMetadata:
    """The validated sidecar of an artifact (or a shipped model name)."""
    sidecar = artifact_paths(resolve_artifact(path))[1]
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{sidecar}: unreadable model metadata ({error})") from error
    return ModelMetadata.from_json(data, source=str(sidecar))


def weights_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of an artifact's weights: the model part of engine-cache keys."""
    digest = hashlib.sha256()
    with artifact_paths(resolve_artifact(path))[0].open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per output channel (dim 0): ``weight ~ q * scale``."""
    flat = weight.detach().float().reshape(weight.shape[0], -1)
    scale = (flat.abs().amax(dim=1) / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
    quantized = torch.round(flat / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return quantized.reshape(weight.shape), scale


def _storage_state(model: nn.Module, storage: WeightStorage) -> dict[str, torch.Tensor]:
    """The tensors written to disk for ``storage``; :func:`_restore_state` inverts it."""
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if storage != "fp32" and tensor.is_floating_point():
            if storage == "int8" and tensor.ndim >= 2:  # conv / linear weights, not BN or biases
                tensor, scale = _quantize_per_channel(tensor)
                state[name + _SCALE_SUFFIX] = scale.contiguous()
            else:
                tensor = tensor.half()
        state[name] = tensor.contiguous()
    return state


def _restore_state(
    stored: dict[str, torch.Tensor], source: str | os.PathLike[str]
) -> dict[str, torch.Tensor]:
    """Stored tensors as the model's state (int8 weights dequantised), in today's layout (an
    artifact from before decision 14 has its final layer folded).

    :raises ArtifactError: an int8 tensor whose scales do not fit it, naming ``source``.
    """
    state = {}
    for name, tensor in stored.items():
        if name.endswith(_SCALE_SUFFIX):
            continue
        scale = stored.get(name + _SCALE_SUFFIX)
        if scale is not None:
            if tensor.ndim == 0 or scale.numel() != tensor.shape[0]:
                raise ArtifactError(
                    f"{source}: {name} has {scale.numel()} int8 scales for shape "
                    f"{tuple(tensor.shape)}"
                )
            tensor = tensor.float() * scale.reshape(-1, *([1] * (tensor.ndim - 1)))
        state[name] = tensor
    return upgrade_legacy_decoder_state(state)


def save_artifact(
    model: nn.Module,
    metadata: ModelMetadata,
    path: str | os.PathLike[str],
    *,
    storage: WeightStorage = "fp32",
) -> Path:
    """Write ``model``'s weights and ``metadata`` as the artifact ``path``.

    ``storage`` trades file size for fidelity: ``fp32``; ``fp16`` (half the size); ``int8``
    (convolution weights as symmetric per-output-channel int8, everything else FP16: a quarter of
    the size, for the models shipped inside the package). Loading always gives an FP32 network.
    Both files are written atomically; the sidecar last, so a reader never sees metadata without
    its weights.
    """
    if storage not in ("fp32", "fp16", "int8"):
        raise ValueError(f"storage must be fp32, fp16 or int8, got {storage!r}")
    weights, sidecar = artifact_paths(path)
    state = _storage_state(model, storage)
    write_atomically(
        weights, lambda tmp: save_file(state, str(tmp), metadata={"storage": storage})
    )
    write_atomically(
        sidecar,
        lambda tmp: tmp.write_text(json.dumps(metadata.to_json(), indent=2, sort_keys=True) + "\n"),
    )
    return weights.with_suffix("")


def _check_shapes(
    expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], weights: Path
) -> None:
    """:raises ArtifactError: ``state`` does not hold exactly the tensors of ``expected``."""
    wanted = {name: tuple(tensor.shape) for name, tensor in expected.items()}
    found = {name: tuple(tensor.shape) for name, tensor in state.items()}
    if wanted == found:
        return
    differ = sorted(name for name in wanted.keys() & found.keys() if wanted[name] != found[name])
    details = [
        f"{label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
        for label, names in (("missing", sorted(wanted.keys() - found.keys())),
                             ("unexpected", sorted(found.keys() - wanted.keys())),
                             ("other shape", differ))
        if names
    ]
    raise ArtifactError(
        f"{weights}: the sidecar describes another network than the weights hold "
        f"({'; '.join(details)})"
    )


def _load_stored(path: str | os.PathLike[str]) -> tuple[Path, dict[str, torch.Tensor]]:
    weights = artifact_paths(resolve_artifact(path))[0]
    try:
        return weights, load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ArtifactError(f"{weights}: unreadable weights ({error})") from error


def read_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """An artifact's (or shipped model's) tensors by parameter name, floats as FP32 (int8
    storage dequantised), without building its network: for starting another from them.

    :raises ArtifactError: a missing or unreadable file.
    """
    weights, stored = _load_stored(path)
    state = _restore_state(stored, weights)
    return {name: t.float() if t.is_floating_point() else t for name, t in state.items()}


def load_artifact(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelMetadata]:
    """Rebuild the network of an artifact (or shipped model name) in eval mode, FP32.

    :raises ArtifactError: a missing, corrupt or mismatched file, named in the message.
    """
    from cnd_depth_ros.models.registry import build_model

    metadata = read_metadata(path)
    weights, state = _load_stored(path)
    try:
        # Shapes first, on the meta device (no memory): a sidecar can only describe the network
        # its weights hold, so a tampered model_config cannot make this allocate gigabytes.
        with torch.device("meta"):
            skeleton = build_model(metadata.variant, **metadata.model_config)
    except (TypeError, ValueError, RuntimeError) as error:  # RuntimeError: impossible sizes
        raise ArtifactError(f"{weights}: cannot build {metadata.variant!r}: {error}") from error
    state = _restore_state(state, weights)
    _check_shapes(skeleton.state_dict(), state, weights)
    model = build_model(metadata.variant, **metadata.model_config)
    try:
        model.load_state_dict(state, strict=True)  # casts each tensor to the model's dtype
    except RuntimeError as error:
        raise ArtifactError(
            f"{weights}: weights do not match {metadata.variant!r}: {error}"
        ) from error
    return model.to(device).eval(), metadata
