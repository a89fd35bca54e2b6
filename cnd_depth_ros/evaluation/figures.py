"""The report's figures, drawn with matplotlib's object API and returned as PNG bytes.

No pyplot: figures are plain :class:`~matplotlib.figure.Figure` objects rendered by the Agg
canvas, so drawing needs no display, touches no global state and works from any thread. The PNG
files carry no software or date metadata, so the same data always gives the same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.gridspec import SubplotSpec
from matplotlib.ticker import MaxNLocator

__all__ = ["Panel", "distance_png", "latency_png", "panel_png", "per_frame_png"]

#: Near is bright, far is dark; grey where there is no value.
_DEPTH_COLORS = colormaps["magma_r"].with_extremes(bad="#a0a0a0")
_ERROR_COLORS = colormaps["inferno"].with_extremes(bad="#a0a0a0")
#: Model first, then the baseline.
_SERIES_COLORS = ("#1f77b4", "#ff7f0e")
_WIDTH_INCHES = 12.0
_DPI = 100


@dataclass(frozen=True)
class Panel:
    """One frame as the paper shows it: camera images, ground truth, prediction, error.

    ``left`` (and ``right``) are H x W x 3 uint8 RGB; ``prediction``, ``depth`` (ground truth)
    and ``baseline`` (another method's prediction, e.g. SGBM) are H x W metres with NaN where
    there is no value; ``confidence`` is the model's, H x W in [0, 1]. ``name`` titles the row
    (a file name or a stamp).

    :raises ValueError: an image that is not H x W x 3 uint8, or a map of another size.
    """

    left: np.ndarray
    prediction: np.ndarray
    depth: np.ndarray | None = None
    right: np.ndarray | None = None
    baseline: np.ndarray | None = None
    name: str = ""
    confidence: np.ndarray | None = None

    def __post_init__(self) -> None:
        label = self.name or "panel"
        for field_name in ("left", "right"):
            image = getattr(self, field_name)
            if image is not None and (
                image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8
            ):
                raise ValueError(
                    f"{label}: {field_name} must be H x W x 3 uint8, got {image.shape} "
                    f"{image.dtype}"
                )
        size = self.left.shape[:2]
        if self.right is not None and self.right.shape[:2] != size:
            raise ValueError(f"{label}: right {self.right.shape[:2]} differs from left {size}")
        for field_name in ("prediction", "depth", "baseline", "confidence"):
            values = getattr(self, field_name)
            if values is not None and values.shape != size:
                raise ValueError(f"{label}: {field_name} {values.shape} differs from left {size}")


def panel_png(panel: Panel, *, baseline_name: str = "baseline") -> bytes:
    """A row of the panel's images: left, right, ground truth, prediction, baseline, the
    prediction's absolute error and the model's confidence, with shared colour bars in metres
    (missing inputs are left out).
    """
    depth_maps = [
        (title, values)
        for title, values in (("ground truth", panel.depth), ("prediction", panel.prediction),
                              (baseline_name, panel.baseline))
        if values is not None
    ]
    error = None
    if panel.depth is not None:
        known = np.isfinite(panel.depth) & (panel.depth > 0)
        error = np.where(known, np.abs(panel.prediction - panel.depth), np.nan)
    images = [
        (title, image)
        for title, image in (("left", panel.left), ("right", panel.right))
        if image is not None
    ]
    columns = len(images) + len(depth_maps) + (error is not None) + (panel.confidence is not None)
    height, width = panel.left.shape[:2]
    image_inches = _WIDTH_INCHES / columns * height / width
    figure = Figure(figsize=(_WIDTH_INCHES, image_inches + 1.3), layout="constrained")
    # Images in the top row, colour bars in their own thin row below, so every image has the
    # same size and the bars line up whatever columns there are.
    grid = figure.add_gridspec(2, columns, height_ratios=(image_inches, 0.15))
    for column, (title, image) in enumerate(images):
        _image_axes(figure, grid[0, column], title).imshow(image, interpolation="nearest")
    low, high = _robust_range(panel.depth if panel.depth is not None else panel.prediction)
    for column, (title, values) in enumerate(depth_maps, start=len(images)):
        shown = _image_axes(figure, grid[0, column], title).imshow(
            values, cmap=_DEPTH_COLORS, vmin=low, vmax=high, interpolation="nearest"
        )
    depth_bar = figure.add_subplot(grid[1, len(images):len(images) + len(depth_maps)])
    figure.colorbar(shown, cax=depth_bar, orientation="horizontal", label="depth [m]",
                    extend="both")
    if error is not None:
        _, top = _robust_range(error, upper=95.0)
        column = len(images) + len(depth_maps)
        shown = _image_axes(figure, grid[0, column], "abs error").imshow(
            error, cmap=_ERROR_COLORS, vmin=0.0, vmax=max(top, 1e-3), interpolation="nearest"
        )
        figure.colorbar(shown, cax=figure.add_subplot(grid[1, column]),
                        orientation="horizontal", label="error [m]", extend="max")
    if panel.confidence is not None:
        shown = _image_axes(figure, grid[0, columns - 1], "confidence").imshow(
            panel.confidence, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest"
        )
        figure.colorbar(shown, cax=figure.add_subplot(grid[1, columns - 1]),
                        orientation="horizontal", label="matcher confidence")
    if panel.name:
        figure.suptitle(panel.name, fontsize="medium")
    return _png(figure)


def distance_png(series: Mapping[str, Sequence[Mapping[str, Any]]]) -> bytes:
    """Grouped bars of abs rel and RMSE per ground-truth depth range, one colour per method;
    ``series`` maps a method's name to its :meth:`ErrorByDistance.bins`."""
    ranges = sorted({(row["min"], row["max"]) for rows in series.values() for row in rows})
    figure = Figure(figsize=(_WIDTH_INCHES, 3.6), layout="constrained")
    axes = figure.subplots(1, 2)
    positions = np.arange(len(ranges))
    bar_width = 0.8 / max(len(series), 1)
    for metric, ax, label in zip(("abs_rel", "rmse"), axes, ("abs rel", "RMSE [m]"),
                                 strict=True):
        for index, (name, rows) in enumerate(series.items()):
            by_range = {(row["min"], row["max"]): row[metric] for row in rows}
            values = [by_range.get(key, math.nan) for key in ranges]
            ax.bar(positions + (index - (len(series) - 1) / 2) * bar_width, values, bar_width,
                   label=name, color=_SERIES_COLORS[index % len(_SERIES_COLORS)])
        ax.set_xticks(positions, [_range_label(low, high) for low, high in ranges])
        ax.set_xlabel("ground-truth depth [m]")
        ax.set_ylabel(label)
        if metric == "rmse" and _spans_decades(series, metric):
            ax.set_yscale("log")
            ax.set_ylabel(f"{label}, log scale")
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    return _png(figure)


def per_frame_png(series: Mapping[str, Sequence[float]]) -> bytes:
    """abs rel of every frame in order, one line per method (failed frames leave gaps)."""
    figure = Figure(figsize=(_WIDTH_INCHES, 3.0), layout="constrained")
    ax = figure.subplots()
    for index, (name, values) in enumerate(series.items()):
        finite = np.array([value if math.isfinite(value) else math.nan for value in values])
        ax.plot(finite, marker="." if len(finite) < 60 else None, label=name,
                color=_SERIES_COLORS[index % len(_SERIES_COLORS)])
    ax.set_xlabel("frame")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("abs rel")
    ax.set_ylim(bottom=0.0)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(figure)


def latency_png(latency_ms: Sequence[float]) -> bytes:
    """Histogram of per-frame latencies with the median and 95th percentile marked."""
    values = np.asarray(latency_ms, dtype=np.float64)
    figure = Figure(figsize=(_WIDTH_INCHES / 2, 3.0), layout="constrained")
    ax = figure.subplots()
    ax.hist(values, bins=min(40, max(5, values.size // 4)), color=_SERIES_COLORS[0])
    for percentile, style in ((50, "-"), (95, "--")):
        at = float(np.percentile(values, percentile))
        ax.axvline(at, color="black", linestyle=style, label=f"p{percentile} {at:.1f} ms")
    ax.set_xlabel("latency [ms]")
    ax.set_ylabel("frames")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    return _png(figure)


def _image_axes(figure: Figure, cell: SubplotSpec, title: str) -> Axes:
    ax = figure.add_subplot(cell)
    ax.set_axis_off()
    ax.set_title(title)
    return ax


def _robust_range(values: np.ndarray, *, upper: float = 98.0) -> tuple[float, float]:
    """The 2nd and ``upper`` percentiles of the finite, positive values (0-1 if there are none),
    so a few outliers do not wash out the colours."""
    finite = values[np.isfinite(values) & (values > 0)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(finite, [2.0, upper])
    return float(low), float(max(high, low + 1e-3))


def _spans_decades(series: Mapping[str, Sequence[Mapping[str, Any]]], metric: str) -> bool:
    """Whether the values span more than 1.5 decades: RMSE grows with distance (with its square
    for stereo), and on a linear axis the far ranges would flatten the near ones."""
    values = [row[metric] for rows in series.values() for row in rows]
    finite = [value for value in values if math.isfinite(value) and value > 0]
    return bool(finite) and max(finite) > 30 * min(finite)


def _range_label(low: float, high: float) -> str:
    return f"{low:g}+" if math.isinf(high) else f"{low:g}-{high:g}"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()
