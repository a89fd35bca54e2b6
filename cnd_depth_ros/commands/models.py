"""List the networks: parameters against the papers' counts, inputs and output kind."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "names",
        nargs="*",
        type=_model_name,
        metavar="NAME",
        help="networks to list (all when none is named)",
    )


def _model_name(text: str) -> str:
    from cnd_depth_ros.models.registry import model_entry

    try:
        model_entry(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from cnd_depth_ros.models.registry import MODEL_NAMES, build_model, model_entry

    rows: list[dict[str, Any]] = []
    for name in args.names or MODEL_NAMES:
        entry = model_entry(name)
        # Shapes only: the meta device allocates no memory and runs no initialisers.
        with torch.device("meta"):
            model = build_model(name)
        parameters = sum(parameter.numel() for parameter in model.parameters())
        rows.append(
            {
                "name": name,
                "parameters": parameters,
                "paper_parameters": int(entry.paper_parameters),
                "ratio": round(parameters / entry.paper_parameters, 3),
                "inputs": "left, right" if model.is_stereo else "left",
                "output": model.output_kind,
                "source": entry.source,
            }
        )
    print(f"{'name':<12}{'params':>10}{'paper':>10}{'ratio':>8}  {'inputs':<13}output")
    for row in rows:
        ours, paper = row["parameters"] / 1e6, row["paper_parameters"] / 1e6
        print(
            f"{row['name']:<12}{ours:>9.2f}M{paper:>9.1f}M{row['ratio']:>8.2f}  "
            f"{row['inputs']:<13}{row['output']}"
        )
    print("inputs: RGB in [0, 1], N x 3 x H x W, H and W multiples of 16; output N x 1 x H x W")
    return {"models": rows}
