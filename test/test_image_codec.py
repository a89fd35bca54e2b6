"""The numpy Image codec: every node encoding, row padding, byte order, and rejected messages."""

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from cnd_depth_ros.messages.image import (
    SUPPORTED_ENCODINGS,
    GreyInputNotice,
    ImageCodecError,
    array_to_image,
    image_to_array,
    image_to_rgb,
)

HEADER = Header(stamp=Time(sec=12, nanosec=345), frame_id="left_optical")

SAMPLES = {
    "mono8": np.arange(5 * 7, dtype=np.uint8).reshape(5, 7),
    "mono16": (np.arange(5 * 7, dtype=np.uint16) * 1000).reshape(5, 7),
    "16UC1": (np.arange(5 * 7, dtype=np.uint16) * 7).reshape(5, 7),
    "32FC1": np.linspace(0.5, 80.0, 5 * 7, dtype=np.float32).reshape(5, 7),
    "bgr8": np.random.randint(0, 256, (5, 7, 3), dtype=np.uint8),
    "rgb8": np.random.randint(0, 256, (5, 7, 3), dtype=np.uint8),
    "bgra8": np.random.randint(0, 256, (5, 7, 4), dtype=np.uint8),
    "rgba8": np.random.randint(0, 256, (5, 7, 4), dtype=np.uint8),
}


def _over_the_wire(msg: Image) -> Image:
    """The message as a subscriber sees it: serialised and deserialised by the real rmw."""
    return deserialize_message(serialize_message(msg), Image)


def _padded(image: np.ndarray, encoding: str, pad: int, bigendian: bool) -> Image:
    """A message built by hand with ``pad`` junk bytes after every row, in either byte order."""
    height, width = image.shape[:2]
    wire = image.astype(image.dtype.newbyteorder(">" if bigendian else "<"))
    rows = wire.reshape(height, -1).view(np.uint8)
    junk = np.full((height, pad), 0xAB, dtype=np.uint8)
    data = np.concatenate([rows, junk], axis=1)
    return Image(
        header=HEADER,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=data.shape[1],
        data=data.tobytes(),
    )


def test_supported_encodings_are_the_nodes() -> None:
    assert set(SUPPORTED_ENCODINGS) == set(SAMPLES)


@pytest.mark.parametrize("encoding", sorted(SAMPLES))
def test_round_trip_sets_every_field(encoding: str) -> None:
    image = SAMPLES[encoding]
    msg = _over_the_wire(array_to_image(image, encoding, HEADER))
    assert msg.encoding == encoding
    assert msg.header.frame_id == "left_optical"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 345)
    assert (msg.height, msg.width) == image.shape[:2]
    assert msg.step == image[0].nbytes
    assert len(msg.data) == image.nbytes
    np.testing.assert_array_equal(image_to_array(msg), image)


@pytest.mark.parametrize("encoding", sorted(SAMPLES))
@pytest.mark.parametrize("bigendian", [False, True])
def test_row_padding_and_byte_order(encoding: str, bigendian: bool) -> None:
    image = SAMPLES[encoding]
    msg = _over_the_wire(_padded(image, encoding, pad=5, bigendian=bigendian))
    decoded = image_to_array(msg)
    assert decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [
        ("rgb8", lambda a: a),
        ("bgr8", lambda a: a[..., ::-1]),
        ("rgba8", lambda a: a[..., :3]),
        ("bgra8", lambda a: a[..., 2::-1]),
        ("mono8", lambda a: np.repeat(a[..., None], 3, axis=2)),
        # values up to 34000 use 16 bits: the high byte, as cv_bridge takes it
        ("mono16", lambda a: np.repeat((a[..., None] >> 8).astype(np.uint8), 3, axis=2)),
    ],
)
def test_image_to_rgb(encoding: str, expected) -> None:
    image = SAMPLES[encoding]
    rgb = image_to_rgb(_padded(image, encoding, pad=3, bigendian=False))
    assert rgb.dtype == np.uint8
    assert rgb.shape == (*image.shape[:2], 3)
    assert rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, expected(image))


def _valid(encoding: str = "rgb8") -> Image:
    return array_to_image(SAMPLES[encoding], encoding, HEADER)


def _with(msg: Image, **fields: object) -> Image:
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (_with(_valid(), encoding="yuv422"), "unsupported image encoding 'yuv422'"),
        (_with(_valid(), encoding=""), "unsupported image encoding ''"),
        (_with(_valid(), height=6), r"has 105 bytes, expected height \* step = 6 \* 21 = 126"),
        (_with(_valid(), data=_valid().data[:-1]), "has 104 bytes"),
        (_with(_valid(), step=20), "step 20 is shorter than a row of 7 pixels"),
        (_with(_valid(), height=0, data=[]), r"empty \(7x0\)"),
        (_with(_valid(), width=0), r"empty \(0x5\)"),
    ],
    ids=[
        "unknown-encoding",
        "no-encoding",
        "short-height",
        "short-data",
        "short-step",
        "no-rows",
        "no-columns",
    ],
)
def test_malformed_messages_raise_codec_errors(msg: Image, match: str) -> None:
    with pytest.raises(ImageCodecError, match=match):
        image_to_array(msg)
    with pytest.raises(ImageCodecError):
        image_to_rgb(msg)


@pytest.mark.parametrize("encoding", ["32FC1", "16UC1"])
def test_depth_is_not_a_network_input(encoding: str) -> None:
    with pytest.raises(ImageCodecError, match=f"{encoding} is a depth encoding"):
        image_to_rgb(_valid(encoding))


@pytest.mark.parametrize(
    ("image", "encoding", "match"),
    [
        (np.zeros((4, 4), np.float64), "32FC1", "32FC1 needs a float32 array"),
        (np.zeros((4, 4, 4), np.uint8), "rgb8", r"3 channel\(s\), got uint8 with shape \(4, 4, 4"),
        (np.zeros((4, 4), np.uint8), "bgr8", "bgr8 needs"),
        (np.zeros((0, 4), np.uint8), "mono8", "empty 4x0"),
        (np.zeros((4, 4), np.uint8), "jpeg", "unsupported image encoding 'jpeg'"),
    ],
)
def test_array_to_image_rejects_mismatches(image: np.ndarray, encoding: str, match: str) -> None:
    with pytest.raises(ImageCodecError, match=match):
        array_to_image(image, encoding, HEADER)


def test_encoding_accepts_views_and_foreign_byte_order() -> None:
    depth = SAMPLES["16UC1"]
    msg = array_to_image(depth.astype(">u2")[:, ::2], "16UC1", HEADER)
    assert msg.step == 4 * 2
    np.testing.assert_array_equal(image_to_array(msg), depth[:, ::2])


@pytest.mark.parametrize(("bits", "shift"), [(16, 8), (12, 4), (10, 2), (8, 0), (1, 0)])
def test_mono16_keeps_the_bits_the_camera_uses(bits: int, shift: int) -> None:
    """A 12-bit camera's mono16 keeps its contrast instead of turning almost black."""
    image = np.linspace(0, 2**bits - 1, 5 * 7).astype(np.uint16).reshape(5, 7)
    rgb = image_to_rgb(_padded(image, "mono16", pad=0, bigendian=True))
    np.testing.assert_array_equal(rgb[..., 1], (image >> shift).astype(np.uint8))
    assert rgb.max() == (2**bits - 1) >> shift


def test_grey_input_is_noticed_once_per_camera() -> None:
    notice = GreyInputNotice()
    assert notice.check("left", "rgb8") is None
    warning = notice.check("left", "mono8")
    assert warning is not None and "left images are mono8" in warning
    assert notice.check("left", "mono8") is None and notice.check("left", "mono16") is None
    assert "mono16" in (notice.check("right", "mono16") or "")
    assert "mono8" in (GreyInputNotice().check("left", "mono8; jpeg compressed mono8") or "")
