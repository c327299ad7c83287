"""A hyperparameter sweep scored on the VALIDATION split (the test split is never read).

Each value of ``--grid NAME=V1,V2,...`` distills with a short time budget (the table's CPU
defaults plus ``--set`` overrides), then trains fresh networks on the result under an
evaluation protocol and scores them on the validation split carved from train (networks
seeded apart from the table's network seeds, as validation during distillation is). The
table's cells then use the chosen value; this is how CPU defaults that differ from the
papers' are picked without looking at test accuracy. Writes
``benchmarks/results/sweep-<dataset>-<method>-ipc<k>-<name>.json``. Usage:

    python -m benchmarks.sweep --dataset mnist --method mtt --ipc 1 \\
        --grid lr_img=1,10,100,1000 --budget 120

``zca`` and ``zca_eps`` (in ``--grid`` or ``--set``) are data options, not hyperparameters:
each value loads the dataset whitened or not, and the validation split is scored in the
same space the set was distilled in.

With ``--teacher TAG`` each set is relabelled (``dd.relabel``) by expert 0 of that expert
buffer before it is scored; ``teacher_epoch`` (-1: the last) and ``temperature`` (in
``--grid`` or ``--set``) choose its labels. With ``--method random`` this sweeps a teacher's
labels on a random real subset, without distilling anything:

    python -m benchmarks.sweep --dataset mnist --method random --ipc 10 \\
        --grid temperature=1,2,4 --set factor=2 --teacher teacher

``hard_weight`` mixes the one-hot hard labels into the teacher's (``dd.relabel``). With
``--artefact PATH`` the values relabel that one distilled set (its dataset, method and IPC)
instead of distilling a set each: a sweep of teacher options alone, for the price of its
evaluations. The set should be distilled as the table's cell is (its seed and budget):

    python -m benchmarks.sweep --artefact benchmarks/work/SET.safetensors \\
        --grid hard_weight=0,0.25,0.5 --set temperature=2 --teacher teacher
"""

from __future__ import annotations

import argparse
import ast
import re
import time
from pathlib import Path, PurePath

import datadistill as dd
from benchmarks._common import RESULTS, add_data_root, data_root, run_main, write
from benchmarks.experts import buffer_dir
from benchmarks.table import cpu_defaults, missing_buffer
from datadistill.evaluation import get_protocol
from datadistill.evaluation.evaluate import (
    VALIDATION_SEED_OFFSET,
    dataset_of,
    train_and_test,
    warn_if_other_data,
)
from datadistill.labels import Teacher

DATA_OPTIONS = ("zca", "zca_eps")  # passed to dd.load_dataset, not to dd.distill
TEACHER_OPTIONS = {  # dd.relabel's
    "teacher_epoch": "epoch",
    "temperature": "temperature",
    "hard_weight": "hard_weight",
}


def split_data_options(hp: dict[str, object]) -> tuple[dict[str, object], dict[str, object]]:
    """``hp`` split into ``dd.load_dataset``'s options and ``dd.distill``'s hyperparameters."""
    data = {k: v for k, v in hp.items() if k in DATA_OPTIONS}
    return data, {k: v for k, v in hp.items() if k not in DATA_OPTIONS}


def split_teacher_options(hp: dict[str, object]) -> tuple[dict[str, object], dict[str, object]]:
    """``hp`` split into ``dd.relabel``'s keyword arguments and the rest."""
    teacher = {TEACHER_OPTIONS[k]: v for k, v in hp.items() if k in TEACHER_OPTIONS}
    return teacher, {k: v for k, v in hp.items() if k not in TEACHER_OPTIONS}


def parse_value(text: str) -> object:
    """A ``--grid`` / ``--set`` value: a Python literal (``3``, ``0.5``, ``None``), ``true`` /
    ``false`` in any case (as the command line's ``--hp`` takes them), else the string."""
    if text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as a strategy name


def name_part(item: str) -> str:
    """A ``--set NAME=VALUE`` item as it names the result file: ``NAMEVALUE``, a path value
    (an expert buffer, say) by its last component, and any character a file name should not
    hold as ``_``."""
    key, _, value = item.partition("=")
    if "/" in value or "\\" in value:
        value = PurePath(value.replace("\\", "/")).name
    return re.sub(r"[^A-Za-z0-9._,+-]", "_", key + value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--method", default="mtt")
    ap.add_argument("--ipc", type=int, default=1)
    ap.add_argument("--grid", required=True, help="NAME=V1,V2,... one hyperparameter's values")
    ap.add_argument("--set", nargs="*", default=[], help="fixed overrides NAME=VALUE")
    ap.add_argument("--budget", type=float, default=120.0, help="distillation seconds per value")
    ap.add_argument("--protocol", default="dc")
    ap.add_argument("--seeds", type=int, default=2, help="networks trained per value")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--experts-tag",
        default="",
        help="mtt: the expert buffer of this tag (benchmarks.experts --tag)",
    )
    ap.add_argument(
        "--teacher",
        default=None,
        help="relabel each set with expert 0 of the buffer of this tag ('' the default one)",
    )
    ap.add_argument(
        "--artefact",
        default=None,
        help="relabel this distilled set for each value (teacher options only) instead of "
        "distilling; its dataset, method and IPC replace --dataset / --method / --ipc",
    )
    ap.add_argument("--tag", default="", help="appended to the result file's name")
    ap.add_argument("--force", action="store_true", help="replace an existing result file")
    add_data_root(ap)
    args = ap.parse_args()

    name, _, values = args.grid.partition("=")
    grid = [parse_value(v) for v in values.split(",") if v]
    if not name or not grid:
        ap.error("--grid needs NAME=V1,V2,...")
    given: dd.Distilled | None = None
    given_real: dd.RealData | None = None
    if args.artefact is not None:
        varied = [name, *(item.partition("=")[0] for item in args.set)]
        if (
            args.teacher is None
            or args.experts_tag
            or any(k not in TEACHER_OPTIONS for k in varied)
        ):
            ap.error(
                "--artefact sweeps teacher options of a set already distilled: pass --teacher "
                f"TAG, no --experts-tag, and only {', '.join(TEACHER_OPTIONS)} in --grid / --set."
            )
        try:  # the set, and its dataset with the same splits, normalisation and whitening
            given = dd.load(args.artefact)
            given_real = dataset_of(given, data_root(args))
        except dd.DatadistillError as exc:
            ap.error(str(exc))
        warn_if_other_data(given, given_real)  # scored with train_and_test, not evaluate
        args.dataset, args.method, args.ipc = given.info.name, given.manifest["method"], given.ipc
    # --set overrides name the file too, so that sweeps of one parameter under different
    # fixed settings do not overwrite each other; an existing file is evidence a later
    # sweep (another budget, machine, ...) must not replace unasked
    suffix = "".join(f"-{name_part(item)}" for item in args.set)
    suffix += f"-experts{args.experts_tag}" if args.experts_tag else ""
    suffix += f"-teacher{args.teacher}" if args.teacher is not None else ""
    suffix += f"-{Path(args.artefact).stem}" if args.artefact else ""
    suffix += f"-{args.tag}" if args.tag else ""
    out_name = f"sweep-{args.dataset}-{args.method}-ipc{args.ipc}-{name}{suffix}.json"
    if (RESULTS / out_name).exists() and not args.force:
        ap.error(f"{RESULTS / out_name} exists; pass --tag to keep both, or --force.")
    fixed: dict[str, object] = (
        cpu_defaults(args.method, args.ipc, args.dataset) if given is None else {}
    )
    for item in args.set:
        k, _, v = item.partition("=")
        fixed[k] = parse_value(v)
    if args.method == "mtt" and given is None and "buffer" not in fixed:
        fixed["buffer"] = buffer_dir(args.dataset, args.experts_tag)
        problem = missing_buffer(
            args.dataset, args.experts_tag, record_needed=False, buffer=str(fixed["buffer"])
        )
        if problem:
            ap.error(f"{problem}.")
    if args.teacher is None and split_teacher_options({**fixed, name: None})[0]:
        ap.error("teacher_epoch / temperature / hard_weight relabel the sets: pass --teacher TAG.")
    teacher_buffer = buffer_dir(args.dataset, args.teacher) if args.teacher is not None else ""
    teacher_problem = (
        missing_buffer(args.dataset, args.teacher, record_needed=False, buffer=teacher_buffer)
        if args.teacher is not None
        else ""
    )
    if teacher_problem:
        ap.error(f"--teacher {args.teacher!r}: {teacher_problem}.")
    for value in grid if args.teacher is not None else []:  # bad values before any budget
        try:
            Teacher(teacher_buffer, **split_teacher_options({**fixed, name: value})[0])  # type: ignore[arg-type]
        except dd.ConfigError as exc:
            ap.error(str(exc))

    datasets: dict[tuple[tuple[str, object], ...], dd.RealData] = {}

    def load(hp: dict[str, object]) -> tuple[dd.RealData, dict[str, object]]:
        """The dataset under ``hp``'s data options (loaded once each), and the rest of ``hp``."""
        options, rest = split_data_options(split_teacher_options(hp)[1])
        if given_real is not None:  # the dataset the given set came from
            return given_real, rest
        key = tuple(sorted(options.items()))
        if key not in datasets:
            datasets[key] = dd.load_dataset(args.dataset, root=data_root(args), **options)
        return datasets[key], rest

    def data_digest() -> str | None:
        """RawData.digest of the files read (the same under every data option)."""
        loaded = [given_real] if given_real is not None else list(datasets.values())
        return next((d.digest for d in loaded if d.digest is not None), None)

    # (sweeps before 2026-12-04 trained networks 0, 1, ...: the table's own seeds)
    network_seeds = [VALIDATION_SEED_OFFSET + s for s in range(args.seeds)]
    protocol = get_protocol(args.protocol)
    # One untimed iteration of every value first, so that compilation (minutes with a
    # cold inductor cache; a value that changes the compiled shapes, e.g. a multi-formation
    # factor, compiles again) is not charged to any value's budget. It also stops a value
    # the method rejects (e.g. an expert buffer of unwhitened data for zca=True) before any
    # budget is spent.
    for value in grid if given is None else []:
        real, hp = load({**fixed, name: value})
        dd.distill(
            real, args.method, args.ipc, seed=args.seed, device=args.device, iterations=1, **hp
        )
    rows = []
    for value in grid:
        real, hp = load({**fixed, name: value})
        t0 = time.perf_counter()
        distilled = given or dd.distill(
            real,
            args.method,
            args.ipc,
            seed=args.seed,
            device=args.device,
            time_budget=args.budget,
            **hp,
        )
        seconds = time.perf_counter() - t0 if given is None else given.manifest["distill_seconds"]
        if args.teacher is not None:
            relabel_options = split_teacher_options({**fixed, name: value})[0]
            distilled = dd.relabel(
                distilled,
                real,
                teacher_buffer,
                device=args.device,
                **relabel_options,  # type: ignore[arg-type]
            )
        images, labels, soft = distilled.training_set()  # decoded if multi-formation
        accs = [
            train_and_test(
                images,
                labels,
                real,
                protocol,
                protocol.arch,
                seed,
                soft_labels=soft,
                lr=distilled.lr if protocol.learned_lr else None,
                split="val",
                device=dd._device.resolve_device(args.device),
            )
            # never the table's network seeds (0, 1, 2): choosing a setting must not favour
            # the initialisations the test figures are then measured with
            for seed in network_seeds
        ]
        mean = sum(accs) / len(accs)
        rows.append(
            {
                name: value,
                "val_accs": accs,
                "val_mean": mean,
                "iterations": distilled.manifest.get("iterations"),
                "seconds": seconds,
                # the data the value was distilled and scored on (the loader's defaults
                # included, so that a ZCA row names its eps)
                "data": {"zca": real.info.zca, "zca_eps": real.info.zca_eps},
            }
        )
        print(f"{name}={value!r}: val {100 * mean:.2f}% ({rows[-1]['iterations']} it)", flush=True)
        # written after every value, so that an interrupted sweep keeps the values it
        # scored: beside the result (NAME.json.partial, which write_md does not read) until
        # the last value, so that a stopped --force run leaves a complete file as it was
        best = max(rows, key=lambda r: float(r["val_mean"]))  # type: ignore[arg-type]
        complete = len(rows) == len(grid)
        path = write(
            out_name if complete else out_name + ".partial",
            {
                "dataset": args.dataset,
                "data_digest": data_digest(),
                "method": args.method,
                "ipc": args.ipc,
                "param": name,
                "fixed": fixed,
                "budget_seconds": args.budget if given is None else None,
                "artefact": str(Path(args.artefact).resolve()) if given is not None else None,
                "protocol": args.protocol,
                "split": "val",
                "network_seeds": network_seeds,
                "teacher": teacher_buffer or None,
                "rows": rows,
                "best": best[name],
            },
        )
    (RESULTS / (out_name + ".partial")).unlink(missing_ok=True)
    print(f"best {name}={best[name]!r} on the validation split ({path})")


if __name__ == "__main__":
    run_main(main)
