"""keep_freed_buffers: large message buffers are reused instead of page-faulted in every frame."""

import array
import platform
import resource

import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import PointCloud2

from cnd_depth_ros.ros.malloc_tuning import LARGE_BUFFER_BYTES, keep_freed_buffers

GLIBC = platform.libc_ver()[0] == "glibc"


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_serialising_a_large_message_stops_faulting() -> None:
    """Serialising a 4 MB message allocates fresh buffers each time; once freed blocks are kept,
    a repeat touches no new page. (A process-wide setting: the rest of the session keeps it.)"""
    size = 4 * 1024 * 1024
    msg = PointCloud2(height=1, width=size // 16, point_step=16, row_step=size)
    msg.data = array.array("B", bytes(size))
    assert keep_freed_buffers()
    serialize_message(msg)  # the heap grows to its high-water mark once
    before = _minor_faults()
    for _ in range(3):
        serialize_message(msg)
    # Fresh pages would be >= 3 x 1024 faults per call; a few stray ones are Python's own.
    assert _minor_faults() - before < 100


@pytest.mark.parametrize("threshold", [0, -1, LARGE_BUFFER_BYTES + 1])
def test_threshold_out_of_range_is_rejected(threshold: int) -> None:
    with pytest.raises(ValueError, match=f"got {threshold}"):
        keep_freed_buffers(threshold)
