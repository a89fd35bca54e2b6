"""sensor_msgs/Image and CompressedImage <-> numpy without per-pixel Python work.

Decoding is a zero-copy strided view over ``msg.data`` (row padding and byte order handled through
numpy strides and dtypes); encoding copies the array once into an ``array.array``, the type the
message's ``data`` setter accepts without inspecting every byte (vision_opencv#285,
common_interfaces#177). Malformed messages raise :class:`ImageCodecError`, never a numpy or
buffer error, so a node can log and skip them. Used even where cv_bridge is installed: see
docs/decisions.md, "Image conversion without cv_bridge".

Nothing here imports rclpy, and ``sensor_msgs`` only when a message is built: rclpy messages and
rosbags' decoded messages have the same fields, so the node, replay, the rosbag dataset and the
bag writers share one decoder for each encoding. Depth images follow REP 118: ``32FC1`` metres
(NaN, inf or 0 where unknown) or ``16UC1`` millimetres (0 where unknown).

image_transport's ``compressed`` plugin publishes ``<image topic>/compressed`` with JPEG or PNG
bytes and a ``format`` such as ``"rgb8; jpeg compressed bgr8"`` (the original encoding, then
what the bytes hold; older drivers write only ``"jpeg"``). Whatever the original encoding, the
bytes decode (OpenCV) to BGR or grey, so the network's RGB follows from one conversion.
"""

from __future__ import annotations

import array
import sys
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from cnd_depth_ros.errors import CndDepthError
from cnd_depth_ros.messages.builders import message_class

if TYPE_CHECKING:
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

__all__ = [
    "SUPPORTED_ENCODINGS",
    "CompressedImageError",
    "GreyInputNotice",
    "ImageCodecError",
    "array_to_image",
    "camera_image_to_rgb",
    "compressed_to_rgb",
    "depth_image_to_metres",
    "depth_to_millimetres",
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
_DEPTH_ENCODINGS = ("32FC1", "16UC1")

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


def array_to_image(
    image: np.ndarray, encoding: str, header: Header, *, typestore: Any | None = None
) -> Image:
    """An Image message holding ``image`` (``H x W`` or ``H x W x C``) in ``encoding``: rclpy's,
    or with ``typestore`` a ``rosbags`` one (:mod:`~cnd_depth_ros.messages.builders`).

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
    fields = {
        "header": header,
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": int(sys.byteorder == "big"),
        "step": width * channels * dtype.itemsize,
    }
    image_class = message_class("sensor_msgs/msg/Image", typestore)
    if typestore is not None:  # rosbags' messages hold uint8[] as a numpy array
        return image_class(**fields, data=native.reshape(-1).view(np.uint8))
    msg = image_class(**fields)
    msg.data = _byte_array(native)  # an array.array: the setter takes it without a per-byte check
    return msg


class CompressedImageError(CndDepthError, ValueError):
    """A CompressedImage that is not a decodable camera image; the message says why."""


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """The camera image of a ``sensor_msgs/CompressedImage`` (JPEG or PNG) as contiguous
    ``H x W x 3`` uint8 RGB; 16-bit PNGs are scaled to 8 bit.

    :raises CompressedImageError: a ``compressedDepth`` message (a depth map, not a camera
        image), empty data, or bytes OpenCV cannot decode.
    """
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower():
        raise CompressedImageError(
            f"compressed image format {fmt!r} is image_transport's compressedDepth, a depth map, "
            "not a camera image"
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise CompressedImageError(f"compressed image ({fmt!r}) has no data")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise CompressedImageError(
            f"compressed image ({fmt!r}, {data.size} bytes) is not a JPEG or PNG OpenCV can decode"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def camera_image_to_rgb(msg: Any) -> np.ndarray:
    """H x W x 3 uint8 RGB of a camera image, raw (``sensor_msgs/Image``, :func:`image_to_rgb`)
    or compressed (``sensor_msgs/CompressedImage``, :func:`compressed_to_rgb`).

    :raises ImageCodecError: as :func:`image_to_rgb`.
    :raises CompressedImageError: as :func:`compressed_to_rgb`.
    """
    if hasattr(msg, "format"):  # only CompressedImage has one
        return compressed_to_rgb(msg)
    return image_to_rgb(msg)


def depth_image_to_metres(msg: Any) -> np.ndarray:
    """H x W float32 metres of a REP 118 depth image (32FC1 metres or 16UC1 millimetres), NaN
    where there is no depth (NaN, inf, 0 or negative).

    :raises ImageCodecError: another encoding, or a malformed message (:func:`image_to_array`).
    """
    if msg.encoding not in _DEPTH_ENCODINGS:
        raise ImageCodecError(
            f"unsupported depth encoding {msg.encoding!r}; use {' or '.join(_DEPTH_ENCODINGS)}"
        )
    values = image_to_array(msg)
    depth = (
        values.astype(np.float32) / 1000.0 if msg.encoding == "16UC1" else values.astype(np.float32)
    )
    depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    return depth


def depth_to_millimetres(depth: np.ndarray) -> np.ndarray:
    """REP 118 16UC1 of a depth image in metres: millimetres, 0 where invalid or beyond
    65.535 m."""
    millimetres = np.rint(depth * 1000.0)
    valid = np.isfinite(millimetres) & (millimetres >= 1) & (millimetres <= np.iinfo(np.uint16).max)
    return np.where(valid, millimetres, 0).astype(np.uint16)
