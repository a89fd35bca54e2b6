"""The ROS 2 side: depth_node, synchronizer, image and point-cloud codecs, diagnostics."""
