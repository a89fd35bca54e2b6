"""Dataset loaders: every one yields :class:`~cnd_depth_ros.training.datasets.frame.Frame` objects."""
