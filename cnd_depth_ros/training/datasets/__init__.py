"""Dataset loaders: every one yields :class:`~.frame.Frame` objects."""
