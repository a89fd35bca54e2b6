"""Does self-supervised fine-tuning help? Before/after scores on a shifted domain and real pairs.

1. **Synthetic domain shift.** Renders ``--tune-bags`` drives in the ``foggy_dusk`` style (other
   textures, low sun, fog, noisier sensor, lower camera) for another rig (``--fx``,
   ``--baseline``) as rosbags, and a held-out set of other streets of the same domain with
   ground truth. Fine-tunes ``--model`` on the bags with ``cnd-depth finetune``'s code, which
   never reads their depth topic, and scores the model before and after on the held-out set
   through the torch backend, as ``cnd-depth eval`` does. The issue's goal: rel down >= 25 %.
   With ``--source-data KIND:ROOT`` (held-out frames of the model's own training domain) it
   also scores both nets there: what the adaptation costs on the domain the net came from.
2. **Real pairs** (``--real-data``, the KITTI 2012 frames of ``../shared/data``): two folds,
   each fine-tuned on one frame and scored on the other, never on a frame it was tuned on.

Writes ``OUT/finetune_gain.json`` and ``OUT/finetune_gain.md`` (the table for docs/models.md).
Rendered data and finished fine-tuning runs are reused, so it can be stopped and restarted::

    .venv/bin/python benchmarks/finetune_gain.py --model cnd_stereo --out runs/finetune_gain
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from cnd_depth_ros.data.registry import open_dataset
from cnd_depth_ros.data.sources import DataSpec, open_frames
from cnd_depth_ros.evaluation.dataset_eval import evaluate_dataset, open_predictor
from cnd_depth_ros.models.artifact import read_metadata, resolve_artifact
from cnd_depth_ros.synthetic.bag_writer import write_sequence_bag
from cnd_depth_ros.synthetic.dataset_writer import kitti_like_camera, write_dataset
from cnd_depth_ros.synthetic.scene import STREET_STYLES
from cnd_depth_ros.training import finetune
from cnd_depth_ros.training.trainer import ARTIFACT_NAME, launch

_LOGGER = logging.getLogger("finetune_gain")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
METRICS = ("rel", "log10", "rmse", "delta1")


def score(model: str, frames: Any, device: str) -> dict[str, float]:
    """The model's metrics on ``frames`` through the torch backend (as ``cnd-depth eval``)."""
    with open_predictor(model, backend="torch", device=device) as (predict, _):
        return evaluate_dataset(predict, frames, progress=True)["metrics"]


def adapt(
    model: str, data: list[str], out: Path, args: argparse.Namespace, frames: int, steps: int
) -> str:
    """Fine-tune ``model`` on ``data`` for ``steps`` into ``out`` (reusing a finished run)."""
    artifact = out / ARTIFACT_NAME
    if (out / "train_report.json").is_file():
        _LOGGER.info("reusing the finished fine-tuning in %s", out)
        return str(artifact)
    checkpoint = out / "checkpoint.pt"
    config = finetune.FinetuneConfig(
        model=model, data=data, out=str(out), steps=steps,
        batch_size=min(args.batch_size, frames), lr=args.lr,
        warmup_steps=min(args.warmup_steps, steps - 1), mix_data=args.mix_data,
        workers=args.workers, seed=args.seed, device=args.device,
        resume=str(checkpoint) if checkpoint.is_file() else None,
    )
    if args.nproc > 1:
        launch(config, args.nproc, entry=finetune.__name__)
    else:
        finetune.main(config)
    return str(artifact)


def synthetic_shift(args: argparse.Namespace) -> dict[str, Any]:
    """Part 1: fine-tune on foggy_dusk bags, score on held-out foggy_dusk streets."""
    style = STREET_STYLES["foggy_dusk"]
    camera = kitti_like_camera(args.width, args.height, args.fx, args.baseline)
    bags = []
    for index in range(args.tune_bags):
        path = args.out / "data" / f"tune_{index}"
        if not path.exists():
            write_sequence_bag(path, camera, args.frames, seed=args.seed + index, style=style)
        bags.append(f"rosbag:{path}")
    held_out = args.out / "data" / "held_out"
    write_dataset(held_out, camera, args.eval_frames, seed=args.seed + 10_000, style=style,
                  workers=args.workers or 1, resume=held_out.exists())
    frames = open_dataset("synthetic", held_out)
    before = score(args.model, frames, args.eval_device)
    tuned = adapt(args.model, bags, args.out / "synthetic", args, args.frames * args.tune_bags,
                  args.steps)
    after = score(tuned, frames, args.eval_device)
    results = {
        "camera": camera.to_dict(), "style": "foggy_dusk", "tuned_on": bags,
        "tune_frames": args.frames * args.tune_bags, "held_out": str(held_out),
        "held_out_frames": len(frames), "before": before, "after": after,
        "artifact": tuned,
    }
    if args.source_data:
        source = open_frames([args.source_data], stereo=True)
        results["source_domain"] = {
            "data": str(args.source_data), "frames": len(source),
            "before": score(args.model, source, args.eval_device),
            "after": score(tuned, source, args.eval_device),
        }
    return results


def _kitti_fold(root: Path, frame: str, target: Path) -> Path:
    """A KITTI 2012 folder holding only ``frame`` (links to the shared files)."""
    for folder in ("colored_0", "colored_1", "disp_occ"):
        (target / folder).mkdir(parents=True, exist_ok=True)
        link = target / folder / f"{frame}_10.png"
        if not link.exists():
            link.symlink_to(root / folder / f"{frame}_10.png")
    return target


def real_pairs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Part 2: KITTI 2012, two folds of one tuning frame and one scored frame."""
    root = args.real_data / "kitti2012_stereo"
    if not root.is_dir():
        _LOGGER.warning("%s is absent: no real-data part", root)
        return []
    folds = []
    for tune, evaluate in (("000000", "000001"), ("000001", "000000")):
        tune_root = _kitti_fold(root, tune, args.out / "data" / f"kitti_{tune}")
        eval_frames = open_dataset("kitti", _kitti_fold(root, evaluate, args.out / "data" /
                                                        f"kitti_{evaluate}"))
        before = score(args.model, eval_frames, args.eval_device)
        tuned = adapt(args.model, [f"kitti:{tune_root}"], args.out / f"kitti_tuned_{tune}",
                      args, 1, args.real_steps)
        folds.append({"tuned_on": f"kitti 2012 {tune}", "scored_on": f"kitti 2012 {evaluate}",
                      "before": before, "after": score(tuned, eval_frames, args.eval_device)})
    return folds


def table(results: dict[str, Any]) -> str:
    rows = [("synthetic foggy_dusk, held-out streets", results["synthetic"])]
    if source := results["synthetic"].get("source_domain"):
        rows.append((f"training domain {source['data']} (tuned on foggy_dusk)", source))
    rows += [
        (f"{fold['scored_on']} (tuned on {fold['tuned_on']})", fold) for fold in results["real"]
    ]
    lines = [
        "| data | " + " | ".join(f"{m} before | {m} after" for m in METRICS) + " | rel change |",
        "|---|" + "---:|" * (2 * len(METRICS) + 1),
    ]
    for name, row in rows:
        cells = [f"{row[when][m]:.3f}" for m in METRICS for when in ("before", "after")]
        change = row["after"]["rel"] / row["before"]["rel"] - 1.0
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {change:+.1%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cnd_stereo", help="artifact path or shipped name")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tune-bags", type=int, default=4, help="drives to fine-tune on")
    parser.add_argument("--frames", type=int, default=100, help="frames per drive")
    parser.add_argument("--eval-frames", type=int, default=100, help="held-out frames")
    parser.add_argument("--width", type=int, default=320, help="camera image width")
    parser.add_argument("--height", type=int, default=192, help="camera image height")
    parser.add_argument("--fx", type=float, default=200.0, help="shifted rig's focal length")
    parser.add_argument("--baseline", type=float, default=0.3, help="shifted rig's baseline")
    parser.add_argument("--mix-data", action="append", default=[], metavar="KIND:ROOT",
                        help="labeled data mixed into fine-tuning (keeps metric scale)")
    parser.add_argument("--source-data", type=DataSpec.parse, metavar="KIND:ROOT",
                        help="held-out frames of the model's training domain, scored before and "
                             "after (what adapting costs there)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--real-steps", type=int, default=300,
                        help="steps of each real-pair fold (it tunes on a single frame)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--nproc", type=int, default=1, help="DDP processes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--real-data", type=Path, default=SHARED_DATA)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.model = str(resolve_artifact(args.model))
    # The backends take cpu or cuda[:N]; the trainer also "auto".
    args.eval_device = (
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    started = time.monotonic()
    results = {
        "model": args.model,
        "model_training": {k: v for k, v in read_metadata(args.model).training.items()
                           if k != "config"},
        "steps": args.steps, "real_steps": args.real_steps, "batch_size": args.batch_size,
        "lr": args.lr, "nproc": args.nproc, "mix_data": args.mix_data,
        "synthetic": synthetic_shift(args),
        "real": real_pairs(args),
    }
    results["seconds"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "finetune_gain.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "finetune_gain.md").write_text(table(results))
    _LOGGER.info("wrote %s\n%s", args.out / "finetune_gain.md", table(results))


if __name__ == "__main__":
    main()
