"""rosbag2 files: reading with checks, and writing (recording the node's outputs, writing frames).

Both sides use ``rosbags`` (pure Python; sqlite3 and MCAP storage; bags of any ROS 2 distro, whose
sensor_msgs are the same on the wire), so a bag can be scored on a machine without ROS. Messages
stay in their CDR serialisation wherever they are only passed on (published, recorded): a bag's
bytes are exactly what DDS carries. Every problem with a bag becomes one :class:`BagError` that
names the bag and what is wrong with it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import sqlite3
import struct
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from cnd_depth_ros.errors import CndDepthError

__all__ = [
    "CAMERA_INFO",
    "COMPRESSED_IMAGE",
    "DISTROS",
    "IMAGE",
    "POINT_CLOUD",
    "STORAGES",
    "TF_MESSAGE",
    "BagError",
    "BagReader",
    "BagRecorder",
    "BagTopic",
    "BagWriteError",
    "BagWriter",
    "RecordError",
    "cdr_header_stamp",
    "deserialize_cdr",
    "stamp_ns",
]

_LOGGER = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINT_CLOUD = "sensor_msgs/msg/PointCloud2"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"

#: ROS 2 distro -> (its ``rosbags`` type store, the rosbag2 metadata version its parser reads).
DISTROS: dict[str, tuple[str, Literal[8, 9]]] = {
    "humble": ("ros2_humble", 8),
    "jazzy": ("ros2_jazzy", 9),
    "kilted": ("ros2_kilted", 9),
}
#: rosbag2 storage formats.
STORAGES = ("sqlite3", "mcap")


class BagError(CndDepthError, ValueError):
    """A bag cannot be used: unreadable or truncated, a topic missing, empty or of another type."""


class BagWriteError(CndDepthError, OSError):
    """A bag cannot be written (the path exists, or the disk refused); names the path."""


class RecordError(BagWriteError):
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


@functools.cache
def _newest_typestore() -> Any:
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.LATEST)


def deserialize_cdr(raw: bytes | memoryview, msgtype: str) -> Any:
    """The CDR message ``raw`` of type ``msgtype`` as a ``rosbags`` object (numpy arrays for
    data), read with the newest message definitions ``rosbags`` knows."""
    return _newest_typestore().deserialize_cdr(raw, msgtype)


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

        self.path = Path(path)
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
            return deserialize_cdr(raw, msgtype)
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


def _latched_qos() -> Any:
    """The QoS tf2's static broadcaster offers: reliable, transient local, keep last 1."""
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    never = QosTime(sec=0, nsec=0)
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=1,
        reliability=QosReliability.RELIABLE,
        durability=QosDurability.TRANSIENT_LOCAL,
        deadline=never,
        lifespan=never,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=never,
        avoid_ros_namespace_conventions=False,
    )


def _write_errors() -> tuple[type[BaseException], ...]:
    from rosbags.rosbag2 import WriterError

    return WriterError, OSError, sqlite3.Error


class BagWriter:
    """A rosbag2 being written (``ros2 bag record``'s layout, readable by ``ros2 bag`` and
    ``rosbags``); use as a context manager, which closes it, or aborts it on an exception.

    The bag is written into a hidden folder next to ``path`` and moved to ``path`` only once
    :meth:`close` has finalised it (index and ``metadata.yaml``), so a bag at ``path`` is never
    half written; :meth:`abort` removes what was written. ``distro`` picks the message
    definitions and the metadata version (:data:`DISTROS`; Humble's parser reads version 8
    only); ``None`` takes those of the newest distro ``rosbags`` knows. Build messages for
    :meth:`write_message` with :attr:`typestore` (:mod:`~cnd_depth_ros.messages.builders`).

    :raises ValueError: an unknown ``storage`` or ``distro``.
    :raises BagWriteError: ``path`` exists, or the bag cannot be created there.
    """

    def __init__(
        self, path: str | Path, storage: str = "sqlite3", distro: str | None = None
    ) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        if distro is not None and distro not in DISTROS:
            raise ValueError(f"distro must be one of {', '.join(DISTROS)}, got {distro!r}")
        self.path = Path(path)
        if self.path.exists():
            raise BagWriteError(f"{self.path} exists already; choose a new path")
        if distro is None:
            self.typestore, version = _newest_typestore(), Writer.VERSION_LATEST
        else:
            store, version = DISTROS[distro]
            self.typestore = get_typestore(Stores(store))
        #: Messages written so far.
        self.count = 0
        self._connections: dict[str, Any] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._scratch = Path(tempfile.mkdtemp(
                prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent))
        except OSError as error:
            raise BagWriteError(f"cannot write the bag {self.path}: {error}") from error
        self._writer = Writer(self._scratch / self.path.name, version=version,
                              storage_plugin=StoragePlugin[storage.upper()])
        self._open = True
        try:
            self._writer.open()
        except _write_errors() as error:
            self.abort()
            raise BagWriteError(f"cannot write the bag {self.path}: {error}") from error

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        """Close the bag, or abort it when the block raised."""
        if kind is None:
            self.close()
        else:
            self.abort()

    def add_topic(self, topic: str, msgtype: str, *, latched: bool = False) -> None:
        """Declare ``topic`` before writing to it; ``latched``: offered transient-local, keep
        last 1, as tf2's static broadcaster offers ``/tf_static``."""
        qos = {"offered_qos_profiles": [_latched_qos()]} if latched else {}
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self.typestore, **qos
        )

    def write(self, topic: str, log_time: int, raw: bytes | memoryview) -> None:
        """Append one CDR message of a declared ``topic``, logged at ``log_time`` ns.

        :raises BagWriteError: the storage refused it (its cause is the storage's error).
        """
        try:
            self._writer.write(self._connections[topic], log_time, raw)
        except _write_errors() as error:
            raise BagWriteError(f"cannot write the bag {self.path}: {error}") from error
        self.count += 1

    def write_message(
        self, topic: str, log_time: int, message: Any, *, latched: bool = False
    ) -> None:
        """Serialise ``message`` (built with :attr:`typestore`) and append it; its first message
        declares ``topic`` (``latched`` as in :meth:`add_topic`).

        :raises BagWriteError: as :meth:`write`.
        """
        msgtype = message.__msgtype__
        if topic not in self._connections:
            self.add_topic(topic, msgtype, latched=latched)
        self.write(topic, log_time, self.typestore.serialize_cdr(message, msgtype))

    def commit(self) -> None:
        """Make what was written so far durable: commits the sqlite3 transaction that
        ``rosbags`` keeps open until it closes the bag (MCAP writes as it goes).

        :raises BagWriteError: the storage refused it.
        """
        connection = getattr(self._writer.storage, "conn", None)
        try:
            if connection is not None:
                connection.commit()
        except sqlite3.Error as error:
            raise BagWriteError(f"cannot write the bag {self.path}: {error}") from error

    def close(self) -> None:
        """Finalise the bag and move it to ``path``; closing again does nothing.

        :raises BagWriteError: it could not be finalised; nothing is left at ``path``.
        """
        if not self._open:
            return
        self._open = False
        try:
            self._writer.close()
            (self._scratch / self.path.name).rename(self.path)
        except _write_errors() as error:
            with contextlib.suppress(*_write_errors()):
                self._writer.abort()
            raise BagWriteError(f"cannot write the bag {self.path}: {error}") from error
        finally:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def abort(self) -> None:
        """Stop writing and remove the unfinished bag; after :meth:`close`, does nothing."""
        if not self._open:
            return
        self._open = False
        with contextlib.suppress(*_write_errors()):
            self._writer.abort()
        shutil.rmtree(self._scratch, ignore_errors=True)


class BagRecorder:
    """Writes CDR messages as they come into the rosbag2 ``path`` (a :class:`BagWriter` with the
    newest message definitions).

    :meth:`close` always finalises the bag, also after an interruption or a failed write.
    sqlite3 bags are committed every ``commit_every_s`` seconds, so a write that fails (disk
    full) loses at most that much; :meth:`write` then raises :class:`RecordError` saying how many
    messages the finalised bag holds, counted by reading it back, or that none could be kept.

    :raises RecordError: ``path`` exists, or the bag cannot be created there.
    """

    def __init__(
        self, path: str | Path, storage: str = "sqlite3", commit_every_s: float = 1.0
    ) -> None:
        self.path = Path(path)
        try:
            self._bag = BagWriter(self.path, storage)
        except BagWriteError as error:
            raise RecordError(str(error)) from error
        self._finished = False
        self._commit_every_s = commit_every_s
        self._committed = time.monotonic()

    @property
    def count(self) -> int:
        """Messages written so far."""
        return self._bag.count

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare ``topic`` before writing to it."""
        self._bag.add_topic(topic, msgtype)

    def write(self, topic: str, log_time: int, raw: bytes) -> None:
        """Append one CDR message of a declared ``topic``.

        :raises RecordError: the storage refused it; the bag is closed with what it has.
        """
        try:
            self._bag.write(topic, log_time, raw)
            now = time.monotonic()
            if now - self._committed >= self._commit_every_s:
                self._bag.commit()
                self._committed = now
        except BagWriteError as error:
            reason = error.__cause__ or error
            kept = self._finish(after_failure=True)
            raise RecordError(
                f"recording to {self.path} failed after {self.count} messages: {reason}; {kept}"
            ) from error

    def close(self) -> None:
        """Finalise the bag and move it to ``path``.

        :raises RecordError: it could not be finalised; what is left is named.
        """
        if self._finished:
            return
        outcome = self._finish(after_failure=False)
        if not self.path.exists():
            raise RecordError(f"recording to {self.path} failed: {outcome}")

    def _finish(self, after_failure: bool) -> str:
        """Close the writer; say where the messages are (or that they are lost). After a failed
        write the bag is read back, since the storage may have dropped what it had not saved."""
        self._finished = True
        try:
            self._bag.close()
        except BagWriteError as error:
            reason = error.__cause__ or error
            _LOGGER.error("cannot finalise the bag %s: %s", self.path, reason)
            return f"the bag could not be finalised ({reason}) and was removed"
        if not after_failure:
            return f"the {self.count} messages are in {self.path}"
        try:
            with BagReader(self.path) as reader:
                kept = sum(1 for _ in reader.messages(reader.topics))
        except BagError as error:
            shutil.rmtree(self.path, ignore_errors=True)
            return f"the bag could not be read back ({error}) and was removed"
        return f"{self.path} holds {kept} of the {self.count} messages written"
