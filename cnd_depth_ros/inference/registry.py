"""Backends by name: ``create_backend("onnxruntime", "cnd_stereo", threads=2)``.

Each backend lives in its own module, imported only when asked for, so a machine without TensorRT
(or a training box without ONNX Runtime) never pays for or trips over it. A backend module defines
one :class:`~cnd_depth_ros.inference.backend.DepthEstimator` subclass whose ``name`` is the
registry name; it is constructed as ``cls(model_path, **options)``, or ``cls(**options)`` for a
backend that runs no model (``sgbm``, OpenCV's matcher: it ignores any model it is given).

A backend is named by a spec, ``NAME`` or ``NAME:VALUE``: the value is the backend's precision
(``onnxruntime:int8``), or for ``sgbm`` its preset (``sgbm:stereo_image_proc``; plain ``sgbm`` is
``tuned``). The options every backend understands, each taking those that mean something for it
and refusing the others with a ``ValueError``:

* ``device``: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``;
* ``precision``: ``"fp32"``, ``"fp16"`` or ``"int8"`` (each backend documents what it supports);
* ``calibration``: the frames (any dataset loader's) that INT8 is calibrated on, for every
  backend that runs INT8 (onnxruntime, tensorrt);
* ``threads``: CPU threads for the runtime (``None``: the runtime's default);
* ``height`` / ``width``: run at another input size than the artifact's (a network: multiples
  of 16) or, for ``sgbm``, match at that size instead of the camera's.

``"auto"`` picks the fastest network backend this machine can run and logs which and why; it
never picks ``sgbm``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cnd_depth_ros.errors import BackendError
from cnd_depth_ros.inference.backend import DepthEstimator

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cnd_depth_ros.data.frame import Frame

__all__ = [
    "BACKENDS",
    "BackendEntry",
    "available_backends",
    "backend_class",
    "choose_backend",
    "create_backend",
    "parse_backend_spec",
    "resolve_backend",
    "takes_model",
    "with_calibration",
]

_LOGGER = logging.getLogger(__name__)

@dataclass(frozen=True)
class BackendEntry:
    """Where a backend lives and how it is named and created."""

    #: The module defining the backend class.
    module: str
    #: The runtime package it needs.
    runtime: str
    #: The option the value of a ``NAME:VALUE`` spec sets.
    spec_option: str = "precision"
    #: Whether it runs a model file (``False``: created without one, never chosen by ``auto``).
    takes_model: bool = True


BACKENDS: dict[str, BackendEntry] = {
    "torch": BackendEntry("cnd_depth_ros.inference.torch_backend", "torch"),
    "onnxruntime": BackendEntry("cnd_depth_ros.inference.onnxruntime_backend", "onnxruntime"),
    "tensorrt": BackendEntry("cnd_depth_ros.inference.tensorrt_backend", "tensorrt"),
    "sgbm": BackendEntry("cnd_depth_ros.inference.sgbm", "cv2", spec_option="preset",
                         takes_model=False),
}


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown backend {name!r}; known: auto, {', '.join(BACKENDS)}")


def parse_backend_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"onnxruntime:int8"`` -> ``("onnxruntime", {"precision": "int8"})``;
    ``"sgbm:stereo_image_proc"`` -> ``("sgbm", {"preset": "stereo_image_proc"})``; a plain name
    has no options. The value itself is checked by the backend when it is created.

    :raises ValueError: an empty or unknown name, or more than one ``:``.
    """
    name, _, value = spec.strip().partition(":")
    if not name or ":" in value:
        raise ValueError(f"backend spec must be NAME or NAME:VALUE, got {spec!r}")
    if name != "auto" and name not in BACKENDS:
        raise _unknown(name)
    if not value:
        return name, {}
    return name, {BACKENDS[name].spec_option if name in BACKENDS else "precision": value}


def takes_model(spec: str) -> bool:
    """Whether the backend ``spec`` names runs a model file (``auto`` does).

    :raises ValueError: a bad spec (:func:`parse_backend_spec`).
    """
    name = parse_backend_spec(spec)[0]
    return name == "auto" or BACKENDS[name].takes_model


def with_calibration(
    spec: str, options: dict[str, Any], calibration: Sequence[Frame] | None
) -> dict[str, Any]:
    """``options`` for the backend ``spec``, with ``calibration`` (the frames INT8 is calibrated
    on) added when it runs INT8, by the spec (``onnxruntime:int8``) or ``options["precision"]``.

    :raises ValueError: a bad spec (:func:`parse_backend_spec`).
    """
    if {**options, **parse_backend_spec(spec)[1]}.get("precision") != "int8":
        return dict(options)
    return {**options, "calibration": calibration}


def backend_class(name: str) -> type[DepthEstimator]:
    """The backend class registered as ``name``.

    :raises ValueError: an unknown name.
    :raises BackendError: the backend's module or runtime does not import on this machine.
    """
    if name not in BACKENDS:
        raise _unknown(name)
    module_name, runtime = BACKENDS[name].module, BACKENDS[name].runtime
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
            and issubclass(value, DepthEstimator)
            and value.__module__ == module.__name__
            and getattr(value, "name", None) == name
        ):
            return value
    raise BackendError(f"{module_name} defines no DepthEstimator named {name!r}")


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
    spec: str, model_path: str | os.PathLike[str] | None, options: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The concrete backend ``spec`` stands for (``"auto"`` resolved, logged with the reason) and
    the options to create it with: the spec's value added (:func:`parse_backend_spec`), and
    ``auto`` choosing torch on a GPU adds ``device="cuda"``.

    :raises ValueError: a bad spec, a spec whose value contradicts ``options``, no model for a
        backend that runs one, or an engine file for a backend other than tensorrt.
    :raises BackendError: ``auto`` finds no backend that runs here.
    """
    name, spec_options = parse_backend_spec(spec)
    options = dict(options)
    for key, value in spec_options.items():
        if options.setdefault(key, value) != value:
            raise ValueError(f"backend {spec!r} asks for {key} {value!r}, the options for "
                             f"{options[key]!r}: give one")
    if not takes_model(name):
        return name, options
    if model_path is None:
        raise ValueError(f"backend {name!r} runs a model: an artifact path, a shipped model name "
                         "or an .onnx or .engine file")
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


def create_backend(
    spec: str, model_path: str | os.PathLike[str] | None = None, **options: Any
) -> DepthEstimator:
    """Load ``model_path`` (artifact path, shipped model name or exported ``.onnx``) into the
    backend ``spec`` names (``"auto"``, or one of :data:`BACKENDS`, with its value after a
    colon); a backend that runs no model ignores ``model_path``.

    :raises ValueError: an unknown backend, an option the backend does not take, or no model
        for a backend that runs one.
    :raises ArtifactError: a missing, corrupt or unsuitable model file, named in the message.
    :raises BackendError: the backend cannot run here.
    """
    name, options = resolve_backend(spec, model_path, options)
    # Backends are constructed as cls([model_path,] **options), unlike the DepthBackend base.
    factory: Callable[..., DepthEstimator] = backend_class(name)
    arguments = (model_path,) if BACKENDS[name].takes_model else ()
    try:
        inspect.signature(factory).bind(*arguments, **options)
    except TypeError as error:
        raise ValueError(f"backend {name!r} does not take these options: {error}") from error
    return factory(*arguments, **options)
