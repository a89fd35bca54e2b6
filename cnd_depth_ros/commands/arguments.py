"""argparse ``type=`` functions shared by the sub-commands.

Each one turns the text of an option into a value or raises ``argparse.ArgumentTypeError``, so a
bad value ends in argparse's usage message naming the option, never in a traceback. Infinity and
NaN are no valid sizes, rates or durations, so the float types reject them.
"""

from __future__ import annotations

import argparse
import math

__all__ = [
    "SGBM_BASELINES",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
]

#: ``--baseline`` choices: SGBM with each of ``inference.sgbm.PRESETS`` (``tuned`` is plain sgbm),
#: spelled out here so that building the parser imports no OpenCV.
SGBM_BASELINES = ("sgbm", "sgbm:stereo_image_proc")


def positive_int(text: str) -> int:
    """An integer of at least 1: sizes, counts, iterations."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer of at least 0: seeds."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0: rates, timeouts, lengths."""
    value = float(text)
    if not 0.0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number of at least 0: tolerances, speeds."""
    value = float(text)
    if not 0.0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value
