"""Thin command-line commands over the API (typer + rich).

User errors (unknown names, bad values, corrupt files) print one line and exit with
status 2, without a traceback.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import warnings
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from datadistill._device import program_allocator_default
from datadistill._files import ARTEFACT_NAME, CHECKPOINT_NAME, with_added_suffix
from datadistill._names import check_arch_hparam, check_dataset, check_name
from datadistill.errors import ConfigError, DatadistillError, Interrupted, out_of_memory
from datadistill.plugins import load_plugins, plugin_location

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Dataset distillation: compress a training set into a few synthetic images per class.",
)


def _version_line() -> str:
    """datadistill's, torch's and Python's versions (torch's from its metadata: the line
    must not wait for torch to import)."""
    from importlib.metadata import PackageNotFoundError, version

    from datadistill import __version__

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "not installed"
    return f"datadistill {__version__} (torch {torch_version}, Python {platform.python_version()})"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(_version_line())
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the versions of datadistill, torch and Python, and exit.",
        ),
    ] = False,
) -> None:
    """The options before a command (--version)."""


# --full-epochs of `distill` and `evaluate` (evaluation.evaluate.FULL_MIN_STEPS: 500)
FullEpochs = Annotated[
    int | None,
    typer.Option(
        help="Epochs of the full-data reference (default: the protocol's, more on a small "
        "training split: at least 500 SGD steps)."
    ),
]


# --dataset of `evaluate` and `relabel`: user data that moved after distillation
MovedData = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="Where the set's own data is now (npz:PATH or imagefolder:PATH), if it has "
        "moved; default: the path recorded in the artefact.",
    ),
]


def _parse_hparams(items: list[str] | None) -> dict[str, Any]:
    """``["lr_img=1.0", "dsa=false"]`` -> ``{"lr_img": 1.0, "dsa": False}``; a key given
    again takes its last value (a flag appended to a command overrides, as options do)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--hp expects KEY=VALUE; got {item!r}.")
        key, raw = item.split("=", 1)
        if not key.strip():
            raise ConfigError(f"--hp expects KEY=VALUE with a name before '='; got {item!r}.")
        low = raw.strip().lower()
        value: Any
        if low in ("true", "false"):
            value = low == "true"
        else:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        if isinstance(value, float) and not math.isfinite(value):  # 1e400, NaN, Infinity
            raise ConfigError(f"--hp {item.strip()} is not a finite number; give one that is.")
        out[key.strip()] = value
    return out


def _val_size(value: float) -> float | int:
    """--val-size: a fraction in [0, 1) or a whole count of images."""
    if not math.isfinite(value) or value < 0 or (value >= 1 and value != int(value)):
        raise ConfigError(
            f"--val-size must be a fraction in [0, 1) or a whole number of images; got {value}."
        )
    return int(value) if value >= 1 else value


def _split(arg: str | None) -> tuple[str, ...]:
    return tuple(a.strip() for a in arg.split(",") if a.strip()) if arg else ()


@app.command()
def distill(
    dataset: Annotated[str, typer.Option(help="Builtin name, imagefolder:PATH or npz:PATH.")],
    out: Annotated[Path, typer.Option(help="Run folder to create.")],
    method: Annotated[
        str, typer.Option(help="Distillation method (see `datadistill list`).")
    ] = "dm",
    ipc: Annotated[int, typer.Option(help="Synthetic images per class.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of every random draw of the run.")] = 0,
    iterations: Annotated[
        int | None,
        typer.Option(help="Steps (default: the method's; no cap beside --time-budget)."),
    ] = None,
    time_budget: Annotated[
        float | None,
        typer.Option(help="Seconds of distillation, set-up included, validation excluded."),
    ] = None,
    hp: Annotated[
        list[str] | None,
        typer.Option(
            help="Method hyperparameter KEY=VALUE, repeatable (--hp lr_img=10 --hp dsa=false); "
            "an unknown KEY lists the method's valid ones."
        ),
    ] = None,
    data_root: Annotated[
        str | None,
        typer.Option(envvar="DATADISTILL_DATA", help="Folder of the builtin datasets' files."),
    ] = None,
    val_size: Annotated[
        float, typer.Option(help="Fraction (<1) or count of train for validation.")
    ] = 0.1,
    zca: Annotated[bool, typer.Option(help="ZCA-whiten the data (as KIP / MTT do).")] = False,
    max_train: Annotated[
        int | None, typer.Option(help="Cap the train split (stratified), for quick runs.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    checkpoint_every: Annotated[
        int, typer.Option(help="Steps between checkpoints (kept in the run folder).")
    ] = 100,
    validate_every: Annotated[int, typer.Option(help="Steps between validation scores.")] = 0,
    select: Annotated[str, typer.Option(help="Keep the 'last' or the 'best-val' state.")] = "last",
    protocol: Annotated[
        str | None, typer.Option(help="Evaluation protocol. Default: the method's own.")
    ] = None,
    eval_arch: Annotated[str | None, typer.Option(help="Comma-separated architectures.")] = None,
    eval_seeds: Annotated[
        int | None, typer.Option(help="Networks trained per evaluation (default: protocol's).")
    ] = None,
    evaluate: Annotated[bool, typer.Option(help="Evaluate after distilling.")] = True,
    full: Annotated[bool, typer.Option(help="Also train the full-data reference.")] = True,
    full_epochs: FullEpochs = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the run folder's checkpoint.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Distill a dataset into a run folder (artefact, report, grid, curves)."""
    load_plugins()  # your own methods, models, datasets, protocols ($DATADISTILL_PLUGINS)
    check_dataset(dataset)  # a misspelt name is refused before torch loads
    check_name("method", method)
    if protocol is not None:
        check_name("protocol", protocol)
    for a in _split(eval_arch):
        check_name("model", a)
    hparams = _parse_hparams(hp)
    check_arch_hparam(method, hparams)

    from datadistill.run import RunConfig, run

    val_size = _val_size(val_size)
    config = RunConfig(
        dataset=dataset,
        method=method,
        ipc=ipc,
        seed=seed,
        hparams=hparams,
        iterations=iterations,
        time_budget=time_budget,
        data_root=data_root,
        val_size=val_size,
        zca=zca,
        max_train=max_train,
        device=device,
        checkpoint_every=checkpoint_every,
        validate_every=validate_every,
        select=select,
        protocol=protocol,
        eval_archs=_split(eval_arch),
        eval_seeds=eval_seeds,
        evaluate=evaluate,
        full=full,
        full_epochs=full_epochs,
        progress=not quiet,
    )
    report = run(config, out, resume=resume)
    _print_summary(report, out)


def _print_summary(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.markup import escape

    from datadistill.report import format_result, plural

    console = Console()
    n = (report.get("evaluation") or {}).get("seeds")
    seeds = f", {plural(n, 'seed')}" if n else ""
    # one line per evaluated architecture, each named (the first alone is "results")
    by_arch = report.get("results_by_arch") or {"": report.get("results") or {}}
    f = report.get("factor", 1)
    per_class = report["ipc"] * f * f
    factor = "" if f == 1 else f" (multi-formation x{f}: {per_class} training images per class)"
    if not report.get("evaluation") and not any(by_arch.values()):  # --no-evaluate
        console.print(
            f"[bold]{escape(report['method'])}[/] {escape(report['dataset'])} "
            f"ipc={report['ipc']}{factor}: distilled, not evaluated "
            f"(`datadistill evaluate {escape(str(out))}` evaluates it)"
        )
        by_arch = {}
    for arch, res in by_arch.items():
        pct = {k: format_result(res.get(k)) for k in ("distilled", "random", "full")}
        # names are the user's (npz:PATH, a registered model, a folder): never markup
        console.print(
            f"[bold]{escape(report['method'])}[/] {escape(report['dataset'])} "
            f"ipc={report['ipc']}{factor}{' ' + escape(arch) if arch else ''}: distilled "
            f"{pct['distilled']} | random {pct['random']} | full {pct['full']} "
            f"(protocol {escape(report['protocol'])}{seeds}, test accuracy %)"
        )
    console.print(f"run folder: {escape(str(out))}")


def _check_writable(path: Path, flag: str) -> None:
    """Refuse now an output file that could not be written later (a folder, or one in a
    folder that cannot be created or written; creates that folder), or that exists."""
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name for the results.")
    if path.exists():  # e.g. a run folder's own report.json: never overwritten
        raise ConfigError(f"{flag} {path} already exists; choose a new file name or delete it.")
    path.parent.mkdir(parents=True, exist_ok=True)  # an OSError here is main's one line
    if not os.access(path.parent, os.W_OK):
        raise ConfigError(f"{flag} {path} cannot be written; choose a path you can write to.")


@app.command()
def evaluate(
    artefact: Annotated[
        Path, typer.Argument(help="A distilled .safetensors file, or a run folder holding one.")
    ],
    arch: Annotated[str | None, typer.Option(help="Comma-separated architectures.")] = None,
    seeds: Annotated[
        int | None,
        typer.Option(help="Fresh networks trained per number (default: the protocol's)."),
    ] = None,
    protocol: Annotated[str | None, typer.Option(help="Default: the artefact's.")] = None,
    data_root: Annotated[
        str | None,
        typer.Option(envvar="DATADISTILL_DATA", help="Folder of the builtin datasets' files."),
    ] = None,
    full: Annotated[bool, typer.Option(help="Also train the full-data reference.")] = True,
    baselines: Annotated[
        bool, typer.Option(help="Also train the random real subset of the same size.")
    ] = True,
    full_epochs: FullEpochs = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write results to this new file.")
    ] = None,
    dataset: MovedData = None,
    teacher_experts: Annotated[
        Path | None,
        typer.Option(
            help="Where a relabelled set's teacher buffer is now, if it has moved; default: "
            "the path recorded in the artefact."
        ),
    ] = None,
) -> None:
    """Train fresh networks on a distilled set; test accuracy beside the baselines."""
    load_plugins()  # the set's protocol or network may be a plugin's
    if protocol is not None:  # a misspelt name is refused before torch loads
        check_name("protocol", protocol)
    for a in _split(arch):
        check_name("model", a)

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from datadistill.artefact import load
    from datadistill.evaluation import evaluate as run_eval
    from datadistill.evaluation import get_protocol
    from datadistill.evaluation.evaluate import dataset_of
    from datadistill.report import plural

    distilled = load(artefact)
    if json_out is not None:  # checked before hours of training
        _check_writable(json_out, "--json")
    proto = get_protocol(protocol or distilled.manifest.get("protocol", "dc"))
    real = dataset_of(distilled, data_root, dataset)
    console = Console()
    report = run_eval(
        distilled,
        real,
        proto,
        archs=_split(arch) or None,
        seeds=seeds,
        baselines=baselines,
        full=full,
        full_epochs=full_epochs,
        device=device,
        progress=lambda m: console.print(m, markup=False, highlight=False),
        teacher_experts=teacher_experts,
    )
    table = Table(
        title=f"{escape(artefact.name)}: test accuracy (%), protocol {escape(proto.name)}, "
        f"{plural(report.seeds, 'seed')}",
        caption=f"the distilled set trained at its learned lr {report.lr_distilled:.4g}"
        if report.lr_learned
        else None,
    )
    for col in ("architecture", "distilled", "random real subset", "full data"):
        table.add_column(col)
    for a, rows in report.results.items():
        table.add_row(
            escape(a),
            *(str(rows[k]) if k in rows else "-" for k in ("distilled", "random", "full")),
        )
    console.print(table)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.to_dict(), indent=2))


@app.command()
def relabel(
    artefact: Annotated[
        Path, typer.Argument(help="A distilled .safetensors file, or a run folder holding one.")
    ],
    experts: Annotated[
        Path, typer.Option(help="Expert buffer holding the teacher (datadistill experts).")
    ],
    out: Annotated[
        Path,
        typer.Option(help="The relabelled .safetensors file to write (the suffix is added)."),
    ],
    expert: Annotated[int, typer.Option(help="Which expert of the buffer labels.")] = 0,
    epoch: Annotated[int, typer.Option(help="The expert's epoch; -1: its last.")] = -1,
    temperature: Annotated[
        float, typer.Option(help="Logits are divided by it (higher: softer labels).")
    ] = 1.0,
    hard_weight: Annotated[
        float,
        typer.Option(help="Weight in [0, 1) of the one-hot hard labels mixed in (0: none)."),
    ] = 0.0,
    data_root: Annotated[
        str | None,
        typer.Option(envvar="DATADISTILL_DATA", help="Folder of the builtin datasets' files."),
    ] = None,
    dataset: MovedData = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
) -> None:
    """Give a set soft labels from a teacher: an expert network's logits on each training
    image. `evaluate` then labels its random baseline with the same teacher."""
    load_plugins()  # the teacher's network may be a plugin's
    from datadistill.artefact import load
    from datadistill.evaluation.evaluate import dataset_of
    from datadistill.labels import relabel as do_relabel

    source = artefact / ARTEFACT_NAME if (artefact / ARTEFACT_NAME).is_file() else artefact
    if not out.is_dir():  # as export adds .npz
        out = with_added_suffix(out, ".safetensors")
    if out.resolve() == source.resolve():  # (a run folder stands for its artefact)
        raise ConfigError(f"--out {out} is the input artefact; write the relabelled set elsewhere.")
    distilled = load(artefact)
    _check_writable(out, "--out")  # before the teacher runs, so that no work is thrown away
    real = dataset_of(distilled, data_root, dataset, "relabel")
    relabelled = do_relabel(
        distilled,
        real,
        experts,
        expert=expert,
        epoch=epoch,
        temperature=temperature,
        hard_weight=hard_weight,
        device=device,
    )
    typer.echo(str(relabelled.save(out)))


@app.command()
def experts(
    dataset: Annotated[str, typer.Option(help="Builtin name, imagefolder:PATH or npz:PATH.")],
    out: Annotated[Path, typer.Option(help="Buffer folder (created, or resumed).")],
    arch: Annotated[str, typer.Option(help="Expert architecture.")] = "convnet",
    width: Annotated[int, typer.Option(help="Network width (ConvNets and MLP).")] = 128,
    num: Annotated[int, typer.Option(help="Number of experts.")] = 20,
    epochs: Annotated[int, typer.Option(help="Epochs per expert (parameters kept each).")] = 50,
    lr: Annotated[
        float,
        typer.Option(help="Expert SGD learning rate; MTT's --hp lr_teacher should match it."),
    ] = 0.01,
    momentum: Annotated[float, typer.Option(help="Expert SGD momentum (MTT's: 0).")] = 0.0,
    weight_decay: Annotated[float, typer.Option(help="Expert SGD weight decay.")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Real images per expert SGD step.")] = 256,
    dsa: Annotated[bool, typer.Option(help="Train experts with DSA augmentation.")] = True,
    zca: Annotated[
        bool,
        typer.Option(help="ZCA-whiten the data; distill with the same --zca to use the buffer."),
    ] = False,
    seed: Annotated[
        int, typer.Option(help="Seed of the experts' initialisations and batch orders.")
    ] = 0,
    workers: Annotated[int, typer.Option(help="Parallel processes (one per GPU).")] = 1,
    data_root: Annotated[
        str | None,
        typer.Option(envvar="DATADISTILL_DATA", help="Folder of the builtin datasets' files."),
    ] = None,
    val_size: Annotated[
        float,
        typer.Option(help="Fraction (<1) or count of train held out to score the experts."),
    ] = 0.1,
    max_train: Annotated[
        int | None, typer.Option(help="Cap the train split (stratified), for quick runs.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
) -> None:
    """Train expert trajectories for trajectory matching (resumable: run it again)."""
    load_plugins()
    check_dataset(dataset)  # a misspelt name is refused before torch loads
    check_name("model", arch)

    from datadistill.data import load_dataset
    from datadistill.experts import ExpertRecipe, train_experts
    from datadistill.report import plural

    recipe = ExpertRecipe(
        arch=arch,
        width=width,
        epochs=epochs,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        batch_size=batch_size,
        dsa=dsa,
    )
    real = load_dataset(
        dataset,
        data_root,
        val_size=_val_size(val_size),
        zca=zca,
        max_train=max_train,
    )
    buf = train_experts(real, out, num, recipe, seed=seed, workers=workers, device=device)
    if real.val_x.shape[0] == 0:
        typer.echo(f"{plural(len(buf), 'expert')} in {out} (no validation split to score them on)")
        return
    accs = buf.val_accs()
    mean = 100 * sum(accs) / len(accs)
    typer.echo(f"{plural(len(buf), 'expert')} in {out} (mean validation accuracy {mean:.2f}%)")


@app.command()
def show(
    artefact: Annotated[
        Path, typer.Argument(help="A distilled .safetensors file, or a run folder holding one.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="PNG path (default: next to the artefact, SET.png; for a run folder its "
            "grid.png, which is rewritten)."
        ),
    ] = None,
    per_class: Annotated[int, typer.Option(help="Images shown per class (one row each).")] = 10,
) -> None:
    """Write an image grid (one row per class; many classes wrap into blocks) as PNG."""
    from datadistill.artefact import load
    from datadistill.report import save_grid

    if per_class < 1:
        raise ConfigError(f"--per-class must be >= 1; got {per_class}.")
    if out is not None and out.name in ("", ".", ".."):
        raise ConfigError(f"--out {out} is a folder; give show a .png file name.")
    if out is not None and out.suffix == "":
        out = out.with_suffix(".png")
    if out is not None and out.suffix.lower() != ".png":
        raise ConfigError(f"show writes a PNG image; give --out a .png name, not {out.name!r}.")
    distilled = load(artefact)
    given = out is not None
    if out is None:  # beside a file; inside a run folder (whose grid.png it rewrites)
        out = artefact / "grid.png" if artefact.is_dir() else artefact.with_suffix(".png")
    source = artefact / ARTEFACT_NAME if artefact.is_dir() else artefact
    if out.resolve() == source.resolve():  # a set saved as X.png: the grid would replace it
        said = f"--out {out} is" if given else f"The grid's default name, {out}, is"
        raise ConfigError(f"{said} the artefact itself; give --out another .png name.")
    out.parent.mkdir(parents=True, exist_ok=True)
    path = save_grid(distilled, out, per_class)
    typer.echo(str(path))


@app.command()
def export(
    artefact: Annotated[
        Path, typer.Argument(help="A distilled .safetensors file, or a run folder holding one.")
    ],
    out: Annotated[Path, typer.Option(help="Folder (png) or file (npz).")],
    format: Annotated[
        str, typer.Option(help="png (one folder per class, plus labels.json) or npz.")
    ] = "png",
) -> None:
    """Export un-normalised images as PNG folders or an npz file."""
    from datadistill.artefact import export as do_export
    from datadistill.artefact import load

    typer.echo(str(do_export(load(artefact), out, format)))


@app.command()
def check(
    name: Annotated[
        str, typer.Argument(help="A method or a model, yours through $DATADISTILL_PLUGINS.")
    ],
    hp: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE, repeatable: the method's hyperparameters (make it quick: "
            "--hp width=16) or the model's options."
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="What a method distills (default digits): a builtin, imagefolder: or npz:."
        ),
    ] = None,
    data_root: Annotated[
        str | None,
        typer.Option(envvar="DATADISTILL_DATA", help="Folder of the builtin datasets' files."),
    ] = None,
    max_train: Annotated[
        int | None, typer.Option(help="A method's train split, capped (stratified).")
    ] = None,
    ipc: Annotated[
        int | None, typer.Option(help="A method's images per class (default 1).")
    ] = None,
    iterations: Annotated[
        int | None, typer.Option(help="Steps of each of a method's short runs (default 4).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="A method's seed (default 0).")] = None,
    channels: Annotated[
        str | None, typer.Option(help="A model's input channels, comma-separated (default 1,3).")
    ] = None,
    image_size: Annotated[
        str | None,
        typer.Option(help="A model's input sizes, comma-separated: 28 or 32x16 (default 28,32)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "cpu",
) -> None:
    """Check that a method or model keeps the contract runs, resumes and evaluation rely on.

    Exit status 1 when a check fails, 2 for a mistake in the command; README's "Checking
    your own" lists the checks.
    """
    load_plugins()
    options = _parse_hparams(hp)
    from datadistill.methods import METHODS
    from datadistill.models import MODELS

    if name not in METHODS and name not in MODELS:
        from datadistill.registry import did_you_mean

        hint = did_you_mean(name, [*METHODS.names(), *MODELS.names()])
        raise ConfigError(
            f"{name!r} is neither a method nor a model; methods: {', '.join(METHODS.names())};"
            f" models: see `datadistill list models`.{hint} A name of your own: list the "
            "module that registers it in $DATADISTILL_PLUGINS."
        )
    from datadistill.testing import check_method, check_model

    if name in METHODS:
        flags: dict[str, object] = {"--channels": channels, "--image-size": image_size}
        _refuse_flags(flags, f"{name} is a method")
        _refuse_keys(options, ("ipc", "iterations", "seed", "device"), "method")
        dataset = dataset or "digits"
        check_dataset(dataset)
        from datadistill.data import load_dataset

        real = load_dataset(dataset, root=data_root, max_train=max_train)
        report = check_method(
            name,
            real,
            ipc=1 if ipc is None else ipc,
            iterations=4 if iterations is None else iterations,
            seed=0 if seed is None else seed,
            device=device,
            raise_on_failure=False,
            **options,
        )
    else:
        flags = {
            "--dataset": dataset,
            "--data-root": _option("--data-root"),  # given, not $DATADISTILL_DATA
            "--max-train": max_train,
            "--ipc": ipc,
            "--iterations": iterations,
            "--seed": seed,
        }
        _refuse_flags(flags, f"{name} is a model (checked at --channels and --image-size)")
        _refuse_keys(options, ("channels", "image_size", "num_classes", "device"), "model")
        report = check_model(
            name,
            channels=_ints(channels, "--channels") if channels else (1, 3),
            image_sizes=_sizes(image_size) if image_size else (28, 32),
            device=device,
            raise_on_failure=False,
            **options,
        )
    _print_checks(report)
    if not report.passed:  # also on stderr, for logs that keep only that
        print(f"error: {report.summary()}", file=sys.stderr)
        raise typer.Exit(1)


def _refuse_flags(flags: dict[str, object], why: str) -> None:
    given = [flag for flag, value in flags.items() if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} does not apply here: {why}.")


def _refuse_keys(options: dict[str, Any], reserved: tuple[str, ...], kind: str) -> None:
    clash = [k for k in options if k in reserved]
    if clash:
        key = clash[0]
        raise ConfigError(
            f"--hp {key}=... is the check's own setting for a {kind}, not an option; use "
            f"--{key.replace('_', '-')}."
            if key != "num_classes"
            else f"--hp {key}=... is the check's own setting for a {kind} (10 classes)."
        )


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} takes whole numbers >= 1, comma-separated; got {text!r}.")
    return values


def _sizes(text: str) -> tuple[int | tuple[int, int], ...]:
    out: list[int | tuple[int, int]] = []
    for item in (v.strip().lower() for v in text.split(",") if v.strip()):
        parts = _ints(item.replace("x", ","), "--image-size")
        if len(parts) > 2 or "x" in item and len(parts) != 2:
            raise ConfigError(f"--image-size takes sizes such as 28 or 32x16; got {item!r}.")
        out.append(parts[0] if len(parts) == 1 else (parts[0], parts[1]))
    if not out:
        raise ConfigError(f"--image-size takes sizes such as 28 or 32x16; got {text!r}.")
    return tuple(out)


def _print_checks(report: Any) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    colour = {"ok": "green", "FAIL": "bold red", "warn": "yellow", "skip": "dim"}
    table = Table(title=escape(f"{report.subject}: {'passed' if report.passed else 'FAILED'}"))
    for column in ("check", "result", "detail"):
        table.add_column(column, overflow="fold")
    for c in report.checks:
        table.add_row(escape(c.name), f"[{colour[c.status]}]{c.status}[/]", escape(c.detail))
    Console().print(table)


@app.command("list")
def list_(
    what: Annotated[
        str | None, typer.Argument(help="methods, datasets, models or protocols")
    ] = None,
) -> None:
    """List the registered methods, datasets, models and protocols."""
    kinds = ("methods", "datasets", "models", "protocols")
    if what is not None and what not in kinds:  # refused before torch loads
        raise ConfigError(f"Cannot list {what!r}; choose one of {', '.join(kinds)}.")
    load_plugins()

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from datadistill._names import BUILTIN_NAMES
    from datadistill.data import DATASETS
    from datadistill.evaluation import PROTOCOLS
    from datadistill.methods import METHODS
    from datadistill.models import MODELS
    from datadistill.registry import Registry

    registries: dict[str, Registry[Any]] = {
        "methods": METHODS,
        "datasets": DATASETS,
        "models": MODELS,
        "protocols": PROTOCOLS,
    }
    console = Console()
    for name, reg in registries.items():
        if what not in (None, name):
            continue
        table = Table(title=name)
        table.add_column("name")
        table.add_column("description")
        builtin = BUILTIN_NAMES.get(name.removesuffix("s"), ())
        for n in reg.names():
            mine = "" if n in builtin else "[plugin] "  # registered by a plugin
            table.add_row(n, escape(mine + reg.describe(n)))
        if name == "datasets":
            table.add_row("imagefolder:PATH", "your images, one sub-folder per class")
            table.add_row("npz:PATH", "your arrays x (N, H, W[, C]) and y (N,)")
        console.print(table)


def _show_warning(
    message: Warning | str, category: Any, filename: str, lineno: int, *args: Any, **kwargs: Any
) -> None:
    """Warnings as one line on stderr, like errors (not Python's two-line form); one raised
    in a plugin's code, or pointed there, names the plugin's file and line."""
    print(f"warning: {message}{plugin_location(filename, lineno)}", file=sys.stderr)


_RESUME_ADVICE = {
    "distill": " It continues from its last checkpoint with the same command and --resume.",
    "experts": " The finished epochs are kept: the same command continues from them.",
    "evaluate": " The networks it finished are kept in the evaluation cache: the same command "
    "goes on after them.",
}


# what to lower when a command runs out of memory
_MEMORY_ADVICE = {
    "distill": "what scales it (--ipc, --hp batch_real or batch_syn, --hp width)",
    "experts": "--batch-size, --width or --workers",
}


def _command() -> str:
    """The subcommand being run (the first word after the program's name that is not an
    option), or "" when there is none."""
    return next((a for a in sys.argv[1:] if not a.startswith("-")), "")


def _option(flag: str) -> str | None:
    """The value given to ``flag`` on the command line (``--out X`` or ``--out=X``; the
    last one, as the parser takes it)."""
    args, value = sys.argv[1:], None
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(flag + "="):
            value = a[len(flag) + 1 :]
    return value


def _nothing_saved_yet() -> bool:
    """Whether the command is a distill run that stopped before writing its first
    checkpoint or its set (e.g. while the data loaded)."""
    out = _option("--out") if _command() == "distill" else None
    return out is not None and not any(
        (Path(out) / name).is_file() for name in (CHECKPOINT_NAME, ARTEFACT_NAME)
    )


def _resume_advice() -> str:
    """How to continue the command that stopped: a distill run from its checkpoint, unless
    it stopped before its first one: then nothing to resume."""
    if _nothing_saved_yet():
        return " Nothing was saved yet; run the same command (without --resume) to start."
    if _command() == "evaluate" and os.environ.get("DATADISTILL_CACHE", "").lower() == "off":
        return ""  # nothing was kept
    return _RESUME_ADVICE.get(_command(), "")


def _memory_advice() -> str:
    """What to do after running out of memory: what to lower, and how to go on. A resumed
    distill run keeps its settings (only the device may change), so lowered ones start a
    new run folder."""
    lower = _MEMORY_ADVICE.get(_command(), "the model or the batch")
    if _command() == "distill" and not _nothing_saved_yet():
        return (
            f"run on a device with more memory or lower {lower}. A resumed run keeps its "
            "settings: the same command with --resume (and another --device) continues from "
            "its last checkpoint, and lowered settings start over in another --out."
        )
    return f"lower {lower}, or run on a device with more memory (--device).{_resume_advice()}"


def _interrupted() -> NoReturn:
    print(f"error: interrupted.{_resume_advice()}", file=sys.stderr)
    sys.exit(130)


def _usage_errors() -> Any:
    """What typer raises, with ``standalone_mode=False``, for a bad or missing flag:
    ``typer.TyperException`` from typer 0.28, click's ``ClickException`` in typer 0.26 and
    0.27 (which carry their own copy of click). Both have ``exit_code`` and
    ``format_message``; the click one also ``show``."""
    public = getattr(typer, "TyperException", None)
    if public is not None:
        return public
    return import_module("typer._click.exceptions").ClickException


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    warnings.showwarning = _show_warning
    program_allocator_default()
    try:
        code = app(standalone_mode=False)
    except Interrupted as exc:  # Ctrl-C during a run: the checkpoint is saved
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(130)
    except DatadistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # an output folder that cannot be written, a full disk, ...
        if exc.errno is None:  # e.g. a shared library torch could not load: not a user error
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(
            f"error: {exc.strerror or exc}{where}; check that the path is right and that you "
            "can write there.",
            file=sys.stderr,
        )
        sys.exit(2)
    # before RuntimeError, which typer.Abort subclasses (click turns an EOFError, and a
    # Ctrl-C outside a command, into Abort)
    except (KeyboardInterrupt, typer.Abort):  # Ctrl-C (or end of input) typer lets through
        _interrupted()
    except (MemoryError, RuntimeError) as exc:
        if not out_of_memory(exc):
            raise  # a bug, not a user error: the traceback is what a report needs
        print(f"error: out of memory; {_memory_advice()}", file=sys.stderr)
        sys.exit(2)
    except _usage_errors() as exc:  # usage errors: bad or missing flags
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print(f"Error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    if code == 130:  # typer returns 130 for a KeyboardInterrupt inside a command (no command
        _interrupted()  # returns a value of its own): say so instead of exiting silently
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
