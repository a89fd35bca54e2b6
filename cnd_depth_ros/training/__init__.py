"""Losses, metrics, datasets and the trainer.

Never imports rclpy: training runs on GPU boxes without ROS.
"""
