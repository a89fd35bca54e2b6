"""ROS messages without rclpy: images, camera_info, point clouds, topic names, bags, tf_static."""
