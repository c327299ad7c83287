"""Each command of the command-line tool, and the method options off the papers' paths, a
few steps each, on one device.

The test suite runs on the CPU only; this is the first thing a lent GPU runs
(``benchmarks.gpu_checks`` starts with it), so that a crash on CUDA in a path the papers'
runs do not touch (multi-formation sets, k-means and herding starts, bf16 DC, soft labels,
a teacher's relabelling, parallel expert workers, resuming a run on another device, the
contract checks of ``datadistill check``) shows up in the first minute rather than never.
Each step is one ``datadistill`` command on the digits set in its own process; a step that
fails is recorded with the last line of its error, and the steps after it still run when
they do not need its output. Writes
``benchmarks/results/smoke-gpu.json`` (``smoke-cpu.json`` with ``--device cpu``)::

    PYTHONPATH=src python -m benchmarks.gpu_smoke --device cuda
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import write

# name, then `datadistill` arguments (split on spaces, then "{work}" and "{device}" filled
# in per argument, so a path with spaces stays one argument), then the steps it needs
DIGITS = "--dataset digits --quiet --device {device}"
QUICK = "--protocol fast --eval-seeds 1 --no-full"
STEPS: list[tuple[str, str, tuple[str, ...]]] = [
    (
        "dm-mf2-kmeans",
        f"distill {DIGITS} --method dm --ipc 2 --iterations 3 {QUICK} --hp factor=2 "
        "--hp init=kmeans --out {work}/dm",
        (),
    ),
    (
        "dc-herding-auto-precision",
        f"distill {DIGITS} --method dc --ipc 2 --iterations 1 --no-evaluate --hp init=herding "
        "--hp precision=auto --hp outer_loop=2 --hp inner_loop=2 --out {work}/dc",
        (),
    ),
    (
        "dsa-l1-dream-validate-best",
        f"distill {DIGITS} --method dsa --ipc 1 --iterations 4 --no-evaluate --hp distance=l1 "
        "--hp sampling=representative --hp rep_interval=2 --hp batch_real=16 "
        "--validate-every 2 --select best-val --out {work}/dsa",
        (),
    ),
    (
        "experts-2-workers",
        "experts --dataset digits --device {device} --num 2 --epochs 2 --width 16 --workers 2 "
        "--out {work}/experts",
        (),
    ),
    (
        "mtt-soft-labels",
        f"distill {DIGITS} --method mtt --ipc 2 --iterations 3 {QUICK} "
        "--hp buffer={work}/experts --hp soft_labels=true --hp syn_steps=5 "
        "--hp max_start_epoch=1 --hp expert_epochs=1 --out {work}/mtt",
        ("experts-2-workers",),
    ),
    (
        "relabel",
        "relabel {work}/dm/distilled.safetensors --experts {work}/experts --temperature 2 "
        "--hard-weight 0.5 --device {device} --out {work}/relabelled.safetensors",
        ("dm-mf2-kmeans", "experts-2-workers"),
    ),
    (
        "evaluate-soft-labels",
        "evaluate {work}/relabelled.safetensors --protocol fast --seeds 1 --no-full "
        "--arch convnet,mlp --device {device} --json {work}/evaluation.json",
        ("relabel",),
    ),
    (
        "herding-coreset",
        f"distill {DIGITS} --method herding --ipc 2 {QUICK} --out {{work}}/herding",
        (),
    ),
    (
        "resume-here",
        f"distill {DIGITS} --method dm --ipc 1 --iterations 2 --no-evaluate --checkpoint-every 1 "
        "--hp compile=no --out {work}/resumed",
        (),
    ),
    (
        "resume-on-cpu",
        "distill --dataset digits --quiet --device cpu --method dm --ipc 1 --iterations 4 "
        "--no-evaluate --hp compile=no --resume --out {work}/resumed",
        ("resume-here",),
    ),
    (
        "export-npz",
        "export {work}/dm/distilled.safetensors --format npz --out {work}/dm.npz",
        ("dm-mf2-kmeans",),
    ),
    ("export-png", "export {work}/dm --format png --out {work}/png", ("dm-mf2-kmeans",)),
    ("show", "show {work}/mtt --out {work}/mtt.png", ("mtt-soft-labels",)),
    ("list", "list models", ()),
    # the contract checks on the device: runs compared to float rounding there
    ("check-method", "check dm --device {device} --hp width=16 --hp batch_real=16", ()),
    ("check-model", "check resnet18_bn --device {device} --channels 3 --image-size 32", ()),
]


def arguments(line: str, work: Path, device: str) -> list[str]:
    """A step's command line as arguments, with its placeholders filled in."""
    return [a.format(work=work, device=device) for a in line.split()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--only", nargs="+", default=None, help="run only these steps")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per step at most")
    args = ap.parse_args()
    result = f"smoke-{'gpu' if args.device.startswith('cuda') else 'cpu'}.json"
    work = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    rows: list[dict[str, object]] = []
    failed: set[str] = set()
    try:
        for name, line, needs in STEPS:
            if args.only is not None and name not in args.only:
                continue
            missing = [n for n in needs if n in failed or not any(r["step"] == n for r in rows)]
            if missing:
                rows.append({"step": name, "ok": False, "error": f"needs {', '.join(missing)}"})
                failed.add(name)
                print(f"{name}: skipped (needs {', '.join(missing)})", flush=True)
                continue
            t0 = time.perf_counter()
            cmd = [sys.executable, "-m", "datadistill.cli", *arguments(line, work, args.device)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                rc, err = proc.returncode, proc.stderr.strip()
            except subprocess.TimeoutExpired:
                rc, err = -1, f"timed out after {args.timeout:.0f} s"
            seconds = round(time.perf_counter() - t0, 1)
            row: dict[str, object] = {"step": name, "ok": rc == 0, "seconds": seconds}
            if rc != 0:
                row["error"] = (err.splitlines() or [f"exit {rc}"])[-1][:500]
                failed.add(name)
            rows.append(row)
            print(
                f"{name}: {'ok' if rc == 0 else 'FAILED ' + str(row['error'])} ({seconds} s)",
                flush=True,
            )
            write(result, {"device": args.device, "steps": rows})  # a cut-off run keeps these
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = write(result, {"device": args.device, "steps": rows})
    print(f"{sum(bool(r['ok']) for r in rows)}/{len(rows)} steps ok ({path})")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
