"""The package's error types: one family, so callers can catch what this package raises."""

__all__ = ["ArtifactError", "BackendError", "CndDepthError", "DatasetError"]


class CndDepthError(Exception):
    """Base of every error cnd_depth_ros raises on purpose."""


class ArtifactError(CndDepthError, ValueError):
    """A model artifact, ONNX file or engine is missing, corrupt, stale or inconsistent.

    The message names the file and the reason.
    """


class BackendError(CndDepthError, RuntimeError):
    """An inference backend failed (wraps the runtime's own exception as ``__cause__``)."""


class DatasetError(CndDepthError, ValueError):
    """A dataset folder or file is missing, unreadable or not in the expected format.

    The message names the file or folder.
    """
