"""cnd_depth_ros: metric depth from stereo or mono cameras with the CND networks, for ROS 2."""

__version__ = "0.1.0"
