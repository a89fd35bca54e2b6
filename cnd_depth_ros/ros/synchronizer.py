"""Time synchronisation of camera topics with the ``message_filters`` API, as stereo_image_proc
synchronises them.

``message_filters`` ships with ROS installations but not on PyPI. :data:`filters` is that module
where it imports, else this one, whose :class:`Subscriber` and :class:`TimeSynchronizer` take
the same arguments, call back the same way and expose the same ``queues``. Callers write
``filters.Subscriber(node, Image, "left/image_rect", qos_profile=qos)`` and work with either.

:func:`make_synchronizer` builds what stereo_image_proc builds from ``approximate_sync`` and
``approximate_sync_tolerance_seconds``: exact stamps, the nearest stamps (message_filters' C++
``ApproximateTime``, :class:`NearestTimeSynchronizer`) or stamps within a tolerance (its
``ApproximateEpsilonTime``, :class:`EpsilonTimeSynchronizer`), and resets it when time jumps
back. Every policy keeps at most ``queue_size`` messages per input, dropping the oldest, so an
unmatched flood cannot grow memory.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from rclpy.clock import ROSClock
from rclpy.logging import get_logger
from rclpy.node import Node

__all__ = [
    "IMPLEMENTATION",
    "TIME_JUMP_S",
    "EpsilonTimeSynchronizer",
    "NearestTimeSynchronizer",
    "SimpleFilter",
    "Subscriber",
    "TimeSynchronizer",
    "filters",
    "make_synchronizer",
    "reset",
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


class _Bounded(SimpleFilter):
    """What every synchroniser starts with: a checked ``queue_size`` and a lock.

    :raises ValueError: ``queue_size`` is less than 1.
    """

    def __init__(self, queue_size: int) -> None:
        super().__init__()
        if queue_size < 1:
            raise ValueError(f"synchroniser queue_size must be at least 1, got {queue_size}")
        self.queue_size = queue_size
        self.lock = threading.Lock()


class TimeSynchronizer(_Bounded):
    """Emits one message per input when all carry exactly the same stamp.

    ``fs`` are the input filters; the callback gets their messages in the same order.
    Callbacks run outside the lock, so a slow callback does not hold up other inputs.

    :raises ValueError: ``queue_size`` is less than 1.
    """

    def __init__(self, fs: Sequence[SimpleFilter], queue_size: int) -> None:
        super().__init__(queue_size)
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


class _Policy(_Bounded):
    """A synchroniser over ``fs`` whose messages arrive in stamp order on each input (one that
    does not resets it); callbacks run outside the lock, so a slow callback does not hold up
    other inputs."""

    def __init__(self, fs: Sequence[SimpleFilter], queue_size: int) -> None:
        super().__init__(queue_size)
        self.queues: list[deque[tuple[int, Any]]] = [deque() for _ in fs]
        for index, f in enumerate(fs):
            f.registerCallback(self.add, index)

    def add(self, msg: Any, index: int) -> None:
        stamp = _stamp_ns(msg, allow_headerless=False)
        if stamp is None:
            return
        sets: list[list[Any]] = []
        queue = self.queues[index]
        if queue and stamp < queue[-1][0]:
            # The policies need each input in stamp order: a message older than one waiting
            # (time went back, or the middleware reordered two) starts afresh.
            self.reset()
        with self.lock:
            self._add(stamp, msg, index, sets)
        for msgs in sets:
            self.signalMessage(*msgs)

    def _add(self, stamp: int, msg: Any, index: int, sets: list[list[Any]]) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget every waiting message (time jumped back: none of them can pair any more)."""
        with self.lock:
            for queue in self.queues:
                queue.clear()


class EpsilonTimeSynchronizer(_Policy):
    """Sets whose stamps lie within ``epsilon`` seconds of each other: message_filters' C++
    ``ApproximateEpsilonTime`` policy, what stereo_image_proc uses with a non-zero
    ``approximate_sync_tolerance_seconds``. The oldest waiting message that cannot pair with
    the others' is dropped.

    :raises ValueError: ``queue_size`` is less than 1 or ``epsilon`` is not positive.
    """

    def __init__(self, fs: Sequence[SimpleFilter], queue_size: int, epsilon: float) -> None:
        if not epsilon > 0:
            raise ValueError(f"synchroniser epsilon must be positive, got {epsilon} s")
        super().__init__(fs, queue_size)
        self.epsilon = epsilon
        self._epsilon_ns = round(epsilon * 1e9)

    def _add(self, stamp: int, msg: Any, index: int, sets: list[list[Any]]) -> None:
        queue = self.queues[index]
        queue.append((stamp, msg))
        if len(queue) > self.queue_size:
            queue.popleft()
        while all(self.queues):
            fronts = [queue[0][0] for queue in self.queues]
            if max(fronts) - min(fronts) <= self._epsilon_ns:
                sets.append([queue.popleft()[1] for queue in self.queues])
            else:
                self.queues[fronts.index(min(fronts))].popleft()


class NearestTimeSynchronizer(_Policy):
    """The set of nearest stamps, with no limit on their difference: message_filters' C++
    ``ApproximateTime`` policy (what stereo_image_proc uses with ``approximate_sync`` and a zero
    tolerance), so cameras that are not hardware-synchronised still pair, frame by frame.

    A set is emitted once no later message can make a better one: either the pivot (the input
    whose message ends the candidate set) has moved on, or the gain any later set could have is
    smaller than the candidate's span; an ``age_penalty`` of 0.1 prefers an older set when the
    two are close, as upstream does. Each queue holds at most ``queue_size`` messages, the oldest
    dropped first.

    :raises ValueError: ``queue_size`` is less than 1.
    """

    def __init__(
        self, fs: Sequence[SimpleFilter], queue_size: int, age_penalty: float = 0.1
    ) -> None:
        super().__init__(fs, queue_size)
        self.age_penalty = age_penalty
        self._past: list[list[tuple[int, Any]]] = [[] for _ in fs]
        self._dropped = [False] * len(fs)
        self._candidate: list[tuple[int, Any]] | None = None
        self._candidate_start = self._candidate_end = 0
        self._pivot: int | None = None
        self._pivot_time = 0
        self._non_empty = 0

    def reset(self) -> None:
        with self.lock:
            for queue, past in zip(self.queues, self._past, strict=True):
                queue.clear()
                past.clear()
            self._candidate, self._pivot, self._non_empty = None, None, 0
            self._dropped = [False] * len(self.queues)

    def _add(self, stamp: int, msg: Any, index: int, sets: list[list[Any]]) -> None:
        queue = self.queues[index]
        queue.append((stamp, msg))
        if len(queue) == 1:
            self._non_empty += 1
            if self._non_empty == len(self.queues):
                self._process(sets)
        if len(queue) + len(self._past[index]) > self.queue_size:
            # Cancel the candidate search, drop the oldest message of this input, start again.
            self._recover()
            queue.popleft()
            self._non_empty -= 0 if queue else 1
            self._dropped[index] = True
            if self._pivot is not None:
                self._candidate, self._pivot = None, None
                self._process(sets)

    def _boundary(self, end: bool) -> tuple[int, int]:
        """(input, stamp) of the latest (``end``) or earliest front; ties: the first latest,
        the last earliest, as upstream. An input with nothing waiting counts with its last
        stamp: its next message cannot be older."""
        best_index, best_time = 0, 0
        for i, (queue, past) in enumerate(zip(self.queues, self._past, strict=True)):
            t = queue[0][0] if queue else past[-1][0]
            if i == 0 or (t > best_time) == end:
                best_index, best_time = i, t
        return best_index, best_time

    def _delete_front(self, i: int) -> None:
        self.queues[i].popleft()
        if not self.queues[i]:
            self._non_empty -= 1

    def _move_front_to_past(self, i: int) -> None:
        self._past[i].append(self.queues[i].popleft())
        if not self.queues[i]:
            self._non_empty -= 1

    def _make_candidate(self, start: int, end: int) -> None:
        self._candidate = [queue[0] for queue in self.queues]
        self._candidate_start, self._candidate_end = start, end
        for past in self._past:
            past.clear()

    def _recover(self, moves: list[int] | None = None) -> None:
        """Put messages moved to the past back in front of their queues (the last ``moves[i]``
        of each, or all of them)."""
        self._non_empty = 0
        for i, (queue, past) in enumerate(zip(self.queues, self._past, strict=True)):
            count = len(past) if moves is None else moves[i]
            for _ in range(count):
                queue.appendleft(past.pop())
            self._non_empty += 1 if queue else 0

    def _publish(self, sets: list[list[Any]]) -> None:
        assert self._candidate is not None
        sets.append([msg for _, msg in self._candidate])
        self._candidate, self._pivot = None, None
        self._recover()
        for queue in self.queues:  # the candidate is every queue's front again
            queue.popleft()
        self._non_empty = sum(1 for queue in self.queues if queue)

    def _worse(self, end_time: int, than: int) -> bool:
        return (end_time - self._candidate_end) * (1 + self.age_penalty) >= than

    def _process(self, sets: list[list[Any]]) -> None:
        count = len(self.queues)
        while self._non_empty == count:
            end_index, end_time = self._boundary(end=True)
            start_index, start_time = self._boundary(end=False)
            for i in range(count):
                if i != end_index:
                    self._dropped[i] = False
            if self._pivot is None:
                if self._dropped[end_index]:
                    self._delete_front(start_index)  # a dropped message might have been better
                    continue
                self._make_candidate(start_time, end_time)
                self._pivot, self._pivot_time = end_index, end_time
            elif not self._worse(end_time, start_time - self._candidate_start):
                self._make_candidate(start_time, end_time)
            self._move_front_to_past(start_index)
            if start_index == self._pivot or self._worse(
                end_time, self._pivot_time - self._candidate_start
            ):
                self._publish(sets)
            elif self._non_empty < count:
                self._prove_with_last_stamps(sets)

    def _prove_with_last_stamps(self, sets: list[list[Any]]) -> None:
        """Try to show the candidate optimal although some input has nothing waiting: its next
        message cannot be older than its last. Undo the trial moves when that does not suffice."""
        moves = [0] * len(self.queues)
        while True:
            _, end_time = self._boundary(end=True)
            start_index, start_time = self._boundary(end=False)
            if self._worse(end_time, self._pivot_time - self._candidate_start):
                self._publish(sets)
                return
            if not self._worse(end_time, start_time - self._candidate_start) or not self.queues[
                start_index
            ]:
                self._recover(moves)
                return
            self._move_front_to_past(start_index)
            moves[start_index] += 1


def _load_filters() -> ModuleType:
    try:
        import message_filters
    except ImportError:
        return sys.modules[__name__]
    return message_filters


filters: ModuleType = _load_filters()
"""``message_filters`` where installed, else this module: the same API either way."""

IMPLEMENTATION: str = filters.__name__


def make_synchronizer(
    fs: Sequence[Any],
    *,
    queue_size: int,
    approximate: bool,
    slop: float,
    on_time_jump: Callable[[float], None] | None = None,
) -> Any:
    """A synchroniser over ``fs`` with stereo_image_proc's semantics for ``approximate_sync`` and
    ``approximate_sync_tolerance_seconds`` (``slop``): exact stamps (:data:`filters`'
    TimeSynchronizer), or approximately the nearest stamps with no limit (``slop`` 0), or
    stamps within ``slop`` seconds. The approximate policies are message_filters' C++ ones,
    built in: message_filters' Python ``ApproximateTimeSynchronizer`` pairs differently (its
    first match within a strict slop, nothing at all with 0).

    When an input's stamp goes back by more than :data:`TIME_JUMP_S` (a bag played in a loop,
    a camera restarted) the synchroniser forgets every waiting message, which could otherwise
    never pair, and ``on_time_jump(seconds back)`` is called.

    :raises ValueError: ``queue_size`` below 1 or a negative ``slop``.
    """
    if slop < 0:
        raise ValueError(f"approximate_sync_tolerance_seconds must not be negative, got {slop}")
    watch = _TimeJumpWatch(len(fs), on_time_jump)
    guarded = [watch.guard(f, index) for index, f in enumerate(fs)]
    if not approximate:
        synchronizer = filters.TimeSynchronizer(guarded, queue_size)
    elif slop == 0:
        synchronizer = NearestTimeSynchronizer(guarded, queue_size)
    else:
        synchronizer = EpsilonTimeSynchronizer(guarded, queue_size, slop)
    watch.synchronizer = synchronizer
    return synchronizer


def reset(synchronizer: Any) -> None:
    """Forget every message ``synchronizer`` holds: the built-in policies' ``reset``, or
    message_filters' ``queues`` cleared under its ``lock``."""
    if isinstance(synchronizer, _Policy):
        synchronizer.reset()
        return
    with synchronizer.lock:
        for queue in synchronizer.queues:
            queue.clear()


#: How far back an input's stamp must jump to count as time going back rather than jitter.
TIME_JUMP_S = 1.0


class _TimeJumpWatch:
    """One filter per input between the sources and the synchroniser, watching the stamps."""

    def __init__(self, inputs: int, on_time_jump: Callable[[float], None] | None) -> None:
        self._last: list[int | None] = [None] * inputs
        self._on_time_jump = on_time_jump
        self.synchronizer: Any = None

    def guard(self, source: Any, index: int) -> SimpleFilter:
        guarded = SimpleFilter()
        source.registerCallback(self._check, guarded, index)
        return guarded

    def _check(self, msg: Any, guarded: SimpleFilter, index: int) -> None:
        stamp = _stamp_ns(msg, allow_headerless=True)
        last = self._last[index]
        if stamp is not None and last is not None and last - stamp > TIME_JUMP_S * 1e9:
            self._last = [None] * len(self._last)  # every input starts again from here
            if self.synchronizer is not None:
                reset(self.synchronizer)
            if self._on_time_jump is not None:
                self._on_time_jump((last - stamp) * 1e-9)
        self._last[index] = stamp
        guarded.signalMessage(msg)
