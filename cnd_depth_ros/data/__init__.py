"""The datasets: Frame, file readers, one loader per format, the registry behind KIND:ROOT."""
