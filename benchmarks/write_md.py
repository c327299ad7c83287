"""Build BENCHMARKS.md from benchmarks/results/*.json (run after the benchmark scripts).

.venv/bin/python -m benchmarks.write_md
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import datadistill as dd
from benchmarks._common import MALLOC_ENV, RESULTS, ROOT
from benchmarks.sweep import DATA_OPTIONS
from benchmarks.table import MF_TAG, SEED_TAG, cpu_defaults
from datadistill.evaluation.evaluate import Result
from datadistill.report import format_result
from datadistill.run import with_defaults

# Published test accuracy (%) at IPC 1 / 10, ConvNet-3, DC protocol (the DC and DSA papers;
# the MNIST / Fashion-MNIST coreset and random rows are the DC paper's table, approximate).
PUBLISHED: dict[tuple[str, str], dict[int, float]] = {
    ("mnist", "random"): {1: 64.9, 10: 95.1},
    ("mnist", "herding"): {1: 89.2, 10: 93.7},
    ("mnist", "kcenter"): {1: 89.3, 10: 84.4},
    ("fashion-mnist", "random"): {1: 51.4, 10: 73.8},
    ("fashion-mnist", "herding"): {1: 67.0, 10: 71.1},
    ("fashion-mnist", "kcenter"): {1: 66.9, 10: 54.7},
    ("mnist", "dc"): {1: 91.7, 10: 97.4},
    ("fashion-mnist", "dc"): {1: 70.5, 10: 82.3},
    ("mnist", "dsa"): {1: 88.7, 10: 97.8},
    ("fashion-mnist", "dsa"): {1: 70.6, 10: 84.6},
    # IDC (Kim et al. 2022): gradient matching with multi-formation, its own evaluation
    ("mnist", "idc"): {1: 94.2, 10: 98.4},
    ("fashion-mnist", "idc"): {1: 81.0, 10: 86.0},
}
METHOD_ORDER = ["random", "herding", "kcenter", "dm", "dc", "dsa", "mtt"]
# from this commit time on, benchmarks._common.time_interleaved warms every side once
# untimed and rotates the sides' order each round; earlier runs timed ours first in every
# round (the reference side's first timed call unwarmed)
ROTATED_SINCE = "2026-12-02T14:47:43+00:00"
# a tag of `benchmarks.reevaluate`'s files: eval-PROTOCOL, or SOURCE-eval-PROTOCOL for the
# sets of a tagged table run
EVAL_TAG = re.compile(r"(?:(.+)-)?eval-([a-z0-9_]+)")


def timing(run: dict[str, Any]) -> str:
    """How a throughput run interleaved its sides: as recorded, else by its date (runs
    before the field existed)."""
    if "timing" in run:
        return str(run["timing"])
    return "warmed, rotated" if run["date"] >= ROTATED_SINCE else "ours first"


TIMING_NOTE = (
    '`timing`: "warmed, rotated" runs time every side once untimed first and rotate the '
    'sides\' order each round; "ours first" runs (before '
    f"{ROTATED_SINCE[:10]} {ROTATED_SINCE[11:16]} UTC) ran ours first in every round."
)


def loader_default(param: str) -> object:
    """``dd.load_dataset``'s default for a data option (``zca``, ``zca_eps``), else None:
    the table and `make demo` load their datasets with the defaults."""
    if param not in DATA_OPTIONS:
        return None
    return inspect.signature(dd.load_dataset).parameters[param].default


def table_value(dataset: str, method: str, ipc: int, param: str) -> object:
    """The value of ``param`` the table's cells use for ``method`` at ``ipc`` on ``dataset``."""
    if param in DATA_OPTIONS:  # the table loads every dataset with load_dataset's defaults
        return loader_default(param)
    defaults = cpu_defaults(method, ipc, dataset)
    if param in defaults:
        value = defaults[param]
    else:
        value = getattr(dd.METHODS.get(method).hparams_class(), param, None)
    if method in ("dc", "dsa") and param in ("outer_loop", "inner_loop") and value == 0:
        from datadistill.methods.dc import default_loops  # 0: the paper's schedule by IPC

        return default_loops(ipc)[param == "inner_loop"]
    return value


def table_buffer(dataset: str, ipc: int) -> str:
    """The expert buffer the table's MTT cell at ``ipc`` on ``dataset`` uses."""
    from benchmarks.experts import buffer_dir
    from benchmarks.table import cell_experts_tag

    return buffer_dir(dataset, cell_experts_tag(dataset, ipc))


def demo_value(method: str, ipc: int, param: str) -> object:
    """The value of ``param`` `make demo` uses for ``method`` at ``ipc`` (DM on digits)."""
    from datadistill import demo

    if method == "dm" and param == "lr_img":
        return demo.DEMO_LR_IMG.get(ipc, demo.DEMO_LR_IMG_DEFAULT)
    if method == "dm" and param == "batch_real":
        return demo.DEMO_BATCH_REAL
    return loader_default(param)


def cell_order(key: tuple[str, int, str]) -> tuple[Any, ...]:
    """Sort key of a (dataset, IPC, method) cell: by dataset, IPC, then METHOD_ORDER."""
    dataset, ipc, method = key
    return (dataset, ipc, METHOD_ORDER.index(method) if method in METHOD_ORDER else 99)


def load() -> list[dict[str, Any]]:
    rows = []
    for p in sorted(RESULTS.glob("*-ipc*.json")):
        if p.name.startswith("sweep-") or "-experts" in p.name:
            continue  # validation sweeps have their own section; expert records are no cells
        rows.append(json.loads(p.read_text()))
    return rows


def cell_factor(r: dict[str, Any]) -> Any:
    """The cell's multi-formation factor (1: the plain pixel set)."""
    return (r.get("hparams") or {}).get("factor", 1)


def _published(r: dict[str, Any]) -> str:
    """The paper's figure for the cell; for a multi-formation DC / DSA / DM cell, IDC's."""
    if cell_factor(r) != 1:
        if r["method"] not in ("dc", "dsa", "dm"):
            return "-"  # a coreset or MTT in multi-formation form: no published figure
        pub = PUBLISHED.get((r["dataset"], "idc"), {}).get(r["ipc"])
        return "-" if pub is None else f"IDC: {pub}"
    pub = PUBLISHED.get((r["dataset"], r["method"]), {}).get(r["ipc"])
    return "-" if pub is None else str(pub)


def _seconds(v: Any) -> str:
    return f"{v:.0f}" if v else "-"


def teacher_seconds(r: dict[str, Any]) -> float | None:
    """What training a relabelled cell's teacher took (its buffer's record; cells before
    ``teacher_seconds`` was recorded are looked up by the buffer's name), or None."""
    teacher = r.get("teacher")
    if not teacher:
        return None
    if r.get("teacher_seconds"):
        return float(r["teacher_seconds"])
    from benchmarks.experts import expert_seconds

    name, prefix = Path(teacher["experts"]).name, f"{r['dataset']}-"
    return expert_seconds(r["dataset"], name[len(prefix) :] if name.startswith(prefix) else "")


def experts_seconds(r: dict[str, Any]) -> str:
    """The experts column: what training the cell's experts took, and its teacher's (paid
    once each); both where a trajectory-matching cell also has a teacher."""
    parts = [_seconds(r.get("expert_seconds"))] if r.get("expert_seconds") else []
    if r.get("teacher"):
        parts.append(f"teacher {_seconds(teacher_seconds(r))}")
    return " + ".join(parts) or "-"


def default_distance(method: str) -> str | None:
    """The matching distance a method uses by default (DC / DSA's ``ours``, DM's ``mean``),
    or None for a method without that hyperparameter."""
    from datadistill.methods import METHODS

    if method not in METHODS:
        return None
    return getattr(METHODS.get(method).hparams_class, "distance", None)


def method_label(r: dict[str, Any]) -> str:
    """The cell's method, naming a multi-formation factor (IDC's parameterisation), a
    matching distance other than the method's default and a distillation seed other than
    0."""
    hp, factor = r.get("hparams") or {}, cell_factor(r)
    notes = [f"multi-formation x{factor}"] if factor != 1 else []
    if "distance" in hp and hp["distance"] != default_distance(r["method"]):
        notes.append(f"distance {hp['distance']}")
    seed = distillation_seed(r)
    if seed != 0:
        notes.append(f"seed {seed}")
    teacher = r.get("teacher")
    if teacher:
        mixed = f", hard weight {teacher['hard_weight']:g}" if teacher.get("hard_weight") else ""
        notes.append(
            f"teacher labels: expert epoch {teacher['epoch']}, T {teacher['temperature']:g}" + mixed
        )
    return f"{r['method']} ({', '.join(notes)})" if notes else str(r["method"])


def table(rows: list[dict[str, Any]], tagged: bool = False) -> list[str]:
    """The cell table. ``tagged`` cells (e.g. the papers' recipes on a GPU) also name
    their hyperparameter defaults, protocol, full-data budget and machine, as these vary
    from row to row there."""
    cols: list[tuple[str, Any]] = [
        ("dataset", lambda r: r["dataset"]),
        ("IPC", lambda r: r["ipc"]),
        ("method", method_label),
    ]
    if tagged:
        cols += [
            ("defaults", lambda r: r.get("defaults", "-")),
            ("protocol", lambda r: r["protocol"]),
            ("seeds", lambda r: r.get("seeds", "-")),
        ]
    cols += [
        (
            "ours (test %)" if tagged else "ours (test %, 3 seeds)",
            lambda r: f"**{format_result(r['results'].get('distilled'))}**",
        ),
        (
            "random subset" if tagged else "random subset, same protocol",
            lambda r: format_result(r["results"].get("random")),
        ),
        (
            "full data",
            lambda r: (
                format_result(r["results"].get("full"))
                + (f" ({r.get('full_reference', '-')})" if tagged else "")
            ),
        ),
        ("published", _published),
        ("iterations", lambda r: r.get("iterations", "-")),
        ("distill s", lambda r: f"{r['distill_seconds']:.0f}"),
        ("experts s", experts_seconds),
        ("peak MiB (process)", lambda r: f"{r['peak_memory_bytes'] / 2**20:.0f}"),
    ]
    cols += (
        [("machine", lambda r: r["machine"])]
        if tagged
        else [("artefact bytes", lambda r: r["artefact_bytes"])]
    )

    out = [
        "| " + " | ".join(h for h, _ in cols) + " |",
        "| " + " | ".join("---" for _ in cols) + " |",
    ]
    for r in sorted(rows, key=lambda r: cell_order((r["dataset"], r["ipc"], r["method"]))):
        out.append("| " + " | ".join(str(f(r)) for _, f in cols) + " |")
    return out


def machines(rows: list[dict]) -> list[str]:
    """One line per machine that produced cells (cells from different machines had
    different amounts of work in the same wall-clock budget)."""
    by: dict[str, list[str]] = {}
    for r in rows:
        by.setdefault(r["machine"], []).append(f"{r['dataset']} {r['method']} {r['ipc']}")
    if len(by) == 1:
        return [f"- machine: {next(iter(by))}"]
    most = max(by, key=lambda m: len(by[m]))
    return [
        f"- machine: {m} ({len(c)} cells: all others)"
        if m == most
        else f"- machine: {m} ({len(c)} cells: {', '.join(c)})"
        for m, c in by.items()
    ]


def commands(rows: list[dict]) -> list[str]:
    """The commands that produced the cells, each with how many it produced (each cell's
    own command is also in its result file)."""
    by: dict[str, int] = {}
    for r in rows:
        by[r["command"]] = by.get(r["command"], 0) + 1
    return [f"- command: `{c}` ({n} cell{'s' if n > 1 else ''})" for c, n in by.items()]


def gib(v: Any) -> str:
    return f"{v / 2**30:.2f}" if v else "-"


def read_meta(stem: str) -> dict[str, Any]:
    """``<stem>.meta.json`` beside a result file that is a plain list of rows, or {}."""
    path = RESULTS / f"{stem}.meta.json"
    return json.loads(path.read_text()) if path.exists() else {}


def meta_footer(meta: dict[str, Any]) -> list[str]:
    """The command, machine and date lines under such a file's table."""
    return [
        "",
        f"- command: `{meta.get('command', '-')}`",
        f"- machine: {meta.get('machine', '-')}",
        f"- date: {meta.get('date', '-')}",
        "",
    ]


def mtt_memory_stems() -> list[str]:
    """The MTT memory result files (without ``.json``): the paper's width first, then other
    widths (``-w32``), each CPU file before its GPU one."""
    stems = [p.name.removesuffix(".json") for p in RESULTS.glob("mtt-memory*.json")]
    return sorted(
        (s for s in stems if not s.endswith(".meta")),
        key=lambda s: (s.removesuffix("-gpu") != "mtt-memory", s.removesuffix("-gpu"), s),
    )


def mtt_memory_section(stem: str) -> list[str]:
    """The MTT memory table of ``<stem>.json`` (CPU: process RSS; GPU: allocator peak)."""
    mm = RESULTS / f"{stem}.json"
    if not mm.exists():
        return []
    mem = json.loads(mm.read_text())
    meta = read_meta(stem)
    named = re.fullmatch(r"mtt-memory(?:-w(\d+))?(-gpu)?", stem)  # the default names
    gpu = bool(named and named.group(2)) or str(meta.get("device", "")).startswith("cuda")
    width = named.group(1) if named else None
    lines = [
        "## MTT: peak memory of one gradient, full unroll against constant memory"
        + (f" (width {width})" if width else "")
        + ("" if named else f" (`{stem}.json`)")
        + (" (GPU)" if gpu else ""),
        "",
        f"{meta.get('settings', '')}; peak "
        + ("allocated GPU memory" if gpu else "process memory")
        + " above the state before the",
        "unroll, each figure from its own process. Both give the same gradient (tested to",
        "1e-9 in float64). A full unroll projected above 80% of this machine's memory is",
        "not run.",
        "",
        "| syn_steps | full unroll GiB | constant memory GiB | constant / full | full s "
        "| constant s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in mem:
        fs = r.get("full_unroll_seconds")
        full = r.get("full_unroll_peak_bytes")
        ratio = f"{r['constant_peak_bytes'] / full:.3f}" if full else "-"
        lines.append(
            f"| {r['syn_steps']} | {gib(full)} "
            f"{'(' + r['full_unroll_note'] + ')' if r.get('full_unroll_note') else ''} | "
            f"{gib(r['constant_peak_bytes'])} | {ratio} | {f'{fs:.1f}' if fs else '-'} | "
            f"{r['constant_seconds']:.1f} |"
        )
    return lines + meta_footer(meta)


def class_groups_memory_section(stem: str) -> list[str]:
    """The class-group memory table of ``<stem>.json`` (CPU: process RSS; GPU: allocator
    peak)."""
    path = RESULTS / f"{stem}.json"
    if not path.exists():
        return []
    meta = read_meta(stem)
    gpu = stem.endswith("-gpu")
    lines = [
        "## DC and DM with many classes: peak memory, one pass over all classes against "
        "class groups" + (" (GPU)" if gpu else ""),
        "",
        f"{meta.get('settings', '')}; peak "
        + ("allocated GPU memory" if gpu else "process memory")
        + " of the second match or",
        "iteration above the state before it, each figure from its own process. One pass",
        "holds every class's images and activations at once; class groups (the default)",
        "take the classes in groups that fit a budget (`class_groups` in",
        "`datadistill.methods.common`; the groups counted are DC's real side's and DM's",
        "synthetic half's),",
        "with the same gradients (tested). `dc_bn` is DC with a batch-norm ConvNet, whose",
        "statistics from 16 real images per class are measured a layer at a time over chunks",
        "of images within the same budget (`batch_norm_statistics`; the same statistics,",
        "tested). With ten classes each mode runs the same single pass, so their difference",
        "there is the spread of the peak-memory reading.",
        "",
        "| method | classes | groups | one pass GiB | class groups GiB | groups / one pass "
        "| one pass s | class groups s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in json.loads(path.read_text()):
        one, grp = r["one_pass_peak_bytes"], r["groups_peak_bytes"]
        lines.append(
            f"| {r['method']} | {r['classes']} | {r['groups']} | {gib(one)} | {gib(grp)} | "
            f"{grp / one:.2f} | {r['one_pass_seconds']:.1f} | {r['groups_seconds']:.1f} |"
        )
    return lines + meta_footer(meta)


def tagged_section(rows: list[dict[str, Any]]) -> list[str]:
    """Cells run with ``--tag`` (e.g. the papers' recipes on a GPU), in their own table:
    their protocol, iterations and hyperparameters differ from the CPU table's."""
    out: list[str] = []
    for tag in sorted({r["tag"] for r in rows}):
        sel = [r for r in rows if r["tag"] == tag]
        evaluated = EVAL_TAG.fullmatch(tag)  # eval-PROTOCOL, or SOURCE-eval-PROTOCOL
        if evaluated:
            source, protocol = evaluated.groups()
            whose = f"The `{source}` runs'" if source else "The main table's own"
            intro = [
                f"{whose} distilled sets (the same artefacts, not distilled again)",
                f"trained under the `{protocol}` protocol (`python -m benchmarks.reevaluate`),",
                "beside a random real subset of the same size under that protocol. DSA's and",
                "DM's papers evaluate with DSA augmentation for 1000 epochs; DC's code augments",
                "MNIST (crop, scale, rotate; 1000 epochs), not Fashion-MNIST. A row whose",
                "iterations differ from its main-table cell was measured on an earlier set of",
                "that cell, distilled before the cell was re-run (its date below says when).",
            ]
            if protocol == "mtt":
                intro += [
                    "The `mtt` protocol is MTT's and DATM's evaluation: 1000 epochs with DSA",
                    "at each set's learned learning rate. The CPU sets learned theirs for the",
                    "width-32 expert ConvNets, while the ConvNet-3 evaluated here has width 128.",
                    "The random subset has no learned lr and trains at 0.01, as under `dsa`.",
                ]
        else:
            intro = [
                "Each row names its protocol, hyperparameter defaults (`paper`: the paper's",
                "own, no CPU defaults) and number of network seeds; the random subset is",
                "trained as in the main table, with the row's seeds and protocol.",
            ]
            if MF_TAG.fullmatch(tag):
                intro += [
                    "These sets are multi-formation (IDC's parameterisation, Kim et al. 2022;",
                    "`--hp METHOD:factor=F`): each stored image is an F x F grid of tiles, each",
                    "tile upsampled to a training image, so a network trains on IPC x F^2",
                    "images per class while the artefact holds IPC. The random subset has the",
                    "same storage: IPC full-resolution real images per class. They are not",
                    "the DM / DC papers' parameterisation, so the main table keeps its cells.",
                    "The published column is IDC's (gradient matching with multi-formation,",
                    "trained under its own protocol, with augmentation). A coreset row in",
                    "multi-formation form (`random (multi-formation xF)`) stores IPC x F^2",
                    "real images per class as tiles: what the parameterisation gives with no",
                    "distillation at all.",
                ]
                if "-" in tag:
                    intro += [
                        f"`{tag}` is a variant of these runs; the method column names",
                        "what differs from the plain multi-formation cell (e.g. IDC's `l1`",
                        "gradient distance).",
                    ]
        if any((r.get("hparams") or {}).get("distance") == "mmd" for r in sel):
            intro += [
                "`distance mmd`: DM matching each class's real and synthetic embeddings by",
                "a Gaussian-kernel MMD (M3D's objective, Zhang et al. 2024; five kernel",
                "widths of our choosing around the median squared distance of the real",
                "embeddings) instead of the paper's distance between their means, with the",
                "same CPU defaults, budget and evaluation as the `dm` cell of the same",
                "dataset, IPC and multi-formation factor (the main table's, or the `mf2`",
                "runs').",
            ]
        if any(r.get("teacher") for r in sel):
            intro += [
                "A row with teacher labels trained on soft labels from an expert network",
                "(`datadistill relabel`, `python -m benchmarks.table ... --teacher TAG`):",
                "each training image (each tile) carries the expert's logits at the named",
                "epoch over the temperature T (with a hard weight W: the log of W x its",
                "one-hot hard label + (1 - W) x their softmax), and the random subset beside",
                "it is labelled by the same expert, so both sides train the same way. The",
                "labels, not only the images, then carry what the set teaches: compare a row",
                "with its random subset, and with the same method's hard-label row. Its",
                "`experts s` names what training the teacher took (paid once, reused for",
                "every set).",
            ]
        if any(r["command"].startswith(f"{MALLOC_ENV}=tuned ") for r in sel):
            intro += [
                f"A command that starts with `{MALLOC_ENV}=tuned` ran with glibc told",
                "to keep freed memory for reuse: the same arithmetic, faster, so more",
                "iterations within the budget (README, CPU allocator).",
            ]
        out += [f"## Tagged runs: {tag}", "", *intro, "", *table(sel, tagged=True)]
        commands: dict[str, str] = {}  # one line per command (latest date)
        for r in sel:
            commands[r["command"]] = max(commands.get(r["command"], ""), r["date"])
        out += ["", *[f"- `{c}` ({d})" for c, d in commands.items()], ""]
    return out


# cells pooled across distillation seeds only when these agree with the main cell's; a
# difference in these is shown as "settings differ"
POOL_ONLY_ALIKE = ("protocol", "seeds", "defaults")
SAME_SETTINGS = ("hparams", "budget_seconds", "experts")


def settings(r: dict[str, Any], field: str) -> Any:
    """A cell's ``field``; its hparams completed with the method's defaults, so that a cell
    run before a hyperparameter was added compares equal to one that records its default."""
    if field != "hparams":
        return r.get(field)
    return with_defaults(dd.METHODS.get(r["method"]).hparams_class(), r.get("hparams"))


def distillation_seed(r: dict[str, Any]) -> int:
    """The seed a cell was distilled from: recorded, else its ``seedN`` tag, else 0 (the
    main table's cells, run before the field existed, all used the default seed 0)."""
    if r.get("seed") is not None:
        return int(r["seed"])
    m = SEED_TAG.fullmatch(r.get("tag") or "")
    return int(m.group(1)) if m else 0


def seeds_section(
    rows: list[dict[str, Any]], tagged: list[dict[str, Any]]
) -> tuple[list[str], list[dict[str, Any]]]:
    """Cells distilled again from other seeds (tags ``seedN``) pooled with the main table's
    cell: how much of a gap between two methods is the luck of one distilled set. Returns
    the lines and the seed cells that could not be pooled (no main cell, or another
    protocol, network-seed count or defaults), which belong with the other tagged runs."""
    main = {(r["dataset"], r["ipc"], r["method"]): r for r in rows}
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    left: list[dict[str, Any]] = []
    for r in tagged:
        if not SEED_TAG.fullmatch(r["tag"]):
            continue
        key = (r["dataset"], r["ipc"], r["method"])
        first = main.get(key)
        if first is None or any(r.get(f) != first.get(f) for f in POOL_ONLY_ALIKE):
            left.append(r)
            continue
        groups.setdefault(key, [first]).append(r)
    if not groups:
        return [], left
    out = [
        "## Several distilled sets per cell",
        "",
        "The main table distills each cell once, from seed 0. The cells below were also",
        "distilled from other seeds (`python -m benchmarks.table ... --seed N --tag seedN`: the",
        "same settings, budget, protocol and network seeds), so that a gap between two methods",
        "can be told apart from the luck of one distilled set. `over sets` is the mean ± std",
        "of the sets' means, `all networks` the mean ± std of every network trained (their",
        "count in brackets); std is the population one, as in the main table. `settings",
        "differ` marks a set distilled with other hyperparameters, budget or experts than",
        "the main cell (a cell re-run in between); `seed repeated` two sets from one seed.",
        "",
        "| dataset | IPC | method | per set: seed, test %, iterations, date | over sets "
        "| all networks |",
        "| --- | --- | --- | --- | --- | --- |",
    ]

    for key in sorted(groups, key=cell_order):
        sets = sorted(groups[key], key=distillation_seed)
        means = [r["results"]["distilled"]["mean"] for r in sets]
        accs = [a for r in sets for a in r["results"]["distilled"]["accs"]]
        per_set = "; ".join(
            f"{distillation_seed(r)}: {100 * m:.2f} "
            f"({r.get('iterations', '-')} it, {r['date'][:10]})"
            for r, m in zip(sets, means, strict=True)
        )
        if any(settings(r, f) != settings(sets[0], f) for r in sets for f in SAME_SETTINGS):
            per_set += " (settings differ)"
        if len({distillation_seed(r) for r in sets}) < len(sets):
            per_set += " (seed repeated)"
        # Result: the evaluation's own mean, population std and format
        out.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {per_set} | **{Result(tuple(means))}** | "
            f"{Result(tuple(accs))} ({len(accs)}) |"
        )
    pooled = [r for key in groups for r in groups[key][1:]]
    out += [""] + [f"- `{r['command']}` ({r['machine']}, {r['date']})" for r in pooled] + [""]
    return out, left


REPRODUCING = [
    "**Reproducing a figure.** The commands below are run from the repository with its",
    "environment (`.venv/bin/python -m benchmarks.NAME`, or `python` once",
    "`.venv/bin/activate` is sourced).",
    "",
    "- Data: the scripts read MNIST and Fashion-MNIST from `--data-root`, else",
    "  `$DATADISTILL_DATA`, else `../shared/data` beside the repository (the original IDX",
    "  files, one folder per dataset; where they are missing, the loader tries the official",
    "  download and otherwise says which files to put where).",
    "- The published result files are committed: a recorded command skips a cell whose",
    "  file exists, and `--force` replaces it. To re-run a cell beside it, add a tag:",
    "  `python -m benchmarks.table --datasets mnist --methods dm --ipcs 1 --tag repro`",
    "  writes `mnist-dm-ipc1-repro.json` (the throughput and memory scripts take `--out",
    "  NAME.json`; the sweeps refuse to replace a file without `--tag` or `--force`).",
    "  `write_md` lists every table, sweep and re-evaluation file it finds, so a tagged run",
    "  appears here in its own section until its file is deleted; a throughput or memory",
    "  file written with `--out` is listed beside the published one when its name starts",
    "  as theirs does (`dm-throughput-repro.json`). A recorded command is the one that",
    "  ran, and may",
    "  have covered more cells than the file's (`--methods mtt dm dsa`): to re-run one",
    "  cell, give its `--datasets`, `--methods` and `--ipcs` alone.",
    "- The first cell of a dataset also trains the random-subset and full-data baselines",
    "  (minutes on 2 cores), cached in `benchmarks/work/cache` for every later cell.",
    "- MTT cells need expert buffers, which are git-ignored (`benchmarks/work/experts`):",
    "  train them first with the commands in `python -m benchmarks.experts --help` (MNIST",
    "  IPC 1 uses its own buffer of 20 experts). A tag other than `seedN`, `mfN` or",
    "  `teacher` makes an MTT cell look for a buffer of that tag.",
    "- A cell distils for a wall-clock budget, so its iteration count depends on the",
    "  machine; `--iterations N` fixes the work instead (runs with the same seed and",
    "  iterations give the same set on CPU).",
    "",
]


def main() -> None:
    import argparse

    argparse.ArgumentParser(
        description="Build BENCHMARKS.md from the result files in benchmarks/results/ "
        "(run after the benchmark scripts)."
    ).parse_args()
    every = load()
    rows = [r for r in every if not r.get("tag")]
    tagged = [r for r in every if r.get("tag")]
    lines = [
        "# Benchmarks",
        "",
        "Every figure here was produced by a script under `benchmarks/`; each result file in",
        "`benchmarks/results/` records its exact command, machine and date. Regenerate this",
        "page with `.venv/bin/python -m benchmarks.write_md`.",
        "",
        *REPRODUCING,
    ]
    tp = RESULTS / "dm-throughput.json"
    if tp.exists():
        t = json.loads(tp.read_text())
        agg = "median" if "ours_s_each" in t else "mean"
        lines += [
            "## DM step time",
            "",
            f"One DM iteration at MNIST IPC 10 with the paper's settings ({t['settings']}):",
            f"**{t['s_per_iteration']:.2f} s** ({agg} of {t['iterations_timed']} iterations after "
            f"warm-up; compile={t['compile']}). The issue's figures, on the machine it was",
            "written for: about 3.4 s for the reference implementation, target 1.2 s (2.8x).",
        ]
        if "reference_s_per_iteration" in t:
            lines += [
                f"Same process and machine, interleaved iteration by iteration ({timing(t)}):",
                "a reference-style",
                "step (one eager forward per class of 256 real and the synthetic images, each",
                "with its own DSA draw) takes "
                f"**{t['reference_s_per_iteration']:.2f} s**, so ours is **{t['speedup']:.2f}x**",
                "faster.",
            ]
        if "bf16_real_s_per_iteration" in t:
            b = t["bf16_real_s_per_iteration"]
            ratio = (
                f", {t['reference_s_per_iteration'] / b:.2f}x the reference-style step"
                if "reference_s_per_iteration" in t
                else ""
            )
            native = "bf16" in t["machine"]
            lines += [
                "The same step with the real half's forward in bfloat16 (`real_precision=",
                '"bfloat16"`, or `"auto"` where the device has native bf16 instructions'
                + (", as this" if native else "; this CPU has none, so bf16 is emulated"),
                ("CPU does; " if native else "here; ")
                + "the synthetic half, its gradient and the loss stay float32), timed in",
                f"the same interleaving: **{b:.2f} s**{ratio}.",
            ]
            for sweep in sorted(RESULTS.glob("sweep-mnist-dm-ipc10-real_precision*.json")):
                sw = json.loads(sweep.read_text())
                got = ", ".join(
                    f"{r['real_precision']} {100 * r['val_mean']:.2f}% ({r['iterations']} it)"
                    for r in sw["rows"]
                )
                budget, seeds = sw["budget_seconds"], len(sw["rows"][0]["val_accs"])
                held = ", ".join(f"{k}={v}" for k, v in sw["fixed"].items()) or "the paper's"
                lines += [
                    f"Its accuracy, distilling MNIST IPC 10 for {budget:.0f} s on "
                    f"{sw['machine'].split(', no GPU')[0]} (settings {held}), on the",
                    f"validation split (`{sw['protocol']}` protocol, {seeds} seeds, "
                    f"{sw['date'][:10]}): {got}.",
                ]
        earlier = [
            json.loads(p.read_text())
            for p in sorted(RESULTS.glob("dm-throughput-*.json"))
            if not p.stem.endswith("-gpu")
        ]
        for e in earlier:  # the same script on the machines of earlier stops, kept as files
            bf16 = (
                f", real half in bf16 {e['bf16_real_s_per_iteration']:.2f} s"
                if "bf16_real_s_per_iteration" in e
                else ""
            )
            ref = (
                f" against {e['reference_s_per_iteration']:.2f} s reference-style "
                f"({e['speedup']:.2f}x)"
                if "reference_s_per_iteration" in e
                else ""
            )
            lines += [
                f"On {e['machine'].split(', no GPU')[0]} ({e['date'][:10]}, {timing(e)}): "
                f"{e['s_per_iteration']:.2f} s{ref}{bf16}."
            ]
        lines += [
            "",
            TIMING_NOTE,
            "",
            f"- command: `{t['command']}`",
            f"- machine: {t['machine']}",
            f"- date: {t['date']}",
            "",
        ]
    gp = RESULTS / "dm-throughput-gpu.json"
    if gp.exists():
        t = json.loads(gp.read_text())
        ref = (
            f"; the reference-style step {t['reference_s_per_iteration'] * 1000:.1f} ms, "
            f"**{t['speedup']:.2f}x**"
            if "reference_s_per_iteration" in t
            else ""
        )
        lines += [
            f"On a GPU ({t['machine']}, {t['date']}): **{t['s_per_iteration'] * 1000:.1f} ms** "
            f"per iteration, same settings{ref} (`{t['command']}`).",
            "",
        ]
    smoke = RESULTS / "smoke-gpu.json"
    if smoke.exists():  # benchmarks.gpu_smoke: every command-line path, a few steps, on CUDA
        sm = json.loads(smoke.read_text())
        ok = [r["step"] for r in sm["steps"] if r["ok"]]
        failed = [f"{r['step']}: {r['error']}" for r in sm["steps"] if not r["ok"]]
        lines += [
            "## The command-line tool on a GPU",
            "",
            f"Each path of `datadistill`, a few steps on digits (`{sm['command']}`, "
            f"{sm['machine']}, {sm['date']}): {len(ok)} of {len(sm['steps'])} ran "
            f"({', '.join(ok) or 'none'}).",
            *(["", "Failed:", "", *[f"- {f}" for f in failed]] if failed else []),
            "",
        ]
    dct = RESULTS / "dc-throughput.json"
    if dct.exists():
        lines += ["## DC / DSA outer iteration: ours against a reference-style per-class loop", ""]
        lines += [
            "Same process, same machine, same outer iteration (the reference's schedule at IPC",
            "10: 10 matches, 50 network epochs on the synthetic set between matches). Ours: one",
            "forward / backward over all classes with per-class weight copies, real side in",
            "compiled chunks of 16 images per class, compiled network training. Loop: one",
            "forward and `autograd.grad` per class and side, eager training, as the reference",
            "code does it. The two alternate iteration by iteration (the shared machine's",
            "speed drifts by tens of percent over minutes) and each figure is the median of",
            "the timed iterations. On a device with native bfloat16, the same iteration with",
            '`precision="bfloat16"` (the real-side gradients and the network training',
            "autocast to bf16; the synthetic side, the parameters and the matching loss in",
            "float32) is timed in the same interleaving.",
            TIMING_NOTE,
            "",
            "| settings | machine, date | timing | ours s / outer | loop s / outer | speed-up "
            "| ours bf16 s / outer | bf16 speed-up |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("dc-throughput*.json"))]
        for t in runs:
            bf16 = (
                f"{t['bf16_s_per_outer']:.2f} | {t['bf16_speedup']:.2f}x"
                if "bf16_s_per_outer" in t
                else "- | -"
            )
            lines.append(
                f"| {t['settings']} | {t['machine'].split(',')[0]}, {t['date'][:10]} | "
                f"{timing(t)} | "
                f"{t['ours_s_per_outer']:.2f} | "
                f"{t['loop_s_per_outer']:.2f} | {t['speedup']:.2f}x | {bf16} |"
            )
        lines += [""]
        for t in runs:
            lines.append(f"- `{t['command']}` ({t['machine']}, {t['date']})")
        lines += [""]
    for ep in sorted(RESULTS.glob("eval-throughput*.json")):
        t = json.loads(ep.read_text())
        lines += [
            "## Training an evaluation network: eager against compiled"
            + (" (GPU)" if ep.stem.endswith("-gpu") else ""),
            "",
            'Every accuracy trains fresh networks on a set. `train_network(compile="auto")`',
            "compiles a long ConvNet training on CPU (at least "
            f"{t['auto_threshold_pixels'] / 1e6:g} M input pixels: images x epochs x height x",
            "width) where the compiler works: the same arithmetic in fused kernels. Same",
            f"process, the `{t['protocol']}` protocol's optimiser, {t['arch']} on MNIST images,",
            f"the two sides interleaved, medians of {t['rounds']} runs; the first compiled run,",
            "which includes the compilation (once per process and input shape), apart. "
            f"Settings: {t.get('settings', 'ConvNet-3 width 128')}.",
            "",
            "| case | images | epochs | eager s | compiled s | speed-up | first compiled run s |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for c in t["cases"]:
            lines.append(
                f"| {c['case']} | {c['images']} | {c['epochs']} | {c['eager_s']:.2f} | "
                f"{c['compiled_s']:.2f} | {c['speedup']:.2f}x | {c['first_compiled_s']:.1f} |"
            )
        lines += ["", f"- `{t['command']}` ({t['machine']}, {t['date']})", ""]
    for stem in mtt_memory_stems():
        lines += mtt_memory_section(stem)
    for stem in ("class-groups-memory", "class-groups-memory-gpu"):
        lines += class_groups_memory_section(stem)
    if rows:
        first = rows[0]
        lines += [
            "## MNIST and Fashion-MNIST, IPC 1 and 10",
            "",
            "Protocol: distillation with a wall-clock budget of "
            f"{first.get('budget_seconds') or 600:.0f} s per cell on the machines below "
            "(coresets need no iterations), then fresh ConvNet-3 networks (width 128, instance",
            "norm, average pooling) trained under the `dc` protocol (SGD lr 0.01, momentum 0.9,",
            "weight decay 5e-4, batch 256, 300 epochs, lr x0.1 at half, no augmentation), 3 seeds,",
            "tested once on the test split. The random real subset is trained the same way with",
            "the same seeds, and draws a new subset for each seed; the `random` method's row is",
            "one subset (distillation seed 0) trained with the 3 network seeds, so at IPC 1 the",
            "two differ by the luck of a single draw of one image per class.",
            "Cells were re-run when the machine or their settings changed (settings chosen on",
            "the validation split, never on these scores); each row is the cell's latest run",
            "whatever its score, and earlier runs are reported in the notes below.",
            "`peak MiB (process)` is the distilling process's peak resident memory, the loaded",
            "dataset included (on CPU; a GPU run reports its allocator's peak).",
            "The full-data reference is "
            f"{first.get('full_reference', '-')} of the same optimiser (CPU cost).",
            "`published` is the paper's figure (ConvNet-3, DC protocol): the DC paper (Zhao et",
            "al., ICLR 2021) for random, herding, k-center and DC, the DSA paper (Zhao and",
            "Bilen, ICML 2021) for DSA; the DM and MTT papers report no MNIST / Fashion-MNIST",
            "figures.",
            "",
            *table(rows),
            "",
            *commands(rows),
            *machines(rows),
            f"- dates: {min(r['date'] for r in rows)} to {max(r['date'] for r in rows)}",
            "",
        ]
    seed_lines, unpooled = seeds_section(rows, tagged)
    lines += seed_lines
    lines += tagged_section([r for r in tagged if not SEED_TAG.fullmatch(r["tag"])] + unpooled)
    sweeps = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("sweep-*.json"))]
    if sweeps:
        lines += [
            "## Hyperparameter sweeps on the validation split",
            "",
            "How the table's CPU defaults that differ from the papers' were chosen: each value",
            "distills for a short budget, then fresh networks are trained under the named",
            "protocol and scored on the validation split carved from train (never on test).",
            "A row whose `fixed` names a `set` relabelled that one set, distilled before, for",
            "each value of a teacher option; its `budget s` is what distilling that set took.",
            "`table` marks the value the table's cells use (`demo`: `make demo`'s, for digits);",
            "`fixed` lists the other settings the sweep held.",
            "",
            "| dataset | method | IPC | fixed | budget s | value | iterations | val % | "
            "protocol, seeds | date |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for sw in sweeps:
            fixed = ", ".join(
                f"{k}={Path(str(v)).name if k == 'buffer' else v}"
                for k, v in sw["fixed"].items()
                if k != sw["param"]
            )
            if sw.get("teacher"):  # the sets were relabelled by this buffer's expert 0
                fixed += f"{', ' if fixed else ''}teacher={Path(sw['teacher']).name}"
            budget = sw["budget_seconds"]
            if sw.get("artefact"):  # one set, distilled before, relabelled for each value
                fixed += f"{', ' if fixed else ''}set={Path(sw['artefact']).name}"
                budget = sw["rows"][0]["seconds"]  # what distilling that set took
            best = max(float(r["val_mean"]) for r in sw["rows"])
            # digits sweeps choose the demo's settings, the others the table's
            where = "demo" if sw["dataset"] == "digits" else "table"
            if where == "demo":
                used = demo_value(sw["method"], sw["ipc"], sw["param"])
            else:
                used = table_value(sw["dataset"], sw["method"], sw["ipc"], sw["param"])
                if used == "auto" and sw["param"].endswith("precision"):
                    # "auto" is bf16 where the CPU has it natively: the sweep's machine
                    used = "bfloat16" if "bf16" in sw["machine"] else "float32"
                if (
                    "buffer" in sw["fixed"]
                    and Path(str(sw["fixed"]["buffer"])).name
                    != Path(table_buffer(sw["dataset"], sw["ipc"])).name
                ):
                    used = None  # swept on another expert buffer than the table's cell uses
                # other settings than the cell's current ones, either way round: a
                # setting the sweep held, or a table override the sweep left at the
                # method's default (the sweep ran before the override existed)
                hp = dd.METHODS.get(sw["method"]).hparams_class()
                keys = set(sw["fixed"]) | set(cpu_defaults(sw["method"], sw["ipc"], sw["dataset"]))
                if any(
                    table_value(sw["dataset"], sw["method"], sw["ipc"], k)
                    != sw["fixed"].get(k, getattr(hp, k, None))
                    for k in keys - {sw["param"], "buffer"}
                ):
                    used = None
            for r in sw["rows"]:
                tags = [
                    t
                    for t, on in (
                        ("best here", r["val_mean"] == best),
                        (where, r[sw["param"]] == used),
                    )
                    if on
                ]
                mark = f" ({', '.join(tags)})" if tags else ""
                lines.append(
                    f"| {sw['dataset']} | {sw['method']} | {sw['ipc']} | {fixed} | "
                    f"{budget:.0f} | {sw['param']}={r[sw['param']]}{mark} | "
                    f"{r['iterations']} | {100 * r['val_mean']:.2f} | "
                    f"{sw['protocol']}, {len(r['val_accs'])} | {sw['date'][:10]} |"
                )
        lines += [""]
        for sw in sweeps:
            seeds = len(sw["rows"][0]["val_accs"])
            lines.append(
                f"- `{sw['command']}` ({sw['machine']}, {sw['date']}; "
                f"{sw['protocol']} protocol, {seeds} seeds)"
            )
        lines += [""]
    notes = ROOT / "benchmarks" / "NOTES.md"
    if notes.exists():  # hand-written analysis of the figures above, with its own commands
        lines += [notes.read_text().rstrip(), ""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines))
    print(f"wrote {ROOT / 'BENCHMARKS.md'} ({len(rows)} cells)")


if __name__ == "__main__":
    main()
