"""The ``device`` option every backend takes: ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import re

__all__ = ["parse_device"]

_DEVICE = re.compile(r"(cpu|cuda)(?::(\d+))?")


def parse_device(device: str) -> tuple[str, int]:
    """``(kind, index)``: ``"cuda"`` -> ``("cuda", 0)``, ``"cpu"`` -> ``("cpu", 0)``.

    Only the syntax is checked here; each backend checks that its runtime has the device.

    :raises ValueError: anything else, named in the message.
    """
    match = _DEVICE.fullmatch(str(device).strip().lower())
    if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return match.group(1), int(match.group(2) or 0)
