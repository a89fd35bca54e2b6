"""The hand-off between depth_node's executor and its inference worker: one element, newest wins.

The synchronised callback must never wait for inference, and a queue in between would only
grow while inference is slower than the camera; so a set still waiting when the next arrives
is dropped (and counted by the caller), like camera_calibration's BufferQueue of one.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["NewestSlot"]


class NewestSlot:
    """A one-element queue where ``put`` replaces what is waiting: newest wins, nothing piles up.

    Filled by the executor's synchronised callback, emptied by the inference worker.
    """

    def __init__(self) -> None:
        self._item: Any = None
        self._closed = False
        self._ready = threading.Condition()

    def put(self, item: Any) -> bool:
        """Offer ``item``; ``True`` if it replaced one that was never taken (a drop)."""
        with self._ready:
            replaced = self._item is not None
            self._item = item
            self._ready.notify()
        return replaced

    def take(self) -> Any:
        """Wait for the next item; ``None`` once the slot is closed."""
        with self._ready:
            self._ready.wait_for(lambda: self._item is not None or self._closed)
            item, self._item = self._item, None
            return None if self._closed else item

    def close(self) -> None:
        """Wake the worker for good: every ``take`` from now on returns ``None``."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
