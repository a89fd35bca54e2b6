"""The topic names the package uses by default, written once.

The node subscribes to stereo_image_proc's relative names (``left/image_rect``,
``left/camera_info``, ...), which a launch file or ``--ros-args -r`` remaps; a bag that
``cnd-depth synth``/``cnd-depth bag`` writes, and that the rosbag dataset and ``cnd-depth replay``
read unless told otherwise, holds the same topics in the root namespace plus a ground-truth depth
image.
"""

from __future__ import annotations

__all__ = ["DEFAULT_TOPICS", "GROUND_TRUTH_DEPTH", "TF_STATIC", "camera_info_topic", "image_topic"]

#: Ground-truth depth image (32FC1 metres, NaN where unknown) in the bags the package writes.
GROUND_TRUTH_DEPTH = "/ground_truth/depth"
#: tf2's latched static transforms.
TF_STATIC = "/tf_static"


def image_topic(side: str) -> str:
    """The node's relative rectified-image input of ``side`` (``left``, ``right``)."""
    return f"{side}/image_rect"


def camera_info_topic(side: str) -> str:
    """The node's relative camera_info input of ``side`` (``left``, ``right``)."""
    return f"{side}/camera_info"


#: A bag's topics by the rosbag dataset's option names: the node's inputs in the root namespace
#: and the ground-truth depth.
DEFAULT_TOPICS = {
    "left_topic": "/" + image_topic("left"),
    "left_info_topic": "/" + camera_info_topic("left"),
    "right_topic": "/" + image_topic("right"),
    "right_info_topic": "/" + camera_info_topic("right"),
    "depth_topic": GROUND_TRUTH_DEPTH,
}
