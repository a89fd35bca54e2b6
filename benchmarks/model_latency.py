"""CPU forward latency of every network: torch, batch 1, 256x160 (the paper's size), 2 threads.

Each net runs in eval mode under ``torch.inference_mode`` with random weights and batch-norm
statistics calibrated on the input (latency does not depend on the weights' values as long as
activations stay out of denormal range): ``--warmup`` untimed forwards, then the median wall and
CPU time of ``--repeats`` timed ones, plus the FLOP count of one forward (torch's
``FlopCounterMode``, a multiply-add counts 2; machine-independent). CPU time sums over threads;
on a shared machine the wall time also holds the neighbours' share. Prints a markdown table::

    .venv/bin/python benchmarks/model_latency.py --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnd_depth_ros.atomic_file import write_text_atomically
from cnd_depth_ros.models import MODEL_NAMES, build_model
from cnd_depth_ros.models.registry import model_entry


def _calibrate_batch_norm(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    """Give the random net the batch-norm statistics of its own activations.

    With fresh statistics (mean 0, variance 1) an untrained net's eval-mode activations shrink
    layer after layer into denormal floats, which CPUs process many times slower: the timing would
    measure that, not the network. A trained net's statistics keep activations in range, as these
    do.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration forwards
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(*inputs)
    model.eval()


def _time_forward(name: str, width: int, height: int, warmup: int, repeats: int) -> dict:
    model = build_model(name)
    left = torch.rand(1, 3, height, width)
    inputs = (left, torch.rand_like(left)) if model.is_stereo else (left,)
    _calibrate_batch_norm(model, inputs)
    with torch.inference_mode(), FlopCounterMode(display=False) as flops:
        model(*inputs)
    wall, cpu = [], []
    with torch.inference_mode():
        for _ in range(warmup):
            model(*inputs)
        for _ in range(repeats):
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            model(*inputs)
            wall.append(time.perf_counter() - wall_start)
            cpu.append(time.process_time() - cpu_start)
    entry = model_entry(name)
    return {
        "name": name,
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "paper_parameters": int(entry.paper_parameters),
        "gflop": round(flops.get_total_flops() / 1e9, 2),
        "wall_ms": round(1e3 * statistics.median(wall), 1),
        "cpu_ms": round(1e3 * statistics.median(cpu), 1),
        "paper_gtx1080_ms": entry.paper_latency_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=list(MODEL_NAMES), metavar="NAME")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=160)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3, help="untimed forwards per net")
    parser.add_argument("--repeats", type=int, default=20, help="timed forwards per net")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    unknown = sorted(set(args.models) - set(MODEL_NAMES))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODEL_NAMES)}")
    torch.set_num_threads(args.threads)

    rows = [
        _time_forward(name, args.width, args.height, args.warmup, args.repeats)
        for name in args.models
    ]
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "torch": torch.__version__,
        "size": f"{args.width}x{args.height}",
        "repeats": args.repeats,
    }
    print(f"torch {machine['torch']}, {args.threads} threads of {machine['cores']} cores, "
          f"batch 1, {machine['size']}, median of {args.repeats}")  # fmt: skip
    print("| network | parameters | paper | GFLOP | wall ms | CPU ms | paper GTX 1080 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        paper_ms = "-" if row["paper_gtx1080_ms"] is None else f"{row['paper_gtx1080_ms']}"
        print(
            f"| {row['name']} | {row['parameters'] / 1e6:.2f}M | "
            f"{row['paper_parameters'] / 1e6:.1f}M | {row['gflop']} | {row['wall_ms']} | "
            f"{row['cpu_ms']} | {paper_ms} |"
        )
    if args.json is not None:
        text = json.dumps({"machine": machine, "models": rows}, indent=2) + "\n"
        write_text_atomically(args.json, text)


if __name__ == "__main__":
    main()
