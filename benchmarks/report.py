"""What the benchmark scripts share: the machine they ran on, and how a result is handed over."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from cnd_depth_ros.atomic_file import write_text_atomically


def machine() -> str:
    """``"x86_64, 2 CPUs, load 0.3, 0.7, 1.2"``: results on shared machines need the load."""
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {load}"


def emit(result: Any, path: Path | None) -> None:
    """Print ``result`` as JSON and, when ``path`` is given, write it there whole or not at all."""
    text = json.dumps(result, indent=2) + "\n"
    print(text, end="")
    if path is not None:
        write_text_atomically(path, text)
