"""Side concerns of the step loop, fired at named hooks: progress, validation, history.

Methods never print, checkpoint or validate themselves; the loop in :mod:`datadistill.run`
calls ``on_start`` / ``on_step`` / ``on_end`` of each callback.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from datadistill.data import RealData
from datadistill.evaluation.evaluate import VALIDATION_SEED_OFFSET, train_and_test
from datadistill.evaluation.protocols import Protocol, get_protocol
from datadistill.methods.base import Method


class Callback:
    """No-op base; override what you need. A checkpoint keeps its ``state_dict()`` under its
    class name (numbered when a run has several of one class)."""

    state_key: str | None = None  # set by distill() on its own callbacks

    def on_start(self, method: Method, start: int, total: int | None) -> None: ...

    def on_step(self, method: Method, iteration: int, metrics: dict[str, float]) -> None: ...

    def on_end(self, method: Method) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class History(Callback):
    """Keeps ``(iteration, metrics)`` every ``every`` steps for curves and reports."""

    def __init__(self, every: int = 1) -> None:
        self.every = every
        self.rows: list[dict[str, float]] = []

    def on_step(self, method: Method, iteration: int, metrics: dict[str, float]) -> None:
        if iteration % self.every == 0 or iteration == 1:
            self.rows.append({"iteration": float(iteration), **metrics})

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state.get("rows", []))


class Validation(Callback):
    """Every ``every`` steps, trains a fresh network on the current synthetic set with the
    ``protocol`` (``fast`` by default; :func:`~datadistill.run.distill` passes
    :func:`~datadistill.evaluation.protocols.validation_protocol` of the method's own
    protocol, e.g. with the learned lr and DSA for ``mtt``) and scores it on the
    VALIDATION split.

    Keeps the best-scoring synthetic state, so that model selection never sees the test
    split. ``history`` holds ``(iteration, accuracy)`` pairs. Each check trains one network
    (``seeds`` is 1) from ``network_seed``, the run's ``seed`` plus
    :data:`~datadistill.evaluation.evaluate.VALIDATION_SEED_OFFSET`, so it is never one of
    the networks the final evaluation reports (seeds 0, 1, ...).
    """

    seeds = 1

    def __init__(
        self,
        real: RealData,
        every: int,
        protocol: str | Protocol = "fast",
        arch: str = "convnet",
        seed: int = 0,
        device: torch.device | None = None,
    ) -> None:
        self.real, self.every, self.arch, self.seed = real, every, arch, seed
        self.network_seed = seed + VALIDATION_SEED_OFFSET
        self.protocol = get_protocol(protocol)
        self.device = device
        self.history: list[tuple[int, float]] = []
        self.best_acc = -math.inf
        self.best_iteration = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.seconds = 0.0

    def score(self, method: Method) -> float:
        images, labels, soft = method.synthetic().materialize()
        return train_and_test(
            images.detach(),
            labels,
            self.real,
            self.protocol,
            self.arch,
            self.network_seed,
            soft_labels=soft.detach() if soft is not None else None,
            split="val",
            lr=method.synthetic().learned_lr() if self.protocol.learned_lr else None,
            device=self.device,
        )

    def check(self, method: Method, iteration: int) -> None:
        t0 = time.perf_counter()
        acc = self.score(method)
        self.seconds += time.perf_counter() - t0
        self.history.append((iteration, acc))
        if acc > self.best_acc:
            self.best_acc, self.best_iteration = acc, iteration
            self.best_state = copy.deepcopy(method.synthetic().state_dict())

    def on_start(self, method: Method, start: int, total: int | None) -> None:
        if start == 0 and self.every > 0 and self.real.val_x.shape[0] > 0:
            self.check(method, 0)

    def on_step(self, method: Method, iteration: int, metrics: dict[str, float]) -> None:
        if self.every > 0 and iteration % self.every == 0 and self.real.val_x.shape[0] > 0:
            self.check(method, iteration)

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [list(h) for h in self.history],
            "best_acc": self.best_acc,
            "best_iteration": self.best_iteration,
            "best_state": self.best_state,
            "seconds": self.seconds,
            "network_seed": self.network_seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # a checkpoint from before the offset (no "network_seed") scored its history with
        # the run's seed itself: keep scoring that way, so old and new checks compare
        self.network_seed = int(state.get("network_seed", self.seed))
        self.history = [(int(i), float(a)) for i, a in state.get("history", [])]
        self.best_acc = float(state.get("best_acc", -math.inf))
        self.best_iteration = int(state.get("best_iteration", -1))
        self.best_state = state.get("best_state")
        self.seconds = float(state.get("seconds", 0.0))


class Progress(Callback):
    """A rich progress bar with the loss, iterations per second and the remaining time.

    A run bounded by seconds rather than iterations passes ``time_budget`` (the seconds
    left to it): the bar's total is then the iteration count the budget will reach at
    the rate seen so far, so its ETA counts down to the end of the budget. The budget
    counts step time only, so ``overhead`` (a running total of the seconds spent outside
    the steps, e.g. validation) is taken off the clock for that estimate.
    """

    def __init__(
        self,
        description: str = "distilling",
        refresh_every: int = 1,
        time_budget: float | None = None,
        overhead: Callable[[], float] | None = None,
    ) -> None:
        self.description = description
        self.refresh_every = refresh_every
        self.time_budget = time_budget
        self.overhead = overhead or (lambda: 0.0)
        self._budget: float | None = None
        self._progress: Any = None
        self._task: Any = None

    def on_start(self, method: Method, start: int, total: int | None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import (
            Progress as RichProgress,
        )

        self._progress = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]} it/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            self.description, total=total, completed=start, loss="-", rate="-"
        )
        self._t0, self._i0 = time.perf_counter(), start
        self._budget = self.time_budget if total is None else None
        self._overhead0 = self.overhead()

    def on_step(self, method: Method, iteration: int, metrics: dict[str, float]) -> None:
        if self._progress is None or iteration % self.refresh_every:
            return
        dt = time.perf_counter() - self._t0
        rate = (iteration - self._i0) / dt if dt > 0 else 0.0
        extra: dict[str, Any] = {}
        if self._budget is not None:
            stepping = dt - (self.overhead() - self._overhead0)  # what the budget counts
            if stepping > 0 and iteration > self._i0:
                per_step = stepping / (iteration - self._i0)
                left = max(0.0, self._budget - stepping)
                extra["total"] = iteration + round(left / per_step)
        self._progress.update(
            self._task,
            **extra,
            completed=iteration,
            loss=f"{metrics['loss']:.4g}" if "loss" in metrics else "-",  # none returned
            rate=f"{rate:.2f}",
        )

    def on_end(self, method: Method) -> None:
        if self._progress is not None:
            if self._budget is not None:  # the estimate gives way to where the run ended
                task = self._progress.tasks[0]
                self._progress.update(self._task, total=task.completed)
            self._progress.stop()
            self._progress = None
