"""Peak memory of a DC match and a DM iteration with many classes: one pass over all
classes against class groups.

A DC match computes, for every class, the gradient of the loss on a real batch (256
images per class, the paper's) and on the class's synthetic images; a DM iteration embeds
the same real batch and the synthetic images; DC with a batch-norm network (``dc_bn``,
ConvNet-3 with batch norm) first sets the statistics from 16 real images per class. Done
in one batched pass, the memory grows
with the number of classes: CIFAR-100 holds a hundred classes' images and activations at
once. Both methods split a pass into groups of classes that fit a budget
(``datadistill.methods.common.class_groups``), with the same gradients (tested) in a
fraction of the memory; the batch-norm statistics are measured a layer at a time over
chunks of images within the same budget (``batch_norm_statistics``).

Settings: 32x32 RGB images (random pixels from a fixed seed: memory and time do not
depend on their content), ConvNet-3 width 128 (the paper's; instance norm, batch norm
for ``dc_bn``), IPC 10, no DSA, the CPU
defaults otherwise; for each method and class count, each mode in its own process: one
match (DC) or iteration (DM) to warm up (compilation), then the peak of a second above
the process's memory before it (CPU: peak RSS; CUDA: allocator peak). Writes
benchmarks/results/class-groups-memory.json (-gpu on a GPU) as a list of ``{"method",
"classes", "groups", "one_pass_peak_bytes", "groups_peak_bytes", "one_pass_seconds",
"groups_seconds"}`` (``groups``: DC's real side, DM's synthetic half), its command,
machine and date in ``.meta.json``. Usage:

    .venv/bin/python -m benchmarks.class_groups_memory [--methods dc dm dc_bn] \\
        [--classes 10 100] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import WORK, add_output_options, output_name, run_main, save_rows

IMAGES_PER_CLASS = 300  # more than the 256 a match draws per class
WIDTH = 128
IPC = 10
SETTINGS = (
    f"32x32 RGB inputs, ConvNet-3 w{WIDTH} instancenorm (dc_bn: batchnorm), IPC {IPC}, 256 "
    "real images per class, no DSA, one DC match or DM iteration"
)


def fixture(classes: int) -> Path:
    """An npz of ``classes`` classes of 32x32 RGB random images (written once)."""
    path = WORK / "class-groups-memory" / f"random-{classes}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (classes * IMAGES_PER_CLASS, 32, 32, 3), dtype=np.uint8)
        y = np.repeat(np.arange(classes), IMAGES_PER_CLASS)
        np.savez(path, x=x, y=y)
    return path


def measure(method: str, mode: str, classes: int, device: str) -> dict[str, float]:
    from datadistill._device import peak_memory_bytes, reset_peak_memory, resolve_device
    from datadistill.data import load_dataset
    from datadistill.methods import create_method, dc, dm
    from datadistill.methods.common import class_groups

    dev = resolve_device(device)
    real = load_dataset(f"npz:{fixture(classes)}", None, val_size=0.0)
    if mode == "one-pass":  # every class in one pass, as before class groups
        for module in (dc, dm):  # the budget each method's setup reads
            module.pass_elements = lambda device: 1 << 62  # type: ignore[assignment]
    if method == "dc_bn":
        m = create_method("dc", width=WIDTH, arch="convnet_bn")
    else:
        m = create_method(method, width=WIDTH)
    m.setup(real, IPC, torch.Generator().manual_seed(0), dev)
    one = (lambda: m._match(0)) if method.startswith("dc") else m.step
    one()  # warm-up: compilation, allocator pools
    reset_peak_memory(dev)
    base = peak_memory_bytes(dev)
    t0 = time.perf_counter()
    one()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    if method.startswith("dc"):
        per_class = min(256, m._real_chunk(256)) * m._image_elements()
    else:
        per_class = IPC * WIDTH * 32 * 32
    groups = len(class_groups(classes, per_class, m.budget))
    return {"peak": peak_memory_bytes(dev) - base, "seconds": seconds, "groups": groups}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--methods", nargs="+", choices=["dc", "dm", "dc_bn"], default=["dc", "dm", "dc_bn"]
    )
    ap.add_argument("--classes", nargs="+", type=int, default=[10, 100])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--child", nargs=3, metavar=("METHOD", "MODE", "K"), help=argparse.SUPPRESS)
    add_output_options(ap, "class-groups-memory[-gpu].json, its command in .meta.json")
    args = ap.parse_args()
    if args.child:
        method, mode, k = args.child
        print(json.dumps(measure(method, mode, int(k), args.device)))
        return
    from datadistill._device import resolve_device

    dev = resolve_device(args.device)
    stem = "class-groups-memory" + ("" if dev.type == "cpu" else "-gpu")
    name = output_name(ap, args, f"{stem}.json")
    rows = []
    for method in args.methods:
        for classes in sorted(args.classes):
            fixture(classes)  # written before the children start
            row: dict[str, object] = {"method": method, "classes": classes}
            for mode in ("groups", "one-pass"):
                out = subprocess.run(
                    [sys.executable, "-m", "benchmarks.class_groups_memory"]
                    + ["--device", args.device, "--child", method, mode, str(classes)],
                    capture_output=True,
                    text=True,
                )
                if out.returncode != 0:
                    sys.exit(
                        f"class_groups_memory: {method} ({mode}, {classes} classes) failed:\n"
                        f"{out.stderr}"
                    )
                res = json.loads(out.stdout.strip().splitlines()[-1])
                key = mode.replace("-", "_")
                row[f"{key}_peak_bytes"] = int(res["peak"])
                row[f"{key}_seconds"] = res["seconds"]
                if mode == "groups":
                    row["groups"] = int(res["groups"])
            rows.append(row)
            print(row, flush=True)
            # after every row: a cut-off run keeps them
            save_rows(rows, name, SETTINGS, args.device)


if __name__ == "__main__":
    run_main(main)
