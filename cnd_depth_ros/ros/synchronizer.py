"""Time synchronisation of camera topics with the ``message_filters`` API.

``message_filters`` ships with ROS installations but not on PyPI. :data:`filters` is that module
where it imports, else this one, whose :class:`Subscriber`, :class:`TimeSynchronizer` and
:class:`ApproximateTimeSynchronizer` take the same arguments, call back the same way and expose
the same ``queues``. Callers write ``filters.Subscriber(node, Image, "left/image_rect",
qos_profile=qos)`` and work with either.

Both built-in policies keep at most ``queue_size`` messages per input, dropping the oldest, and
after emitting a set discard what is older than it in each queue (it could only pair with
messages that already went by): an unmatched flood cannot grow memory.
"""

from __future__ import annotations

import bisect
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from rclpy.clock import ROSClock
from rclpy.logging import get_logger
from rclpy.node import Node

__all__ = [
    "IMPLEMENTATION",
    "ApproximateTimeSynchronizer",
    "SimpleFilter",
    "Subscriber",
    "TimeSynchronizer",
    "filters",
    "make_synchronizer",
]

_logger = get_logger("cnd_depth_ros.synchronizer")


class SimpleFilter:
    """A message source: registered callbacks get each output plus their own extra arguments."""

    def __init__(self) -> None:
        self.callbacks: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}

    def registerCallback(self, cb: Callable[..., Any], *args: Any) -> int:  # noqa: N802
        """Call ``cb(*messages, *args)`` on every output; returns the connection id."""
        connection = len(self.callbacks)
        self.callbacks[connection] = (cb, args)
        return connection

    def signalMessage(self, *msgs: Any) -> None:  # noqa: N802
        for cb, args in list(self.callbacks.values()):
            cb(*msgs, *args)


class Subscriber(SimpleFilter):
    """A subscription as a filter source; keyword arguments go to ``node.create_subscription``
    (``qos_profile`` defaults to a depth of 10, as in message_filters)."""

    def __init__(self, node: Node, msg_type: type, topic: str, **kwargs: Any) -> None:
        super().__init__()
        self.node = node
        self.topic = topic
        kwargs.setdefault("qos_profile", 10)
        self.sub = node.create_subscription(msg_type, topic, self.callback, **kwargs)

    def callback(self, msg: Any) -> None:
        self.signalMessage(msg)

    def getTopic(self) -> str:  # noqa: N802
        return self.topic


def _stamp_ns(msg: Any, allow_headerless: bool) -> int | None:
    """The message's header stamp in nanoseconds; ROS time now for headerless messages when
    allowed, else ``None`` (the message cannot be synchronised)."""
    header = getattr(msg, "header", None)
    stamp = getattr(header, "stamp", None)
    if stamp is not None:
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    if allow_headerless:
        return ROSClock().now().nanoseconds
    _logger.warning(
        f"cannot synchronise a {type(msg).__name__} without header stamp; "
        "pass allow_headerless=True to stamp it with the arrival time",
        throttle_duration_sec=10.0,
    )
    return None


class TimeSynchronizer(SimpleFilter):
    """Emits one message per input when all carry exactly the same stamp.

    ``fs`` are the input filters; the callback gets their messages in the same order.
    Callbacks run outside the lock, so a slow callback does not hold up other inputs.

    :raises ValueError: ``queue_size`` is less than 1.
    """

    def __init__(self, fs: Sequence[SimpleFilter], queue_size: int) -> None:
        super().__init__()
        if queue_size < 1:
            raise ValueError(f"synchroniser queue_size must be at least 1, got {queue_size}")
        self.queue_size = queue_size
        self.lock = threading.Lock()
        self.allow_headerless = False
        self.connectInput(fs)

    def connectInput(self, fs: Sequence[SimpleFilter]) -> None:  # noqa: N802
        self.queues: list[dict[int, Any]] = [{} for _ in fs]
        self.input_connections = [
            f.registerCallback(self.add, queue, index)
            for index, (f, queue) in enumerate(zip(fs, self.queues, strict=True))
        ]

    def add(self, msg: Any, my_queue: dict[int, Any], my_queue_index: int | None = None) -> None:
        stamp = _stamp_ns(msg, self.allow_headerless)
        if stamp is None:
            return
        index = my_queue_index
        if index is None:
            index = next(i for i, queue in enumerate(self.queues) if queue is my_queue)
        with self.lock:
            my_queue[stamp] = msg
            while len(my_queue) > self.queue_size:
                del my_queue[min(my_queue)]
            matched = self._match(stamp, index)
            if matched is None:
                return
            msgs = [queue.pop(t) for queue, t in zip(self.queues, matched, strict=True)]
            for queue, t in zip(self.queues, matched, strict=True):
                for older in [s for s in queue if s < t]:
                    del queue[older]
        self.signalMessage(*msgs)

    def _match(self, stamp: int, index: int) -> list[int] | None:
        """The stamps, one per queue, of the set the new message at ``stamp`` completes."""
        if all(stamp in queue for queue in self.queues):
            return [stamp] * len(self.queues)
        return None


class ApproximateTimeSynchronizer(TimeSynchronizer):
    """Emits one message per input when their stamps lie within ``slop`` seconds.

    Of the sets that include the new message, the one with the smallest time span wins.
    ``allow_headerless`` stamps messages without header with the arrival time (avoid it: the
    delays are unpredictable).

    :raises ValueError: ``queue_size`` is less than 1 or ``slop`` is negative.
    """

    def __init__(
        self,
        fs: Sequence[SimpleFilter],
        queue_size: int,
        slop: float,
        allow_headerless: bool = False,
    ) -> None:
        if slop < 0:
            raise ValueError(f"synchroniser slop must not be negative, got {slop} s")
        super().__init__(fs, queue_size)
        self.slop = slop
        self.allow_headerless = allow_headerless
        self._slop_ns = round(slop * 1e9)

    def _match(self, stamp: int, index: int) -> list[int] | None:
        # Per other input, the stamps close enough to the new message to share a set with it.
        candidates = [
            sorted(s for s in queue if abs(s - stamp) <= self._slop_ns)
            for i, queue in enumerate(self.queues)
            if i != index
        ]
        if not all(candidates):
            return None
        # A set of smallest span starts at one of its stamps: try each start at or before the
        # new message, taking from every input its first stamp at or after the start.
        best: tuple[int, list[int]] | None = None
        starts = {s for stamps in candidates for s in stamps if s <= stamp} | {stamp}
        for start in starts:
            if stamp - start > self._slop_ns:
                continue
            picks = []
            for stamps in candidates:
                position = bisect.bisect_left(stamps, start)
                if position == len(stamps) or stamps[position] - start > self._slop_ns:
                    break
                picks.append(stamps[position])
            else:
                span = max(*picks, stamp) - start
                if best is None or span < best[0]:
                    best = (span, picks)
        if best is None:
            return None
        picks = best[1]
        picks.insert(index, stamp)
        return picks


def _load_filters() -> ModuleType:
    try:
        import message_filters
    except ImportError:
        return sys.modules[__name__]
    return message_filters


filters: ModuleType = _load_filters()
"""``message_filters`` where installed, else this module: the same API either way."""

IMPLEMENTATION: str = filters.__name__


def make_synchronizer(fs: Sequence[Any], *, queue_size: int, approximate: bool, slop: float) -> Any:
    """The exact or approximate synchroniser of :data:`filters` over ``fs`` (stereo_image_proc's
    ``approximate_sync`` and ``approximate_sync_tolerance_seconds``)."""
    if approximate:
        return filters.ApproximateTimeSynchronizer(fs, queue_size, slop)
    return filters.TimeSynchronizer(fs, queue_size)
