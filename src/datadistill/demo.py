"""`make demo`: distill scikit-learn's digits with DM at IPC 1 and 10 and print a table.

Runs on 2 CPU cores in under two minutes (set-up excluded). Every accuracy is the test
accuracy of fresh ConvNets trained under the `dc` protocol, mean ± std over seeds,
beside a random real subset of the same size and the full training split trained with
the same optimiser.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from rich.console import Console
from rich.table import Table

import datadistill as dd

DEMO_ITERATIONS = 200  # DM steps per IPC
DEMO_SEEDS = 3  # fresh evaluation networks per number
DEMO_BATCH_REAL = 64  # real images per class per DM step (digits has about 130 per class)
FULL_EPOCHS = 100  # the full-data reference: 100 epochs (500 SGD steps), one seed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=DEMO_ITERATIONS)
    parser.add_argument("--seeds", type=int, default=DEMO_SEEDS)
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    console = Console(width=max(100, Console().width))
    real = dd.load_dataset("digits")
    console.print(
        f"digits: {real.train_x.shape[0]} train / {real.val_x.shape[0]} val / "
        f"{real.test_x.shape[0]} test images, 8x8, 10 classes"
    )
    table = Table(
        title="DM on scikit-learn digits (test accuracy %, protocol dc, "
        f"ConvNet-3, {args.seeds} seeds)"
    )
    for col in (
        "method",
        "IPC",
        "distilled",
        "random subset",
        "full data",
        "distill s",
        "peak MiB",
        "artefact bytes",
    ):
        table.add_column(col, justify="right" if col != "method" else "left")
    with tempfile.TemporaryDirectory() as tmp:
        for ipc in args.ipc:
            t0 = time.perf_counter()
            distilled = dd.distill(
                real,
                "dm",
                ipc,
                seed=0,
                iterations=args.iterations,
                device="cpu",
                progress=True,
                batch_real=DEMO_BATCH_REAL,
            )
            seconds = time.perf_counter() - t0
            path = distilled.save(f"{tmp}/digits-dm-{ipc}.safetensors")
            report = dd.evaluate(
                distilled,
                real,
                "dc",
                seeds=args.seeds,
                device="cpu",
                cache_dir=f"{tmp}/cache",
                full_epochs=FULL_EPOCHS,
                full_seeds=1,
            )
            rows = report.results["convnet"]
            table.add_row(
                "dm",
                str(ipc),
                str(rows["distilled"]),
                str(rows["random"]),
                str(rows["full"]),
                f"{seconds:.1f}",
                f"{distilled.manifest['peak_memory_bytes'] / 2**20:.0f}",
                str(path.stat().st_size),
            )
    console.print(table)


if __name__ == "__main__":
    main()
