"""Contract checks for your own methods and models (scikit-learn's ``check_estimator``
idea): run them in a test, or as ``datadistill check NAME`` on the command line.

>>> from datadistill.testing import check_method, check_model
>>> check_method("moments", lr_img=0.5)   # raises ContractError listing what failed
>>> print(check_model("mynet", raise_on_failure=False))

:func:`check_method` distills a few steps of the scaled-down digits set (embedded, no
download) through the library's one loop, several times, and checks what the loop cannot
check on one run: that a seed fixes the run, that a run resumed from a checkpoint equals
an uninterrupted one (``state_dict`` carries the optimiser's state and whatever else a
continuation needs), that nothing draws from torch's global generator, that the real data
are left as they were, and that the artefact reads back. :func:`check_model` builds a
model the way methods and evaluation do (on the meta device, then initialised from a
generator) for each input shape and checks the :class:`~datadistill.models.ImageClassifier`
contract, the gradients the methods need, seeded initialisation and the ``torch.func``
calls gradient and trajectory matching make.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import math
import shutil
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from datadistill._device import fork_global_rng, global_rng_states, same_rng_states
from datadistill.errors import DatadistillError, user_frame

if TYPE_CHECKING:
    from datadistill.artefact import Distilled
    from datadistill.data import RealData

OK, FAIL, WARN, SKIP = "ok", "FAIL", "warn", "skip"


class ContractError(DatadistillError, AssertionError):
    """A method or model failed one of its contract checks (an ``AssertionError`` too, so
    a failed check reads as a failed test under pytest)."""


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``status`` is ``"ok"``, ``"FAIL"``, ``"warn"`` (works, but a
    user would want to know) or ``"skip"`` (does not apply); ``detail`` says why."""

    name: str
    status: str
    detail: str = ""


@dataclass
class CheckReport:
    """The checks of one method or model, in the order they ran."""

    subject: str
    checks: list[Check] = dataclasses.field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def passed(self) -> bool:
        return not self.failed

    def add(self, name: str, status: str, detail: str = "") -> None:
        self.checks.append(Check(name, status, detail))

    def __str__(self) -> str:
        width = max((len(c.name) for c in self.checks), default=0)
        lines = [f"{self.subject}: {'passed' if self.passed else 'FAILED'}"]
        for c in self.checks:
            lines.append(f"  {c.status:<4}  {c.name:<{width}}  {c.detail}".rstrip())
        return "\n".join(lines)

    def summary(self) -> str:
        """One line naming the failed checks ("" when none failed)."""
        if not self.failed:
            return ""
        what = "; ".join(f"{c.name}: {c.detail.rstrip('.')}" for c in self.failed)
        return f"{self.subject} failed {len(self.failed)} check(s). {what}"

    def raise_for_failures(self) -> None:
        if self.failed:
            raise ContractError(self.summary())


def _describe(exc: BaseException) -> str:
    """An exception in one line, with the innermost frame of the code that raised it that
    is the user's own (not datadistill's, torch's or Python's), else the innermost; none
    for the library's own sentences (a step that broke the loop's contract names the
    method, and the loop's line would only mislead)."""
    frames = traceback.extract_tb(exc.__traceback__)
    frame = user_frame(exc)
    if frame is None and frames and not isinstance(exc, DatadistillError):
        frame = frames[-1]
    where = f" ({Path(frame.filename).name}:{frame.lineno})" if frame is not None else ""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(text) > 240:  # torch's paragraphs (vmap's, e.g.)
        text = text[:240].rstrip() + " ..."
    return f"{type(exc).__name__}: {text}{where}" if text else f"{type(exc).__name__}{where}"


def _digest(real: RealData) -> str:
    """Of every split's images and labels (evaluation reads the test split too)."""
    from datadistill.evaluation.evaluate import _hash_tensor

    h = hashlib.sha256()
    for t in (real.train_x, real.train_y, real.val_x, real.val_y, real.test_x, real.test_y):
        _hash_tensor(h, t)
    return h.hexdigest()


def _equal(a: Tensor | None, b: Tensor | None, exact: bool) -> bool:
    """Bit for bit (NaN equal to NaN) when ``exact``, else to float rounding (a GPU's
    kernels are not bit-deterministic)."""
    if a is None or b is None:
        return a is b
    if a.shape != b.shape:
        return False
    if exact:
        return torch.equal(a, b) or bool(
            torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))
        )
    return torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5, equal_nan=True)


def _as_tensor(value: float | None) -> Tensor | None:
    return None if value is None else torch.tensor(value, dtype=torch.float64)


def _same_set(a: Distilled, b: Distilled, exact: bool = True) -> str:
    """What differs between two distilled sets ("" when they are equal)."""
    if not _equal(a.images, b.images, exact):
        return "images"
    if not _equal(a.labels, b.labels, True):
        return "labels"
    if not _equal(a.soft_labels, b.soft_labels, exact):
        return "soft labels"
    if not _equal(_as_tensor(a.lr), _as_tensor(b.lr), exact):
        return "learned lr"
    return ""


@contextlib.contextmanager
def _kept_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """The warnings raised inside the block, kept (and not shown)."""
    kept: list[warnings.WarningMessage] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield kept
        finally:
            kept.extend(caught)


def _from_compiler(w: warnings.WarningMessage) -> bool:
    """Whether ``w`` is one of torch.compile's notices about this machine or process (e.g.
    inductor's, once per process on a GPU, that TF32 is available but off), which is no
    finding about a method that compiles its steps."""
    path = Path(w.filename).as_posix()
    return "/torch/_inductor/" in path or "/torch/_dynamo/" in path


def check_method(
    method: str,
    real: RealData | None = None,
    /,
    *,
    ipc: int = 1,
    iterations: int = 4,
    seed: int = 0,
    device: str = "cpu",
    raise_on_failure: bool = True,
    **hparams: Any,
) -> CheckReport:
    """Check a registered method's contract by distilling a few steps five times.

    Args:
        method: the registered name.
        real: the data to distill (default: the scaled-down digits set, 8x8, embedded);
            pass your own for a method that needs other images (``max_train`` keeps it
            quick).
        ipc / iterations / seed: of each short run (the resume check stops at half).
        device: where it runs. On a GPU, whose kernels are not bit-deterministic, runs are
            compared to float rounding instead of bit for bit.
        raise_on_failure: raise :class:`ContractError` naming the failed checks (default),
            or only return the report.
        **hparams: the method's hyperparameters (make it quick: a narrow network, few
            real images per class).

    Returns:
        the :class:`CheckReport`; ``print`` it for a table of the checks. The method's own
        mistakes are failed checks; mistakes in the call (an unknown hyperparameter, an
        IPC the data cannot give) raise :class:`ConfigError`, and a missing expert buffer
        :class:`DataError`, as :func:`datadistill.distill` does. Torch's global random
        state is restored after.
    """
    from datadistill._device import resolve_device
    from datadistill.methods import METHODS

    METHODS.get(method)  # an unknown name first, with the closest match
    with fork_global_rng(resolve_device(device)):
        report = _check_method(method, real, ipc, iterations, seed, device, hparams)
    return _done(report, raise_on_failure)


def _check_method(
    method: str,
    real: RealData | None,
    ipc: int,
    iterations: int,
    seed: int,
    device: str,
    hparams: dict[str, Any],
) -> CheckReport:
    import datadistill as dd
    from datadistill._device import resolve_device
    from datadistill.errors import ConfigError
    from datadistill.methods import METHODS
    from datadistill.methods.base import hparams_class_problem
    from datadistill.run import (
        GlobalGeneratorWarning,
        NoLossWarning,
        _check_json,
        _check_loop_options,
        _preflight,
    )

    report = CheckReport(f"method {method!r}")
    cls = METHODS.get(method)  # an unknown name: UnknownNameError, with the closest match
    hp_cls = cls.hparams_class
    problem = hparams_class_problem(hp_cls)
    if problem:
        report.add("hyperparameters", FAIL, problem)
        return report
    missing = [f.name for f in dataclasses.fields(hp_cls) if _no_default(f)]
    if missing:
        report.add(
            "hyperparameters",
            FAIL,
            f"every hyperparameter needs a default (the command line builds them from "
            f"defaults); {', '.join(missing)} has none",
        )
        return report
    try:  # the method's own defaults, before the values of this call
        _check_json(hp_cls())
    except Exception as exc:  # noqa: BLE001  (validate()'s ConfigError, or anything else)
        text = str(exc) if isinstance(exc, ConfigError) else _describe(exc)
        report.add("hyperparameters", FAIL, f"its defaults are refused: {text}")
        return report
    if real is None:
        real = dd.load_dataset("digits")
    # the call's own mistakes raise, as distill() would: they are not the method's
    _check_loop_options(iterations, None, 1, seed, False, None)
    m = _preflight(real, method, ipc, device, 0, "last", hparams)  # also: JSON-able values
    report.add("hyperparameters", OK, "a frozen dataclass of HParams with defaults")
    dev = resolve_device(device)
    exact = dev.type == "cpu"
    # the runs get the data on the device: a copy of the caller's on a GPU, which only the
    # runs would see change, so the check watches (and hands them) the device's copy
    real = real.to(dev)
    data_before = _digest(real)
    kw: dict[str, Any] = dict(ipc=ipc, seed=seed, device=device, **hparams)

    def distill(**extra: Any) -> Distilled:
        return dd.distill(real, method, **{**kw, "iterations": iterations, **extra})

    global_before = global_rng_states(dev)
    with _kept_warnings() as seen:
        try:
            first = distill()
        except Exception as exc:  # noqa: BLE001  (any failure is the report's finding)
            report.add("runs", FAIL, _describe(exc))
            return report
    global_drawn = not same_rng_states(global_rng_states(dev), global_before)
    n = first.manifest["iterations"]
    steps = cls.needs_steps
    report.add(
        "runs",
        OK,
        f"{n} step(s) at IPC {ipc}" if steps else "selects in setup(); no steps",
    )
    finite = _check_set(report, first, real, ipc)
    if steps:
        no_loss = any(issubclass(w.category, NoLossWarning) for w in seen)
        report.add(
            "metrics",
            FAIL if no_loss else OK,
            "step() returns no 'loss': the NaN stop and the progress bar read it"
            if no_loss
            else "step() adds 1 to self.iteration and returns numbers with a 'loss'",
        )
    others = [
        str(w.message)
        for w in seen
        if not issubclass(w.category, (NoLossWarning, GlobalGeneratorWarning))
        and not _from_compiler(w)
    ]
    if others:
        more = f" (and {len(others) - 1} more)" if len(others) > 1 else ""
        report.add("warnings", WARN, others[0] + more)
    report.add(
        "global generator",
        FAIL if global_drawn else OK,
        "setup() or step() drew from torch's global random generator: draw from the "
        "generator setup() is given (torch.randn(..., generator=g); a model from "
        "create_model(..., generator=g))"
        if global_drawn
        else "every draw came from the run's generator",
    )
    touched = _digest(real) != data_before
    report.add(
        "real data",
        FAIL if touched else OK,
        "the method changed the real images or labels in place; work on copies "
        "(x = x.clone()), since evaluation and the baselines read the same tensors"
        if touched
        else "left as they were",
    )

    with _kept_warnings():
        which = f"a second run with seed {seed}"
        try:
            again = distill()
            which = f"a run with seed {seed + 1}"
            other = distill(seed=seed + 1)
        except Exception as exc:  # noqa: BLE001
            report.add("reproducible", FAIL, f"{which} failed: {_describe(exc)}")
            report.add("seed", SKIP, "after a failed run")
            report.add("resume", SKIP, "after a failed run")
            _skip_new_lr(report, m, "after a failed run")
            _check_artefact(report, first, finite)
            return report
    diff = _same_set(first, again, exact)
    how = "bit-identical" if exact else "equal to float rounding"
    report.add(
        "reproducible",
        FAIL if diff else OK,
        f"two runs with seed {seed} gave different {diff}: a draw outside the run's "
        "generator, or an order that depends on something else (a set, a dict of "
        "tensors, threads)"
        if diff
        else f"two runs with seed {seed} are {how}",
    )
    seeded = bool(_same_set(first, other, exact))
    report.add(
        "seed",
        OK if seeded else WARN,
        f"seeds {seed} and {seed + 1} give different sets"
        if seeded
        else f"seeds {seed} and {seed + 1} gave the same set: fine for a method that draws "
        "nothing, otherwise it ignores the generator it is given",
    )

    if not steps:
        report.add("resume", SKIP, "nothing to resume: the set is made in setup()")
    elif n < 2 or diff or not finite:
        why = (
            f"needs at least 2 steps (iterations={iterations})"
            if n < 2
            else "a run that is not reproducible cannot resume as it was"
            if diff
            else "a non-finite set is not checkpointed (the run stops)"
        )
        report.add("resume", SKIP, why)
        _skip_new_lr(report, m, "without the resume check")
    else:
        changeable, unchecked = _halvable(m)
        if not _check_resume(report, distill, first, n, exact, changeable):
            _skip_new_lr(report, m, "after a failed resume")
        elif unchecked:
            report.add(
                "resume with a new lr",
                SKIP,
                f"{', '.join(unchecked)}: not a positive float, so not halved and not checked",
            )

    _check_artefact(report, first, finite)
    return report


def _halvable(m: Any) -> tuple[dict[str, float], list[str]]:
    """The settings of ``changeable_on_resume()`` the new-lr check halves (float-annotated,
    positive numbers), and those it cannot. Its names are hyperparameters: the method's
    registration checks ``resume_may_change``."""
    fields = {f.name: str(f.type) for f in dataclasses.fields(m.hparams)}
    halvable: dict[str, float] = {}
    unchecked: list[str] = []
    for key in sorted(m.changeable_on_resume()):
        value = getattr(m.hparams, key, None)
        if (
            "float" in fields.get(key, "")
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
            and value > 0
        ):
            halvable[key] = float(value)
        else:
            unchecked.append(key)
    return halvable, unchecked


def _no_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _done(report: CheckReport, raise_on_failure: bool) -> CheckReport:
    """``report``, after raising :class:`ContractError` for its failures if asked to."""
    if raise_on_failure:
        report.raise_for_failures()
    return report


def _check_set(report: CheckReport, result: Distilled, real: RealData, ipc: int) -> bool:
    """Adds the "synthetic set" check; returns whether the set is finite."""
    images, labels, _ = result.training_set()
    k = real.info.num_classes
    per_class = torch.bincount(labels.long(), minlength=k)
    factor = result.factor
    expected = ipc * factor * factor
    soft, lr = result.soft_labels, result.lr
    if not bool(torch.isfinite(result.images).all()):
        report.add("synthetic set", FAIL, "holds non-finite images after the steps")
        return False
    if soft is not None and not bool(torch.isfinite(soft).all()):
        report.add("synthetic set", FAIL, "holds non-finite soft labels after the steps")
        return False
    if lr is not None and not math.isfinite(lr):
        report.add("synthetic set", FAIL, f"its learned lr is {lr} after the steps")
        return False
    if tuple(images.shape[1:]) != (real.info.channels, *real.info.image_size):
        shape = tuple(images.shape[1:])
        report.add("synthetic set", FAIL, f"training images of shape {shape}, not the data's")
    elif per_class.tolist() != [expected] * k:
        report.add(
            "synthetic set",
            FAIL,
            f"{per_class.tolist()} training images per class; IPC {ipc}"
            + (f" at factor {factor}" if factor > 1 else "")
            + f" means {expected} of each class",
        )
    else:
        report.add("synthetic set", OK, f"{len(images)} finite training images, {expected} a class")
    return True


def _check_resume(
    report: CheckReport,
    distill: Callable[..., Distilled],
    straight: Distilled,
    n: int,
    exact: bool,
    changeable: dict[str, float],
) -> bool:
    """A run resumed at half-way equals the uninterrupted one; and one resumed with a
    setting of ``resume_may_change`` halved does not (the new value is applied). Returns
    whether the resume itself passed."""
    with tempfile.TemporaryDirectory() as tmp, _kept_warnings():
        ckpt, half = Path(tmp) / "checkpoint.pt", Path(tmp) / "half.pt"
        try:
            distill(iterations=n // 2, checkpoint=ckpt, checkpoint_every=1)
            shutil.copyfile(ckpt, half)
            resumed = distill(iterations=n, checkpoint=ckpt, resume=True)
        except Exception as exc:  # noqa: BLE001
            text = str(exc).lower()
            unreadable = any(w in text for w in ("weights only", "weights_only", "pickle"))
            advice = (
                "; state_dict() must hold tensors, numbers, strings and containers of them "
                "(checkpoints are read with torch.load(weights_only=True))"
                if unreadable
                else " (while saving a checkpoint at half-way, or resuming from it)"
            )
            report.add("resume", FAIL, _describe(exc) + advice)
            return False
        diff = _same_set(straight, resumed, exact)
        how = "bit for bit" if exact else "to float rounding"
        report.add(
            "resume",
            FAIL if diff else OK,
            f"a run resumed at step {n // 2} of {n} ends with other {diff} than an "
            "uninterrupted one: state_dict() / load_state_dict() leave something out (an "
            "optimiser's state, a schedule, a network kept between steps)"
            if diff
            else f"resumed at step {n // 2} of {n}, it equals an uninterrupted run {how}",
        )
        if diff:
            return False
        ignored = []
        for key, value in changeable.items():
            shutil.copyfile(half, ckpt)
            try:
                changed = distill(iterations=n, checkpoint=ckpt, resume=True, **{key: value / 2})
            except Exception as exc:  # noqa: BLE001
                report.add("resume with a new lr", FAIL, f"{key} halved: {_describe(exc)}")
                return True
            if not _same_set(straight, changed, exact):
                ignored.append(key)
    if changeable:
        names = ", ".join(changeable)
        report.add(
            "resume with a new lr",
            FAIL if ignored else OK,
            f"resumed with {', '.join(ignored)} halved, the run ends as it does unchanged: "
            "load_state_dict() must apply the current value over the checkpoint's optimiser "
            "(datadistill.methods.base.set_lr), or resume_may_change must not name it"
            if ignored
            else f"resumed with {names} halved, the run takes the new value",
        )
    return True


def _skip_new_lr(report: CheckReport, m: Any, why: str) -> None:
    """The "resume with a new lr" row, skipped, for a method that declares rates a resume
    may change."""
    if m.changeable_on_resume():
        report.add("resume with a new lr", SKIP, why)


def _check_artefact(report: CheckReport, result: Distilled, finite: bool) -> None:
    import datadistill as dd

    if not finite:  # (the "synthetic set" check has said so)
        report.add("artefact", SKIP, "a non-finite set is neither saved nor read back")
        return

    with tempfile.TemporaryDirectory() as tmp:
        try:
            back = dd.load(result.save(Path(tmp) / "set.safetensors"))
        except Exception as exc:  # noqa: BLE001
            report.add("artefact", FAIL, _describe(exc))
            return
    diff = _same_set(result, back)  # float32 on disk as in memory: bit for bit
    report.add(
        "artefact",
        FAIL if diff else OK,
        f"the saved set reads back with other {diff}" if diff else "saves and reads back",
    )


# ---------------------------------------------------------------------------- models


def check_model(
    name: str,
    /,
    *,
    channels: Sequence[int] = (1, 3),
    image_sizes: Sequence[int | tuple[int, int]] = (28, 32),
    num_classes: int = 10,
    device: str = "cpu",
    raise_on_failure: bool = True,
    **options: Any,
) -> CheckReport:
    """Check a registered model's contract for each input shape.

    The model is built as methods and evaluation build it (``create_model(...,
    generator=g)``: on the meta device, then :func:`~datadistill.models.reset_parameters`),
    so a layer that function does not know, or a tensor made in ``__init__`` that is no
    parameter, fails here rather than when a run starts.

    Args:
        name: the registered name.
        channels / image_sizes / num_classes: the input shapes and classes to build for
            (default: 1 and 3 channels at 28 and 32 px, as MNIST and CIFAR are).
        device: where its forward and backward passes run.
        raise_on_failure: raise :class:`ContractError` naming the failed checks (default),
            or only return the report.
        **options: the model's own options (``width``, ``depth``, ...); an unknown one
            raises :class:`ConfigError`, as :func:`~datadistill.models.create_model` does.
    """
    from datadistill._device import resolve_device
    from datadistill.errors import ConfigError, UnknownNameError
    from datadistill.models import check_model_options
    from datadistill.models._factory import check_signature

    report = CheckReport(f"model {name!r}")
    try:
        check_signature(name)  # also: an unknown name, with the closest match
    except ConfigError as exc:
        if isinstance(exc, UnknownNameError):
            raise
        report.add("builds", FAIL, str(exc))
        return _done(report, raise_on_failure)
    check_model_options(name, **options)  # the caller's options: refused, not a finding
    if not channels or not image_sizes:
        raise ConfigError("check_model needs at least one channel count and one image size.")
    dev = resolve_device(device)
    with fork_global_rng(dev):  # a model drawing from them leaves them as they were
        for c in channels:
            for size in image_sizes:
                _check_model_shape(report, name, c, size, num_classes, options, dev)
    return _done(report, raise_on_failure)


@dataclass
class _Shape:
    report: CheckReport
    label: str

    def add(self, name: str, status: str, detail: str = "") -> None:
        self.report.add(f"{name} [{self.label}]", status, detail)


_META_ADVICE = (
    "the model is built on the meta device and only the layers reset_parameters knows get "
    "values: make a constant in forward(), e.g. torch.tensor(0.5, device=x.device)"
)


def _check_model_shape(
    report: CheckReport,
    name: str,
    channels: int,
    size: int | tuple[int, int],
    num_classes: int,
    options: dict[str, Any],
    device: torch.device,
) -> None:
    from datadistill.models import ImageClassifier, create_model

    h, w = (size, size) if isinstance(size, int) else size
    at = _Shape(report, f"{channels}x{h}x{w}")

    def build(seed: int) -> torch.nn.Module:
        return create_model(
            name,
            channels=channels,
            num_classes=num_classes,
            image_size=(h, w),
            generator=torch.Generator().manual_seed(seed),
            **options,
        )

    global_before = torch.get_rng_state()
    try:
        model = build(0)
    except Exception as exc:  # noqa: BLE001
        at.add("builds", FAIL, str(exc) if isinstance(exc, DatadistillError) else _describe(exc))
        return
    if not isinstance(model, ImageClassifier):
        at.add(
            "builds",
            FAIL,
            f"{type(model).__name__} is no datadistill.models.ImageClassifier; DM, herding, "
            "k-center and the k-means start read its embed() features",
        )
        return
    if not torch.equal(torch.get_rng_state(), global_before):
        at.add("builds", FAIL, "building it drew from torch's global random generator")
        return
    at.add("builds", OK, f"feature_dim {model.feature_dim}")

    model = model.to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, channels, h, w, generator=gen).to(device)
    try:
        with torch.no_grad():
            model.eval()
            feats, logits = model.embed(x), model(x)
            head = model.classifier(feats)
    except Exception as exc:  # noqa: BLE001
        meta = "meta" in str(exc)
        at.add("forward", FAIL, _describe(exc) + (f" ({_META_ADVICE})" if meta else ""))
        return
    problems = []
    if tuple(feats.shape) != (4, model.feature_dim):
        problems.append(f"embed() gave {tuple(feats.shape)}, not (batch, feature_dim)")
    if tuple(logits.shape) != (4, num_classes):
        problems.append(f"forward() gave {tuple(logits.shape)}, not (batch, num_classes)")
    elif not torch.allclose(head, logits, rtol=1e-5, atol=1e-6):
        problems.append("forward(x) differs from classifier(embed(x))")
    if not bool(torch.isfinite(logits).all()):
        problems.append("non-finite logits")
    at.add("forward", FAIL if problems else OK, "; ".join(problems) or "embed and classifier")

    model.train()
    xg = x.clone().requires_grad_(True)
    before = global_rng_states(device)  # dropout on CUDA draws from the device's generator
    try:
        target = torch.arange(4, device=device) % num_classes
        torch.nn.functional.cross_entropy(model(xg), target).backward()
    except Exception as exc:  # noqa: BLE001
        at.add("gradients", FAIL, _describe(exc))
        return
    drew = not same_rng_states(global_rng_states(device), before)
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    if xg.grad is None or not bool(torch.isfinite(xg.grad).all()) or not xg.grad.any():
        at.add(
            "gradients",
            FAIL,
            "no gradient reaches the input images; distillation optimises them through the "
            "network (no .detach(), .numpy() or integer ops on the way)",
        )
        return
    if unused:
        at.add("gradients", WARN, f"parameters without a gradient: {', '.join(unused[:3])}")
    else:
        at.add("gradients", OK, "reach the input images and every parameter")
    if drew:
        at.add(
            "global generator",
            WARN,
            "training mode draws from torch's global random generator (dropout?), so an "
            "evaluation's seed does not fix the networks it trains",
        )

    a, b, c = build(0), build(0), build(1)
    same = all(torch.equal(p, q) for p, q in zip(_tensors(a), _tensors(b), strict=True))
    differs = any(not torch.equal(p, q) for p, q in zip(_tensors(a), _tensors(c), strict=True))
    at.add(
        "seeded init",
        OK if same and differs else FAIL,
        "equal seeds give equal weights, other seeds others"
        if same and differs
        else "equal generator seeds gave different weights"
        if not same
        else "other generator seeds gave the same weights",
    )
    _check_functional(at, model, x, num_classes)


def _tensors(model: torch.nn.Module) -> Iterator[Tensor]:
    yield from model.state_dict().values()


def _check_functional(at: _Shape, model: torch.nn.Module, x: Tensor, num_classes: int) -> None:
    """What trajectory and gradient matching call: ``functional_call`` on the parameters
    (MTT's student) and per-class gradients under ``vmap`` in the mode DC / DSA match in
    (training mode, batch norm frozen in eval mode)."""
    from torch.func import functional_call
    from torch.nn.modules.batchnorm import _BatchNorm

    from datadistill.functional.grads import detached_params, loop_class_grads, per_class_grads

    # in float64, where the two ways agree to rounding (in float32 a deep network with
    # instance norm on 2x2 maps differs by 0.5% between them, and neither is wrong)
    model, x = copy.deepcopy(model).double().eval(), x.double()
    params = detached_params(model)
    try:
        with torch.no_grad():
            out = functional_call(model, (params, dict(model.named_buffers())), (x,))
            ref = model(x)
    except Exception as exc:  # noqa: BLE001
        at.add("torch.func", FAIL, f"functional_call: {_describe(exc)}")
        return
    if not torch.allclose(out, ref, rtol=1e-5, atol=1e-6):
        at.add("torch.func", FAIL, "functional_call on its own parameters differs from forward")
        return
    model.train()
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.eval()
    k = 2
    images = x[: 2 * k].reshape(k, 2, *x.shape[1:])
    labels = torch.arange(k, device=x.device).repeat_interleave(2).reshape(k, 2) % num_classes
    try:
        vmapped = per_class_grads(model, params, images, labels)
    except Exception as exc:  # noqa: BLE001
        random = "random" in str(exc).lower()
        at.add(
            "torch.func",
            FAIL,
            f"per-class gradients under vmap, as DC / DSA take them: {_describe(exc)} ("
            + (
                "a random op such as dropout in training mode; leave it out"
                if random
                else "no in-place updates of buffers, .item() or data-dependent Python "
                "control flow in forward"
            )
            + ")",
        )
        return
    try:
        looped = loop_class_grads(model, images, labels)
    except RuntimeError as exc:  # parameters without a gradient (warned about above)
        at.add("torch.func", SKIP, f"no reference to compare with: {_describe(exc)}")
        return
    close = all(
        float((a - b).abs().max()) <= 1e-6 * max(1.0, float(b.abs().max()))
        for a, b in zip(vmapped, looped, strict=True)
    )
    at.add(
        "torch.func",
        OK if close else FAIL,
        "functional_call and vmapped per-class gradients agree with the module"
        if close
        else "per-class gradients under vmap differ from a loop of backward calls",
    )
