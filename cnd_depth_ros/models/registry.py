"""Every network by name: ``build_model("cnd_stereo", width_mult=0.5)``.

The registry is what artifacts, export, the trainer and the node rebuild nets through; a name's
overrides are the fields of its family's config dataclass (:class:`CNDConfig`, :class:`FCRNConfig`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from torch import nn

from cnd_depth_ros.models.cnd import CNDConfig, cnd_micro, cnd_mono, cnd_stereo
from cnd_depth_ros.models.fcrn import FCRNConfig, fcrn

__all__ = ["MODEL_NAMES", "ModelEntry", "build_model", "model_entry"]


@dataclass(frozen=True)
class ModelEntry:
    """A registered network: its builder, config class and the paper's numbers for it."""

    builder: Callable[..., nn.Module]
    config: type
    paper_parameters: float
    paper_latency_ms: float | None
    source: str


_MODELS: dict[str, ModelEntry] = {
    "cnd_micro": ModelEntry(cnd_micro, CNDConfig, 5.8e6, 13.8, "Pisoni, Table 2"),
    "cnd_mono": ModelEntry(cnd_mono, CNDConfig, 6.7e6, 15.3, "Pisoni, Table 2"),
    "cnd_stereo": ModelEntry(cnd_stereo, CNDConfig, 11.1e6, 27.5, "Pisoni, Table 2"),
    "fcrn": ModelEntry(fcrn, FCRNConfig, 63.6e6, None, "Laina et al. 2016"),
}

MODEL_NAMES: tuple[str, ...] = tuple(_MODELS)


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``.

    :raises ValueError: an unknown name (the message lists the known ones).
    """
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}"
        ) from None


def build_model(name: str, **overrides: Any) -> nn.Module:
    """A freshly initialised network ``name`` (train mode), with config fields ``overrides``.

    :raises ValueError: an unknown name, an override that is not a field of the family's config
        (named in the message), or an invalid value.
    """
    entry = model_entry(name)
    known = [field.name for field in fields(entry.config)]
    for key in overrides:
        if key not in known:
            raise ValueError(f"{name} has no setting {key!r}; its settings are: {', '.join(known)}")
    return entry.builder(**overrides)
