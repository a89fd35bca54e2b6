"""Dataset evaluation, rosbag replay and reports."""
