"""`cnd-depth demo` (the README's first command) end to end: synthetic bag -> real depth_node
subprocess over DDS -> recording, metrics.json and report.html. A tiny random network and a
3-frame drive keep it short; `make demo` runs the same path with the shipped model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.artifacts import SMALL, make_artifact
from rosbags.rosbag2 import Reader

from cnd_depth_ros import cli


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_demo_runs_the_node_and_writes_report_metrics_and_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact = make_artifact(tmp_path / "model", "cnd_stereo", **SMALL)
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--frames", "3", "--width", "128", "--height", "80",
            "--model", str(artifact), "--backend", "torch", "--no-progress",
            "--json", str(tmp_path / "demo.json")]
    assert cli.main(argv) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"]["in"] == 3
    assert metrics["frames"]["out"] == metrics["frames"]["scored"] == 3
    # A random net puts a few pixels beyond the node's max_depth (published NaN, scored as
    # failed, so its error metrics are inf); the delta and invalid fractions stay numbers.
    assert 0.0 < metrics["overall"]["delta1"] <= 1.0
    assert metrics["overall"]["invalid"] < 0.05
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 3
    with Reader(out / "depth_node_outputs.bag") as recording:
        topics = {connection.topic for connection in recording.connections}
    assert {"/depth/image", "/points", "/depth/camera_info"} <= topics
    assert "recording:" in capsys.readouterr().out
    # A second run reuses the drive instead of rendering it again.
    stamp = (out / "street.bag" / "metadata.yaml").stat().st_mtime_ns
    assert cli.main(argv) == 0
    assert (out / "street.bag" / "metadata.yaml").stat().st_mtime_ns == stamp


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_demo_runs_the_shipped_stereo_model_by_name(tmp_path: Path) -> None:
    """What `make demo` does: the node gets the shipped model's name, not a path."""
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--frames", "2", "--width", "128", "--height", "80",
            "--backend", "torch", "--no-progress"]
    assert cli.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"]["scored"] == 2
    assert "model_path:=cnd_stereo" in (out / "report.html").read_text()
