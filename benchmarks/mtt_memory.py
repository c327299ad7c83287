"""Peak memory of one MTT gradient: full unroll against the constant-memory (adjoint) unroll.

MNIST, ConvNet-3 (width 128, instance norm; ``--width 32`` for the width the CPU cells'
experts and students use), IPC 10, the whole synthetic set per student step, DSA off (so
both runs see identical inputs), at syn_steps 10 / 20 / 40 / 80. Each
measurement runs in its own process so that peak RSS (CPU) or the allocator peak (CUDA)
covers that measurement only; the figure is the peak minus the process's memory just
before the unroll (data, network, expert parameters). Writes
benchmarks/results/mtt-memory.json (mtt-memory-gpu.json on a GPU; another width adds
``-w<width>`` to the name) as a list of ``{"syn_steps", "full_unroll_peak_bytes",
"constant_peak_bytes"}``. Usage:

    .venv/bin/python -m benchmarks.mtt_memory [--steps 10 20 40 80] [--width 128] \\
        [--device auto]

A full unroll whose projected peak exceeds 80% of the machine's memory is not run (its
entry says so) rather than taking the machine down.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from benchmarks._common import add_output_options, output_name, run_main, save_rows


def measure(mode: str, steps: int, device: str, width: int = 128) -> dict[str, float]:
    from datadistill._device import peak_memory_bytes, reset_peak_memory, resolve_device
    from datadistill.functional.unroll import FlatParams, unroll_constant_memory, unroll_full
    from datadistill.models import create_model

    dev = resolve_device(device)
    g = torch.Generator().manual_seed(0)
    net = create_model(
        "convnet", channels=1, num_classes=10, image_size=(28, 28), generator=g, width=width
    )
    net = net.to(dev)
    for p in net.parameters():
        p.requires_grad_(False)
    layout = FlatParams.of(net)
    start = torch.cat([p.reshape(-1) for p in net.parameters()])
    target = start + 0.01 * torch.randn(start.shape, generator=g).to(dev)
    images = torch.randn(100, 1, 28, 28, generator=g).to(dev).requires_grad_(True)
    labels = torch.arange(10, device=dev).repeat_interleave(10)
    lr = torch.tensor(0.01, device=dev, requires_grad=True)

    def batch_fn(
        i: int, x: torch.Tensor, s: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return x, labels

    fn = unroll_full if mode == "full" else unroll_constant_memory
    fn(net, layout, start, target, images, None, lr, 1, batch_fn)  # warm-up allocations
    reset_peak_memory(dev)
    base = peak_memory_bytes(dev)
    t0 = time.perf_counter()
    fn(net, layout, start, target, images, None, lr, steps, batch_fn)
    seconds = time.perf_counter() - t0
    return {"peak": peak_memory_bytes(dev) - base, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", nargs="+", type=int, default=[10, 20, 40, 80])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--width", type=int, default=128, help="ConvNet-3 width (the paper's: 128)")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "STEPS"), help=argparse.SUPPRESS)
    add_output_options(
        ap, "mtt-memory[-wWIDTH][-gpu].json, by width and device, its command in .meta.json"
    )
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.device, args.width)))
        return
    from datadistill._device import resolve_device

    dev = resolve_device(args.device)
    stem = "mtt-memory" + ("" if args.width == 128 else f"-w{args.width}")
    stem += "" if dev.type == "cpu" else "-gpu"
    name = output_name(ap, args, f"{stem}.json")
    total = (
        torch.cuda.get_device_properties(dev).total_memory
        if dev.type == "cuda"
        else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    )
    rows = []
    per_step: float | None = None
    for steps in sorted(args.steps):
        row: dict[str, object] = {"syn_steps": steps}
        for mode in ("constant", "full"):
            if mode == "full" and per_step is not None and per_step * steps > 0.8 * total:
                row["full_unroll_peak_bytes"] = None
                row["full_unroll_note"] = f"not run: projected {per_step * steps / 2**30:.1f} GiB"
                continue
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.mtt_memory", "--device", args.device]
                + ["--width", str(args.width), "--child", mode, str(steps)],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                sys.exit(f"mtt_memory: the {mode} run at syn_steps {steps} failed:\n{out.stderr}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            key = "full_unroll_peak_bytes" if mode == "full" else "constant_peak_bytes"
            row[key] = int(res["peak"])
            row[key.replace("peak_bytes", "seconds")] = res["seconds"]
            if mode == "full":
                per_step = res["peak"] / steps
        rows.append(row)
        print(row, flush=True)
        settings = (
            f"MNIST-shaped inputs, ConvNet-3 w{args.width} instancenorm, IPC 10 (100 images "
            "per student step), one MTT gradient"
        )
        save_rows(rows, name, settings, args.device)  # after every row: a cut-off run keeps them


if __name__ == "__main__":
    run_main(main)
