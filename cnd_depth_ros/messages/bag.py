"""rosbag2 files: reading with checks, and writing (recording the node's outputs, writing frames).

Both sides use ``rosbags`` (pure Python; sqlite3 and MCAP storage; bags of any ROS 2 distro, whose
sensor_msgs are the same on the wire), so a bag can be scored on a machine without ROS. Messages
stay in their CDR serialisation wherever they are only passed on (published, recorded): a bag's
bytes are exactly what DDS carries. Every problem with a bag becomes one :class:`BagError` that
names the bag and what is wrong with it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from cnd_depth_ros.errors import CndDepthError

__all__ = [
    "CAMERA_INFO",
    "COMPRESSED_IMAGE",
    "IMAGE",
    "POINT_CLOUD",
    "TF_MESSAGE",
    "BagError",
    "BagReader",
    "BagRecorder",
    "BagTopic",
    "RecordError",
    "cdr_header_stamp",
    "stamp_ns",
]

_LOGGER = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINT_CLOUD = "sensor_msgs/msg/PointCloud2"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"


class BagError(CndDepthError, ValueError):
    """A bag cannot be used: unreadable or truncated, a topic missing, empty or of another type."""


class RecordError(CndDepthError, OSError):
    """Recording the outputs failed (disk full, interrupted close); says what was kept."""


@dataclass(frozen=True)
class BagTopic:
    """One topic of a bag: name, message type and number of messages."""

    name: str
    msgtype: str
    count: int


def stamp_ns(message: Any) -> int:
    """The header stamp of a deserialised message, in nanoseconds."""
    stamp = message.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def cdr_header_stamp(raw: bytes | memoryview) -> int:
    """Header stamp in ns of a CDR-serialised message that starts with ``std_msgs/Header``
    (Image, CameraInfo, PointCloud2), read without decoding the rest: a 4-byte encapsulation
    header whose second byte is 1 for little-endian, then ``int32 sec``, ``uint32 nanosec``."""
    order = "<" if raw[1] == 1 else ">"
    sec, nanosec = struct.unpack_from(f"{order}iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


def _read_errors() -> tuple[type[BaseException], ...]:
    from rosbags.rosbag2 import ReaderError
    from rosbags.serde import SerdeError

    return ReaderError, SerdeError, OSError, sqlite3.Error, KeyError, ValueError


class BagReader:
    """A rosbag2 opened for reading; use as a context manager.

    :raises BagError: the path is not a readable rosbag2 (no ``metadata.yaml``, a truncated or
        corrupt storage file, an unknown storage format).
    """

    def __init__(self, path: str | Path) -> None:
        from rosbags.rosbag2 import Reader
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        self._typestore = get_typestore(Stores.LATEST)
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except _read_errors() as error:
            raise BagError(f"cannot read the bag {self.path}: {error}") from error
        self.topics: dict[str, BagTopic] = {}
        for connection in self._reader.connections:
            known = self.topics.get(connection.topic)
            count = connection.msgcount + (known.count if known else 0)
            self.topics[connection.topic] = BagTopic(connection.topic, connection.msgtype, count)

    def __enter__(self) -> BagReader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()

    def require(self, topic: str, msgtype: str, what: str) -> BagTopic:
        """Check that ``topic`` (``what`` it is for, e.g. "left camera_info") is in the bag with
        type ``msgtype`` and at least one message.

        :raises BagError: naming the topic, the bag, and the topics it does have.
        """
        found = self.topics.get(topic)
        if found is None:
            have = ", ".join(f"{t.name} ({t.msgtype})" for t in self.topics.values()) or "none"
            raise BagError(f"the bag {self.path} has no {what} topic {topic}; its topics: {have}")
        if found.msgtype != msgtype:
            raise BagError(
                f"{what} topic {topic} in {self.path} has message type {found.msgtype}; "
                f"expected {msgtype}"
            )
        if found.count == 0:
            raise BagError(f"{what} topic {topic} in {self.path} has no messages")
        return found

    def messages(
        self, topics: Iterable[str], start: int | None = None, stop: int | None = None
    ) -> Iterator[tuple[str, int, bytes]]:
        """``(topic, log time ns, CDR bytes)`` of ``topics`` in log-time order, from ``start``
        (inclusive) to ``stop`` (exclusive) when given.

        :raises BagError: the storage file ends or breaks while reading.
        """
        wanted = set(topics)
        connections = [c for c in self._reader.connections if c.topic in wanted]
        try:
            for connection, log_time, raw in self._reader.messages(connections, start, stop):
                yield connection.topic, log_time, bytes(raw)
        except _read_errors() as error:
            raise BagError(f"the bag {self.path} is truncated or corrupt: {error}") from error

    def deserialize(self, topic: str, raw: bytes) -> Any:
        """The message ``raw`` of ``topic`` as a ``rosbags`` object (numpy arrays for data).

        :raises BagError: the bytes are not a message of the topic's type.
        """
        msgtype = self.topics[topic].msgtype
        try:
            return self._typestore.deserialize_cdr(raw, msgtype)
        except _read_errors() as error:
            raise BagError(
                f"a message on {topic} in {self.path} is not a valid {msgtype}: {error}"
            ) from error

    def at(self, topic: str, log_time: int) -> Any:
        """The deserialised message of ``topic`` logged at ``log_time``.

        :raises BagError: there is none (the bag changed since it was indexed).
        """
        for _, _, raw in self.messages([topic], log_time, log_time + 1):
            return self.deserialize(topic, raw)
        raise BagError(f"the bag {self.path} has no message on {topic} at {log_time} ns")


class BagRecorder:
    """Writes CDR messages as they come into the rosbag2 ``path`` (``ros2 bag record``'s layout,
    readable by ``ros2 bag`` and ``rosbags``).

    The bag is written in a hidden folder next to ``path`` and moved there by :meth:`close`,
    which always
    finalises it (index and ``metadata.yaml``), also after an interruption or a failed write.
    sqlite3 bags are committed every ``commit_every_s`` seconds, so a write that fails (disk
    full) loses at most that much; :meth:`write` then raises :class:`RecordError` saying how many
    messages the finalised bag holds, counted by reading it back, or that none could be kept.
    """

    def __init__(
        self, path: str | Path, storage: str = "sqlite3", commit_every_s: float = 1.0
    ) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        self.scratch = self.path.with_name(f".{self.path.name}.partial")
        self.partial = self.scratch / self.path.name
        for existing in (self.path, self.scratch):
            if existing.exists():
                raise RecordError(f"{existing} exists already; choose a new path to record to")
        self._typestore = get_typestore(Stores.LATEST)
        plugin = StoragePlugin[storage.upper()]
        self._writer = Writer(self.partial, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        self._connections: dict[str, Any] = {}
        self.count = 0
        try:
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            self._writer.open()
        except (OSError, WriterError) as error:
            raise RecordError(f"cannot record to {self.path}: {error}") from error
        self._open = True
        self._commit_every_s = commit_every_s
        self._committed = time.monotonic()

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare ``topic`` before writing to it."""
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self._typestore
        )

    def write(self, topic: str, log_time: int, raw: bytes) -> None:
        """Append one CDR message of a declared ``topic``.

        :raises RecordError: the storage refused it; the bag is closed with what it has.
        """
        try:
            self._writer.write(self._connections[topic], log_time, raw)
            self._commit()
        except (OSError, sqlite3.Error) as error:
            kept = self._finish(after_failure=True)
            raise RecordError(
                f"recording to {self.path} failed after {self.count} messages: {error}; {kept}"
            ) from error
        self.count += 1

    def _commit(self) -> None:
        """Commit the sqlite3 transaction that rosbags keeps open until it closes the bag."""
        connection = getattr(self._writer.storage, "conn", None)
        now = time.monotonic()
        if connection is not None and now - self._committed >= self._commit_every_s:
            connection.commit()
            self._committed = now

    def close(self) -> None:
        """Finalise the bag and move it to ``path``.

        :raises RecordError: it could not be finalised; what is left is named.
        """
        if not self._open:
            return
        outcome = self._finish(after_failure=False)
        if not self.path.exists():
            raise RecordError(f"recording to {self.path} failed: {outcome}")

    def _finish(self, after_failure: bool) -> str:
        """Close the writer; say where the messages are (or that they are lost). After a failed
        write the bag is read back, since the storage may have dropped what it had not saved."""
        self._open = False
        try:
            self._writer.close()
            self.partial.rename(self.path)
            self.scratch.rmdir()
        except (OSError, sqlite3.Error) as error:
            with contextlib.suppress(OSError, sqlite3.Error):
                self._writer.abort()
            shutil.rmtree(self.scratch, ignore_errors=True)
            _LOGGER.error("cannot finalise the bag %s: %s", self.path, error)
            return f"the bag could not be finalised ({error}) and was removed"
        if not after_failure:
            return f"the {self.count} messages are in {self.path}"
        try:
            with BagReader(self.path) as reader:
                kept = sum(1 for _ in reader.messages(reader.topics))
        except BagError as error:
            shutil.rmtree(self.path, ignore_errors=True)
            return f"the bag could not be read back ({error}) and was removed"
        return f"{self.path} holds {kept} of the {self.count} messages written"
