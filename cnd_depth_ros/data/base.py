"""The lazy sequence every file-based loader is: an index of samples, read one at a time."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Generic, TypeVar, overload

from cnd_depth_ros.data.frame import Frame

__all__ = ["FrameDataset"]

ItemT = TypeVar("ItemT")


class FrameDataset(Sequence[Frame], Generic[ItemT]):
    """A ``Sequence[Frame]`` over ``items`` (whatever locates one sample: paths, an index).

    Files are read in ``__getitem__``, never in ``__init__``, so a dataset of thousands of frames
    opens instantly and pickles cheaply into DataLoader workers. Subclasses index their files in
    ``__init__`` and implement :meth:`load`.
    """

    def __init__(self, items: Sequence[ItemT]) -> None:
        self.items = list(items)

    @abstractmethod
    def load(self, item: ItemT) -> Frame:
        """Read the frame that ``item`` locates."""

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> Frame: ...

    @overload
    def __getitem__(self, index: slice) -> list[Frame]: ...

    def __getitem__(self, index: int | slice) -> Frame | list[Frame]:
        if isinstance(index, slice):
            return [self.load(item) for item in self.items[index]]
        return self.load(self.items[index])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} frames)"
