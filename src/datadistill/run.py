"""One run: config -> data -> method -> step loop -> artefact -> evaluation -> report.

The loop that calls ``Method.step`` lives here, once, for every method: the budget
(iterations and / or seconds), callbacks, checkpoints, resume, NaN and Ctrl-C handling.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import signal
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from datadistill._device import (
    global_rng_states,
    peak_memory_bytes,
    prepare_device,
    reset_peak_memory,
    resolve_device,
    same_rng_states,
)
from datadistill._files import ARTEFACT_NAME, CHECKPOINT_NAME
from datadistill.artefact import Distilled
from datadistill.callbacks import Callback, History, Progress, Validation
from datadistill.data import RealData, load_dataset
from datadistill.data.load import with_absolute_name
from datadistill.data.real import require_real_data
from datadistill.errors import (
    ConfigError,
    Interrupted,
    RunError,
    first_difference,
    out_of_memory,
    user_stacklevel,
)
from datadistill.evaluation.protocols import PROTOCOLS, validation_protocol
from datadistill.methods import METHODS, HParams, Method, create_method
from datadistill.methods.common import check_ipc
from datadistill.models import MODELS
from datadistill.synthetic import SyntheticSet

MAX_HISTORY_ROWS = 500  # loss rows kept in the manifest (evenly spaced)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; written to ``config.json`` in the run folder."""

    dataset: str
    method: str
    ipc: int
    seed: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)  # method hyperparameters
    iterations: int | None = None  # None: the method's default (or the time budget alone)
    time_budget: float | None = None  # seconds of distillation (validation excluded)
    data_root: str | None = None
    val_size: float = 0.1  # fraction (or count) of train carved out for validation
    zca: bool = False
    max_train: int | None = None
    device: str = "auto"
    checkpoint_every: int = 100  # steps between checkpoints
    validate_every: int = 0  # steps between validation scores (0: never)
    select: str = "last"  # "last" or "best-val": which synthetic state is kept
    protocol: str | None = None  # evaluation protocol; None: the one the method expects
    eval_archs: tuple[str, ...] = ()  # default: the protocol's architecture
    eval_seeds: int | None = None
    evaluate: bool = True
    full: bool = True  # also train the full-data reference (cached)
    full_epochs: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        archs = self.eval_archs
        if isinstance(archs, str):  # "convnet,mlp" as --eval-arch spells it, or one name
            archs = tuple(a.strip() for a in archs.split(",") if a.strip())
        if not (isinstance(archs, (tuple, list)) and all(isinstance(a, str) and a for a in archs)):
            raise ConfigError(
                f"eval_archs must be model names (a tuple of str); got {self.eval_archs!r}."
            )
        object.__setattr__(self, "eval_archs", tuple(archs))
        if self.select not in ("last", "best-val"):
            raise ConfigError(f"--select must be 'last' or 'best-val'; got {self.select!r}.")
        if self.select == "best-val" and self.validate_every <= 0:
            raise ConfigError("--select best-val needs --validate-every > 0.")
        _check_loop_options(
            self.iterations, self.time_budget, self.checkpoint_every, self.seed, False, None
        )
        if self.eval_seeds is not None and self.eval_seeds < 1:
            raise ConfigError(f"--eval-seeds must be >= 1; got {self.eval_seeds}.")
        if self.full_epochs is not None and self.full_epochs < 1:
            raise ConfigError(f"--full-epochs must be >= 1; got {self.full_epochs}.")
        if self.validate_every < 0:
            raise ConfigError(f"--validate-every must be >= 0; got {self.validate_every}.")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["eval_archs"] = list(self.eval_archs)
        return d


@contextmanager
def _deferred_interrupt() -> Iterator[dict[str, bool]]:
    """Turn the first Ctrl-C into a flag checked between steps (a second one aborts)."""
    flag = {"stop": False}
    try:
        previous = signal.getsignal(signal.SIGINT)
    except ValueError:  # not the main thread
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``path`` whole or not at all; a failed write (a full disk: torch raises
    RuntimeError, not OSError) keeps the previous checkpoint and names the path."""
    tmp = path.with_suffix(".tmp")
    try:
        torch.save(state, tmp)
        tmp.replace(path)
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        kept = "the previous one is kept" if path.is_file() else "no earlier one exists"
        raise RunError(
            f"Cannot write the checkpoint {path} ({exc}); {kept}. Free space or choose a "
            "writable folder, then run the same command with --resume."
        ) from None


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # no arbitrary code
    except Exception as exc:  # noqa: BLE001
        raise RunError(f"Cannot read checkpoint {path} ({exc}); delete it to start over.") from None
    problem = _checkpoint_problem(state)
    if problem:
        raise RunError(
            f"{path} is not a checkpoint this version of datadistill wrote ({problem}); delete "
            "it to start over."
        )
    return cast(dict[str, Any], state)


def _checkpoint_problem(state: object) -> str:
    """What makes ``state`` something :func:`run_loop` cannot resume from ("" if nothing):
    the entries the loop itself reads (a method's own are its ``load_state_dict``'s)."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a dict"
    method = state.get("method")
    if not isinstance(method, dict) or not isinstance(method.get("iteration"), int):
        return "no method state with an iteration"
    generator = state.get("generator")
    if not isinstance(generator, torch.Tensor) or generator.dtype != torch.uint8:
        return "no generator state"
    if not isinstance(state.get("seconds"), (int, float)):
        return "no seconds"
    if not isinstance(state.get("callbacks"), dict):
        return "no callback states"
    return ""


@dataclass
class LoopResult:
    method: Method
    iterations: int
    seconds: float  # distillation seconds (validation excluded)
    stopped_by: str  # "iterations", "time", "no-steps"


# --select best-val on fewer validation images per class than this warns: the scores' noise
# (a standard error of about 4 points at 85% over 100 images) outweighs what separates states
MIN_VAL_PER_CLASS_TO_SELECT = 10


def _check_validation(real: RealData, validate_every: int, select: str) -> None:
    n_val = real.val_x.shape[0]
    if validate_every > 0 and n_val == 0:
        raise ConfigError(
            "Validation scores need a validation split, and this dataset was loaded without "
            "one; set --val-size above 0 or --validate-every to 0."
        )
    enough = MIN_VAL_PER_CLASS_TO_SELECT * real.num_classes
    if select == "best-val" and n_val < enough:
        warnings.warn(
            f"select='best-val' (--select) chooses among the states by their accuracy on "
            f"{n_val} validation image{'s' if n_val != 1 else ''} ({n_val / real.num_classes:.3g} "
            f"per class), which is mostly noise; a val_size (--val-size) of at least {enough} "
            "images makes the choice mean something.",
            stacklevel=user_stacklevel(),
        )


def _resume_changes(
    saved: dict[str, Any], now: dict[str, Any], may_change: frozenset[str], ckpt: Path
) -> dict[str, list[Any]]:
    """The hyperparameters that differ between the checkpoint's fingerprint ``saved`` and
    ``now``, as ``{name: [old, new]}``, when only ones in ``may_change`` do; otherwise a
    ConfigError naming a difference that is not allowed."""
    if saved == now:
        return {}
    old, new = saved.get("hparams") or {}, now.get("hparams") or {}
    same_run = all(saved.get(k) == now.get(k) for k in set(saved) | set(now) if k != "hparams")
    changed = {k: [old[k], new[k]] for k in sorted(new) if k in old and old[k] != new[k]}
    if same_run and set(old) == set(new) and set(changed) <= may_change:
        return changed
    # name a difference that is not allowed, not an allowed lr changed beside it
    kept = {k: old[k] for k in may_change if k in old}
    diff = first_difference(saved, {**now, "hparams": {**new, **kept}}, "in the checkpoint", "now")
    may = (
        f"; only {', '.join(sorted(may_change))} may change on resume"
        if may_change and same_run
        else ""
    )
    raise ConfigError(
        f"The checkpoint at {ckpt} belongs to another run ({diff}{may}); resume with the same "
        "options or start over in another folder."
    )


def _diverged_advice(checkpoint: Path | None, method: Method) -> str:
    """The rest of the message of a run that diverged: what was kept, and what to do (with
    the learning rates the method lets a resume change, if any)."""
    lrs = sorted(method.changeable_on_resume())
    named = " or ".join(f"--hp {n}" for n in lrs)
    if checkpoint is not None and checkpoint.is_file() and lrs:
        return (
            f"; the last good checkpoint is kept at {checkpoint}: resume it with a lower "
            f"learning rate (the same command with a smaller {named} and --resume; the "
            "same settings would diverge again)."
        )
    if checkpoint is not None and checkpoint.is_file():
        return (
            f"; the last good checkpoint is kept at {checkpoint}, but this method lets a "
            "resume change none of its settings: start a new run with other ones (a lower "
            "learning rate, for instance)."
        )
    return (
        ", before any checkpoint was written; start a new run with other settings (a lower "
        f"learning rate, for instance{f': a smaller {named}' if lrs else ''})."
    )


def _label(method: Method) -> str:
    """The method's registered name (its class's for one that is not registered)."""
    return method.name or type(method).__name__


class ContractWarning(UserWarning):
    """A method's step that works but breaks the loop's contract (no ``loss``; draws from
    torch's global generator); :mod:`datadistill.testing` turns these into failures."""


class NoLossWarning(ContractWarning):
    """A step returned no ``"loss"``."""


class GlobalGeneratorWarning(ContractWarning):
    """A step drew from torch's global random generator."""


def _checked_metrics(
    method: Method, metrics: Any, before: int, first: bool = False
) -> dict[str, float]:
    """A step's metrics as numbers, once the step kept the contract: it advanced
    ``method.iteration`` by one and returned a dict of numbers (0-dim tensors taken as
    their value); otherwise one sentence saying what the method must do. The ``first``
    step of a run without a ``loss`` is warned about: the NaN stop reads it."""
    name = _label(method)
    if method.iteration != before + 1:
        raise RunError(
            f"{name}'s step() left its iteration at {method.iteration} (it was {before}); a "
            "step must add 1 to self.iteration, which budgets, checkpoints and resumes count."
        )
    if not isinstance(metrics, dict):
        raise RunError(
            f"{name}'s step() returned {type(metrics).__name__}; it must return a dict of "
            "metrics, such as {'loss': loss.item()}."
        )
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        if (
            not isinstance(key, str)
            or isinstance(value, bool)
            or not isinstance(value, numbers.Real)
        ):
            raise RunError(
                f"{name}'s step() returned the metric {key!r}: {value!r}; metrics must map "
                "names to numbers, such as {'loss': loss.item()}."
            )
        out[key] = float(value)
    if first and "loss" not in out:
        warnings.warn(
            f"{name}'s step() returned no 'loss', so a diverging run is not stopped and the "
            "progress bar shows none; return it, e.g. {'loss': loss.item()}.",
            NoLossWarning,
            stacklevel=3,
        )
    return out


def _warn_if_global_rng_used(
    method: Method, before: tuple[Tensor, ...], device: torch.device
) -> None:
    """A step that draws from torch's global generator (the CPU one, or on CUDA the
    device's) makes a seed's run irreproducible and a resume differ from the straight run:
    say so (the run's generator is the one)."""
    if not same_rng_states(global_rng_states(device), before):
        warnings.warn(
            f"{_label(method)}'s step() drew from torch's global random generator, so a seed "
            "does not fix the run and a resumed run differs from an uninterrupted one; draw "
            "from the generator setup() was given (e.g. torch.randn(..., generator=g)).",
            GlobalGeneratorWarning,
            stacklevel=2,
        )


def describe_change(changed: dict[str, Any]) -> str:
    """``"lr_img 1.0 -> 0.25, ..."`` for a resume's ``changed`` (name -> [old, new])."""
    return ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())


def _merge_change(
    changes: list[dict[str, Any]], at: int, changed: dict[str, list[Any]]
) -> list[dict[str, Any]]:
    """``changes`` with ``changed`` (name -> [old, new]) recorded at iteration ``at``.

    Two resumes at the same iteration (the first ran no step) make one change: the first
    old value and the last new one; a value changed back drops out."""
    if not changes or changes[-1]["iteration"] != at:
        return [*changes, {"iteration": at, "changed": dict(changed)}]
    merged = dict(changes[-1]["changed"])
    for name, (old, new) in changed.items():
        merged[name] = [merged[name][0] if name in merged else old, new]
    merged = {k: v for k, v in merged.items() if v[0] != v[1]}
    return changes[:-1] + ([{"iteration": at, "changed": merged}] if merged else [])


# The states of distill()'s own callbacks are kept under these names (``state_key``); a
# user's callback of one of these classes is numbered from 2 whether or not the run has
# the built-in one (validation is optional), so its key never moves between runs.
_BUILTIN_KEYS = frozenset({"History", "Validation", "Progress"})


def _callback_keys(callbacks: Sequence[Callback]) -> list[str]:
    """The names a checkpoint keeps callback states under: a built-in's ``state_key``, else
    the class name, numbered from the second callback of a class on (two ``Validation``
    callbacks keep two states)."""
    seen: dict[str, int] = {}
    keys = []
    for cb in callbacks:
        if cb.state_key is not None:
            keys.append(cb.state_key)
            continue
        name = type(cb).__name__
        seen[name] = seen.get(name, 1 if name in _BUILTIN_KEYS else 0) + 1
        keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return keys


def _builtin(cb: Callback) -> Callback:
    cb.state_key = type(cb).__name__
    return cb


def iteration_cap(method: Method, iterations: int | None, time_budget: float | None) -> int | None:
    """The iteration count at which :func:`run_loop` stops: ``iterations`` when given, none
    under a time budget alone, else the method's default."""
    if iterations is not None:
        return iterations
    return None if time_budget is not None else method.default_iterations


def _say_if_the_budget_is_spent(
    method: Method, state: dict[str, Any], iterations: int | None, budget: float | None
) -> None:
    """Say when a resumed run has nothing left of its budget (``budget``: the steps' share
    of a time budget, as :func:`run_loop` gets it), so that a resume that runs no step says
    why: the budget counts the whole run, resumes included."""
    at, spent = int(state["method"]["iteration"]), float(state["seconds"])
    cap = iteration_cap(method, iterations, budget)
    if cap is not None and at >= cap:
        given = "its budget" if iterations is not None else f"{method.name}'s default budget"
        reached, option = f"{given} of {cap} iterations", "--iterations"
    elif budget is not None and spent >= budget:
        reached, option = "its time budget", "--time-budget"
    else:
        return
    warnings.warn(
        f"The distillation has already reached {reached} (at iteration {at}), so this resume "
        f"runs no step and goes on to what follows it; a budget counts the whole run: a larger "
        f"{option} distills further.",
        stacklevel=4,  # the caller of distill() (or run())
    )


def run_loop(
    method: Method,
    *,
    iterations: int | None,
    time_budget: float | None,
    callbacks: Sequence[Callback] = (),
    checkpoint: Path | None = None,
    checkpoint_every: int = 100,
    generator: torch.Generator,
    resume_state: dict[str, Any] | None = None,
    fingerprint: dict[str, Any] | None = None,
    resume_changes: Sequence[dict[str, Any]] = (),
    setup_seconds: float = 0.0,
    device: torch.device | str | None = None,
) -> LoopResult:
    """Call ``method.step()`` until the budget is spent; the one loop of every method.

    ``device`` is where the method computes: on CUDA the first steps are also watched for
    draws from the device's own generator (default: the CPU's alone)."""
    seconds = 0.0
    carried: dict[str, Any] = {}  # saved states of callbacks this resume runs without
    keys = _callback_keys(callbacks)  # the names their states are saved under
    if resume_state is not None:
        method.load_state_dict(resume_state["method"])
        generator.set_state(resume_state["generator"])
        seconds = float(resume_state["seconds"])
        saved = resume_state["callbacks"]
        for key, cb in zip(keys, callbacks, strict=True):
            if key in saved:
                cb.load_state_dict(saved[key])
        carried = {k: v for k, v in saved.items() if k not in keys}
    if not method.needs_steps:  # a coreset: its callbacks still see the start and the end
        try:
            for cb in callbacks:
                cb.on_start(method, method.iteration, 0)
        finally:
            for cb in callbacks:
                cb.on_end(method)
        return LoopResult(method, 0, seconds, "no-steps")
    total = iteration_cap(method, iterations, time_budget)

    def snapshot() -> dict[str, Any]:
        return {
            "method": method.state_dict(),
            "generator": generator.get_state(),
            "seconds": seconds,
            "callbacks": {
                **carried,
                **{k: cb.state_dict() for k, cb in zip(keys, callbacks, strict=True)},
            },
            "fingerprint": fingerprint or {},
            "resume_changes": list(resume_changes),
            "setup_seconds": setup_seconds,
        }

    def save() -> None:
        if checkpoint is None:
            return
        if not all(bool(torch.isfinite(p).all()) for p in method.synthetic().parameters()):
            raise RunError(
                f"The synthetic set became non-finite at iteration {method.iteration}"
                f"{_diverged_advice(checkpoint, method)}"
            )
        _save_checkpoint(checkpoint, snapshot())

    def interrupted() -> Interrupted:
        if checkpoint is None:
            return Interrupted(
                f"Interrupted at iteration {method.iteration}; no checkpoint path was given, "
                "so this run cannot be resumed (give one to make a run resumable)."
            )
        save()
        return Interrupted(
            f"Interrupted at iteration {method.iteration}; a resumable checkpoint is saved "
            f"in {checkpoint.parent}. Run the same command with --resume to continue."
        )

    stopped_by = "iterations"
    # the first steps of a run are watched for draws from torch's global generator: one of
    # a builtin method, three of a user's
    watched = 1 if type(method).__module__.startswith("datadistill.") else 3
    # on CUDA, randn(..., device=...) and dropout draw from the device's own generator
    dev = torch.device("cpu") if device is None else torch.device(device)
    steps = 0  # taken by this call
    try:
        # Ctrl-C is a flag from here on, also during the first validation and the last save
        with _deferred_interrupt() as flag:
            for cb in callbacks:
                cb.on_start(method, method.iteration, total)
            while True:
                if flag["stop"]:
                    raise interrupted()
                if total is not None and method.iteration >= total:
                    break
                if time_budget is not None and seconds >= time_budget:
                    stopped_by = "time"
                    break
                t0 = time.perf_counter()
                before = method.iteration
                rng = global_rng_states(dev) if steps < watched else None
                metrics = _checked_metrics(method, method.step(), before, first=steps == 0)
                seconds += time.perf_counter() - t0
                if rng is not None:
                    _warn_if_global_rng_used(method, rng, dev)
                steps += 1
                loss = metrics.get("loss", 0.0)
                if not math.isfinite(loss):
                    raise RunError(
                        f"The loss became {loss} at iteration {method.iteration}"
                        f"{_diverged_advice(checkpoint, method)}"
                    )
                for cb in callbacks:
                    cb.on_step(method, method.iteration, metrics)
                if flag["stop"]:
                    raise interrupted()
                if checkpoint is not None and method.iteration % checkpoint_every == 0:
                    save()
            save()
            if flag["stop"]:  # during the last save: the run is complete on disk
                raise interrupted()
    finally:
        for cb in callbacks:
            cb.on_end(method)
    return LoopResult(method, method.iteration, seconds, stopped_by)


def distill(
    real: RealData,
    method: str | Method = "dm",
    ipc: int = 10,
    seed: int = 0,
    *,
    iterations: int | None = None,
    time_budget: float | None = None,
    device: str | torch.device = "auto",
    callbacks: Sequence[Callback] = (),
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 100,
    resume: bool = False,
    progress: bool = False,
    validate_every: int = 0,
    select: str = "last",
    **hparams: Any,
) -> Distilled:
    """Distill ``real`` with ``method`` into ``ipc`` images per class.

    ``method`` is a registered name (its hyperparameters as keyword arguments) or a
    :class:`~datadistill.methods.Method` from :func:`~datadistill.methods.create_method`
    that has not been set up. Returns the :class:`~datadistill.artefact.Distilled` set;
    its manifest records the method, hyperparameters, seed, iterations, seconds and peak
    memory.

    Args:
        ipc: images per class, at most the smallest class of the training split.
        seed: seeds the one ``torch.Generator`` every random choice of the run draws from.
        iterations: steps to run; default the method's own count (the paper's, e.g. DM
            20000) unless ``time_budget`` is given, which then bounds the run alone.
        time_budget: seconds of distillation, covering the method's set-up and its steps
            (validation excluded); with ``iterations`` too, whichever ends first.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda[:N]"``.
        callbacks: :class:`~datadistill.callbacks.Callback` objects called at start, after
            every step and at the end.
        checkpoint / checkpoint_every / resume: a checkpoint file written every
            ``checkpoint_every`` steps, on Ctrl-C and at the end; ``resume=True``
            continues from it (the same run; only learning rates may change). Without
            ``resume`` an existing file there is refused, never overwritten.
        progress: show a progress bar with the loss, it/s and the ETA.
        validate_every / select: score the set on the validation split every so many
            steps; ``select="best-val"`` keeps the best-scoring state instead of the last.
        **hparams: the method's hyperparameters (``create_method(name).hparams`` lists
            them with their defaults).
    """
    require_real_data(real, "distill")
    _check_loop_options(iterations, time_budget, checkpoint_every, seed, resume, checkpoint)
    if not isinstance(progress, bool):
        raise ConfigError(f"progress must be True or False; got {progress!r}.")
    if isinstance(callbacks, Callback) or not (
        isinstance(callbacks, (list, tuple)) and all(isinstance(c, Callback) for c in callbacks)
    ):
        raise ConfigError(
            "callbacks must be a list of datadistill.callbacks.Callback objects (subclass "
            f"Callback and override its hooks); got {callbacks!r}."
        )
    m = _preflight(real, method, ipc, device, validate_every, select, hparams)
    if checkpoint is not None and not resume:
        path = Path(checkpoint)
        if path.exists():
            raise ConfigError(
                f"{path} already holds a checkpoint; pass resume=True to continue that run, "
                "or give another path (or delete it) to start a new one."
            )
        path.parent.mkdir(parents=True, exist_ok=True)  # not after the first steps
    return _distill_checked(
        real,
        m,
        int(ipc),
        int(seed),
        iterations=iterations,
        time_budget=time_budget,
        device=device,
        callbacks=callbacks,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume=resume,
        progress=progress,
        validate_every=validate_every,
        select=select,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_loop_options(
    iterations: Any,
    time_budget: Any,
    checkpoint_every: Any,
    seed: Any,
    resume: bool,
    checkpoint: Any,
) -> None:
    """The budget and checkpoint arguments of :func:`distill` (the CLI's flags in brackets)."""
    if iterations is not None and not (_is_int(iterations) and iterations >= 0):
        raise ConfigError(f"iterations (--iterations) must be an int >= 0; got {iterations!r}.")
    if time_budget is not None and not (
        isinstance(time_budget, (int, float))
        and not isinstance(time_budget, bool)
        and math.isfinite(time_budget)
        and time_budget > 0
    ):
        raise ConfigError(
            f"time_budget (--time-budget) must be a number of seconds > 0; got {time_budget!r}."
        )
    if not (_is_int(checkpoint_every) and checkpoint_every >= 1):
        raise ConfigError(
            f"checkpoint_every (--checkpoint-every) must be an int >= 1; got {checkpoint_every!r}."
        )
    if not (_is_int(seed) and seed >= 0):
        raise ConfigError(f"seed (--seed) must be an int >= 0; got {seed!r}.")
    if resume and checkpoint is None:
        raise ConfigError("resume=True needs checkpoint=PATH, the checkpoint to continue from.")


def _check_json(hparams: HParams) -> None:
    """The hyperparameters go into the checkpoint's fingerprint and the manifest's JSON:
    one that cannot is refused before any step, by name."""
    for key, value in hparams.to_dict().items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"The {key!r} parameter of {hparams.owner} is of type {type(value).__name__}, "
                "which the manifest cannot store as JSON; use numbers, strings, booleans, or "
                "lists and dicts of them."
            ) from None


def _preflight(
    real: RealData,
    method: str | Method,
    ipc: int,
    device: str | torch.device,
    validate_every: int,
    select: str,
    hparams: dict[str, Any],
) -> Method:
    """Every check that needs no computation, before anything is written: the method and
    its hyperparameters, the device, the IPC, the validation split and ``Method.check``
    (for MTT: its expert buffer). Returns the method, not yet set up."""
    if not (_is_int(validate_every) and validate_every >= 0):
        raise ConfigError(
            f"validate_every (--validate-every) must be an int >= 0 (0: never); "
            f"got {validate_every!r}."
        )
    if isinstance(method, Method):
        if hparams:
            raise ConfigError(
                f"distill() got the unexpected keyword(s) {', '.join(sorted(hparams))} beside "
                f"a {method.name} method; give hyperparameters to create_method(), not both."
            )
        if method.synset is not None:
            raise ConfigError(
                f"This {method.name} method has been set up already; create a new one with "
                "create_method() for each distillation."
            )
        m = method
    else:
        m = create_method(method, **hparams)
    _check_json(m.hparams)
    if select not in ("last", "best-val") or (select == "best-val" and validate_every <= 0):
        raise ConfigError("select must be 'last', or 'best-val' with validate_every > 0.")
    resolve_device(device)
    # a multi-formation factor too, whose real start needs ipc * factor**2 images a class
    check_ipc(real, ipc, getattr(m.hparams, "factor", 1), getattr(m.hparams, "init", "real"))
    # a coreset is scored once, so best-val has nothing to choose among
    _check_validation(real, validate_every, select if m.needs_steps else "last")
    m.check(real)
    return m


def _distill_checked(
    real: RealData,
    m: Method,
    ipc: int,
    seed: int,
    *,
    iterations: int | None,
    time_budget: float | None,
    device: str | torch.device,
    callbacks: Sequence[Callback],
    checkpoint: str | Path | None,
    checkpoint_every: int,
    resume: bool,
    progress: bool,
    validate_every: int,
    select: str,
) -> Distilled:
    """:func:`distill` after :func:`_preflight` has accepted its arguments."""
    dev = prepare_device(resolve_device(device))
    reset_peak_memory(dev)
    generator = torch.Generator().manual_seed(seed)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    fingerprint: dict[str, Any] = {
        "method": m.name,
        "ipc": ipc,
        "seed": seed,
        # user data by its absolute path: `npz:x.npz` and `npz:./x.npz` are the same data
        "dataset": with_absolute_name(real.info.to_dict()),
        "splits": [list(real.train_x.shape), list(real.val_x.shape)],
        "hparams": m.hparams.to_dict(),
    }
    if real.digest is not None:  # only data from load_dataset have one
        fingerprint["data_digest"] = real.digest
    resume_state = None
    changes: list[dict[str, Any]] = []  # learning rates changed on resume, by iteration
    if resume:
        if ckpt is None or not ckpt.is_file():
            raise ConfigError(f"Nothing to resume: no checkpoint at {ckpt}.")
        resume_state = _load_checkpoint(ckpt)
        changes = list(resume_state.get("resume_changes", []))
        saved = dict(resume_state.get("fingerprint") or {})
        if isinstance(saved.get("dataset"), dict):  # older checkpoints: the name as typed
            saved["dataset"] = with_absolute_name(saved["dataset"])
        if "hparams" in saved:
            saved["hparams"] = with_defaults(m.hparams, saved["hparams"])
        was = saved.get("data_digest")  # None: a checkpoint from before digests
        if was is not None and "data_digest" not in fingerprint:
            # data made without load_dataset (a RealData built by hand): nothing to check
            # them by, and later checkpoints keep the digest the run was checked by
            fingerprint["data_digest"] = was
        changed = _resume_changes(
            _without(saved, "data_digest"),
            _without(fingerprint, "data_digest"),
            m.changeable_on_resume(),
            ckpt,
        )
        if was is not None and fingerprint["data_digest"] != was:
            raise ConfigError(
                f"The checkpoint at {ckpt} was made from other files of {real.info.name} "
                f"{_other_files(was, fingerprint['data_digest'])}; resume with the files it "
                "was made from, or start over in another folder."
            )
        if changed:
            at = int(resume_state["method"]["iteration"])
            changes = _merge_change(changes, at, changed)
            warnings.warn(
                f"Resuming from iteration {at} with {describe_change(changed)}; the run now "
                "differs from an uninterrupted one, and its manifest records the change.",
                stacklevel=3,  # the caller of distill() (or run())
            )
    val = (
        Validation(
            real, validate_every, validation_protocol(m.expected_protocol), seed=seed, device=dev
        )
        if validate_every > 0
        else None
    )
    cbs: list[Callback] = [_builtin(History()), *([_builtin(val)] if val else []), *callbacks]
    t_setup = time.perf_counter()
    m.setup(real.to(dev), ipc, generator, dev)
    setup_seconds = time.perf_counter() - t_setup
    if not isinstance(m.synset, SyntheticSet):
        raise RunError(
            f"{_label(m)}'s setup() left self.synset as {type(m.synset).__name__}; it must set "
            "it to the synthetic set it distills (e.g. init_synset(...) or a PixelSet)."
        )
    if resume_state is not None and "setup_seconds" in resume_state:
        # the first set-up's, so that a resume (warm caches, another machine's speed)
        # leaves the steps the same share of the budget
        setup_seconds = float(resume_state["setup_seconds"])
    # a time budget covers the set-up too (e.g. a k-means initialisation)
    budget = None if time_budget is None else max(0.0, time_budget - setup_seconds)
    if resume_state is not None and m.needs_steps:
        _say_if_the_budget_is_spent(m, resume_state, iterations, budget)
    if progress and m.needs_steps:  # a coreset has no steps to show
        spent = float(resume_state["seconds"]) if resume_state is not None else 0.0
        left = None if budget is None else max(0.0, budget - spent)
        overhead = (lambda: val.seconds) if val is not None else None
        cbs.append(_builtin(Progress(f"{m.name} ipc={ipc}", time_budget=left, overhead=overhead)))
    result = run_loop(
        m,
        iterations=iterations,
        time_budget=budget,
        callbacks=cbs,
        checkpoint=ckpt,
        checkpoint_every=checkpoint_every,
        generator=generator,
        resume_state=resume_state,
        fingerprint=fingerprint,
        resume_changes=changes,
        setup_seconds=setup_seconds,
        device=dev,
    )
    synset = m.synthetic()
    chosen = "last"
    if select == "best-val" and val is not None and val.best_state is not None:
        synset.load_state_dict(val.best_state)
        chosen = f"best-val (iteration {val.best_iteration})"
    images, labels, soft = synset.stored()  # a multi-formation set keeps its compact images
    history = cbs[0]
    assert isinstance(history, History)
    manifest = {
        "method": m.name,
        "hparams": m.hparams.to_dict(),
        "synset": synset.config(),
        "seed": seed,
        "iterations": result.iterations,
        "stopped_by": result.stopped_by,
        "distill_seconds": result.seconds + setup_seconds,
        "validation_seconds": val.seconds if val else 0.0,
        "validation": {
            "protocol": val.protocol.name,
            "seeds": val.seeds,  # one network per check (not the protocol's seeds)
            "network_seed": val.network_seed,
            "history": val.history,
            "best_acc": val.best_acc if math.isfinite(val.best_acc) else None,
            "best_iteration": val.best_iteration,
        }
        if val
        else None,
        "selected": chosen,
        "peak_memory_bytes": peak_memory_bytes(dev),
        "device": str(dev),
        "loss_history": history.rows[:: max(1, len(history.rows) // MAX_HISTORY_ROWS)],
        "protocol": m.expected_protocol,
        # a change takes effect with the next step: one at the final iteration changed nothing
        "resume_changes": [c for c in changes if c["iteration"] < result.iterations],
        # how to load the data again (datadistill evaluate / relabel): only for data from
        # load_dataset, whose options the RealData carries
        **({"data": dict(real.options)} if real.options is not None else {}),
        **m.manifest_extra(),
    }
    return Distilled(
        images=images.detach().cpu().float(),
        labels=labels.detach().cpu(),
        info=real.info,
        soft_labels=soft.detach().cpu().float() if soft is not None else None,
        lr=synset.learned_lr(),
        zca=real.zca,
        manifest=manifest,
        factor=synset.factor,
    )


def with_defaults(hparams: Any, recorded: Any) -> Any:
    """``recorded`` hyperparameters of an older run, completed with the defaults of
    ``hparams``' class: a hyperparameter added since then ran at its default. Anything
    but a dict (missing, corrupt) is returned as it is, for the comparison to report."""
    if not isinstance(recorded, dict):
        return recorded
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(hparams)
        if f.default is not dataclasses.MISSING
    }
    return {**defaults, **recorded}


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


def _other_files(was: object, now: object) -> str:
    return (
        f"(data digest {was} then, {now} now: other images or labels with the same shapes "
        "and statistics, an edited file or another copy)"
    )


def _finished_artefact(
    path: Path, method: Method, config: RunConfig, data: dict[str, Any]
) -> tuple[Distilled, dict[str, Any]]:
    """The artefact a run without a checkpoint (a coreset) left before its evaluation,
    once it is known to be this configuration's, and the ``data`` to record in it: without
    a digest when the artefact had none (from before digests: made from files unknown)."""
    from datadistill.artefact import load

    d = load(path)
    m = d.manifest
    made = m.get("data")
    was = made.get("digest") if isinstance(made, dict) else None
    recorded = {
        "method": m.get("method"),
        "hparams": with_defaults(method.hparams, m.get("hparams")),
        "ipc": d.ipc,
        "seed": m.get("seed"),
        "data": _without(with_absolute_name(made), "digest") if isinstance(made, dict) else made,
    }
    wanted = {
        "method": method.name,
        "hparams": method.hparams.to_dict(),
        "ipc": config.ipc,
        "seed": config.seed,
        "data": _without(data, "digest"),
    }
    if recorded != wanted:
        diff = first_difference(recorded, wanted, "in the artefact", "now")
        raise ConfigError(
            f"{path} was distilled with other options ({diff}); resume with the same options "
            "or start over in another folder."
        )
    if was is None:  # an artefact from before digests: made from files unknown
        return d, _without(data, "digest")
    if data.get("digest") != was:
        raise ConfigError(
            f"{path} was distilled from other files of {config.dataset} "
            f"{_other_files(was, data.get('digest'))}; resume with the files it was made "
            "from, or start over in another folder."
        )
    return d, data


# what a run writes once it is over
_REPORT_FILES = frozenset({"report.json", "report.md", "grid.png", "curves.png"})


# what a run folder holds (and the temporary files of its atomic writes)
_RUN_FILES = frozenset(
    {
        CHECKPOINT_NAME,
        "checkpoint.tmp",
        ARTEFACT_NAME,
        ARTEFACT_NAME + ".tmp",
        "config.json",
        *_REPORT_FILES,
    }
)


def _run_config(path: Path) -> bool:
    """Whether ``path`` is a run's config.json (the fields of a :class:`RunConfig`)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    return isinstance(saved, dict) and set(saved) == fields


def _say(message: str) -> None:
    """One line of the evaluation's progress, where the progress bar writes."""
    from rich.console import Console

    Console().print(message, markup=False, highlight=False)


def run(config: RunConfig, out: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Run ``config`` end to end and fill the folder ``out``; returns ``report.json``'s dict."""
    from datadistill.evaluation import evaluate
    from datadistill.evaluation.evaluate import require_test_images
    from datadistill.report import write_report

    out = Path(out)
    protocol = config.protocol
    if protocol is None:  # dc / dm -> "dc", dsa -> "dsa", mtt -> "mtt"
        protocol = METHODS.get(config.method).expected_protocol
    # the registered spelling ("DC" -> "dc"), as the evaluation and the report name it
    config = dataclasses.replace(config, protocol=PROTOCOLS.canonical(protocol))
    assert config.protocol is not None
    if ((out / CHECKPOINT_NAME).exists() or (out / ARTEFACT_NAME).exists()) and not resume:
        raise ConfigError(
            f"{out} already holds a run; pass --resume to continue it, or choose another "
            "--out (nothing there is overwritten)."
        )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the run.")
    # a run writes config.json, report.md, ...: never over someone's files; a resumed run's
    # folder is its own, and what was added there since (show's PNG, notes) stays untouched
    if out.is_dir() and not resume:
        others = sorted(p.name for p in out.iterdir() if p.name not in _RUN_FILES)
        if others:
            raise ConfigError(
                f"--out {out} already holds other files ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}); give a new or empty folder for the run."
            )
        # a run's files without its checkpoint or set: an earlier run's report, or someone's
        # files of those names; never replaced. (A run's config.json alone is left by a
        # start that saved nothing, e.g. out of memory or NaN in the first steps: starting
        # again there, with other settings too, loses nothing.)
        earlier = sorted(
            p.name
            for p in out.iterdir()
            if p.name in _REPORT_FILES or (p.name == "config.json" and not _run_config(p))
        )
        if earlier:
            raise ConfigError(
                f"--out {out} already holds {', '.join(earlier)}, without a run's checkpoint "
                "or set; delete them, or give a new or empty folder for the run."
            )
    # Bad options fail before the run folder is created.
    method = create_method(config.method, **config.hparams)  # before the (slower) data
    if config.evaluate:
        for arch in config.eval_archs:
            MODELS.canonical(arch)  # an unknown name, with the closest one
    artefact = out / ARTEFACT_NAME
    # a coreset keeps no checkpoint: interrupted after its artefact, it resumes to evaluation
    finished = (
        resume
        and not method.needs_steps
        and not (out / CHECKPOINT_NAME).is_file()
        and artefact.is_file()
    )
    if resume and not finished and not (out / CHECKPOINT_NAME).is_file():
        if artefact.is_file():  # the set is there (it is saved once its distillation is over)
            raise ConfigError(
                f"Nothing to resume: no checkpoint at {out / CHECKPOINT_NAME}, but {artefact} "
                f"holds the set this run distilled; evaluate it with `datadistill evaluate "
                f"{out}`, or start over in another --out."
            )
        raise ConfigError(
            f"Nothing to resume: no checkpoint at {out / CHECKPOINT_NAME}; run without --resume "
            "to start."
        )
    resolve_device(config.device)
    real = load_dataset(
        config.dataset,
        config.data_root,
        val_size=config.val_size,
        zca=config.zca,
        max_train=config.max_train,
    )
    _preflight(real, method, config.ipc, config.device, config.validate_every, config.select, {})
    if config.evaluate:
        require_test_images(real, ", or pass --no-evaluate")
    out.mkdir(parents=True, exist_ok=True)
    config_json = json.dumps(config.to_dict(), indent=2)
    if not resume:  # a resumed run writes it once its checkpoint has been accepted
        (out / "config.json").write_text(config_json)
    assert real.options is not None  # set by load_dataset
    data = dict(real.options)  # what dataset_of needs to load these data again
    if finished:
        distilled, data = _finished_artefact(artefact, method, config, data)
    else:
        distilled = _distill_checked(
            real,
            method,
            config.ipc,
            config.seed,
            iterations=config.iterations,
            time_budget=config.time_budget,
            device=config.device,
            callbacks=(),
            checkpoint=out / CHECKPOINT_NAME,
            checkpoint_every=config.checkpoint_every,
            resume=resume,
            progress=config.progress,
            validate_every=config.validate_every,
            select=config.select,
        )
    (out / "config.json").write_text(config_json)
    distilled = distilled.with_manifest(protocol=config.protocol, data=data)
    distilled.save(artefact)
    evaluation = None
    if config.evaluate:
        try:
            evaluation = evaluate(
                distilled,
                real,
                config.protocol,
                archs=config.eval_archs or None,
                seeds=config.eval_seeds,
                full=config.full,
                full_epochs=config.full_epochs,
                device=config.device,
                progress=_say if config.progress else None,  # minutes of training
            )
        except (MemoryError, RuntimeError) as exc:
            if not out_of_memory(exc):
                raise
            # the set is saved: lowering the run's settings (and distilling again) would
            # throw it away, so point at what evaluates it as it is
            raise RunError(
                f"Out of memory while evaluating the distilled set, which is saved in "
                f"{artefact}; evaluate it on a device with more memory or with other networks "
                f"(`datadistill evaluate {out} --device ... --arch ...`), or run the same "
                "command with --resume and a --device with more memory."
            ) from None
        distilled = distilled.with_manifest(evaluation=evaluation.to_dict())
        distilled.save(artefact)
    return write_report(out, config, distilled, evaluation, artefact.stat().st_size)
