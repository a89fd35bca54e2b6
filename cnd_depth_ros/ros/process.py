"""A node as its own process: memory tuning, signals, rclpy init, spin and a clean exit code.

What ``ros2 run`` needs besides the node itself: Ctrl-C and SIGTERM end the process with code
0 whether the node is still starting (a model load or an engine build can take minutes) or
spinning, ``kill -USR1`` shows where every thread is, and bad parameters end it with code 1 and
one line naming the reason instead of a traceback.
"""

from __future__ import annotations

import faulthandler
import signal
from collections.abc import Callable

import rclpy
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.node import Node

from cnd_depth_ros.ros.malloc_tuning import keep_freed_buffers

__all__ = ["run_node"]


class _InterruptUntilSpinning:
    """Python's SIGINT handler, installed before ``rclpy.init`` so that rclpy's own handler
    (which shuts the context down and wakes the executor) calls it after its work: a
    ``KeyboardInterrupt`` while the node starts (a model load or an engine build can take
    minutes), nothing once it spins, where ``spin`` then ends on the shutdown. A
    ``KeyboardInterrupt`` during spin lands wherever the main thread is, even half-way through
    rclpy building a ``Task``, whose ``__del__`` then prints a traceback on the way out."""

    def __init__(self) -> None:
        self.spinning = False
        signal.signal(signal.SIGINT, self)

    def __call__(self, signum: int, frame: object) -> None:
        if not self.spinning:
            raise KeyboardInterrupt


def run_node(make_node: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    """Initialise rclpy with ``args``, spin the node ``make_node`` creates until shutdown, and
    return the process's exit code: 0 after a signal, 1 for invalid parameters, 2 for malformed
    ``--ros-args``. ``name`` is the logger of the fatal lines."""
    keep_freed_buffers()  # every frame's message buffers, without page faults
    # `kill -USR1 <pid>` writes every thread's Python stack to stderr: where a node that no
    # longer answers or will not stop is stuck, without stopping it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    interrupts = _InterruptUntilSpinning()
    try:
        rclpy.init(args=args)
    except Exception as error:  # rcl's error for malformed --ros-args; rcl has logged which
        get_logger(name).fatal(f"cannot start: {error}")
        return 2
    node: Node | None = None
    try:
        node = make_node()
        interrupts.spinning = True
        rclpy.spin(node)
    except (InvalidParameterValueException, ValueError) as error:
        get_logger(name).fatal(str(error))
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # A signal shut the context down while the executor was building its wait set on it
        # (rcl's error, which rclpy does not export publicly).
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
