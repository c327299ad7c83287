"""Seconds per DM iteration at MNIST IPC 10 with the paper's settings.

256 real images per class, DSA on both sides, ConvNet-3 width 128 with instance norm.
Writes benchmarks/results/dm-throughput.json. Usage:

    .venv/bin/python -m benchmarks.dm_throughput [--iterations 10] [--compile auto]
"""

from __future__ import annotations

import argparse
import time

import torch

import datadistill as dd
from benchmarks._common import DATA, write
from datadistill.methods import create_method


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", default="auto")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dev = dd._device.prepare_device(dd._device.resolve_device(args.device))
    real = dd.load_dataset("mnist", root=DATA)
    m = create_method("dm", compile=args.compile)
    m.setup(real.to(dev), 10, torch.Generator().manual_seed(0), dev)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        m.step()
    warmup = time.perf_counter() - t0
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.iterations):
        m.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    s = (time.perf_counter() - t0) / args.iterations
    path = write(
        "dm-throughput.json" if dev.type == "cpu" else "dm-throughput-gpu.json",
        {
            "s_per_iteration": s,
            "warmup_seconds": warmup,
            "iterations_timed": args.iterations,
            "settings": "MNIST IPC 10, batch_real 256 per class, DSA, ConvNet-3 w128 instancenorm",
            "compile": args.compile,
            "device": str(dev),
            "cpu_malloc": "tuned" if dd._device.cpu_allocator_tuned() else "default",
        },
    )
    print(f"{s:.3f} s per DM iteration ({path})")


if __name__ == "__main__":
    main()
