"""report.html and its figures: content, self-containment, error by distance, `eval --report`.

Real parts only: matplotlib's Agg renderer, the synthetic renderer's folder, a seeded untrained
network run through the torch backend, OpenCV's SGBM, and headless Chromium for the screenshot
(skipped where no Chromium is installed; on Debian `apt-get install chromium`).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from fixtures.artifacts import SMALL, make_artifact
from fixtures.training import one_torch_thread, synthetic_folder  # noqa: F401
from PIL import Image

from cnd_depth_ros import cli
from cnd_depth_ros.evaluation.error_by_distance import ErrorByDistance
from cnd_depth_ros.evaluation.report import (
    REPORT_NAME,
    Baseline,
    Panel,
    ReportCollector,
    panel_indices,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "scripts" / "screenshot_report.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HEIGHT, WIDTH = 40, 64


def _screenshot_script() -> ModuleType:
    """scripts/ is not a package: load the script as a module to ask it for Chromium."""
    spec = importlib.util.spec_from_file_location("screenshot_report", SCREENSHOT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _frame(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(left, right, ground truth, prediction): a ramp from 2 m to 30 m with a hole, and a
    prediction 10 % too far."""
    rng = np.random.default_rng(seed)
    left = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    right = np.roll(left, -2, axis=1)
    depth = np.tile(np.linspace(2.0, 30.0, WIDTH, dtype=np.float32), (HEIGHT, 1))
    depth[:5] = np.nan
    return left, right, depth, (1.1 * depth).astype(np.float32)


def _collected(frames: int = 4) -> tuple[ReportCollector, ReportCollector]:
    model, sgbm = ReportCollector(panel_indices(frames, 2)), ReportCollector(panel_indices(frames))
    for index in range(frames):
        left, right, depth, prediction = _frame(index)
        model.add(index, prediction, depth, left=left, right=right, name=f"frame {index}",
                  latency_ms=10.0 + index)
        sgbm.add(index, 0.8 * depth, depth, left=left, right=right)
    return model, sgbm


def _report(out: Path, **overrides: object) -> Path:
    model, sgbm = _collected()
    arguments = {
        "title": "tiny <test> run",
        "metrics": {"rel": 0.1, "rmse": 1.2344, "delta1": 1.0},
        **model.report_arguments(sgbm),
        "baseline": sgbm.baseline("SGBM", {"rel": 0.2, "rmse": 2.5, "delta1": 0.75}),
        "details": {"frames": 4},
        "model_name": "cnd_stereo",
        **overrides,
    }
    return write_report(out, **arguments)  # type: ignore[arg-type]


def _embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in
            re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_error_by_distance_is_exact_per_range() -> None:
    depth = np.array([[0.5, 1.5, 2.5, 3.5, 7.5, 7.9]], np.float32)
    prediction = 1.1 * depth
    prediction[0, 5] = np.nan  # a failed prediction at 7.9 m
    errors = ErrorByDistance()
    errors.update(prediction, depth, np.ones_like(depth, dtype=bool))
    bins = errors.bins()
    # 7.9 m in 10 ranges at most: 1 m ranges, all of them present but 4-7 m.
    assert [(row["min"], row["max"]) for row in bins] == [(0, 1), (1, 2), (2, 3), (3, 4), (7, 8)]
    assert all(row["abs_rel"] == pytest.approx(0.1) for row in bins)
    assert bins[4]["pixels"] == 2
    assert bins[4]["invalid"] == 0.5
    assert bins[4]["rmse"] == pytest.approx(0.75)  # only the 7.5 m pixel is scored
    assert bins[0]["rmse"] == pytest.approx(0.05)
    coarse = errors.bins(max_bins=2)
    assert [(row["min"], row["max"]) for row in coarse] == [(0, 5), (5, 10)]
    assert coarse[0]["pixels"] == 4
    assert ErrorByDistance().bins() == []


def test_error_by_distance_open_range_and_bad_input() -> None:
    depth = np.concatenate([np.full(200, 5.0), [900.0]]).astype(np.float32)[None]
    errors = ErrorByDistance(max_depth=100.0)
    errors.update(depth, depth, np.ones_like(depth, dtype=bool))
    last = errors.bins()[-1]
    assert last["pixels"] == 1
    assert math.isinf(last["max"])
    with pytest.raises(ValueError, match="resolution"):
        ErrorByDistance(resolution=0.0)
    with pytest.raises(ValueError, match="same shape"):
        errors.update(depth, depth[:, :5], np.ones_like(depth, dtype=bool))
    with pytest.raises(ValueError, match="bool"):
        errors.update(depth, depth, np.ones_like(depth))


def test_panel_indices_spread_over_the_sequence() -> None:
    assert panel_indices(100, 5) == [0, 25, 50, 74, 99]
    assert panel_indices(3, 5) == [0, 1, 2]
    assert panel_indices(0, 5) == []
    assert panel_indices(7, 1) == [0]
    with pytest.raises(ValueError, match="negative"):
        panel_indices(-1)


def test_report_is_self_contained_with_metrics_and_figures(tmp_path: Path) -> None:
    path = _report(tmp_path)
    assert path == tmp_path / REPORT_NAME
    page = path.read_text(encoding="utf-8")
    for reference in ("http://", "https://", "file://", "<script", "<link", "@import"):
        assert reference not in page
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"',
                                                                               page))
    assert "tiny &lt;test&gt; run" in page
    assert "cnd_stereo</th><th>SGBM</th>" in page
    # The model is better on rel and delta1, so its cells are bold; unknown metrics stay blank.
    assert '<td>abs rel &darr;</td><td class="best">0.100</td><td>0.200</td>' in page
    assert '<td class="best">1.234</td><td>2.500</td>' in page
    assert '<td>log10 &darr;</td><td></td><td></td>' in page
    assert "median 11.5 ms" in page
    figures = sorted(p.name for p in tmp_path.glob("*.png"))
    assert figures == ["error_by_distance.png", "latency.png", "panel_00.png", "panel_01.png",
                       "per_frame.png"]
    embedded = _embedded_pngs(page)
    assert len(embedded) == len(figures)
    for name in figures:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert data in embedded
        with Image.open(tmp_path / name) as image:
            image.verify()
    with Image.open(tmp_path / "panel_00.png") as panel:
        # left, right, ground truth, prediction, SGBM, error side by side: wider than tall.
        assert panel.width == 1200
        assert panel.height < panel.width / 2


def test_report_is_deterministic_and_drops_stale_figures(tmp_path: Path) -> None:
    first = _report(tmp_path).read_bytes()
    assert _report(tmp_path).read_bytes() == first
    _report(tmp_path, latency_ms=[], panels=[], baseline=None)
    assert not (tmp_path / "latency.png").exists()
    assert not list(tmp_path.glob("panel_*.png"))
    page = (tmp_path / REPORT_NAME).read_text(encoding="utf-8")
    assert "SGBM" not in page
    assert "Latency" not in page


def test_mono_panel_without_ground_truth(tmp_path: Path) -> None:
    left, _, depth, _ = _frame(1)
    path = write_report(tmp_path, title="mono", metrics={"rel": 0.3},
                        panels=[Panel(left, depth)])
    assert "&darr;</td><td>0.300</td>" in path.read_text(encoding="utf-8")
    with Image.open(tmp_path / "panel_00.png") as panel:
        # Two columns (left, prediction) of 64 x 40 images: each about 6 x 3.75 inches.
        assert panel.width == 1200
        assert 400 < panel.height < 600


def test_a_panel_shows_the_models_confidence(tmp_path: Path) -> None:
    """A stereo model's confidence is one more column of the frame's row, after the error."""
    left, _, depth, prediction = _frame(2)
    confidence = np.linspace(0.0, 1.0, depth.size, dtype=np.float32).reshape(depth.shape)
    write_report(tmp_path / "plain", title="t", metrics={"rel": 0.1},
                 panels=[Panel(left, prediction, depth=depth)])
    write_report(tmp_path / "sure", title="t", metrics={"rel": 0.1},
                 panels=[Panel(left, prediction, depth=depth, confidence=confidence)])
    with Image.open(tmp_path / "plain" / "panel_00.png") as plain, \
            Image.open(tmp_path / "sure" / "panel_00.png") as sure:
        assert plain.width == sure.width and sure.height < plain.height  # 4 columns, then 5
    with pytest.raises(ValueError, match="confidence"):
        Panel(left, prediction, confidence=confidence[:10])


def test_bad_report_input_names_the_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rel"):
        write_report(tmp_path, title="t", metrics={"accuracy": 1.0})
    with pytest.raises(ValueError, match="'rmse'"):
        write_report(tmp_path, title="t", metrics={"rel": 0.1, "rmse": "low"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="SGBM"):
        write_report(tmp_path, title="t", metrics={"rel": 0.1},
                     baseline=Baseline("SGBM", {"nothing": 0.0}))
    left, _, depth, prediction = _frame(0)
    with pytest.raises(ValueError, match="frame 7: prediction"):
        Panel(left, prediction[:10], depth=depth, name="frame 7")
    with pytest.raises(ValueError, match="uint8"):
        Panel(left.astype(np.float32), prediction)
    with pytest.raises(ValueError, match="no pixel"):
        ReportCollector().add(0, prediction, np.full_like(depth, np.nan), left=left)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_eval_report_end_to_end(tmp_path: Path) -> None:
    data = synthetic_folder(tmp_path / "synthetic", 128, 80, 3, seed=5)
    artifact = make_artifact(tmp_path / "model", "cnd_stereo", width=96, height=64, **SMALL)
    out = tmp_path / "report"
    result_path = tmp_path / "eval.json"
    code = cli.main([
        "eval", "--model", str(artifact), "--data", "synthetic", "--data-root", str(data),
        "--device", "cpu", "--baseline", "sgbm", "--report", str(out), "--no-progress",
        "--json", str(result_path),
    ])
    assert code == 0
    result = json.loads(result_path.read_text())
    assert result["report"] == str(out / REPORT_NAME)
    assert result["frames"] == 3
    assert result["baseline"]["backend"] == "sgbm"
    assert result["baseline"]["frames"] == 3
    page = (out / REPORT_NAME).read_text(encoding="utf-8")
    assert "cnd_stereo</th><th>sgbm</th>" in page
    for key in ("rel", "rmse"):
        for metrics in (result["metrics"], result["baseline"]["metrics"]):
            assert f">{metrics[key]:.3f}</td>" in page
    assert sorted(p.name for p in out.glob("panel_*.png")) == [
        "panel_00.png", "panel_01.png", "panel_02.png"]
    assert (out / "error_by_distance.png").is_file()
    assert "3 frames: median" in page  # the model's inference times
    assert "http://" not in page and "file://" not in page


def test_eval_rejects_the_backend_as_its_own_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["eval", "--backend", "sgbm", "--baseline", "sgbm", "--data", "synthetic",
                     "--data-root", str(tmp_path)])
    assert code == 2
    assert "nothing to compare" in capsys.readouterr().err


@pytest.mark.skipif(_screenshot_script().find_chromium() is None,
                    reason="headless Chromium is not installed")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    page = _report(tmp_path / "report")
    shot = tmp_path / "shot.png"
    completed = subprocess.run(
        [sys.executable, str(SCREENSHOT), str(page), str(shot), "--width", "1000",
         "--height", "1400", "--timeout", "90"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    with Image.open(shot) as image:
        assert image.size == (1000, 1400)
        pixels = np.asarray(image.convert("L"))
    # Rendered content, not a blank page: dark text and figure pixels on the white background.
    assert (pixels < 100).mean() > 0.01
    assert (pixels > 250).mean() > 0.3
