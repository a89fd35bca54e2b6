#!/usr/bin/env python3
"""Copy a trained artifact into the package as a shipped model (``cnd_depth_ros/weights/NAME``).

Shipped weights live in git, which keeps every version, so they are stored small (``--storage
int8``: per-channel int8 convolution weights, ~1/4 of FP32) and replaced rarely. The script
checks the artifact loads, that its variant matches the name, measures how far the stored copy's
output moves from the original on a synthetic pair, and prints the package's weight budget.

    python scripts/ship_model.py runs/cnd_stereo/model cnd_stereo --storage int8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from cnd_depth_ros.models.artifact import (
    SHIPPED_MODELS,
    WEIGHTS_DIR,
    artifact_paths,
    load_artifact,
    save_artifact,
)

BUDGET_MB = 40.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path, help="trained artifact (NAME or its files)")
    parser.add_argument("name", choices=SHIPPED_MODELS, help="shipped model name")
    parser.add_argument("--storage", choices=("fp32", "fp16", "int8"), default="int8")
    args = parser.parse_args()

    model, metadata = load_artifact(args.artifact)
    if metadata.variant != args.name:
        parser.error(f"{args.artifact} is a {metadata.variant}, not a {args.name}")
    shipped = save_artifact(model, metadata, WEIGHTS_DIR / args.name, storage=args.storage)
    stored, _ = load_artifact(shipped)

    generator = torch.Generator().manual_seed(0)
    size = (1, 3, metadata.input_height, metadata.input_width)
    inputs = [torch.rand(size, generator=generator) for _ in range(2 if metadata.stereo else 1)]
    with torch.no_grad():
        reference, copy = model(*inputs), stored(*inputs)
    drift = float(((copy - reference).abs() / reference).max())
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.glob("*.safetensors")) / 1e6
    print(f"{shipped}: {artifact_paths(shipped)[0].stat().st_size / 1e6:.1f} MB "
          f"({args.storage}), largest relative output change {drift:.2e}")
    print(f"shipped weights in the package: {total:.1f} MB of the {BUDGET_MB:.0f} MB budget")
    return 0 if total <= BUDGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
