"""sensor_msgs/Image <-> numpy without per-pixel Python work.

Decoding is a zero-copy strided view over ``msg.data`` (row padding and byte order handled through
numpy strides and dtypes); encoding copies the array once into an ``array.array``, the type the
message's ``data`` setter accepts without inspecting every byte (vision_opencv#285,
common_interfaces#177). Malformed messages raise :class:`ImageCodecError`, never a numpy or
buffer error, so a node can log and skip them. Used even where cv_bridge is installed: see
docs/decisions.md, "Image conversion without cv_bridge".
"""

from __future__ import annotations

import array
import sys

import cv2
import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from cnd_depth_ros.errors import CndDepthError

__all__ = [
    "SUPPORTED_ENCODINGS",
    "GreyInputNotice",
    "ImageCodecError",
    "array_to_image",
    "image_to_array",
    "image_to_rgb",
]


class ImageCodecError(CndDepthError, ValueError):
    """An Image message cannot be decoded or an array cannot be encoded; the message says why."""


# encoding -> (element type, channels); the element type is read little- or big-endian per message.
_LAYOUTS: dict[str, tuple[np.dtype, int]] = {
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgb8": (np.dtype(np.uint8), 3),
    "bgra8": (np.dtype(np.uint8), 4),
    "rgba8": (np.dtype(np.uint8), 4),
    "32FC1": (np.dtype(np.float32), 1),
    "16UC1": (np.dtype(np.uint16), 1),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)

# Colour conversions to RGB for the network; grey images are replicated into three channels.
_TO_RGB: dict[str, int | None] = {
    "rgb8": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "mono16": cv2.COLOR_GRAY2RGB,
}


def _layout(encoding: str) -> tuple[np.dtype, int]:
    try:
        return _LAYOUTS[encoding]
    except KeyError:
        raise ImageCodecError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        ) from None


def _byte_array(data: np.ndarray) -> array.array:
    """One copy of ``data``'s bytes as the ``array.array('B')`` a uint8[] message field stores."""
    buffer = array.array("B")
    buffer.frombytes(np.ascontiguousarray(data).reshape(-1).view(np.uint8).data)
    return buffer


def image_to_array(msg: Image) -> np.ndarray:
    """The image as ``H x W`` (one channel) or ``H x W x C``, its own encoding, native byte order.

    The result is a view sharing memory with ``msg.data`` unless the byte order had to be swapped.

    :raises ImageCodecError: unsupported encoding, empty image, ``step`` shorter than a row, or
        ``data`` shorter than ``height * step``.
    """
    dtype, channels = _layout(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageCodecError(f"{msg.encoding} image is empty ({width}x{height})")
    pixel_bytes = channels * dtype.itemsize
    if step < width * pixel_bytes:
        raise ImageCodecError(
            f"{msg.encoding} image step {step} is shorter than a row of {width} pixels "
            f"({width * pixel_bytes} bytes)"
        )
    if len(msg.data) < height * step:
        raise ImageCodecError(
            f"{msg.encoding} image data has {len(msg.data)} bytes, expected height * step = "
            f"{height} * {step} = {height * step}"
        )
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    image = np.ndarray(
        shape=(height, width, channels),
        dtype=wire,
        buffer=msg.data,
        strides=(step, pixel_bytes, dtype.itemsize),
    )
    if not wire.isnative:
        image = image.astype(dtype)
    return image[:, :, 0] if channels == 1 else image


def image_to_rgb(msg: Image) -> np.ndarray:
    """The image as contiguous ``H x W x 3`` uint8 RGB, the network's input.

    Grey images (mono8, mono16) are replicated into three channels, what the colour network
    takes. mono16 keeps its 8 most significant *used* bits: a 10- or 12-bit camera publishing
    mono16 (values up to 1023 or 4095) would be almost black with cv_bridge's fixed high byte.

    :raises ImageCodecError: as :func:`image_to_array`, or for encodings that are not a camera
        image (depth encodings such as 32FC1 and 16UC1).
    """
    if msg.encoding in _LAYOUTS and msg.encoding not in _TO_RGB:
        raise ImageCodecError(
            f"{msg.encoding} is a depth encoding, not a camera image; expected one of "
            f"{', '.join(_TO_RGB)}"
        )
    image = image_to_array(msg)
    if msg.encoding == "mono16":
        image = mono16_to_mono8(image)
    code = _TO_RGB[msg.encoding]
    if code is None:
        return np.ascontiguousarray(image)
    return cv2.cvtColor(np.ascontiguousarray(image), code)


def mono16_to_mono8(image: np.ndarray) -> np.ndarray:
    """A 16-bit grey image as 8 bits: shifted right by as many bits as its largest value uses
    beyond 8 (a 12-bit camera by 4, a full-range one by 8), so the image keeps its contrast."""
    shift = max(int(image.max()).bit_length() - 8, 0)
    return (image >> shift).astype(np.uint8)


class GreyInputNotice:
    """The warning, once per camera, that grey images feed a network trained on colour.

    Image pipelines publish ``image_rect`` as mono8 for mono cameras (image_proc); the images
    are used, replicated into three channels, but depth may be less accurate than with colour
    and the point cloud's colour is grey. Thread-safe enough for one worker thread.
    """

    _GREY = ("mono8", "mono16")

    def __init__(self) -> None:
        self._noticed: set[str] = set()

    def check(self, camera: str, encoding: str) -> str | None:
        """The warning to log the first time ``camera`` sends a grey ``encoding``, else None.
        A compressed image's format (``"mono8; jpeg compressed mono8"``) counts by its first
        word."""
        encoding = encoding.split(";", 1)[0].strip()
        if encoding not in self._GREY or camera in self._noticed:
            return None
        self._noticed.add(camera)
        return (
            f"{camera} images are {encoding}: the network takes colour, so the grey image is "
            "replicated into three channels (depth may be less accurate than from a colour "
            "camera; the point cloud's colour is grey). Logged once."
        )


def array_to_image(image: np.ndarray, encoding: str, header: Header) -> Image:
    """An Image message holding ``image`` (``H x W`` or ``H x W x C``) in ``encoding``.

    :raises ImageCodecError: unsupported encoding, or an array whose dtype or channel count does
        not match the encoding, or an empty array.
    """
    dtype, channels = _layout(encoding)
    if image.ndim == 2:
        image = image[:, :, np.newaxis]
    if image.ndim != 3 or image.shape[2] != channels or image.dtype.newbyteorder("=") != dtype:
        raise ImageCodecError(
            f"{encoding} needs a {dtype} array with {channels} channel(s), got {image.dtype} "
            f"with shape {image.shape}"
        )
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ImageCodecError(f"cannot encode an empty {width}x{height} image")
    native = np.ascontiguousarray(image, dtype=dtype)
    msg = Image(
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(sys.byteorder == "big"),
        step=width * channels * dtype.itemsize,
    )
    msg.data = _byte_array(native)  # an array.array: the setter takes it without a per-byte check
    return msg
