"""Expert trajectories for the trajectory-matching cells of the benchmark table.

Trains (or resumes) an expert buffer per dataset under benchmarks/work/experts/ and writes
benchmarks/results/<dataset>-experts.json with the recipe and the wall-clock seconds, which
the table reports in its own column (paid once, reused by every IPC). Usage:

    .venv/bin/python -m benchmarks.experts --datasets mnist fashion-mnist \\
        --num 4 --epochs 8 --width 32

``--tag gpu`` keeps a second buffer (and record) beside the CPU one, for the GPU cells.

The buffers are git-ignored (benchmarks/work/); their records in benchmarks/results/ are
committed. To re-run the published MTT cells, train the buffers they used first, with the
commands their records hold (each took 4-22 minutes on the 2-core machines):

    python -m benchmarks.experts --datasets mnist                        # MNIST IPC 10
    python -m benchmarks.experts --datasets mnist --num 20 --epochs 3 --tag ipc1  # IPC 1
    python -m benchmarks.experts --datasets fashion-mnist --num 3        # Fashion-MNIST
    python -m benchmarks.experts --datasets mnist --num 1 --tag teacher  # teacher labels
    python -m benchmarks.experts --datasets fashion-mnist --num 1 --epochs 10 \\
        --momentum 0.9 --tag teacher
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import datadistill as dd
from benchmarks._common import RESULTS, WORK, add_data_root, data_root, run_main, write
from datadistill.experts import ExpertRecipe, expert_file, train_experts


def tag_suffix(tag: str) -> str:
    """The suffix of tagged result files and buffers: "-gpu" for tag "gpu", none untagged."""
    return f"-{tag}" if tag else ""


def buffer_dir(dataset: str, tag: str = "") -> str:
    return str(WORK / "experts" / f"{dataset}{tag_suffix(tag)}")


def record_name(dataset: str, tag: str = "") -> str:
    """The result file recording how the buffer of ``tag`` was trained (and how long)."""
    return f"{dataset}-experts{tag_suffix(tag)}.json"


def expert_seconds(dataset: str, tag: str = "") -> float | None:
    path = RESULTS / record_name(dataset, tag)
    if not path.exists():
        return None
    return float(json.loads(path.read_text())["seconds"])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    ap.add_argument("--num", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (MTT's: 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=1, help="experts trained in parallel")
    ap.add_argument("--tag", default="", help="suffix of the buffer and record, e.g. gpu")
    ap.add_argument(
        "--force",
        action="store_true",
        help="replace an existing record (a buffer whose experts were all trained before "
        "keeps its record: it would resume in seconds)",
    )
    add_data_root(ap)
    args = ap.parse_args()
    for name in args.datasets:
        record = RESULTS / record_name(name, args.tag)
        if record.exists() and not args.force:
            ap.error(
                f"{record} exists (the record of a buffer's training); pass --tag NAME to "
                "train another buffer beside it, or --force to replace the record."
            )
    recipe = ExpertRecipe(width=args.width, epochs=args.epochs, lr=args.lr, momentum=args.momentum)
    for name in args.datasets:
        real = dd.load_dataset(name, root=data_root(args))
        t0 = time.perf_counter()
        out = buffer_dir(name, args.tag)
        # experts finished by an earlier run: their time is not in this run's seconds
        before = sum(expert_file(Path(out), i).exists() for i in range(args.num))
        buf = train_experts(
            real, out, args.num, recipe, seed=args.seed, workers=args.workers, device=args.device
        )
        seconds = time.perf_counter() - t0
        record = record_name(name, args.tag)
        if before == args.num and (RESULTS / record).exists():
            print(f"{name}: all {args.num} experts were trained before; {record} kept")
            continue
        write(
            record,
            {
                "dataset": name,
                "data_digest": real.digest,
                "num_experts": args.num,
                "recipe": recipe.to_dict(),
                "seconds": seconds,
                "experts_trained_before": before,  # resumed: seconds covers the rest only
                "final_val_accs": buf.val_accs(),
                "buffer": out,
                "device": args.device,
            },
        )
        print(f"{name}: {args.num - before} of {args.num} experts in {seconds:.0f} s")


if __name__ == "__main__":
    run_main(main)
