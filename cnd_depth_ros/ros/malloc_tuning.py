"""Keep freed message buffers in the process instead of returning them to the kernel (glibc).

Every large message costs a few fresh buffers per frame, most of them outside Python's reach:
rclpy converts a message to its C struct and back, the middleware serialises it, and glibc's
``malloc`` serves blocks above its mmap threshold with fresh ``mmap`` pages, each of which
faults and is zeroed on first touch. Measured on the project's 2-core VM, publishing or
serialising one 640x480 xyzrgb cloud (4.9 MB) took 3,600 page faults and 8 ms of CPU time
(20 ms wall under load); with freed blocks kept for reuse, 0 faults and 0.6 ms. This is the
``mallopt`` setting ROS 2's real-time demos use (realtime_support's ``rttest``): the heap then
keeps its high-water mark, a few tens of MB for a node that publishes 640x480 clouds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["LARGE_BUFFER_BYTES", "keep_freed_buffers"]

_LOGGER = logging.getLogger(__name__)

# glibc's malloc.h parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the reusable heap: glibc's largest mmap threshold on 64-bit
#: (a 1280x720 xyzrgb cloud is 14.7 MB; a 1920x1080 one, 33 MB, is still mmapped).
LARGE_BUFFER_BYTES = 32 * 1024 * 1024


def keep_freed_buffers(threshold_bytes: int = LARGE_BUFFER_BYTES) -> bool:
    """Serve blocks up to ``threshold_bytes`` from the heap and never trim it (process-wide).

    Call once at process start, before the first large message. Returns ``False`` (and changes
    nothing) where the C library has no glibc ``mallopt``, e.g. musl or macOS.

    :raises ValueError: ``threshold_bytes`` is not in (0, LARGE_BUFFER_BYTES].
    """
    if not 0 < threshold_bytes <= LARGE_BUFFER_BYTES:
        raise ValueError(
            f"threshold_bytes must lie in (0, {LARGE_BUFFER_BYTES}], got {threshold_bytes}"
        )
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        _LOGGER.debug("no glibc mallopt in %r: large buffers stay mmapped", name)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # The trim threshold first: once the mmap threshold is fixed, freed blocks land in the heap,
    # and a trim threshold above the largest of them keeps the heap from shrinking under them.
    trimmed = mallopt(_M_TRIM_THRESHOLD, 8 * threshold_bytes)
    mapped = mallopt(_M_MMAP_THRESHOLD, threshold_bytes)
    return bool(trimmed and mapped)
