"""Ablations that test the paper's claims, on the same data and the same number of steps.

* residual blocks: CNDmicro vs CNDmono (phi 2);
* stereo: CNDmono vs CNDstereo (phi 2);
* loss exponent: phi 1 vs phi 2 (CNDmono).

Each run is trained with the trainer, then scored on held-out data through the torch backend,
exactly as ``cnd-depth eval`` does. Finished runs (``OUT/RUN/model.json``) are reused, so an
interrupted ablation continues where it stopped. Writes ``OUT/ablations.md`` (a markdown table
for docs/models.md) and ``OUT/ablations.json``::

    .venv/bin/python benchmarks/ablations.py --data synthetic:data/synth \\
        --eval-data synthetic:data/synth_test --steps 20000 --batch-size 16 --out runs/ablations
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnd_depth_ros.data.registry import open_dataset
from cnd_depth_ros.data.sources import DataSpec
from cnd_depth_ros.evaluation.dataset_eval import evaluate_dataset, open_predictor
from cnd_depth_ros.training.trainer import ARTIFACT_NAME, TrainConfig, launch, main

_LOGGER = logging.getLogger("ablations")


@dataclass(frozen=True)
class Run:
    name: str
    variant: str
    phi: float


RUNS = (
    Run("micro_phi2", "cnd_micro", 2.0),
    Run("mono_phi2", "cnd_mono", 2.0),
    Run("stereo_phi2", "cnd_stereo", 2.0),
    Run("mono_phi1", "cnd_mono", 1.0),
)
#: (claim, run expected worse, run expected better): the paper's claims as pairs of runs.
CLAIMS = (
    ("residual decoder blocks help (micro -> mono)", "micro_phi2", "mono_phi2"),
    ("a second view helps (mono -> stereo)", "mono_phi2", "stereo_phi2"),
    ("phi = 2 beats phi = 1 (mono)", "mono_phi1", "mono_phi2"),
)
COLUMNS = ("rel", "log10", "rmse", "delta1")


def train(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """Train ``run`` (or reuse its finished artifact): its report."""
    out = args.out / run.name
    report_path = out / "train_report.json"
    if (out / f"{ARTIFACT_NAME}.json").is_file() and report_path.is_file():
        _LOGGER.info("%s: reusing the finished run in %s", run.name, out)
        return json.loads(report_path.read_text())
    checkpoint = out / "checkpoint.pt"
    config = TrainConfig(
        variant=run.variant,
        data=args.data,
        out=str(out),
        width=args.width,
        height=args.height,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=min(args.warmup_steps, args.steps - 1),
        phi=run.phi,
        workers=args.workers,
        seed=args.seed,
        device=args.device,
        val_fraction=0.0,
        model=args.model_config,
        resume=str(checkpoint) if checkpoint.is_file() else None,
    )
    return launch(config, args.nproc) if args.nproc > 1 else main(config)


def score(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """Metrics of the run's artifact on ``--eval-data``, through the torch backend."""
    spec = DataSpec.parse(args.eval_data)
    frames = open_dataset(spec.kind, spec.root)
    artifact = args.out / run.name / ARTIFACT_NAME
    with open_predictor(str(artifact), backend="torch", device=args.device_eval) as (predict, _):
        return evaluate_dataset(
            predict, frames, max_frames=args.eval_frames, progress=True,
            description=f"eval {run.name}",
        )


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    by_name = {row["run"]: row for row in rows}
    lines = [
        f"Training data `{' + '.join(args.data)}`, {args.steps} steps of batch {args.batch_size}"
        f" x {args.nproc} process(es) at {args.width}x{args.height}; scored on "
        f"`{args.eval_data}` ({rows[0]['frames']} frames) through the torch backend.",
        "",
        "| run | variant | phi | " + " | ".join(COLUMNS) + " | train time |",
        "|---|---|---|" + "---|" * len(COLUMNS) + "---|",
    ]
    for row in rows:
        values = " | ".join(f"{row['metrics'][name]:.3f}" for name in COLUMNS)
        lines.append(
            f"| {row['run']} | {row['variant']} | {row['phi']:g} | {values} | "
            f"{row['train_seconds']:.0f} s |"
        )
    lines += ["", "| claim | rel before | rel after | holds here |", "|---|---|---|---|"]
    for claim, worse, better in CLAIMS:
        before, after = by_name[worse]["metrics"]["rel"], by_name[better]["metrics"]["rel"]
        lines.append(
            f"| {claim} | {before:.3f} | {after:.3f} | {'yes' if after < before else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", action="append", required=True, metavar="KIND:ROOT")
    parser.add_argument("--eval-data", required=True, metavar="KIND:ROOT",
                        help="held-out data every run is scored on")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=8, help="per process")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=100, help="capped below --steps")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=160)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="training device")
    parser.add_argument("--device-eval", default="cpu", help="evaluation device")
    parser.add_argument("--nproc", type=int, default=1, help="DDP processes per training run")
    parser.add_argument("--eval-frames", type=int, help="score only the first N frames")
    parser.add_argument("--model-config", type=json.loads, default={}, metavar="JSON",
                        help="build_model overrides for every run (e.g. smaller nets)")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    rows = []
    for run in RUNS:
        started = time.monotonic()
        report = train(run, args)
        result = score(run, args)
        rows.append(
            {
                "run": run.name,
                "variant": run.variant,
                "phi": run.phi,
                "steps": report["steps"],
                "train_seconds": report.get("seconds", time.monotonic() - started),
                **result,
            }
        )
    table = markdown(rows, args)
    (args.out / "ablations.md").write_text(table)
    (args.out / "ablations.json").write_text(json.dumps(rows, indent=2) + "\n")
    _LOGGER.info("wrote %s\n%s", args.out / "ablations.md", table)


if __name__ == "__main__":
    main_cli()
