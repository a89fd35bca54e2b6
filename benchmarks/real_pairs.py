"""Every real stereo pair with ground truth, at the node's default settings, against SGBM.

The pairs: the KITTI 2012 frames and the Middlebury 2006 "Aloe" of ``../shared/data`` and the
Middlebury 2014 "motorcycle" that scikit-image ships. Each model runs as ``cnd-depth eval`` runs
it by default: ONNX Runtime on the CPU at the input the planner chooses for the camera (its
budget unless ``--pixel-budget``), scored against OpenCV's SGBM tuned and as stereo_image_proc
ships it. ``--thresholds`` adds the model scored only where its confidence reaches each
threshold, with the share of ground truth kept. Writes ``OUT/real_pairs.json`` and
``OUT/real_pairs.md`` (the table of docs/models.md)::

    .venv/bin/python benchmarks/real_pairs.py --model cnd_stereo --out runs/real_pairs
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from cnd_depth_ros.data.registry import open_dataset
from cnd_depth_ros.evaluation.dataset_eval import evaluate_dataset, open_predictor

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: name -> (dataset kind, root below ``--shared-data`` or None for a packaged pair).
PAIRS = {
    "KITTI 2012 000000-000001": ("kitti", "kitti2012_stereo"),
    "Middlebury 2006 Aloe": ("middlebury", "middlebury2006_aloe"),
    "Middlebury 2014 motorcycle": ("motorcycle", None),
}
#: Backends without a model scored beside the models.
BASELINES = ("sgbm", "sgbm:stereo_image_proc")


def _score(
    model: str | None, frames: Any, threshold: float = 0.0, **options: Any
) -> dict[str, Any]:
    with open_predictor(model, **options) as (predict, info):
        result = evaluate_dataset(predict, frames, confidence_threshold=threshold)
        times = []
        for frame in frames:  # the time per frame, once the backend is planned and warm
            started = time.perf_counter()
            predict(frame)
            times.append(time.perf_counter() - started)
    metrics = result["metrics"]
    return {
        "rel": metrics["rel"],
        "delta1": metrics["delta1"],
        "rmse": metrics["rmse"],
        "kept": result.get("confidence", {}).get("kept", 1.0),
        "input": ", ".join(plan["network"] for plan in info.get("input_plans", [])) or "-",
        "ms_per_frame": 1000.0 * float(np.median(times)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", required=True,
                        help="model to score (repeatable): shipped name or artifact path")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--pixel-budget", type=int, help="default: the CPU budget")
    parser.add_argument("--thresholds", default="", help="comma-separated confidence thresholds")
    parser.add_argument("--shared-data", type=Path, default=SHARED_DATA)
    parser.add_argument("--no-refinement", dest="refinement", action="store_false",
                        help="score the net's disparity as it is, not refined (cnd-depth eval's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    thresholds = [float(value) for value in args.thresholds.split(",") if value]
    rows: list[dict[str, Any]] = []
    for pair, (kind, root) in PAIRS.items():
        frames = open_dataset(kind, None if root is None else args.shared_data / root)
        for model in args.model:
            for threshold in [0.0, *thresholds]:
                scores = _score(model, frames, threshold, backend=args.backend,
                                camera=frames[0].camera, pixel_budget=args.pixel_budget,
                                **({} if args.refinement else {"refinement": None}))
                rows.append({"pair": pair, "model": model, "threshold": threshold, **scores})
                print(json.dumps(rows[-1]), flush=True)
        for baseline in BASELINES:
            rows.append({"pair": pair, "model": baseline, "threshold": 0.0,
                         **_score(None, frames, backend=baseline)})
            print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "real_pairs.json").write_text(json.dumps(rows, indent=2))
    lines = ["| pair | model | confidence >= | rel | δ<1.25 | RMSE (m) | kept | input | ms/frame |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['pair']} | {row['model']} | {row['threshold']:g} | {row['rel']:.3f} | "
            f"{row['delta1']:.3f} | {row['rmse']:.2f} | {row['kept']:.2f} | {row['input']} | "
            f"{row['ms_per_frame']:.0f} |"
        )
    (args.out / "real_pairs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
