"""Replay a rosbag2 into ``depth_node`` through real DDS and score what it publishes.

The bag's camera topics are published as recorded (their CDR bytes, in log-time order) on the
node's input topics; the node runs as a child process (or is already running), and its
``depth/image`` outputs are matched by header stamp to ground truth (:mod:`.matching`) and scored
(:mod:`.scoring`) as they arrive, so memory stays bounded by the frames in flight.

Pacing: the recorded rate times ``rate``, or, with ``rate=None``, as fast as the node keeps up:
each frame waits for the previous one's output (up to ``frame_timeout_s``). A frame is the left
image and every message stamped within ``slop`` of it. The first frame is re-sent until the node
answers it, which absorbs DDS discovery and the first inference; its latency is not counted.
Latency is measured from publishing a left image to receiving its depth, both in this process.

Threads: the main thread publishes, scores and records; one executor thread runs the output
callbacks, which only time-stamp the raw messages into a queue (the recorder's sqlite3 connection
belongs to the thread that opened it). Leaving DDS runs on daemon threads the main thread waits
for with a deadline (:func:`leave_dds`, decision 33).
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnd_depth_ros.errors import CndDepthError
from cnd_depth_ros.evaluation.matching import decode_depth_message
from cnd_depth_ros.evaluation.scoring import ReplayScorer
from cnd_depth_ros.messages.bag import (
    CAMERA_INFO,
    COMPRESSED_IMAGE,
    IMAGE,
    POINT_CLOUD,
    BagReader,
    BagRecorder,
    deserialize_cdr,
    stamp_ns,
)
from cnd_depth_ros.messages.image import camera_image_to_rgb
from cnd_depth_ros.messages.topics import DEFAULT_TOPICS

__all__ = [
    "NodeProcess",
    "Pacing",
    "ReplayError",
    "ReplayTopics",
    "hung_teardown",
    "leave_dds",
    "replay_bag",
    "score_depth_topic",
]

_LOGGER = logging.getLogger(__name__)

#: Seconds between re-sends of the first frame while waiting for the node's first answer.
_PRIME_INTERVAL_S = 1.0
#: With a recording, the playback ends once no output has come for this long after the last
#: answer, so the last frame's camera_info and points, published after its depth, are kept.
_LINGER_S = 0.5
#: Seconds without discovering the node's outputs after which the replay joins DDS again
#: (:meth:`_Bridge.rejoin`), doubled for each next time; a node still loading its model is
#: not disturbed by it.
_REJOIN_AFTER_S = 20.0
#: Seconds leaving DDS may take before the participants still being deleted are left behind
#: (:func:`leave_dds`); a deletion normally takes milliseconds.
_LEAVE_TIMEOUT_S = 10.0
#: Unanswered frames kept for scoring; older ones count as dropped (bounds memory if the node
#: stops answering).
_MAX_PENDING = 32


class ReplayError(CndDepthError, RuntimeError):
    """The node could not be started, exited, or never subscribed; the message says which."""


@dataclass(frozen=True)
class ReplayTopics:
    """The bag's camera topics; ``right`` and ``right_info`` are ``None`` for a mono replay.
    ``compressed``: the images are ``CompressedImage``, played to the node's
    ``*/image_rect/compressed`` (its ``image_transport:=compressed``)."""

    left: str = DEFAULT_TOPICS["left_topic"]
    left_info: str = DEFAULT_TOPICS["left_info_topic"]
    right: str | None = DEFAULT_TOPICS["right_topic"]
    right_info: str | None = DEFAULT_TOPICS["right_info_topic"]
    compressed: bool = False

    @property
    def mono(self) -> bool:
        return self.right is None

    @property
    def image_role(self) -> str:
        """The node's image topic under ``left/`` and ``right/``."""
        return "image_rect/compressed" if self.compressed else "image_rect"

    def inputs(self) -> dict[str, tuple[str, str]]:
        """role -> (bag topic, message type); the role is also the node's relative topic."""
        image = COMPRESSED_IMAGE if self.compressed else IMAGE
        sides = {"left": (self.left, self.left_info)}
        if self.right is not None and self.right_info is not None:
            sides["right"] = (self.right, self.right_info)
        roles = {}
        for side, (image_topic, info_topic) in sides.items():
            roles[f"{side}/{self.image_role}"] = (image_topic, image)
            roles[f"{side}/camera_info"] = (info_topic, CAMERA_INFO)
        return roles

    def require(self, reader: BagReader) -> None:
        """:raises BagError: a camera topic is missing, empty or of another type."""
        for role, (topic, msgtype) in self.inputs().items():
            reader.require(topic, msgtype, role.replace(f"/{self.image_role}", " image"))


@dataclass(frozen=True)
class Pacing:
    """``rate``: multiple of the recorded rate, or ``None`` for as fast as the node keeps up.
    ``slop_s``: stamps this close belong to one frame. Timeouts in seconds."""

    rate: float | None = 1.0
    slop_s: float = 0.0
    frame_timeout_s: float = 10.0
    startup_timeout_s: float = 120.0


class NodeProcess:
    """``depth_node`` as a child process in ``namespace`` with ``parameters``, logging to
    ``log``; Fast DDS large-data transports on (docs/node.md). A context manager: started on
    entry, stopped on exit."""

    def __init__(self, namespace: str, parameters: dict[str, str], log: Path) -> None:
        self.log = log
        self.command = [
            sys.executable, "-m", "cnd_depth_ros.ros.depth_node", "--ros-args",
            "-r", f"__ns:={namespace or '/'}",
            *(arg for name, value in parameters.items() for arg in ("-p", f"{name}:={value}")),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, append: bool = False) -> subprocess.Popen[bytes]:
        """Start the process, its log begun anew (or continued with ``append``)."""
        env = {**os.environ}
        env.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
        env.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "0")  # a complete log tail on errors
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab" if append else "wb") as stream:
            self.process = subprocess.Popen(
                self.command, stdout=stream, stderr=subprocess.STDOUT, env=env
            )
        return self.process

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGINT, then SIGKILL if it has not exited after ``timeout_s``; the exit code
        (``None`` if it never started)."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout_s)
        return process.returncode

    def __enter__(self) -> NodeProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def check(self) -> None:
        """:raises ReplayError: the node has exited, with its fatal and error log lines (or
        the end of its log when it has none)."""
        if self.process is not None and self.process.poll() is not None:
            lines = self.log.read_text(errors="replace").strip().splitlines()
            reasons = [line for line in lines if line.startswith(("[FATAL]", "[ERROR]"))]
            raise ReplayError(
                f"depth_node exited with code {self.process.returncode}; from its log "
                f"({self.log}):\n" + "\n".join(reasons[-4:] or lines[-8:])
            )

    def log_tail(self) -> str:
        """For a node that runs but does not do its part: the end of its log, to say why."""
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return f"; the end of its log ({self.log}):\n" + "\n".join(lines[-8:])


@dataclass
class _Sent:
    """A frame published and not answered yet."""

    index: int
    sent: float | None = None
    left: Any = None
    right: Any = None


@dataclass
class _Counts:
    frames_in: int = 0
    frames_out: int = 0
    interrupted: bool = False
    pending: dict[int, _Sent] = field(default_factory=dict)


@dataclass(frozen=True)
class _Output:
    """One message from the node: its resolved topic, CDR bytes and arrival times."""

    topic: str
    raw: bytes
    received: float  # time.monotonic()
    received_ns: int  # time.time_ns(), the log time of a recording


_shared_context: Any = None


def _replay_context(renew: bool = False) -> Any:
    """The rclpy context every replay of this process uses, shut down at exit; a new one if
    ``renew`` (its participant left already, decision 17) or if Ctrl-C shut it down. A
    context's DDS participant lives while the context has a node: each replay's bridge node
    brings one and takes it away (:meth:`_Bridge.close`).

    :raises ReplayError: a participant deletion of this process has hung (:func:`hung_teardown`):
        creating a participant would wait for it.
    """
    global _shared_context
    hung = hung_teardown()
    if hung is not None:
        raise ReplayError(
            f"cannot join DDS: deleting {hung} has hung inside Fast DDS, which creates "
            "participants under the same lock; run the replay in a new process"
        )
    if renew and _shared_context is not None:
        _shared_context.try_shutdown()
    if _shared_context is None or not _shared_context.ok():
        import rclpy
        from rclpy.context import Context

        os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
        if _shared_context is None:
            atexit.register(_leave_at_exit)
        _shared_context = Context()
        rclpy.init(context=_shared_context)
    return _shared_context


# ---- leaving DDS ------------------------------------------------------------------------------
# Fast DDS 3.2 deletes a participant with its context's last node, and was seen to hang there for
# good, closing a TCP connection whose read never completes (eProsima/Fast-DDS#6066; reproduced
# here with several participants of one process deleted in turn). rclpy holds the GIL through
# that native call, so no Python deadline could end the wait, and Fast DDS creates participants
# under the lock a hung deletion holds. So nodes are destroyed on a daemon thread, one teardown
# at a time, and the participant is deleted by finalising a keeper node (made to be the context's
# last) through rcl's C API, which ctypes calls without the GIL; what is still running at the
# deadline is left behind (decision 33).

#: Node created to be its context's last while the others are destroyed (hidden by the "_").
_KEEPER_NAME = "_cnd_leaving_dds"
#: One teardown at a time: Fast DDS deadlocked deleting two participants of a process at once.
_LEAVING_LOCK = threading.Lock()
#: Teardowns past their deadline; :func:`hung_teardown` drops the ones that finished since.
_hung: list[_Leaving] = []


@functools.cache
def _rcl_node_fini() -> Any:
    """rcl's ``rcl_node_fini`` through ctypes (the GIL released while it runs); the library is
    the one rclpy loaded, found by its soname."""
    function = ctypes.CDLL("librcl.so").rcl_node_fini
    function.argtypes = [ctypes.c_void_p]
    function.restype = ctypes.c_int
    return function


def _destroy(nodes: Sequence[Any], context: Any) -> None:
    """On a :class:`_Leaving` thread: destroy ``nodes``, then the keeper node, and with it the
    participant if no other node of ``context`` is left."""
    import rclpy

    keeper = None
    if context.ok():
        keeper = rclpy.create_node(_KEEPER_NAME, context=context, enable_rosout=False,
                                   start_parameter_services=False)
    for node in nodes:
        node.destroy_node()
    if keeper is None:
        return
    handle = keeper.handle
    pointer = handle.pointer
    with handle:  # in use: destroy_node only destroys the keeper's entities, rcl_node_fini the rest
        keeper.destroy_node()
        ret = _rcl_node_fini()(pointer)
    if ret != 0:
        _LOGGER.warning("rcl_node_fini failed (%d) while leaving DDS", ret)


class _Leaving:
    """Nodes of one rclpy context being destroyed on a daemon thread (:func:`_destroy`)."""

    def __init__(self, nodes: Sequence[Any], what: str) -> None:
        self.what = what
        self.context = nodes[0].context
        self.thread = threading.Thread(target=self._run, args=(list(nodes),),
                                       name=f"leaving DDS: {what}", daemon=True)
        self.thread.start()

    def _run(self, nodes: list[Any]) -> None:
        try:
            with _LEAVING_LOCK:
                _destroy(nodes, self.context)
        except Exception as error:  # a daemon thread: said, not raised into nowhere
            _LOGGER.warning("leaving DDS (%s) failed: %s", self.what, error)

    def finished(self) -> bool:
        return not self.thread.is_alive()

    def wait(self, deadline: float, timeout_s: float) -> bool:
        """Wait until the monotonic ``deadline``; ``False`` (a warning, the teardown left behind
        in :func:`hung_teardown`) if it has not finished."""
        self.thread.join(max(0.0, deadline - time.monotonic()))
        if self.finished():
            return True
        if self not in _hung:
            _hung.append(self)
        _LOGGER.warning(
            "leaving DDS: %s is still being deleted after %g s (Fast DDS hangs now and then "
            "deleting a participant); it is left behind, and this process cannot join DDS again "
            "until it is gone", self.what, timeout_s)
        return False


def _leave_all(leavings: Sequence[_Leaving], timeout_s: float | None) -> bool:
    """Wait for ``leavings`` until one common deadline; ``True`` if all finished."""
    timeout_s = _LEAVE_TIMEOUT_S if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    return all([leaving.wait(deadline, timeout_s) for leaving in leavings])


def leave_dds(nodes: Sequence[Any], what: str, timeout_s: float | None = None) -> bool:
    """Destroy the rclpy ``nodes`` and the DDS participant of each context they leave without
    nodes, waiting at most ``timeout_s`` (default ``_LEAVE_TIMEOUT_S``, 10 s) for all of it.
    ``False`` if some of it did not finish: a warning names ``what``, the rest is left behind
    (its nodes are never to be used again) and :func:`hung_teardown` says what hung until it
    finishes, if ever."""
    groups: dict[int, list[Any]] = {}
    for node in nodes:
        groups.setdefault(id(node.context), []).append(node)
    return _leave_all([_Leaving(group, what) for group in groups.values()], timeout_s)


def hung_teardown() -> str | None:
    """What of this process is still being deleted past its deadline (:func:`leave_dds`), or
    ``None``. While something is, creating a DDS participant in this process would wait for it."""
    _hung[:] = [leaving for leaving in _hung if not leaving.finished()]
    return "; ".join(leaving.what for leaving in _hung) or None


def _leave_at_exit() -> None:
    """Shut the replay context down. With a participant deletion still hung, leave it alone
    instead and set an alarm: should exiting wait for that deletion, SIGALRM ends the process
    after ``_LEAVE_TIMEOUT_S`` (ending it at once would drop its exit code, and a process with a
    hung deletion was seen to exit normally)."""
    hung = hung_teardown()
    if hung is None:
        if _shared_context is not None:
            _shared_context.try_shutdown()
        return
    seconds = max(1, round(_LEAVE_TIMEOUT_S))
    _LOGGER.warning("deleting %s has not finished; should the exit wait for it, the process "
                    "is ended in %d s (SIGALRM)", hung, seconds)
    if hasattr(signal, "alarm") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(seconds)


class _Bridge:
    """The rclpy side: input publishers, raw output subscriptions, an executor thread.

    Output callbacks run on the executor thread and only put an :class:`_Output` into
    ``outputs``; ``depth/camera_info`` and ``points`` are subscribed to only with ``record``.
    """

    def __init__(self, namespace: str, roles: dict[str, str], record: bool) -> None:
        self.namespace, self.roles, self.record = namespace, roles, record
        self.outputs: queue.SimpleQueue[_Output] = queue.SimpleQueue()
        self.rejoins = 0
        self._join(_replay_context())

    def _join(self, context: Any) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

        self.node = rclpy.create_node("cnd_replay", namespace=self.namespace or "/",
                                      context=context)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        classes = {IMAGE: Image, COMPRESSED_IMAGE: CompressedImage, CAMERA_INFO: CameraInfo}
        self.publishers = {
            role: self.node.create_publisher(classes[msgtype], role, reliable)
            for role, msgtype in self.roles.items()
        }
        self.topics: dict[str, str] = {}  # resolved name -> message type
        outputs = [(IMAGE, Image, "depth/image")]
        if self.record:
            outputs += [(CAMERA_INFO, CameraInfo, "depth/camera_info"),
                        (POINT_CLOUD, PointCloud2, "points")]
        for msgtype, msg_class, name in outputs:
            resolved = self.node.resolve_topic_name(name)
            self.topics[resolved] = msgtype
            self.node.create_subscription(msg_class, name, self._queue(resolved), reliable,
                                          raw=True)
        self.depth_topic = self.node.resolve_topic_name("depth/image")
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, name="replay_outputs",
                                        daemon=True)
        self._thread.start()

    def _queue(self, topic: str) -> Callable[[bytes], None]:
        return lambda raw: self.outputs.put(_Output(topic, raw, time.monotonic(), time.time_ns()))

    def subscribed(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in self.publishers.values())

    def node_seen(self) -> bool:
        """Whether a publisher of ``depth/image`` (the node's first output) is discovered."""
        return self.node.count_publishers(self.depth_topic) > 0

    def rejoin(self) -> bool:
        """Leave DDS and join again as a new participant: under load, discovery between two
        live participants was seen to stall for good (a TCP connection up, no endpoint ever
        matched; decision 17), while a new participant is normally discovered within a second.

        The old participant is deleted first, within ``_LEAVE_TIMEOUT_S`` (decision 33): two
        participants of one process made Fast DDS hang more often deleting one. ``False`` if
        that deletion hung: Fast DDS creates no participant in this process until it ends, so
        the bridge stays out of DDS until :meth:`join_again`.
        """
        self.close()
        if hung_teardown() is not None:
            return False
        self.join_again()
        return True

    def join_again(self) -> None:
        """Join DDS as a new participant after :meth:`close`."""
        self.rejoins += 1
        self._join(_replay_context(renew=True))

    def _participant(self) -> str:
        join = f" (join {self.rejoins + 1})" if self.rejoins else ""
        return f"the DDS participant of {self.node.get_fully_qualified_name()}{join}"

    def close(self) -> None:
        """Stop the executor and leave DDS: the participant is deleted within
        ``_LEAVE_TIMEOUT_S``, or left behind with a warning (:func:`leave_dds`). The node is
        not used after this; closing again does nothing."""
        if self.node is None:
            return
        self.executor.shutdown(timeout_sec=5.0)
        self._thread.join(timeout=5.0)
        leaving = _Leaving([self.node], self._participant())
        self.node, self.publishers = None, {}
        _leave_all([leaving], None)


class _Player:
    """Publishes the bag's frames with the chosen pacing and scores the outputs."""

    def __init__(
        self,
        reader: BagReader,
        topics: ReplayTopics,
        bridge: _Bridge,
        scorer: ReplayScorer,
        pacing: Pacing,
        node: NodeProcess | _NoNode,
        recorder: BagRecorder | None,
        progress: bool = False,
    ) -> None:
        from tqdm import tqdm

        self.reader, self.bridge, self.scorer, self.pacing = reader, bridge, scorer, pacing
        self.node, self.recorder = node, recorder
        if recorder is not None:
            for topic, msgtype in bridge.topics.items():
                recorder.add_topic(topic, msgtype)
        self.roles = {topic: role for role, (topic, _) in topics.inputs().items()}
        self.slop_ns = round(pacing.slop_s * 1e9)
        self.counts = _Counts()
        self.bar = tqdm(total=reader.topics[topics.left].count, unit="frame",
                        desc="replay", disable=not progress)

    # ---- outputs -----------------------------------------------------------------------------

    def _take(self, output: _Output) -> int | None:
        """Record one output and score it if it is a depth image; returns the depth's stamp."""
        if self.recorder is not None:
            self.recorder.write(output.topic, output.received_ns, output.raw)
        if output.topic != self.bridge.depth_topic:
            return None
        message = deserialize_cdr(output.raw, IMAGE)
        stamp = stamp_ns(message)
        pending = self.counts.pending
        sent = pending.pop(stamp, None)
        if sent is None:  # a duplicate answer to a re-sent first frame, or a stranger's frame
            return stamp
        for older in [s for s in pending if s < stamp]:  # newest wins: these were dropped
            del pending[older]
        self.counts.frames_out += 1
        self.scorer.add(
            sent.index,
            stamp,
            decode_depth_message(message, "depth/image"),
            left=camera_image_to_rgb(sent.left),
            right=camera_image_to_rgb(sent.right) if sent.right is not None else None,
            latency_s=None if sent.sent is None else output.received - sent.sent,
        )
        return stamp

    def _serve(self, until: float, answered: int | None = None) -> bool:
        """Score outputs until the monotonic time ``until``, or until the output stamped
        ``answered`` (or a newer one) has come; ``True`` if it has."""
        while True:
            self.node.check()
            remaining = until - time.monotonic()
            if remaining <= 0:
                return False
            try:
                output = self.bridge.outputs.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                continue
            stamp = self._take(output)
            if answered is not None and stamp is not None and stamp >= answered:
                return True

    def flush(self) -> None:
        """Take the outputs still queued (after the executor stopped)."""
        while True:
            try:
                self._take(self.bridge.outputs.get_nowait())
            except queue.Empty:
                return

    # ---- inputs ------------------------------------------------------------------------------

    def wait_subscribed(self) -> None:
        """Wait until the node subscribes to every input. While the bridge has not even
        discovered the node's outputs it joins DDS again, first after ``_REJOIN_AFTER_S``, then
        after twice as long each time (a new participant needs a moment to be discovered)."""
        start = time.monotonic()
        deadline = start + self.pacing.startup_timeout_s
        rejoin_after = _REJOIN_AFTER_S
        rejoin_at = start + rejoin_after
        while not self.bridge.subscribed():
            self.node.check()
            now = time.monotonic()
            if now > deadline:
                missing = [p.topic_name for p in self.bridge.publishers.values()
                           if p.get_subscription_count() == 0]
                # Tells a discovery failure (no publisher seen) from a node that does not
                # subscribe although its outputs are listened to.
                seen = self.bridge.node.count_publishers(self.bridge.depth_topic)
                raise ReplayError(
                    f"no depth_node subscribed to {', '.join(missing)} within "
                    f"{self.pacing.startup_timeout_s:.0f} s (is it running, in this namespace "
                    f"and ROS_DOMAIN_ID?); replay sees {seen} publisher(s) of "
                    f"{self.bridge.depth_topic} (having joined DDS {self.bridge.rejoins + 1} "
                    f"time(s)){self.node.log_tail()}"
                )
            if now > rejoin_at:
                if not self.bridge.node_seen():
                    _LOGGER.warning(
                        "no depth_node discovered after %.0f s; replay joins DDS again as a "
                        "new participant, in case discovery stalled", now - start)
                    if not self.bridge.rejoin():
                        self._restart_for_hung_leave()
                rejoin_after *= 2
                rejoin_at = now + rejoin_after
            time.sleep(0.05)

    def _restart_for_hung_leave(self) -> None:
        """Leaving DDS to join again hung (decision 33). A hung deletion was seen to end once
        the node process had exited (its end of the TCP connection closing), so a node replay
        started is stopped, the deletion awaited, the node started again and DDS joined anew.

        :raises ReplayError: the node is not replay's own, or the deletion still hangs.
        """
        hung = hung_teardown()
        if not isinstance(self.node, NodeProcess):
            raise ReplayError(
                f"replay could not leave DDS to join it again: deleting {hung} has hung inside "
                "Fast DDS, which creates participants under the same lock; run the replay again"
            )
        _LOGGER.warning("deleting %s hangs; replay restarts depth_node, whose exit was seen to "
                        "end such a hang, and then joins DDS again", hung)
        self.node.stop()
        deadline = time.monotonic() + _LEAVE_TIMEOUT_S
        while (hung := hung_teardown()) is not None:
            if time.monotonic() > deadline:
                raise ReplayError(
                    f"replay could not leave DDS to join it again: deleting {hung} has hung "
                    "inside Fast DDS, even with depth_node stopped; run the replay again"
                )
            time.sleep(0.05)
        with self.node.log.open("a") as stream:
            stream.write("--- replay: leaving DDS hung; restarting the node ---\n")
        self.node.start(append=True)
        self.bridge.join_again()

    def _prime(self, first: list[tuple[str, bytes]], stamp: int) -> None:
        """Re-send the first frame until the node answers it."""
        deadline = time.monotonic() + self.pacing.startup_timeout_s
        self.counts.pending[stamp].sent = None
        while True:
            for role, raw in first:
                self.bridge.publishers[role].publish(raw)
            if self._serve(min(time.monotonic() + _PRIME_INTERVAL_S, deadline), stamp):
                return
            if time.monotonic() >= deadline:
                raise ReplayError(
                    f"depth_node did not answer the first frame within "
                    f"{self.pacing.startup_timeout_s:.0f} s{self.node.log_tail()}"
                )

    def play(self) -> None:
        """Publish every frame, then wait for the last answers."""
        counts, pacing = self.counts, self.pacing
        first: list[tuple[str, bytes]] | None = []
        waiting: int | None = None  # stamp of the newest frame sent
        clock: tuple[float, int] | None = None  # (monotonic start, log time start)
        for topic, log_time, raw in self.reader.messages(self.roles):
            role = self.roles[topic]
            message = self.reader.deserialize(topic, raw)
            stamp = stamp_ns(message)
            if waiting is not None and stamp > waiting + self.slop_ns:  # the next frame
                if first is not None:
                    self._prime(first, waiting)
                    first = None
                elif pacing.rate is None:
                    self._serve(time.monotonic() + pacing.frame_timeout_s, waiting)
                waiting = None
            if first is None and pacing.rate is not None:
                clock = clock or (time.monotonic(), log_time)
                self._serve(clock[0] + (log_time - clock[1]) / 1e9 / pacing.rate)
            self.node.check()
            self.bridge.publishers[role].publish(raw)
            if first is not None:
                first.append((role, raw))
            if not role.endswith("camera_info"):
                sent = counts.pending.get(stamp)
                if sent is None:
                    sent = counts.pending[stamp] = _Sent(counts.frames_in)
                    counts.frames_in += 1
                    self.bar.update()
                    while len(counts.pending) > _MAX_PENDING:
                        del counts.pending[min(counts.pending)]
                if role.startswith("left"):
                    sent.left, sent.sent, waiting = message, time.monotonic(), stamp
                else:
                    sent.right = message
        if first and waiting is not None:
            self._prime(first, waiting)
        elif waiting is not None:
            self._serve(time.monotonic() + pacing.frame_timeout_s, waiting)
        if self.recorder is not None:
            self._linger()

    def _linger(self) -> None:
        """Take outputs until none has come for ``_LINGER_S`` (at most ten times that)."""
        deadline = time.monotonic() + 10 * _LINGER_S
        while time.monotonic() < deadline:
            self.node.check()
            try:
                self._take(self.bridge.outputs.get(timeout=_LINGER_S))
            except queue.Empty:
                return


def replay_bag(
    reader: BagReader,
    topics: ReplayTopics,
    scorer: ReplayScorer,
    *,
    pacing: Pacing,
    namespace: str = "",
    node: NodeProcess | None = None,
    record: BagRecorder | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Play ``reader``'s camera topics into a depth node and score its outputs.

    ``node`` is started here (and stopped after), or ``None`` for a node already running in
    ``namespace``. Ctrl-C stops the playback early and keeps what was scored
    (``"interrupted": true``). ``progress`` shows a bar of the frames sent.

    :raises BagError: the bag lacks a camera topic, or breaks while reading.
    :raises ReplayError: the node exits, or never subscribes or answers.
    :raises RecordError: recording failed (what was saved is said).
    """
    topics.require(reader)
    bridge: _Bridge | None = None
    try:
        with node or _NoNode() as running:
            roles = {role: msgtype for role, (_, msgtype) in topics.inputs().items()}
            bridge = _Bridge(namespace, roles, record is not None)
            player = _Player(reader, topics, bridge, scorer, pacing, running, record, progress)
            try:
                player.wait_subscribed()
                player.play()
            except KeyboardInterrupt:
                player.counts.interrupted = True
        # The node we started has stopped here, so no large message is in flight to the
        # bridge's subscriptions while their DDS readers are deleted.
        bridge.close()
        bridge = None
        player.bar.close()
        player.flush()
    finally:
        if bridge is not None:
            bridge.close()
        if record is not None:
            record.close()
    counts = player.counts
    result = scorer.result(counts.frames_in, counts.frames_out)
    result["interrupted"] = counts.interrupted
    return result


class _NoNode:
    """Stands in for :class:`NodeProcess` when the node is already running elsewhere."""

    def __enter__(self) -> _NoNode:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def check(self) -> None:
        return None

    def log_tail(self) -> str:
        return ""


def score_depth_topic(
    reader: BagReader,
    topic: str,
    topics: ReplayTopics,
    scorer: ReplayScorer,
    *,
    slop_s: float = 0.0,
) -> dict[str, Any]:
    """Score the depth images already in ``topic`` of the bag (no node), with the camera images
    of ``topics`` stamped within ``slop_s`` of them for the report.

    :raises BagError: a topic is missing, empty or of another type, or a message is broken.
    """
    from cnd_depth_ros.evaluation.matching import StampIndex

    reader.require(topic, IMAGE, "predicted depth")
    reader.require(topics.left, COMPRESSED_IMAGE if topics.compressed else IMAGE, "left image")
    views = {"left": StampIndex(reader, topics.left)}
    if topics.right is not None and topics.right in reader.topics:
        views["right"] = StampIndex(reader, topics.right)
    frames = 0
    for index, (_, _, raw) in enumerate(reader.messages([topic])):
        frames += 1
        message = reader.deserialize(topic, raw)
        stamp = stamp_ns(message)
        images: dict[str, np.ndarray] = {}
        for view, stamps in views.items():
            log_time = stamps.find(stamp, round(slop_s * 1e9))
            if log_time is not None:
                images[view] = camera_image_to_rgb(reader.at(stamps.topic, log_time))
        if "left" not in images:
            scorer.unmatched += 1
            continue
        scorer.add(index, stamp, decode_depth_message(message, topic),
                   left=images["left"], right=images.get("right"))
    result = scorer.result(frames, frames)
    result["interrupted"] = False
    return result
