"""Helpers shared by the benchmark scripts: machine description, result files."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import datadistill as dd
from datadistill._device import MALLOC_ENV, cpu_allocator_tuned, native_bf16
from datadistill.errors import DatadistillError

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "work"  # artefacts and caches (git-ignored)
# where the scripts read MNIST / Fashion-MNIST from, unless --data-root says otherwise
DATA = Path(os.environ.get("DATADISTILL_DATA", ROOT.parent / "shared" / "data"))


def add_data_root(ap: argparse.ArgumentParser) -> None:
    """``--data-root PATH``: the folder of the datasets' files (see :func:`data_root`)."""
    ap.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder of the datasets' files, one subfolder per dataset (default: "
        f"$DATADISTILL_DATA, else ../shared/data beside the repository; now {DATA})",
    )


def data_root(args: argparse.Namespace) -> Path:
    """The data folder a script was given (``--data-root``), else :data:`DATA`."""
    root = getattr(args, "data_root", None)
    return Path(root) if root is not None else DATA


def add_output_options(ap: argparse.ArgumentParser, default: str) -> None:
    """``--out NAME`` and ``--force`` of a script that writes one result file (see
    :func:`output_name`); ``default`` says which name it writes otherwise."""
    ap.add_argument(
        "--out",
        default=None,
        help=f"result file under benchmarks/results (default {default}); another name "
        "keeps the published file",
    )
    ap.add_argument("--force", action="store_true", help="replace an existing result file")


def output_name(ap: argparse.ArgumentParser, args: argparse.Namespace, default: str) -> str:
    """The result file's name (``--out``, else ``default``), refused before anything is
    measured when it exists and ``--force`` was not given: a short or partial run must not
    replace a published figure by accident."""
    name = str(args.out or default)
    if Path(name).name != name or not name.endswith(".json") or name.endswith(".meta.json"):
        ap.error(f"--out takes a file name ending in .json (written to {RESULTS}); got {name!r}.")
    if (RESULTS / name).exists() and not args.force:
        ap.error(f"{RESULTS / name} exists; pass --out NAME.json to keep both, or --force.")
    return name


def check_cells(
    ap: argparse.ArgumentParser,
    datasets: list[str],
    methods: list[str],
    ipcs: list[int],
    protocol: str,
) -> None:
    """Refuse unknown dataset, method and protocol names and IPCs below 1 (``ap.error``)
    before a script spends any budget on the cells it was asked for."""
    try:
        for d in datasets:
            if ":" not in d:  # imagefolder:PATH / npz:PATH are checked when loaded
                dd.DATASETS.get(d)
        for method in methods:
            dd.METHODS.get(method)
        dd.PROTOCOLS.get(protocol)
    except DatadistillError as exc:
        ap.error(str(exc))
    if any(ipc < 1 for ipc in ipcs):
        ap.error(f"--ipcs takes integers >= 1; got {' '.join(map(str, ipcs))}.")


def exit_if_not_run(not_run: list[str]) -> None:
    """End a script that ran what it could with a non-zero status naming the cells that
    could not run (each already said why)."""
    if not_run:
        sys.exit(
            f"{Path(sys.argv[0]).name}: {len(not_run)} cell(s) could not run: {', '.join(not_run)}."
        )


def run_main(main: Callable[[], None]) -> None:
    """Run a script's ``main``: a user error (an unknown name, missing data files, a bad
    hyperparameter) ends it with its one sentence and exit status 2, without a traceback,
    as argparse does for a bad option. Result files already written stay."""
    try:
        main()
    except DatadistillError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)  # as argparse
        raise SystemExit(2) from None


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    # the vector instructions tell apart machines that share a model name (our 2-core
    # "AMD EPYC" machines were AVX2-only in stops 8-11 and AVX-512 with bf16 in stop 12)
    isa = torch.backends.cpu.get_cpu_capability()
    if native_bf16(torch.device("cpu")):
        isa += " + bf16"
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{os.cpu_count()} cores {cpu} ({isa}), {dev}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def stamp() -> dict[str, str]:
    return {
        "command": command(),
        "machine": machine(),
        # what the process ran with (the command names it only when chosen by environment)
        "cpu_malloc": "tuned" if cpu_allocator_tuned() else "default",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write(name: str, payload: dict[str, Any]) -> Path:
    """Write a result file whole or not at all (a temporary file, then renamed over)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**payload, **stamp()}, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def save_rows(rows: list[dict[str, Any]], name: str, settings: str, device: str) -> Path:
    """A result file that is a plain list of rows (``name`` under RESULTS), its settings,
    device, command, machine and date beside it in ``NAME.meta.json``."""
    path = RESULTS / name
    path.write_text(json.dumps(rows, indent=2) + "\n")
    write(name.removesuffix(".json") + ".meta.json", {"settings": settings, "device": device})
    print(f"wrote {path}")
    return path


def command() -> str:
    """How this script was run, as ``python -m benchmarks.NAME ARGS`` from the repository."""
    script = Path(sys.argv[0])
    head = (
        ["python", "-m", f"benchmarks.{script.stem}"]
        if script.parent.name == "benchmarks"
        else ["python", script.name]
    )
    # the allocator setting changes speed (iterations within a budget), never the maths;
    # a run that chose it says so, so that the command reproduces the run
    env = [f"{MALLOC_ENV}={os.environ[MALLOC_ENV]}"] if os.environ.get(MALLOC_ENV) else []
    return " ".join(shlex.quote(a) for a in [*env, *head, *sys.argv[1:]])


# how time_interleaved runs its sides, recorded in each throughput result
TIMING = "warmed, rotated"


def time_interleaved(
    fns: list[Callable[[], object]], iterations: int, device: torch.device | None = None
) -> list[list[float]]:
    """Seconds of each of ``fns`` per round, run in turn within each of ``iterations``
    rounds: interleaved, so that all see the same machine state (a shared 2-core machine's
    speed drifts by tens of percent over minutes). Each function first runs once untimed
    (its allocations and caches warm, as the others'), and round r starts with function
    r mod len(fns), so none always runs right after the same one. CUDA work is
    synchronised."""
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else None
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for r in range(iterations):
        for i in [(r + j) % len(fns) for j in range(len(fns))]:
            if sync:
                sync()
            t0 = time.perf_counter()
            fns[i]()
            if sync:
                sync()
            times[i].append(time.perf_counter() - t0)
    return times


def add_bf16_option(ap: argparse.ArgumentParser, what: str) -> None:
    """``--bf16 auto|yes|no``: whether a throughput script also times ``what``."""
    ap.add_argument(
        "--bf16",
        choices=["auto", "yes", "no"],
        default="auto",
        help=f"also time {what} (auto: where the device has native bf16)",
    )


def wants_bf16(choice: str, device: torch.device) -> bool:
    """``--bf16``'s answer on ``device``: "auto" where it computes bf16 natively."""
    return choice == "yes" or (choice == "auto" and native_bf16(device))
