"""``report.html``: one self-contained page that shows how a depth model did on some data.

Both ``cnd-depth eval --report DIR`` and ``cnd-depth replay`` write it, next to their JSON results,
through one call::

    from cnd_depth_ros.evaluation.report import (
        Baseline, ReportCollector, panel_indices, write_report)

    collector = ReportCollector(keep=panel_indices(expected_frames))  # which frames to show
    for index, matched frame:                   # pred, gt: H x W metres, NaN where unknown
        collector.add(index, pred, gt, left=left, right=right, name="t=12.3 s", latency_ms=ms)
    write_report(
        out_dir,
        title="cnd_stereo on street.mcap",
        metrics=overall,                        # {"rel", "log10", "rmse", ...}: METRIC_NAMES
        **collector.report_arguments(),         # panels, per_frame, by_distance, latency_ms
        baseline=Baseline("SGBM", sgbm_metrics),  # optional second column, same fields
        details={"model": "cnd_stereo", "frames in": 120},
    )

A second collector fed with SGBM's predictions of the same frames gives the baseline column and
panels: ``**collector.report_arguments(sgbm)``, ``baseline=sgbm.baseline("SGBM", metrics)``.
Callers that gather their own data pass ``panels`` (:class:`Panel`), ``per_frame`` (per-frame
metric dicts), ``by_distance`` (:meth:`ErrorByDistance.bins`) and ``latency_ms`` directly.

The page embeds every figure as a base64 PNG and carries its CSS inline, so it can be mailed or
attached to a CI run as one file; the same figures are also written as PNG files in ``out_dir``
(``panel_00.png``..., ``error_by_distance.png``, ``per_frame.png``, ``latency.png``) for slides and
READMEs. Rendering is deterministic and takes well under a second per figure.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnd_depth_ros.atomic_file import write_text_atomically
from cnd_depth_ros.evaluation import figures
from cnd_depth_ros.evaluation.error_by_distance import ErrorByDistance
from cnd_depth_ros.evaluation.figures import Panel
from cnd_depth_ros.evaluation.metrics import METRIC_NAMES, depth_metrics

if TYPE_CHECKING:
    from cnd_depth_ros.data.frame import Frame
    from cnd_depth_ros.inference.depth_estimate import DepthEstimate

__all__ = ["REPORT_NAME", "Baseline", "Panel", "ReportCollector", "panel_indices", "write_report"]

REPORT_NAME = "report.html"

#: How each metric reads: label, and whether lower values are better.
_METRIC_LABELS: dict[str, tuple[str, bool]] = {
    "rel": ("abs rel", True),
    "log10": ("log10", True),
    "rmse": ("RMSE [m]", True),
    "sq_rel": ("sq rel [m]", True),
    "rmse_log": ("RMSE log", True),
    "delta1": ("&delta; &lt; 1.25", False),
    "delta2": ("&delta; &lt; 1.25&sup2;", False),
    "delta3": ("&delta; &lt; 1.25&sup3;", False),
    "invalid": ("failed pixels", True),
}

_STYLE = """
body { font-family: system-ui, sans-serif; color: #222; max-width: 1240px; margin: 1.5em auto;
       padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { padding: 0.25em 0.9em; border-bottom: 1px solid #ddd; text-align: right;
         white-space: nowrap; }
th[colspan] { text-align: center; }
th:first-child, td:first-child, table.details td { text-align: left; }
thead th { border-bottom: 2px solid #888; }
td.best { font-weight: bold; }
figure { margin: 0.8em 0; } figure img { width: 100%; height: auto; }
figure.half img { width: 50%; }
figcaption, .note { color: #555; font-size: 0.9em; }
"""


@dataclass(frozen=True)
class Baseline:
    """Another method's results on the same frames (e.g. SGBM), shown next to the model's.

    ``metrics``, ``per_frame`` and ``by_distance`` have the forms :func:`write_report` takes.
    """

    name: str
    metrics: Mapping[str, float]
    per_frame: Sequence[Mapping[str, Any]] = ()
    by_distance: Sequence[Mapping[str, Any]] = ()


def panel_indices(frames: int, count: int = 5) -> list[int]:
    """``count`` frame indices spread evenly over ``frames`` (first and last included), fewer
    when there are fewer frames.

    :raises ValueError: a negative ``frames`` or ``count``.
    """
    if frames < 0 or count < 0:
        raise ValueError(f"frames and count must not be negative, got {frames} and {count}")
    if frames == 0 or count == 0:
        return []
    return sorted({round(float(at)) for at in np.linspace(0, frames - 1, min(count, frames))})


class ReportCollector:
    """Gathers what :func:`write_report` shows while frames are evaluated one by one, keeping
    only the images of the frames in ``keep`` (indices as passed to :meth:`add`)."""

    def __init__(self, keep: Sequence[int] = ()) -> None:
        self._keep = set(keep)
        self.panels: dict[int, Panel] = {}
        self.per_frame: list[dict[str, Any]] = []
        self.by_distance = ErrorByDistance()
        self.latency_ms: list[float] = []

    def add(
        self,
        index: int,
        prediction: np.ndarray,
        depth: np.ndarray,
        *,
        left: np.ndarray,
        right: np.ndarray | None = None,
        name: str = "",
        latency_ms: float | None = None,
        confidence: np.ndarray | None = None,
    ) -> dict[str, float]:
        """Score one frame against its ground truth ``depth`` and return its metrics
        (``confidence``, the model's, is shown with the frame's images).

        :raises ValueError: the frame has no valid ground truth, or the shapes differ.
        """
        valid = np.isfinite(depth) & (depth > 0)
        metrics = depth_metrics(prediction, depth, valid)
        self.by_distance.update(prediction, depth, valid)
        self.per_frame.append({"index": index, "name": name, **metrics})
        if latency_ms is not None:
            self.latency_ms.append(latency_ms)
        if index in self._keep:
            self.panels[index] = Panel(left, prediction, depth=depth, right=right, name=name,
                                       confidence=confidence)
        return metrics

    def on_frame(
        self, index: int, frame: Frame, estimate: DepthEstimate, truth: np.ndarray,
        seconds: float,
    ) -> None:
        """:func:`~cnd_depth_ros.evaluation.dataset_eval.evaluate_dataset`'s ``on_frame``."""
        self.add(index, estimate.depth, truth, left=frame.left, right=frame.right,
                 name=frame.name or f"frame {index}", latency_ms=1000.0 * seconds,
                 confidence=estimate.confidence)

    def report_arguments(self, baseline: ReportCollector | None = None) -> dict[str, Any]:
        """``panels``, ``per_frame``, ``by_distance`` and ``latency_ms`` for :func:`write_report`;
        with ``baseline``, the panels also show its predictions of the same frames."""
        panels = [
            replace(panel, baseline=baseline.panels[index].prediction)
            if baseline is not None and index in baseline.panels else panel
            for index, panel in sorted(self.panels.items())
        ]
        return {
            "panels": panels,
            "per_frame": self.per_frame,
            "by_distance": self.by_distance.bins(),
            "latency_ms": self.latency_ms,
        }

    def baseline(self, name: str, metrics: Mapping[str, float]) -> Baseline:
        """This collector's results as the report's :class:`Baseline` with the overall
        ``metrics``."""
        return Baseline(name, metrics, self.per_frame, self.by_distance.bins())


def write_report(
    out_dir: str | Path,
    *,
    title: str,
    metrics: Mapping[str, float],
    panels: Sequence[Panel] = (),
    per_frame: Sequence[Mapping[str, Any]] = (),
    by_distance: Sequence[Mapping[str, Any]] = (),
    latency_ms: Sequence[float] = (),
    baseline: Baseline | None = None,
    details: Mapping[str, Any] | None = None,
    model_name: str = "model",
) -> Path:
    """Write ``out_dir/report.html`` and its PNG figures; return the page's path. Figures an
    earlier report left in ``out_dir`` that this one does not have are removed.

    :param metrics: the overall metrics (:data:`~cnd_depth_ros.evaluation.metrics.METRIC_NAMES`
        keys; missing ones show as blank).
    :param panels: the frames to show as images (a handful: each is a figure).
    :param per_frame: per-frame metrics in frame order; their ``"rel"`` is plotted.
    :param by_distance: :meth:`ErrorByDistance.bins` of the evaluation.
    :param latency_ms: one latency per frame; plotted as a histogram when there are any.
    :param baseline: a second method's results, shown next to the model's.
    :param details: what was run (model, data, frame counts...), listed at the top.
    :param model_name: the model's column heading.
    :raises ValueError: ``metrics`` has no known metric, or a value is not a number.
    :raises OSError: ``out_dir`` cannot be written.
    """
    _check_metrics("metrics", metrics)
    if baseline is not None:
        _check_metrics(f"{baseline.name} metrics", baseline.metrics)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("panel_*.png"):
        stale.unlink()
    names = [model_name] + ([baseline.name] if baseline is not None else [])
    sections = [_metrics_section(names, metrics, baseline)]

    panel_figures = []
    for index, panel in enumerate(panels):
        png = figures.panel_png(panel, baseline_name=baseline.name if baseline else "baseline")
        panel_figures.append(_figure(out, f"panel_{index:02d}.png", png, ""))
    if panel_figures:
        sections.append(
            _section("Frames", "".join(panel_figures),
                     "Depth colours are shared by ground truth and predictions in each row; "
                     "grey: no ground truth or no prediction.")
        )

    distance_series = {model_name: by_distance}
    if baseline is not None and baseline.by_distance:
        distance_series[baseline.name] = baseline.by_distance
    distance_series = {name: rows for name, rows in distance_series.items() if rows}
    if distance_series:
        png = figures.distance_png(distance_series)
        sections.append(_section(
            "Error by distance",
            _figure(out, "error_by_distance.png", png, "")
            + _distance_table(distance_series),
            "Pooled over the pixels whose ground truth lies in each range; failed predictions "
            "(NaN or not positive) are counted in 'failed', not in the errors.",
        ))
    else:
        _remove(out / "error_by_distance.png")

    frame_series = {model_name: [row.get("rel", math.nan) for row in per_frame]}
    if baseline is not None and baseline.per_frame:
        frame_series[baseline.name] = [row.get("rel", math.nan) for row in baseline.per_frame]
    if per_frame:
        png = figures.per_frame_png(frame_series)
        sections.append(_section("Per frame", _figure(out, "per_frame.png", png, ""), ""))
    else:
        _remove(out / "per_frame.png")

    if len(latency_ms):
        png = figures.latency_png(latency_ms)
        values = np.asarray(latency_ms, dtype=np.float64)
        summary = (f"{values.size} frames: median {np.percentile(values, 50):.1f} ms, "
                   f"p95 {np.percentile(values, 95):.1f} ms, max {values.max():.1f} ms")
        sections.append(_section("Latency", _figure(out, "latency.png", png, "", half=True),
                                 summary))
    else:
        _remove(out / "latency.png")

    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{_details(details or {})}\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )
    path = write_text_atomically(out / REPORT_NAME, page)
    return path


def _check_metrics(label: str, metrics: Mapping[str, float]) -> None:
    if not any(name in metrics for name in METRIC_NAMES):
        raise ValueError(f"{label} has none of {', '.join(METRIC_NAMES)}: got {sorted(metrics)}")
    for name, value in metrics.items():
        if not isinstance(value, (int, float, np.floating, np.integer)):
            raise ValueError(f"{label}[{name!r}] must be a number, got {value!r}")


def _metrics_section(
    names: list[str], metrics: Mapping[str, float], baseline: Baseline | None
) -> str:
    columns = [metrics] + ([baseline.metrics] if baseline is not None else [])
    header = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    rows = []
    for name in METRIC_NAMES:
        label, lower_is_better = _METRIC_LABELS[name]
        values = [column.get(name) for column in columns]
        known = [float(v) for v in values if v is not None and not math.isnan(v)]
        # Bold the better value; a tie (or a single column) has no better one.
        best = (min(known) if lower_is_better else max(known)) if len(set(known)) > 1 else None
        cells = "".join(
            f"<td class=\"best\">{_number(v)}</td>" if best is not None and v == best
            else f"<td>{_number(v)}</td>"
            for v in values
        )
        arrow = "&darr;" if lower_is_better else "&uarr;"
        rows.append(f"<tr><td>{label} {arrow}</td>{cells}</tr>")
    table = (f"<table><thead><tr><th>metric</th>{header}</tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>")
    return _section("Metrics", table,
                    "&darr; lower is better, &uarr; higher is better; means over frames.")


def _distance_table(series: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    methods = "".join(f"<th colspan=\"3\">{html.escape(name)}</th>" for name in series)
    columns = "<th>abs rel</th><th>RMSE [m]</th><th>failed</th>" * len(series)
    ranges = sorted({(row["min"], row["max"]) for rows in series.values() for row in rows})
    lookups = [{(row["min"], row["max"]): row for row in rows} for rows in series.values()]
    total = sum(row["pixels"] for row in next(iter(series.values())))
    body = []
    for key in ranges:
        share = lookups[0].get(key, {}).get("pixels", 0) / total if total else 0.0
        cells = "".join(
            f"<td>{_number(row.get('abs_rel'))}</td><td>{_number(row.get('rmse'))}</td>"
            f"<td>{_percent(row.get('invalid'))}</td>"
            for row in (lookup.get(key, {}) for lookup in lookups)
        )
        low, high = key
        label = f"{low:g} m and beyond" if math.isinf(high) else f"{low:g} - {high:g} m"
        body.append(f"<tr><td>{label}</td><td>{_percent(share)}</td>{cells}</tr>")
    return (f"<table><thead><tr><th></th><th></th>{methods}</tr>"
            f"<tr><th>range</th><th>pixels</th>{columns}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _details(details: Mapping[str, Any]) -> str:
    if not details:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(str(key))}</td><td>{html.escape(str(value))}</td></tr>"
        for key, value in details.items()
    )
    return f"<table class=\"details\"><tbody>{rows}</tbody></table>"


def _section(heading: str, body: str, note: str) -> str:
    note_html = f"<p class=\"note\">{note}</p>" if note else ""
    return f"<section>\n<h2>{heading}</h2>\n{body}\n{note_html}\n</section>"


def _figure(out: Path, name: str, png: bytes, caption: str, *, half: bool = False) -> str:
    """Write ``png`` as ``out/name`` and return the ``<figure>`` that embeds it."""
    (out / name).write_bytes(png)
    data = base64.b64encode(png).decode("ascii")
    caption_html = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    css_class = " class=\"half\"" if half else ""
    return (f"<figure{css_class}><img alt=\"{html.escape(name)}\" "
            f"src=\"data:image/png;base64,{data}\">{caption_html}</figure>")


def _number(value: float | None) -> str:
    if value is None or math.isnan(value):
        return ""
    if math.isinf(value):
        return "&infin;" if value > 0 else "-&infin;"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def _percent(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{100 * value:.1f} %"


def _remove(path: Path) -> None:
    """A figure left from an earlier report into the same folder would mislead."""
    path.unlink(missing_ok=True)
