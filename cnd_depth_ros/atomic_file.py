"""Write a file so that a reader never sees half of it: temporary file, then rename.

A crash, a full disk or a kill leaves either the old file or the new one, never a truncated file
that looks complete. The temporary file lives in the target's folder so the rename stays on one
file system (and so is atomic).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["write_atomically", "write_text_atomically"]


def write_atomically(target: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary_path)``, then rename the result onto ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide models and results from others
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def write_text_atomically(target: str | os.PathLike[str], text: str) -> Path:
    """:func:`write_atomically` for a text file."""
    return write_atomically(target, lambda temporary: temporary.write_text(text, encoding="utf-8"))
