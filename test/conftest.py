"""Suite-wide settings: a private ROS domain, Fast DDS large-data transports, small torch."""

import os
import random

import numpy as np
import pytest

# Set before rclpy is imported anywhere: a private domain keeps parallel runs on one machine apart,
# and large images over best-effort QoS need Fast DDS's large-data transports on both ends.
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same random state."""
    random.seed(0)
    np.random.seed(0)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(0)
    torch.set_num_threads(2)
