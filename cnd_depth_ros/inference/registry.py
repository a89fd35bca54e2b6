"""Backends by name: ``create_backend("onnxruntime", "cnd_stereo", threads=2)``.

Each backend lives in its own module, imported only when asked for, so a machine without TensorRT
(or a training box without ONNX Runtime) never pays for or trips over it. A backend module defines
one :class:`~cnd_depth_ros.inference.backend.DepthBackend` subclass whose ``name`` is the registry
name; it is constructed as ``cls(model_path, **options)``. The options every backend understands:

* ``device``: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``;
* ``precision``: ``"fp32"``, ``"fp16"`` or ``"int8"`` (each backend documents what it supports);
* ``threads``: CPU threads for the runtime (``None``: the runtime's default);
* ``height`` / ``width``: run the fully convolutional net at another input size than the
  artifact's (multiples of 16).

``"auto"`` picks the fastest backend this machine can run and logs which and why.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
from collections.abc import Callable
from typing import Any

from cnd_depth_ros.errors import BackendError
from cnd_depth_ros.inference.backend import DepthBackend

__all__ = [
    "BACKENDS",
    "available_backends",
    "backend_class",
    "choose_backend",
    "create_backend",
    "resolve_backend",
]

_LOGGER = logging.getLogger(__name__)

#: name -> (module defining the backend class, the runtime package it needs).
BACKENDS: dict[str, tuple[str, str]] = {
    "torch": ("cnd_depth_ros.inference.torch_backend", "torch"),
    "onnxruntime": ("cnd_depth_ros.inference.onnxruntime_backend", "onnxruntime"),
    "tensorrt": ("cnd_depth_ros.inference.tensorrt_backend", "tensorrt"),
}


def backend_class(name: str) -> type[DepthBackend]:
    """The backend class registered as ``name``.

    :raises ValueError: an unknown name.
    :raises BackendError: the backend's module or runtime does not import on this machine.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known: auto, {', '.join(BACKENDS)}")
    module_name, runtime = BACKENDS[name]
    if importlib.util.find_spec(runtime) is None:
        raise BackendError(
            f"backend {name!r} needs the {runtime!r} package, which is not installed"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise BackendError(f"backend {name!r} is not available here: {error}") from error
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, DepthBackend)
            and value.__module__ == module.__name__
            and getattr(value, "name", None) == name
        ):
            return value
    raise BackendError(f"{module_name} defines no DepthBackend named {name!r}")


def available_backends() -> list[str]:
    """Names of the backends whose module and runtime import on this machine."""
    names = []
    for name in BACKENDS:
        try:
            backend_class(name)
        except BackendError as error:
            _LOGGER.debug("backend %s unavailable: %s", name, error)
            continue
        names.append(name)
    return names


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def choose_backend(
    model_path: str | os.PathLike[str], device: str | None = None
) -> tuple[str, str]:
    """What ``auto`` runs: ``(backend name, reason)``.

    TensorRT when it imports and a CUDA GPU is present; else the torch backend on CUDA (FP16 and
    CUDA graphs); else ONNX Runtime on the CPU, which measured faster than torch on CPU for every
    CND variant (docs/benchmarks.md). ``device="cpu"`` skips the GPU choices.
    """
    is_onnx = str(model_path).endswith(".onnx")
    available = available_backends()
    wants_gpu = device is None or device.startswith("cuda")
    cuda = wants_gpu and _cuda_available()
    if cuda and "tensorrt" in available:
        return "tensorrt", "TensorRT imports and a CUDA GPU is present"
    if cuda and "torch" in available and not is_onnx:
        return "torch", "CUDA GPU present but no TensorRT: torch with FP16 and CUDA graphs"
    if "onnxruntime" in available:
        reason = "no CUDA GPU" if wants_gpu else f"device {device!r} asked for"
        return "onnxruntime", f"{reason}: ONNX Runtime is the fastest CPU backend"
    if "torch" in available and not is_onnx:
        return "torch", "ONNX Runtime is not installed: torch on the CPU"
    raise BackendError(f"no backend available for {model_path} (importable: {available or 'none'})")


def resolve_backend(
    name: str, model_path: str | os.PathLike[str], options: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The concrete backend ``name`` stands for (``"auto"`` resolved, logged with the reason) and
    the options to create it with (``auto`` choosing torch on a GPU adds ``device="cuda"``).

    :raises ValueError: an engine file for a backend other than tensorrt.
    :raises BackendError: ``auto`` finds no backend that runs here.
    """
    options = dict(options)
    is_engine = str(model_path).endswith(".engine")
    if name == "auto" and is_engine:
        name = "tensorrt"
        _LOGGER.info("backend auto: using tensorrt (%s is a TensorRT engine)", model_path)
    elif name == "auto":
        name, reason = choose_backend(model_path, options.get("device"))
        if name == "torch" and "device" not in options:
            options["device"] = "cuda"
        _LOGGER.info("backend auto: using %s (%s)", name, reason)
    if is_engine and name != "tensorrt":
        raise ValueError(
            f"{model_path} is a TensorRT engine: only the tensorrt backend runs it (backend "
            f"{name!r} takes an artifact, a shipped model name or an .onnx export)"
        )
    return name, options


def create_backend(name: str, model_path: str | os.PathLike[str], **options: Any) -> DepthBackend:
    """Load ``model_path`` (artifact path, shipped model name or exported ``.onnx``) into the
    backend ``name`` (``"auto"``, or one of :data:`BACKENDS`).

    :raises ValueError: an unknown backend name or an option the backend does not take.
    :raises ArtifactError: a missing, corrupt or unsuitable model file, named in the message.
    :raises BackendError: the backend cannot run here.
    """
    name, options = resolve_backend(name, model_path, options)
    # Backends are constructed as cls(model_path, **options), unlike the DepthBackend base.
    factory: Callable[..., DepthBackend] = backend_class(name)
    try:
        inspect.signature(factory).bind(model_path, **options)
    except TypeError as error:
        raise ValueError(f"backend {name!r} does not take these options: {error}") from error
    return factory(model_path, **options)
