"""What a run leaves behind: report.json, report.md, grid.png and curves.png."""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datadistill.artefact import Distilled
from datadistill.run import describe_change

if TYPE_CHECKING:
    from datadistill.evaluation import EvalReport
    from datadistill.run import RunConfig


def _figure(size: tuple[float, float]) -> Any:
    """A matplotlib figure drawn without pyplot: the process's backend (a notebook's inline
    one, say) is left as it is, and nothing stays registered once the figure is saved."""
    from matplotlib.figure import Figure

    return Figure(figsize=size)


# Up to this many classes the grid is one column of rows; more wrap into side-by-side
# blocks of rows, so that CIFAR-100's grid is not a strip a hundred rows tall.
GRID_MAX_ROWS = 20
GRID_MAX_CLASSES = 100


def grid_blocks(rows: int, cols: int) -> int:
    """How many side-by-side blocks ``rows`` classes of up to ``cols`` images wrap into:
    one up to :data:`GRID_MAX_ROWS` classes, else about as many as make the grid square."""
    if rows <= GRID_MAX_ROWS:
        return 1
    return max(2, round(math.sqrt(rows / cols)), -(-rows // (4 * GRID_MAX_ROWS)))


def save_grid(distilled: Distilled, path: str | Path, max_per_class: int = 10) -> Path:
    """An image grid: one row per class, up to ``max_per_class`` images each, un-normalised;
    more than :data:`GRID_MAX_ROWS` classes wrap into side-by-side blocks of rows, and only
    the first :data:`GRID_MAX_CLASSES` are shown (the title says so)."""
    pixels = distilled.pixels()  # (N, C, H, W)
    k = distilled.info.num_classes
    rows = min(k, GRID_MAX_CLASSES)
    # each row shows its class's own images, whatever order the set keeps them in
    members = [(distilled.labels == r).nonzero()[:, 0][:max_per_class] for r in range(rows)]
    cols = max(1, max(len(m) for m in members))
    blocks = grid_blocks(rows, cols)
    per_block = -(-rows // blocks)
    width = blocks * (cols + 1) - 1  # a spacer column before each later block's labels
    fig = _figure((width * 0.9 + 0.8, per_block * 0.9 + (0.3 if k > rows else 0)))
    axes = fig.subplots(per_block, width, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    names = distilled.info.class_names
    for r in range(rows):
        block, row = divmod(r, per_block)
        for c in range(len(members[r])):
            ax = axes[row][block * (cols + 1) + c]
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            img = pixels[int(members[r][c])].permute(1, 2, 0).numpy()
            if img.shape[-1] == 1:
                ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img)
            if c == 0:
                ax.set_ylabel(
                    names[r] if r < len(names) else str(r),
                    fontsize=7,
                    rotation=0,
                    ha="right",
                    va="center",
                )
    if k > rows:
        fig.suptitle(f"the first {rows} of {k} classes", fontsize=8)
    fig.tight_layout(pad=0.2)
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def save_curves(distilled: Distilled, path: str | Path) -> Path:
    """Distillation loss per iteration and validation accuracy (if measured)."""
    rows = distilled.manifest.get("loss_history") or []
    val = (distilled.manifest.get("validation") or {}).get("history") or []
    fig = _figure((9, 3.2))
    axes = fig.subplots(1, 2)
    if rows:
        its = [r["iteration"] for r in rows]
        losses = [r.get("loss", math.nan) for r in rows]
        axes[0].plot(its, losses, lw=0.8)
        axes[0].set_yscale("log" if all(v > 0 for v in losses if math.isfinite(v)) else "linear")
    else:
        axes[0].text(0.5, 0.5, "no iterations (coreset)", ha="center", va="center")
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("loss")
    if val:
        axes[1].plot([v[0] for v in val], [100 * v[1] for v in val], marker="o")
    else:
        axes[1].text(0.5, 0.5, "no validation (--validate-every 0)", ha="center", va="center")
        axes[1].set_xticks([])
        axes[1].set_yticks([])  # (not a 0-1 scale of percentages)
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("validation accuracy (%)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def plural(n: int, word: str) -> str:
    """``"1 seed"``, ``"3 seeds"``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def format_result(r: Mapping[str, Any] | None, count: bool = False) -> str:
    """A report.json result (``accs``, ``mean``, ``std`` as fractions) as "mean ± std" in
    %, with ``count`` also "(n=seeds)"; "-" where it was not trained. The one formatter of
    the CLI summary, report.md and BENCHMARKS.md."""
    if not r:
        return "-"
    text = f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f}"
    return f"{text} (n={len(r['accs'])})" if count else text


def write_report(
    out: Path,
    config: RunConfig,
    distilled: Distilled,
    evaluation: EvalReport | None,
    artefact_bytes: int,
) -> dict[str, Any]:
    """Write the report files into ``out`` and return the report dict."""
    m = distilled.manifest
    ev = evaluation.to_dict() if evaluation is not None else None
    by_arch = ev["results"] if ev else {}
    first: dict[str, Any] = next(iter(by_arch.values()), {})
    data = m.get("data")
    report: dict[str, Any] = {
        "dataset": distilled.info.name,
        # RawData.digest of the files read: the same digest, the same images and labels
        "data_digest": data.get("digest") if isinstance(data, dict) else None,
        "method": m.get("method"),
        "ipc": distilled.ipc,
        "factor": distilled.factor,  # multi-formation: ipc * factor**2 training images per class
        "seed": m.get("seed"),
        "protocol": config.protocol,
        "results": first,
        "results_by_arch": by_arch,
        "evaluation": ev,
        "iterations": m.get("iterations"),
        "stopped_by": m.get("stopped_by"),
        "hparams": m.get("hparams"),  # as at the end; resume_changes lists earlier values
        "resume_changes": m.get("resume_changes"),
        "selected": m.get("selected"),
        "validation": m.get("validation"),
        "distill_seconds": m.get("distill_seconds"),
        "validation_seconds": m.get("validation_seconds"),
        "peak_memory_bytes": m.get("peak_memory_bytes"),
        "artefact_bytes": artefact_bytes,
        "device": m.get("device"),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    save_grid(distilled, out / "grid.png")
    save_curves(distilled, out / "curves.png")
    lines = [
        f"# {report['method']} on {report['dataset']}, IPC {report['ipc']}",
        "",
        f"- seed {report['seed']}, {plural(report['iterations'], 'iteration')}, "
        f"{report['distill_seconds']:.1f} s distillation on {report['device']}, "
        f"peak memory {report['peak_memory_bytes'] / 2**20:.0f} MiB, "
        f"artefact {artefact_bytes} bytes",
        f"- synthetic state kept: {report['selected']} (selection never sees the test split)",
    ]
    if report["data_digest"]:
        lines.append(
            f"- data digest {report['data_digest']} (of the decoded train and test images and "
            "labels: the same digest, the same images and labels)"
        )
    if distilled.factor > 1:
        lines.append(
            f"- multi-formation, factor {distilled.factor}: each stored image holds "
            f"{distilled.factor**2} training images at 1/{distilled.factor} resolution "
            f"({distilled.ipc * distilled.factor**2} per class); the random real subset "
            f"has the same storage, {plural(distilled.ipc, 'full image')} per class"
        )
    for change in report["resume_changes"] or []:
        told = describe_change(change["changed"])
        lines.append(f"- resumed at iteration {change['iteration']} with {told}")
    if ev:
        full = (
            f"; full data trained {plural(ev['full_epochs'], 'epoch')}"
            + (f", {plural(ev['full_seeds'], 'seed')}" if ev.get("full_seeds") else "")
            if ev["full_epochs"] is not None
            else "; no full-data reference"
        )
        learned = " at the protocol lr"
        if ev.get("lr_learned"):
            learned = f" at the set's learned lr {ev['lr_distilled']:.4g}"
        lines += [
            f"- evaluation protocol `{ev['protocol']}`: "
            f"{plural(ev['protocol_config']['epochs'], 'epoch')}, "
            f"{plural(ev['seeds'], 'seed')} per number, test split{full}; the distilled set trained"
            f"{learned}, the baselines at the protocol lr",
        ]
        if report["method"] == "random":
            differ = (
                "by the luck of the draw"
                if distilled.factor == 1
                else "by the draw and by the set's multi-formation form (its tiles against "
                "whole images)"
            )
            lines.append(
                "- the `random` method's set is one draw of real images, trained once per "
                "network seed; the random real subset draws a new subset for each network "
                f"seed, so the two columns differ {differ}"
            )
        lines += [
            "",
            "| architecture | distilled | random real subset | full data |",
            "| --- | --- | --- | --- |",
        ]
        for arch, rows in by_arch.items():
            cells = [
                format_result(rows.get(k), count=True) for k in ("distilled", "random", "full")
            ]
            lines.append(f"| {arch} | {' | '.join(cells)} |")
    lines += ["", "![synthetic images](grid.png)", "", "![curves](curves.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return report
