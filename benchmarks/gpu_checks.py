"""The GPU checks of the foundation and parameter-matching issues, as one prepared run.

A task that is lent a GPU gets a few minutes of device time in all, so this script runs
the checks in order of value per device-second, each part in its own subprocess under its
own time cap, each writing its result file as soon as it is done. A part starts only if
the total budget still holds its minimum; whatever is left out is named at the end. After
every part the results so far are packed into ``--copy-to`` (the device tool's ``$OUT``:
one ``gpu-results.tar`` and the log), so a cut-off run still brings back what finished.

Parts, in their default order:

* ``smoke``: every user-facing path of the command-line tool, a few steps each on digits
  (multi-formation, k-means / herding starts, bf16 DC, MTT soft labels, parallel expert
  workers, relabel, evaluation, a resume on the CPU), so that a crash on CUDA outside the
  papers' recipes shows up first (``smoke-gpu.json``, see ``benchmarks.gpu_smoke``).
* ``memory``: MTT peak memory, full unroll against constant memory, syn_steps 10 / 20 /
  40 / 80 (``mtt-memory-gpu.json``).
* ``dc-step``: seconds per DC outer iteration at MNIST IPC 10 (the paper's width 128),
  ours against the reference-style per-class loop (``dc-throughput-gpu.json``).
* ``dm-mnist``, ``dm-fashion-mnist``: DM with the paper's defaults at IPC 10 (20000
  iterations, or as many as the part's cap allows: the file records how many), evaluated
  under the ``dsa`` protocol (1000 epochs with DSA, 3 seeds) beside the random subset
  (``<dataset>-dm-ipc10-gpu.json``).
* ``experts``: Fashion-MNIST experts with the paper's network (ConvNet-3 width 128, DSA,
  lr 0.01), fewer and shorter than the paper's 100 x 50 epochs
  (``fashion-mnist-experts-gpu.json``).
* ``mtt-1``, ``mtt-10``: MTT with the reference's CIFAR-10 distillation recipe (no ZCA) on
  Fashion-MNIST at IPC 1 and 10, evaluated under the ``mtt`` protocol (learned lr, 1000
  epochs with DSA) (``fashion-mnist-mtt-ipc{1,10}-gpu.json``).
* ``dm-step``: one DM iteration at MNIST IPC 10 with the paper's settings, ours against
  the reference-style step (``dm-throughput-gpu.json``); not asked for by the issues, so
  last.
* ``eval-step``: training an evaluation network eagerly against compiled
  (``eval-throughput-gpu.json``), which decides whether ``train_network``'s "auto" should
  compile on a GPU too; after ``dm-step`` for the same reason.
* ``class-groups``: peak memory of a DC match (also with batch norm) and a DM iteration
  with 10 and 100 classes,
  one pass over all classes against class groups (``class-groups-memory-gpu.json``);
  last, for the same reason.

On the device machine (its python3 has torch, safetensors, typer, rich, scikit-learn and
matplotlib, so nothing is installed there): first ``cp -r ../shared/data .devdata`` here
(git-ignored, about 41 MiB, so it fits the 64 MiB that travels), then one call of the
device tool with ``carry: [".devdata"]`` and a ``timeout_s`` a minute above the budget::

    PYTHONPATH=src DATADISTILL_DATA=.devdata PYTHONUNBUFFERED=1 python3 -m \\
        benchmarks.gpu_checks --budget 480 --copy-to $OUT

``--dry-run`` prints the worst-case plan and its commands without running anything.

Back here, unpack ``gpu-results.tar`` into ``benchmarks/results/`` and run
``python -m benchmarks.write_md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from benchmarks._common import RESULTS

# The reference MTT recipe for CIFAR-10 (syn_steps, expert_epochs, max_start_epoch, lr_lr),
# without ZCA whitening (so lr_img 100 rather than 1000).
MTT_RECIPE = {
    1: {"syn_steps": 50, "expert_epochs": 2, "max_start_epoch": 2, "lr_lr": 1e-7},
    10: {"syn_steps": 30, "expert_epochs": 2, "max_start_epoch": 20, "lr_lr": 1e-5},
}
MTT_COMMON = {"lr_img": 100.0, "lr_teacher": 0.01}
EXPERTS, EXPERT_EPOCHS, DM_ITERATIONS = 4, 25, 20000  # the defaults of --experts etc.


@dataclasses.dataclass(frozen=True)
class Part:
    name: str
    args: tuple[str, ...]  # ``python -m benchmarks.<args>``
    cap: float  # seconds this part may run at most
    minimum: float  # seconds below which starting it is pointless
    outputs: tuple[str, ...]  # result files (under benchmarks/results) it writes


def _hp(method: str, values: dict[str, object]) -> list[str]:
    return [a for k, v in values.items() for a in ("--hp", f"{method}:{k}={v}")]


def parts(experts: int, expert_epochs: int, dm_iterations: int) -> list[Part]:
    """All parts in their default order. Distillation parts stop at the iteration count or
    when their cap minus an evaluation allowance is spent, whichever comes first."""
    table = ("table", "--device", "cuda", "--paper", "--tag", "gpu", "--quiet", "--force")
    out = [
        # each step at most 100 s; the result file is rewritten after every step
        Part(
            "smoke",
            ("gpu_smoke", "--device", "cuda", "--timeout", "100"),
            150,
            60,
            ("smoke-gpu.json",),
        ),
        Part(
            "memory",
            ("mtt_memory", "--device", "cuda", "--force"),
            240,
            60,
            ("mtt-memory-gpu.json",),
        ),
        Part(
            "dc-step",
            ("dc_throughput", "--device", "cuda", "--width", "128", "--iterations", "3", "--force"),
            240,
            90,
            ("dc-throughput-gpu.json",),
        ),
    ]
    for ds in ("mnist", "fashion-mnist"):
        out.append(
            Part(
                f"dm-{ds}",
                (*table, "--datasets", ds, "--methods", "dm", "--ipcs", "10")
                + ("--iterations", str(dm_iterations), "--protocol", "dsa", "--full-epochs", "5"),
                420,
                150,
                (f"{ds}-dm-ipc10-gpu.json",),
            )
        )
    out.append(
        Part(
            "experts",
            ("experts", "--datasets", "fashion-mnist", "--device", "cuda", "--tag", "gpu")
            + ("--num", str(experts), "--epochs", str(expert_epochs), "--width", "128")
            # one process: the multi-process path ships the dataset through shared memory,
            # whose size on the device machine is unknown, and one GPU gains little from it
            + ("--workers", "1", "--force"),
            300,
            90,
            ("fashion-mnist-experts-gpu.json",),
        )
    )
    for ipc in (1, 10):
        hp = _hp("mtt", {**MTT_COMMON, **MTT_RECIPE[ipc]})
        out.append(
            Part(
                f"mtt-{ipc}",
                (*table, "--datasets", "fashion-mnist", "--methods", "mtt", "--ipcs", str(ipc))
                + ("--iterations", "5000", "--protocol", "mtt", "--full-epochs", "5", *hp),
                360,
                150,
                (f"fashion-mnist-mtt-ipc{ipc}-gpu.json",),
            )
        )
    out.append(  # not asked for by the issues, so last
        Part(
            "dm-step",
            ("dm_throughput", "--device", "cuda", "--iterations", "20", "--reference", "yes")
            + ("--force",),
            180,
            45,
            ("dm-throughput-gpu.json",),
        )
    )
    out.append(  # whether compile="auto" should compile evaluation training on a GPU too
        Part(
            "eval-step",
            ("eval_throughput", "--device", "cuda", "--epochs", "10", "--rounds", "3", "--force"),
            150,
            60,
            ("eval-throughput-gpu.json",),
        )
    )
    out.append(  # class groups on a GPU's budget (CIFAR-100-sized DC and DM passes)
        Part(
            "class-groups",
            ("class_groups_memory", "--device", "cuda", "--classes", "10", "100", "--force"),
            240,  # dc, dm and dc_bn (DC with batch norm), each mode in its own process
            60,
            ("class-groups-memory-gpu.json",),
        )
    )
    return out


EVAL_ALLOWANCE = 100.0  # seconds a distillation part keeps for its evaluation


def command(part: Part, seconds: float) -> list[str]:
    """The part's command line, its distillation budget fitted to ``seconds``."""
    cmd = [sys.executable, "-m", f"benchmarks.{part.args[0]}", *part.args[1:]]
    if part.args[0] == "table":
        cmd += ["--budget", f"{max(30.0, seconds - EVAL_ALLOWANCE):.0f}"]
    return cmd


def fit(part: Part, left: float) -> float | None:
    """Seconds ``part`` may run with ``left`` seconds of the budget, or None to skip it."""
    return None if left < part.minimum else min(part.cap, left)


def plan(selected: list[Part], budget: float) -> list[tuple[Part, float]]:
    """(part, seconds) for the parts that fit ``budget`` in order if each uses its whole cap
    (the worst case; the run itself re-fits each part to what is actually left)."""
    out, left = [], budget
    for p in selected:
        s = fit(p, left)
        if s is not None:
            out.append((p, s))
            left -= s
    return out


def fresh_outputs(part: Part, since: float) -> list[Path]:
    """The part's result files (and their .meta.json) written at or after ``since``
    (a wall-clock time), so that a file left from an earlier run is never reported."""
    paths = []
    for name in part.outputs:
        for path in (RESULTS / name, RESULTS / name.replace(".json", ".meta.json")):
            if path.exists() and path.stat().st_mtime >= since:
                paths.append(path)
    return paths


def run_part(cmd: list[str], seconds: float, log_path: Path) -> str:
    """Run ``cmd`` in its own process group, output to ``log_path`` (and echoed at the end
    if it failed); at the cap the whole group is killed, worker processes included."""
    with open(log_path, "w") as f:
        proc = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, env=os.environ.copy(), start_new_session=True
        )
        try:
            rc = proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return "cut off at its cap"
    return "exit 0" if rc == 0 else f"exit {rc}"


def pack(copy_to: Path | None, files: list[Path], log: list[str]) -> None:
    if copy_to is None:
        return
    copy_to.mkdir(parents=True, exist_ok=True)
    with tarfile.open(copy_to / "gpu-results.tar", "w") as tar:
        for path in files:
            tar.add(path, arcname=path.name)
    (copy_to / "gpu-checks.log").write_text("\n".join(log) + "\n")


def main() -> None:
    every = parts(EXPERTS, EXPERT_EPOCHS, DM_ITERATIONS)
    names = [p.name for p in every]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for all parts together")
    ap.add_argument("--parts", nargs="+", default=names, help=f"some of: {' '.join(names)}")
    ap.add_argument("--experts", type=int, default=EXPERTS, help="Fashion-MNIST experts to train")
    ap.add_argument("--expert-epochs", type=int, default=EXPERT_EPOCHS)
    ap.add_argument("--dm-iterations", type=int, default=DM_ITERATIONS)
    ap.add_argument("--copy-to", type=Path, default=None, help="folder for the packed results")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    args = ap.parse_args()
    unknown = [n for n in args.parts if n not in names]
    if unknown:
        ap.error(f"unknown part(s) {', '.join(unknown)}; choose from: {' '.join(names)}")
    chosen = [
        p
        for p in parts(args.experts, args.expert_epochs, args.dm_iterations)
        if p.name in args.parts
    ]
    if args.dry_run:
        print("worst case, each part using its whole cap (parts that end early leave more):")
        for p, s in plan(chosen, args.budget):
            print(f"{p.name} (up to {s:.0f} s): {' '.join(command(p, s))}")
        return
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_checks: no CUDA device here; run it on the device machine, or --dry-run.")
    logs = RESULTS.parent / "work" / "gpu-logs"
    logs.mkdir(parents=True, exist_ok=True)
    t_start, log, files = time.perf_counter(), [], []
    for p in chosen:
        left = args.budget - (time.perf_counter() - t_start)
        seconds = fit(p, left)
        if seconds is None:
            log.append(f"{p.name}: skipped, {left:.0f} s left < {p.minimum:.0f} s needed")
            print(log[-1], flush=True)
            continue
        cmd = command(p, seconds)
        print(f"== {p.name} (up to {seconds:.0f} s): {' '.join(cmd)}", flush=True)
        t0, since = time.perf_counter(), time.time() - 1.0
        part_log = logs / f"{p.name}.log"
        status = run_part(cmd, seconds, part_log)
        new = fresh_outputs(p, since)
        if not new:
            status += ", no result file"
            print(part_log.read_text()[-3000:], flush=True)  # the end of its output
        log.append(f"{p.name}: {status} in {time.perf_counter() - t0:.0f} s")
        print(log[-1], flush=True)
        files += [*new, part_log]
        pack(args.copy_to, files, log)
    print("\n".join(["== summary", *log]))


if __name__ == "__main__":
    main()
