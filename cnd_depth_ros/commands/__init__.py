"""One module per `cnd-depth` sub-command; see :mod:`cnd_depth_ros.cli`."""
