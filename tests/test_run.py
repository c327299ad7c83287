import dataclasses
import time
import warnings

import pytest
import torch

import datadistill as dd
from datadistill.callbacks import Callback
from datadistill.errors import ConfigError, RunError
from datadistill.methods import METHODS
from datadistill.methods.dm import DM
from tests.conftest import SMOKE_HPARAMS, smoke_hparams

HP = SMOKE_HPARAMS["dm"]


# Every iterative method: its checkpoint carries all of its state (DC / DSA: the
# generator and image optimiser; MTT: the learned lr, soft labels and their optimisers).
@pytest.mark.parametrize(
    "method,extra",
    [
        ("dm", {}),
        ("dc", {}),
        ("dsa", {}),
        ("mtt", {"soft_labels": True}),
        ("dm", {"factor": 2}),
        ("mtt", {"soft_labels": True, "factor": 2}),
        ("dsa", {"net_init": "experts", "width": 16}),  # the buffer: the fixture's
        ("dsa", {"sampling": "representative", "rep_pool": 40}),
    ],
)
def test_resumed_run_equals_uninterrupted(tmp_path, digits, request, method, extra):
    hp = {**smoke_hparams(method, request), **extra}
    if extra.get("net_init") == "experts":
        hp["buffer"] = str(request.getfixturevalue("expert_buffer"))
    n = 4 if method in ("dc", "dsa") else 8
    straight = dd.distill(digits, method, 2, seed=1, iterations=n, device="cpu", **hp)
    ckpt = tmp_path / "ckpt.pt"
    dd.distill(
        digits,
        method,
        2,
        seed=1,
        iterations=n // 2,
        device="cpu",
        checkpoint=ckpt,
        checkpoint_every=1,
        **hp,
    )

    class Steps(Callback):  # the iterations the resumed run itself takes
        def __init__(self):
            self.start, self.taken = None, []

        def on_start(self, method, start, total):
            self.start = start

        def on_step(self, method, iteration, metrics):
            self.taken.append(iteration)

    steps = Steps()
    resumed = dd.distill(
        digits,
        method,
        2,
        seed=1,
        iterations=n,
        device="cpu",
        checkpoint=ckpt,
        resume=True,
        callbacks=[steps],
        **hp,
    )
    assert resumed.manifest["iterations"] == n
    # it went on from the checkpoint rather than starting again (which gives the same set)
    assert steps.start == n // 2 and len(steps.taken) == n - n // 2
    assert torch.equal(straight.images, resumed.images)
    assert straight.lr == resumed.lr
    if straight.soft_labels is not None:
        assert resumed.soft_labels is not None
        assert torch.equal(straight.soft_labels, resumed.soft_labels)


def test_resume_refuses_another_runs_checkpoint(tmp_path, digits):
    ckpt = tmp_path / "ckpt.pt"
    dd.distill(digits, "dm", 2, seed=1, iterations=2, device="cpu", checkpoint=ckpt, **HP)
    with pytest.raises(
        ConfigError, match=r"belongs to another run \(ipc is 2 in the checkpoint and 3 now\)"
    ):
        dd.distill(
            digits, "dm", 3, seed=1, iterations=4, device="cpu", checkpoint=ckpt, resume=True, **HP
        )
    with pytest.raises(ConfigError, match="Nothing to resume"):
        dd.distill(
            digits,
            "dm",
            2,
            iterations=4,
            device="cpu",
            checkpoint=tmp_path / "no.pt",
            resume=True,
            **HP,
        )


def test_resume_accepts_user_data_however_its_path_is_spelled(tmp_path, monkeypatch):
    """A run on `npz:d.npz` resumes as `npz:./d.npz` (the same file), also from a
    checkpoint that recorded the name as typed, as older versions did."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(tmp_path / "d.npz", x=digits.images.astype(np.float32) / 16, y=digits.target)
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "ckpt.pt"
    first = dd.load_dataset("npz:d.npz")
    dd.distill(first, "dm", 1, iterations=2, device="cpu", checkpoint=ckpt, **HP)
    state = torch.load(ckpt, weights_only=False)
    assert state["fingerprint"]["dataset"]["name"] == f"npz:{(tmp_path / 'd.npz').resolve()}"
    state["fingerprint"]["dataset"]["name"] = "npz:d.npz"  # as older versions wrote it
    torch.save(state, ckpt)
    again = dd.load_dataset("npz:./d.npz")
    out = dd.distill(again, "dm", 1, iterations=4, device="cpu", checkpoint=ckpt, resume=True, **HP)
    assert out.manifest["iterations"] == 4


@pytest.mark.parametrize(
    ("nan_at", "every", "match", "kept"),
    [
        (5, 2, "iteration 5.*last good checkpoint", 4),  # the checkpoint of iteration 4 stays
        (2, 5, "iteration 2, before any checkpoint was written; start", None),
    ],
)
def test_nan_loss_stops_and_says_what_was_kept(
    tmp_path, digits, monkeypatch, nan_at, every, match, kept
):
    ckpt = tmp_path / "ckpt.pt"
    original = DM.step

    def step(self):
        out = original(self)
        return {"loss": float("nan")} if self.iteration == nan_at else out

    monkeypatch.setattr(DM, "step", step)
    with pytest.raises(RunError, match=match):
        dd.distill(
            digits,
            "dm",
            1,
            iterations=10,
            device="cpu",
            checkpoint=ckpt,
            checkpoint_every=every,
            **HP,
        )
    if kept is None:
        assert not ckpt.exists()
    else:
        assert torch.load(ckpt, weights_only=True)["method"]["iteration"] == kept


def test_interrupt_leaves_resumable_checkpoint(tmp_path, digits, monkeypatch):
    import signal

    ckpt = tmp_path / "ckpt.pt"
    original = DM.step

    def step(self):
        out = original(self)
        if self.iteration == 3:
            signal.raise_signal(signal.SIGINT)  # as if the user pressed Ctrl-C mid-run
        return out

    monkeypatch.setattr(DM, "step", step)
    with pytest.raises(RunError, match="Interrupted at iteration 3.*--resume"):
        dd.distill(
            digits,
            "dm",
            1,
            iterations=10,
            device="cpu",
            checkpoint=ckpt,
            checkpoint_every=100,
            **HP,
        )
    assert torch.load(ckpt, weights_only=True)["method"]["iteration"] == 3
    monkeypatch.setattr(DM, "step", original)
    done = dd.distill(
        digits, "dm", 1, iterations=6, device="cpu", checkpoint=ckpt, resume=True, **HP
    )
    assert done.manifest["iterations"] == 6
    straight = dd.distill(digits, "dm", 1, iterations=6, device="cpu", **HP)
    assert torch.equal(done.images, straight.images)  # the interruption lost nothing


def test_time_budget_stops_the_loop(digits):
    d = dd.distill(digits, "dm", 1, time_budget=0.5, device="cpu", **HP)
    assert d.manifest["stopped_by"] == "time"
    assert d.manifest["iterations"] >= 1


def test_validation_selects_on_val_split(digits):
    d = dd.distill(
        digits, "dm", 1, iterations=4, device="cpu", validate_every=2, select="best-val", **HP
    )
    val = d.manifest["validation"]
    assert [h[0] for h in val["history"]] == [0, 2, 4]
    assert val["best_acc"] == max(h[1] for h in val["history"])
    assert d.manifest["selected"].startswith("best-val")
    assert val["protocol"] == "fast"  # DM's sets are made for the plain dc recipe


def test_best_val_keeps_the_state_of_the_best_validation_score(digits, monkeypatch):
    """With scores that peak at iteration 2 of 4, best-val returns the set as it was at
    iteration 2 (a run stopped there), not the last one; each check scores the set of
    its own iteration on the validation split, with the learned lr where the protocol
    trains with one."""
    import datadistill.callbacks

    scores = iter([0.1, 0.2, 0.9, 0.3, 0.4])
    calls = []

    def scripted(images, labels, real, protocol, arch, seed, **kw):
        calls.append((images.clone(), kw["split"], kw["lr"]))
        return next(scores)

    monkeypatch.setattr(datadistill.callbacks, "train_and_test", scripted)
    common = dict(ipc=1, seed=3, device="cpu", **HP)
    best = dd.distill(digits, "dm", iterations=4, validate_every=1, select="best-val", **common)
    at_2 = dd.distill(digits, "dm", iterations=2, **common)
    last = dd.distill(digits, "dm", iterations=4, **common)
    assert torch.equal(best.images, at_2.images) and not torch.equal(best.images, last.images)
    assert best.manifest["validation"]["best_iteration"] == 2
    assert [c[1:] for c in calls] == [("val", None)] * 5  # DM's protocol has no learned lr
    assert torch.equal(calls[2][0], at_2.images) and torch.equal(calls[4][0], last.images)


def test_validation_trains_at_the_learned_lr_where_the_protocol_does(digits, monkeypatch):
    import datadistill.callbacks
    from datadistill.callbacks import Validation
    from datadistill.synthetic import PixelSet

    seen = []
    monkeypatch.setattr(
        datadistill.callbacks, "train_and_test", lambda *a, **kw: seen.append(kw["lr"]) or 0.5
    )

    class Holder:  # what Validation reads of a method
        synset = PixelSet(digits.train_x[:10], 10, lr=0.0123)

        def synthetic(self):
            return self.synset

    Validation(digits, 1, protocol="mtt").check(Holder(), 0)
    Validation(digits, 1, protocol="fast").check(Holder(), 0)
    assert seen == [pytest.approx(0.0123), None]


def test_validation_never_trains_an_evaluation_network(digits, monkeypatch):
    """Best-val selection trains its network from a seed none of the reported test
    networks (seeds 0, 1, ...) uses, and the manifest says it trains one network a check."""
    import datadistill.callbacks
    from datadistill.evaluation.evaluate import VALIDATION_SEED_OFFSET

    seen: list[tuple[int, str]] = []
    real_train = datadistill.callbacks.train_and_test

    def spy(*args, **kwargs):
        seen.append((args[5], kwargs["split"]))
        return real_train(*args, **kwargs)

    monkeypatch.setattr(datadistill.callbacks, "train_and_test", spy)
    d = dd.distill(digits, "dm", 1, seed=3, iterations=2, device="cpu", validate_every=2, **HP)
    assert seen == [(3 + VALIDATION_SEED_OFFSET, "val")] * 2
    val = d.manifest["validation"]
    assert (val["seeds"], val["network_seed"]) == (1, 3 + VALIDATION_SEED_OFFSET)


def test_a_checkpoint_from_before_the_seed_offset_keeps_its_validation_seed(digits):
    """Its history was scored with the run's seed itself: a resume goes on that way, so the
    old and new checks compare, and the manifest names the seed actually used."""
    from datadistill.callbacks import Validation
    from datadistill.evaluation.evaluate import VALIDATION_SEED_OFFSET

    val = Validation(digits, 2, seed=3)
    state = val.state_dict()
    assert state["network_seed"] == 3 + VALIDATION_SEED_OFFSET
    old = {k: v for k, v in state.items() if k != "network_seed"}
    val.load_state_dict(old)
    assert val.network_seed == 3
    val.load_state_dict(state)
    assert val.network_seed == 3 + VALIDATION_SEED_OFFSET


def _quick_random_run(**changes):
    """A `random` run on digits evaluated by one small network under `fast`."""
    settings = dict(
        dataset="digits",
        method="random",
        ipc=1,
        protocol="fast",
        eval_archs=("convnetw32",),
        eval_seeds=1,
        full=False,
        progress=False,
        device="cpu",
    )
    return dd.RunConfig(**{**settings, **changes})


def test_report_names_what_was_run(tmp_path):
    """report.json / report.md: registered spellings, the stop reason, and no 'None
    epochs' when no full-data reference was trained."""
    import json

    cfg = _quick_random_run(protocol="DC", eval_archs=("ConvNet",))  # other spellings
    report = dd.run(cfg, tmp_path / "r")
    assert report["protocol"] == report["evaluation"]["protocol"] == "dc"
    assert list(report["results_by_arch"]) == ["convnet"]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["protocol"] == "dc"
    ev = report["evaluation"]
    assert (ev["full_epochs"], ev["full_seeds"]) == (None, None)
    assert (ev["lr_distilled"], ev["lr_learned"]) == (0.01, False)
    assert (report["stopped_by"], report["resume_changes"]) == ("no-steps", [])  # a coreset
    md = (tmp_path / "r" / "report.md").read_text()
    assert "None" not in md and "no full-data reference" in md
    assert "the distilled set trained at the protocol lr" in md
    assert "1 seed per number" in md  # (not "1 seeds")
    assert "draws a new subset for each network seed" in md  # two random columns explained


def test_report_of_a_multiformation_random_set_says_why_its_columns_differ(tmp_path):
    """A multi-formation `random` set trains on tiles, its baseline on whole images: the
    report does not put the difference down to the draw alone, and counts in words."""
    dd.run(_quick_random_run(hparams={"factor": 2}), tmp_path / "r")
    md = (tmp_path / "r" / "report.md").read_text()
    assert "the same storage, 1 full image per class" in md
    assert "differ by the draw and by the set's multi-formation form" in md
    assert "luck of the draw" not in md


def test_a_runs_evaluation_says_what_it_trains(tmp_path, capsys):
    """The evaluation after a run is minutes of training: with progress on, each network
    is announced as `datadistill evaluate` announces it; with it off, nothing is."""
    cfg = _quick_random_run(progress=True)
    dd.run(cfg, tmp_path / "r")
    out = capsys.readouterr().out
    assert "convnetw32: distilled set, seed 0" in out
    assert "convnetw32: random real subset, seed 0" in out
    dd.run(dataclasses.replace(cfg, progress=False), tmp_path / "quiet")
    assert "seed 0" not in capsys.readouterr().out


def test_validation_trains_with_the_methods_recipe():
    from datadistill.evaluation.protocols import get_protocol, validation_protocol

    fast = get_protocol("fast")
    assert validation_protocol("dc") is fast
    v = validation_protocol("mtt")  # MTT's sets are judged with their learned lr and DSA
    assert v.learned_lr and v.dsa and (v.epochs, v.seeds) == (fast.epochs, fast.seeds)
    d = validation_protocol("dsa")
    assert d.dsa and not d.learned_lr


def test_coresets_need_no_steps(digits):
    assert not METHODS.get("random").needs_steps
    d = dd.distill(digits, "random", 3, seed=0, device="cpu")
    assert d.manifest["iterations"] == 0
    # selected images are real training images of the right class
    for img, y in zip(d.images, d.labels, strict=True):
        match = (digits.train_x == img).flatten(1).all(1).nonzero()
        assert match.numel() >= 1 and int(digits.train_y[match[0, 0]]) == int(y)


def test_run_folder_is_never_overwritten_and_resumes(tmp_path, digits):
    import json

    cfg = dd.RunConfig(
        dataset="digits",
        method="dm",
        ipc=1,
        iterations=2,
        hparams=HP,
        evaluate=False,
        progress=False,
        device="cpu",
    )
    dd.run(cfg, tmp_path / "r")
    with pytest.raises(ConfigError, match="--resume"):
        dd.run(cfg, tmp_path / "r")
    longer = dd.RunConfig(**{**cfg.__dict__, "iterations": 4})
    report = dd.run(longer, tmp_path / "r", resume=True)
    assert report["iterations"] == 4
    assert json.loads((tmp_path / "r" / "config.json").read_text())["iterations"] == 4


@pytest.mark.parametrize(("method", "protocol"), [("dm", "dc"), ("dsa", "dsa")])
def test_run_evaluates_with_the_methods_protocol_by_default(
    tmp_path, monkeypatch, method, protocol
):
    import json

    import datadistill.evaluation

    class Evaluated(Exception):
        pass

    seen: list[object] = []

    def fake_evaluate(distilled, real, proto, **kwargs):
        seen.append(proto)
        raise Evaluated

    monkeypatch.setattr(datadistill.evaluation, "evaluate", fake_evaluate)
    cfg = dd.RunConfig(
        dataset="digits",
        method=method,
        ipc=1,
        iterations=1,
        hparams=SMOKE_HPARAMS[method],
        progress=False,
        device="cpu",
    )
    with pytest.raises(Evaluated):
        dd.run(cfg, tmp_path / "r")
    assert seen == [protocol]  # what the evaluation was asked to train with
    assert json.loads((tmp_path / "r" / "config.json").read_text())["protocol"] == protocol


def test_time_budget_covers_setup(digits, monkeypatch):
    original = DM.setup

    def slow_setup(self, *args):
        original(self, *args)
        time.sleep(0.3)

    monkeypatch.setattr(DM, "setup", slow_setup)
    d = dd.distill(digits, "dm", 1, time_budget=0.2, device="cpu", **SMOKE_HPARAMS["dm"])
    assert d.manifest["iterations"] == 0 and d.manifest["stopped_by"] == "time"
    assert d.manifest["distill_seconds"] >= 0.3


def test_distill_takes_a_created_method(digits):
    by_name = dd.distill(digits, "dm", 1, seed=3, iterations=2, device="cpu", **HP)
    method = dd.create_method("dm", **HP)
    by_object = dd.distill(digits, method, 1, seed=3, iterations=2, device="cpu")
    assert torch.equal(by_name.images, by_object.images)
    assert by_object.manifest["hparams"] == by_name.manifest["hparams"]
    with pytest.raises(ConfigError, match="not both"):
        dd.distill(digits, dd.create_method("dm", **HP), 1, iterations=1, **HP)
    with pytest.raises(ConfigError, match="set up already"):
        dd.distill(digits, method, 1, iterations=1, device="cpu")


def test_run_checks_the_method_once(tmp_path, digits, request, monkeypatch):
    """run() checks the method's options once (for MTT, reading the expert buffer's
    manifest), not again inside the distillation."""
    from datadistill.methods.mtt import MTT

    calls = []
    original = MTT.check

    def counting(self, real):
        calls.append(1)
        original(self, real)

    monkeypatch.setattr(MTT, "check", counting)
    cfg = dd.RunConfig(
        dataset="digits",
        method="mtt",
        ipc=1,
        iterations=1,
        hparams=smoke_hparams("mtt", request),
        evaluate=False,
        progress=False,
        device="cpu",
    )
    dd.run(cfg, tmp_path / "r")
    assert len(calls) == 1


@pytest.mark.parametrize(
    "method,extra,changed",
    [
        ("dm", {}, {"lr_img": 0.5}),
        ("dc", {}, {"lr_img": 0.05, "lr_net": 0.005}),
        ("mtt", {"soft_labels": True}, {"lr_img": 7.0, "lr_lr": 2e-6, "lr_label": 1.0}),
    ],
)
def test_resume_may_lower_the_learning_rates(tmp_path, digits, request, method, extra, changed):
    """After a divergence the last good checkpoint resumes with lower learning rates: the
    result equals two steps at the old rates then two at the new ones, and the manifest
    records the change."""
    from datadistill.methods.base import set_lr

    hp = {**smoke_hparams(method, request), **extra}
    ckpt = tmp_path / "ckpt.pt"
    dd.distill(digits, method, 2, seed=1, iterations=2, device="cpu", checkpoint=ckpt, **hp)
    new = {**hp, **changed}
    with pytest.warns(UserWarning, match="Resuming from iteration 2 with"):
        resumed = dd.distill(
            digits,
            method,
            2,
            seed=1,
            iterations=4,
            device="cpu",
            checkpoint=ckpt,
            resume=True,
            **new,
        )
    before = dd.create_method(method, **hp).hparams.to_dict()
    assert resumed.manifest["resume_changes"] == [
        {"iteration": 2, "changed": {k: [before[k], v] for k, v in sorted(changed.items())}}
    ]
    assert resumed.manifest["hparams"]["lr_img"] == changed["lr_img"]

    m = dd.create_method(method, **hp)
    m.setup(digits, 2, torch.Generator().manual_seed(1), torch.device("cpu"))
    for _ in range(2):
        m.step()
    opts = {"lr_img": "optimizer", "lr_lr": "opt_lr", "lr_label": "opt_label"}
    if method == "mtt":
        opts["lr_img"] = "opt_img"
    for name, value in changed.items():
        if name == "lr_net":  # DC builds the network's optimiser at every outer step
            m.hparams = dataclasses.replace(m.hparams, lr_net=value)
        else:
            set_lr(getattr(m, opts[name]), value)
    for _ in range(2):
        m.step()
    images, _, soft = m.synthetic().materialize()
    assert torch.equal(images, resumed.images)
    if soft is not None:
        assert resumed.soft_labels is not None and torch.equal(soft, resumed.soft_labels)


def test_a_resume_that_runs_no_step_records_no_change(tmp_path, digits, monkeypatch):
    """A lower lr given to a run that has already spent its budget changes nothing, so the
    manifest records no change (the checkpoint keeps it for a later, longer resume)."""
    ckpt = tmp_path / "ckpt.pt"
    hp = {"batch_real": 8, "width": 8}
    dd.distill(digits, "dm", 2, seed=1, iterations=2, device="cpu", checkpoint=ckpt, **hp)
    kw = {"seed": 1, "device": "cpu", "checkpoint": ckpt, "resume": True, **hp}
    with pytest.warns(UserWarning, match="lr_img 1.0 -> 0.5"):
        same = dd.distill(digits, "dm", 2, iterations=2, lr_img=0.5, **kw)
    assert same.manifest["iterations"] == 2 and same.manifest["resume_changes"] == []
    # no step ran, and the user is told why (the budget counts the whole run)
    with pytest.warns(UserWarning, match=r"reached its budget of 2 iterations.*--iterations"):
        dd.distill(digits, "dm", 2, iterations=2, lr_img=0.5, **kw)
    with pytest.warns(UserWarning, match=r"reached its time budget .*--time-budget"):
        dd.distill(digits, "dm", 2, time_budget=1e-6, lr_img=0.5, **kw)
    from datadistill.methods.dm import DM  # no budget given: the method's default one

    monkeypatch.setattr(DM, "default_iterations", 2)
    with pytest.warns(UserWarning, match=r"reached dm's default budget of 2 iterations"):
        dd.distill(digits, "dm", 2, lr_img=0.5, **kw)
    # a second resume at the same iteration makes one change from the first old value
    with pytest.warns(UserWarning, match="lr_img 0.5 -> 0.25"):
        dd.distill(digits, "dm", 2, iterations=2, lr_img=0.25, **kw)
    longer = dd.distill(digits, "dm", 2, iterations=3, lr_img=0.25, **kw)
    assert longer.manifest["resume_changes"] == [
        {"iteration": 2, "changed": {"lr_img": [1.0, 0.25]}}
    ]
    # and a value changed back before any step ran is no change at all
    ckpt.unlink()
    dd.distill(digits, "dm", 2, seed=1, iterations=2, device="cpu", checkpoint=ckpt, **hp)
    with pytest.warns(UserWarning, match="lr_img 1.0 -> 0.5"):
        dd.distill(digits, "dm", 2, iterations=2, lr_img=0.5, **kw)
    with pytest.warns(UserWarning, match="lr_img 0.5 -> 1.0"):
        dd.distill(digits, "dm", 2, iterations=2, lr_img=1.0, **kw)
    back = dd.distill(digits, "dm", 2, iterations=3, lr_img=1.0, **kw)
    assert back.manifest["resume_changes"] == []


@pytest.mark.parametrize(
    "method,change,match",
    [
        ("dc", {"momentum": 0.9}, "only lr_img, lr_net may change on resume"),
        # a forbidden change beside an allowed one: the message names the forbidden one
        ("dc", {"lr_img": 0.01, "momentum": 0.9}, r"hparams\.momentum is 0\.5 in the"),
        # no soft labels, no label optimiser: its lr is not one that may change
        ("mtt", {"lr_label": 1.0}, "only lr_img, lr_lr may change on resume"),
    ],
)
def test_resume_refuses_other_changes_and_names_what_may_change(
    tmp_path, digits, request, method, change, match
):
    hp = smoke_hparams(method, request)
    ckpt = tmp_path / "ckpt.pt"
    dd.distill(digits, method, 2, seed=1, iterations=1, device="cpu", checkpoint=ckpt, **hp)
    with pytest.raises(ConfigError, match=match):
        dd.distill(
            digits,
            method,
            2,
            seed=1,
            iterations=2,
            device="cpu",
            checkpoint=ckpt,
            resume=True,
            **{**hp, **change},
        )


def test_progress_estimates_the_end_of_a_time_budget(monkeypatch):
    """Bounded by seconds, the bar's total is the iteration the budget will reach."""
    from datadistill import callbacks

    clock = iter([100.0, 110.0, 130.0])  # start, then 10 s and 30 s later
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    bar = callbacks.Progress(time_budget=60.0)
    bar.on_start(None, 0, None)
    try:
        bar.on_step(None, 5, {"loss": 1.0})  # 0.5 it/s, 50 s left: 25 more
        assert bar._progress.tasks[0].total == 30
        bar.on_step(None, 30, {"loss": 1.0})  # 1 it/s, 30 s left: 30 more
        assert bar._progress.tasks[0].total == 60
    finally:
        bar.on_end(None)
    assert bar._progress is None
    # time outside the steps (validation) is not the budget's: 10 s of which 5 validating
    clock, spent = iter([0.0, 10.0]), iter([2.0, 7.0])
    bar = callbacks.Progress(time_budget=60.0, overhead=lambda: next(spent))
    bar.on_start(None, 0, None)
    try:
        bar.on_step(None, 5, {"loss": 1.0})  # 1 s a step, 55 s of steps left
        assert bar._progress.tasks[0].total == 60
        progress = bar._progress
    finally:
        bar.on_end(None)
    assert progress.tasks[0].total == 5  # the run ended here: the bar says so
    # bounded by iterations, the total is the iteration count, whatever the budget
    clock = iter([0.0, 1.0])
    bar = callbacks.Progress(time_budget=60.0)
    bar.on_start(None, 0, 40)
    try:
        bar.on_step(None, 5, {"loss": 1.0})
        assert bar._progress.tasks[0].total == 40
    finally:
        bar.on_end(None)


def test_a_resumed_time_budget_run_shows_the_seconds_left(tmp_path, digits, monkeypatch):
    import importlib

    from datadistill import callbacks

    run_module = importlib.import_module("datadistill.run")
    budgets = []

    class Recorder(callbacks.Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            budgets.append(self.time_budget)

        def on_start(self, method, start, total):  # no bar in the test's output
            pass

    monkeypatch.setattr(run_module, "Progress", Recorder)
    ckpt = tmp_path / "ckpt.pt"
    hp = {"batch_real": 8, "width": 8, "compile": "no"}
    kw = {"seed": 1, "device": "cpu", "checkpoint": ckpt, "progress": True, **hp}
    first = dd.distill(digits, "dm", 1, iterations=3, time_budget=1000.0, **kw)
    spent = first.manifest["distill_seconds"]
    dd.distill(digits, "dm", 1, iterations=4, time_budget=1000.0, resume=True, **kw)
    assert budgets[0] <= 1000.0 and budgets[1] < budgets[0]
    assert budgets[1] == pytest.approx(1000.0 - spent, abs=5.0)


def _coreset_run_stopped_in_evaluation(folder, monkeypatch, **kw):
    """A random-coreset run on digits into ``folder``, interrupted once its artefact is
    written (in the evaluation); returns its config."""
    import datadistill.evaluation

    cfg = dd.RunConfig(
        dataset="digits",
        method="random",
        ipc=2,
        evaluate=True,
        eval_seeds=1,
        full=False,
        protocol="fast",
        progress=False,
        device="cpu",
        **kw,
    )

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(datadistill.evaluation, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dd.run(cfg, folder)
    monkeypatch.undo()
    return cfg


def test_coreset_run_interrupted_in_evaluation_resumes_to_it(tmp_path, monkeypatch):
    """A coreset keeps no checkpoint: its folder, interrupted after the artefact was
    written, resumes straight to the evaluation, with the same set; other options are
    refused."""
    cfg = _coreset_run_stopped_in_evaluation(tmp_path / "r", monkeypatch, seed=4)
    first = dd.load(tmp_path / "r" / "distilled.safetensors")
    with pytest.raises(ConfigError, match="seed is 4 in the artefact and 5 now"):
        dd.run(dataclasses.replace(cfg, seed=5), tmp_path / "r", resume=True)
    report = dd.run(cfg, tmp_path / "r", resume=True)
    assert report["results"]["distilled"]["accs"]
    assert torch.equal(dd.load(tmp_path / "r" / "distilled.safetensors").images, first.images)


def test_coreset_artefact_from_before_a_new_hyperparameter_resumes(tmp_path, monkeypatch):
    """An artefact written before a hyperparameter existed (here ``factor``: the manifest's
    hparams were {} for random) resumes, the missing one taken at its default."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    cfg = _coreset_run_stopped_in_evaluation(tmp_path / "r", monkeypatch)
    path = tmp_path / "r" / "distilled.safetensors"
    with safe_open(str(path), framework="pt") as f:
        manifest = json.loads(f.metadata()["manifest"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert manifest["hparams"] == {"factor": 1}
    manifest["hparams"] = {}
    save_file(tensors, str(path), metadata={"manifest": json.dumps(manifest)})
    report = dd.run(cfg, tmp_path / "r", resume=True)
    assert report["results"]["distilled"]["accs"]


@pytest.mark.parametrize("digest", [None, "sha256:0123456789abcdef"])
def test_a_coreset_artefacts_digest_on_resume(tmp_path, monkeypatch, digest):
    """An artefact from before digests resumes and stays without one (its files are
    unknown); one made from other files is refused, saying so."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    cfg = _coreset_run_stopped_in_evaluation(tmp_path / "r", monkeypatch)
    path = tmp_path / "r" / "distilled.safetensors"
    with safe_open(str(path), framework="pt") as f:
        manifest = json.loads(f.metadata()["manifest"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if digest is None:
        del manifest["data"]["digest"]
    else:
        manifest["data"]["digest"] = digest
    save_file(tensors, str(path), metadata={"manifest": json.dumps(manifest)})
    if digest is not None:
        with pytest.raises(ConfigError, match=r"other files of digits \(data digest sha256:0123"):
            dd.run(cfg, tmp_path / "r", resume=True)
        return
    report = dd.run(cfg, tmp_path / "r", resume=True)
    assert report["data_digest"] is None
    assert "digest" not in dd.load(path).manifest["data"]


def test_checkpoint_is_never_overwritten_without_resume(tmp_path, digits):
    ckpt = tmp_path / "deeper" / "ckpt.pt"  # a missing folder is created up front
    dd.distill(digits, "dm", 1, iterations=2, device="cpu", checkpoint=ckpt, **HP)
    with pytest.raises(ConfigError, match="already holds a checkpoint; pass resume=True"):
        dd.distill(digits, "dm", 1, iterations=2, device="cpu", checkpoint=ckpt, **HP)


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    from datadistill.run import _save_checkpoint

    path = tmp_path / "ckpt.pt"
    _save_checkpoint(path, {"a": 1})

    def full_disk(obj, f):
        open(f, "wb").write(b"partial")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(RunError, match="Cannot write the checkpoint .*the previous one is kept"):
        _save_checkpoint(path, {"a": 2})
    assert not path.with_suffix(".tmp").exists()
    assert torch.load(path, weights_only=True) == {"a": 1}


def test_resume_keeps_the_first_setup_time_and_validation_state(tmp_path, digits):
    """A resume budgets its steps with the first set-up's seconds, and a resume without
    validation carries the saved best-val state on to the next checkpoint."""
    ckpt = tmp_path / "ckpt.pt"
    common = dict(device="cpu", checkpoint=ckpt, **HP)
    dd.distill(digits, "dm", 1, iterations=2, validate_every=1, select="best-val", **common)
    saved = torch.load(ckpt, weights_only=True)
    assert "Validation" in saved["callbacks"] and saved["setup_seconds"] > 0
    dd.distill(digits, "dm", 1, iterations=3, resume=True, **common)
    again = torch.load(ckpt, weights_only=True)
    kept, before = again["callbacks"]["Validation"], saved["callbacks"]["Validation"]
    assert kept["history"] == before["history"] and kept["best_iteration"] >= 0
    best = before["best_state"]
    assert best is not None and torch.equal(kept["best_state"]["images"], best["images"])
    assert again["setup_seconds"] == saved["setup_seconds"]


def test_interrupt_without_a_checkpoint_says_it_cannot_resume(digits, monkeypatch):
    import signal

    original = DM.step

    def step(self):
        out = original(self)
        signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(DM, "step", step)
    with pytest.raises(RunError, match="no checkpoint path was given"):
        dd.distill(digits, "dm", 1, iterations=10, device="cpu", **HP)


def test_run_never_writes_into_a_folder_of_other_files(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    cfg = dd.RunConfig(dataset="digits", method="random", ipc=1, evaluate=False, device="cpu")
    with pytest.raises(ConfigError, match=r"already holds other files \(notes.txt\)"):
        dd.run(cfg, tmp_path / "mine")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_run_never_replaces_an_earlier_runs_files_left_without_its_set(tmp_path):
    """A folder with a run's report, or a config.json that is not a run's, but no checkpoint
    or set (the large files deleted, or a user's files of those names), is refused
    untouched; a run's config.json alone (a start that saved nothing: out of memory, NaN or
    Ctrl-C in the first steps) is started again, with other settings too."""
    cfg = dd.RunConfig(dataset="digits", method="random", ipc=1, evaluate=False, device="cpu")
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.md").write_text("# my notes")
    with pytest.raises(ConfigError, match=r"already holds report.md, without a run's"):
        dd.run(cfg, out)
    (out / "report.md").unlink()
    (out / "config.json").write_text('{"my": "settings"}')
    with pytest.raises(ConfigError, match=r"already holds config.json, without a run's"):
        dd.run(cfg, out)
    assert (out / "config.json").read_text() == '{"my": "settings"}'
    (out / "config.json").unlink()
    dd.run(cfg, out)
    (tmp_path / "again").mkdir()  # an interrupted start of the same run: its config.json only
    (tmp_path / "again" / "config.json").write_text((out / "config.json").read_text())
    dd.run(dataclasses.replace(cfg, ipc=2), tmp_path / "again")  # other settings too
    assert dd.load(tmp_path / "again").ipc == 2


def _two_dm_steps() -> dd.RunConfig:
    """A run of DM's two smoke steps on digits, without evaluation."""
    return dd.RunConfig(
        dataset="digits",
        method="dm",
        ipc=1,
        iterations=2,
        evaluate=False,
        device="cpu",
        hparams=HP,
    )


def test_resuming_a_finished_set_without_its_checkpoint_points_at_evaluate(tmp_path):
    cfg = _two_dm_steps()
    out = tmp_path / "run"
    dd.run(cfg, out)
    (out / "checkpoint.pt").unlink()
    with pytest.raises(ConfigError, match=r"holds the set this run distilled; evaluate it"):
        dd.run(cfg, out, resume=True)
    assert (out / "distilled.safetensors").is_file()


@pytest.mark.parametrize(
    "state,problem",
    [
        ([1, 2, 3], "it holds a list"),
        ({"seconds": 1.0}, "no method state"),
        ("drop-generator", "no generator state"),
        ("drop-callbacks", "no callback states"),
    ],
)
def test_a_foreign_checkpoint_is_one_error(tmp_path, digits, state, problem):
    ckpt = tmp_path / "ckpt.pt"
    dd.distill(digits, "dm", 1, iterations=1, device="cpu", checkpoint=ckpt, **HP)
    if isinstance(state, str):  # a checkpoint of this run with one entry removed
        saved = torch.load(ckpt, weights_only=True)
        del saved[state.removeprefix("drop-")]
        state = saved
    torch.save(state, ckpt)
    with pytest.raises(RunError, match=f"not a checkpoint this version.*{problem}"):
        dd.distill(digits, "dm", 1, iterations=2, device="cpu", checkpoint=ckpt, resume=True, **HP)


def test_running_out_of_memory_in_the_evaluation_keeps_the_set(tmp_path, monkeypatch):
    """The set is saved before its evaluation; the error says where, and how to evaluate it
    (distilling it again with lower settings would throw it away)."""
    import datadistill.evaluation as evaluation

    def evaluate(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(evaluation, "evaluate", evaluate)
    cfg = dd.RunConfig(dataset="digits", method="random", ipc=1, device="cpu")
    out = tmp_path / "run"
    with pytest.raises(RunError, match=r"while evaluating.*saved in .*datadistill evaluate"):
        dd.run(cfg, out)
    assert dd.load(out).ipc == 1


def test_a_resume_leaves_files_added_to_its_run_folder_alone(tmp_path):
    """show's PNG, an evaluation's JSON or a user's notes in a run folder do not stop its
    resume (nor are they touched); without a checkpoint there is nothing to resume."""
    cfg = _two_dm_steps()
    out = tmp_path / "run"
    dd.run(cfg, out)
    (out / "distilled.png").write_bytes(b"png")
    (out / "notes.txt").write_text("keep me")
    report = dd.run(dataclasses.replace(cfg, iterations=3), out, resume=True)
    assert report["iterations"] == 3
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "distilled.png").read_bytes() == b"png"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="Nothing to resume"):
        dd.run(cfg, tmp_path / "mine", resume=True)


def test_two_callbacks_of_one_class_resume_their_own_states(tmp_path, digits):
    """A user's second History (every third step) keeps its own rows across a resume."""
    from datadistill.callbacks import History

    ckpt = tmp_path / "ckpt.pt"
    common = dict(device="cpu", checkpoint=ckpt, **HP)
    dd.distill(digits, "dm", 1, iterations=3, callbacks=[History(1), History(3)], **common)
    every, third = History(every=1), History(every=3)
    dd.distill(digits, "dm", 1, iterations=4, resume=True, callbacks=[every, third], **common)
    assert [r["iteration"] for r in every.rows] == [1, 2, 3, 4]
    assert [r["iteration"] for r in third.rows] == [1, 3]
    saved = torch.load(ckpt, weights_only=True)["callbacks"]
    # the built-in History keeps its name; the user's are numbered after it
    assert {"History", "History#2", "History#3"} <= set(saved)


def test_a_checkpoint_from_before_a_new_hyperparameter_resumes(tmp_path, digits, request):
    """A checkpoint written before a hyperparameter existed (here: DM's ``factor``) ran at
    its default: resuming it at the default is the same run."""
    hp = smoke_hparams("dm", request)
    straight = dd.distill(digits, "dm", 2, seed=1, iterations=4, device="cpu", **hp)
    ckpt = tmp_path / "ckpt.pt"
    dd.distill(
        digits,
        "dm",
        2,
        seed=1,
        iterations=2,
        device="cpu",
        checkpoint=ckpt,
        checkpoint_every=1,
        **hp,
    )
    state = torch.load(ckpt, weights_only=True)
    del state["fingerprint"]["hparams"]["factor"]
    torch.save(state, ckpt)
    resumed = dd.distill(
        digits, "dm", 2, seed=1, iterations=4, device="cpu", checkpoint=ckpt, resume=True, **hp
    )
    assert torch.equal(straight.images, resumed.images)
    with pytest.raises(dd.ConfigError, match="factor"):  # another value is another run
        dd.distill(
            digits,
            "dm",
            2,
            seed=1,
            iterations=4,
            device="cpu",
            checkpoint=ckpt,
            resume=True,
            **{**hp, "factor": 2},
        )


def test_run_checks_its_evaluation_before_distilling(tmp_path):
    """An unknown evaluation architecture, or data with no test images, fails before the
    run folder exists, not after the distillation (DESIGN: bad options fail first)."""
    import numpy as np

    cfg = dd.RunConfig(
        dataset="digits", method="random", ipc=1, device="cpu", eval_archs=("convnett",)
    )
    with pytest.raises(ConfigError, match="Did you mean 'convnet'"):
        dd.run(cfg, tmp_path / "r1")
    assert not (tmp_path / "r1").exists()
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "two.npz", x=rng.integers(0, 256, (2, 8, 8), dtype=np.uint8), y=[0, 1])
    cfg = dd.RunConfig(
        dataset=f"npz:{tmp_path / 'two.npz'}", method="random", ipc=1, device="cpu", val_size=0
    )
    with pytest.raises(dd.DataError, match="no test images"):
        dd.run(cfg, tmp_path / "r2")
    assert not (tmp_path / "r2").exists()
    d = dd.distill(dd.load_dataset(f"npz:{tmp_path / 'two.npz'}", val_size=0), "random", 1)
    with pytest.raises(dd.DataError, match="no test images"):  # not 0.00% for every row
        dd.evaluate(d, dd.load_dataset(f"npz:{tmp_path / 'two.npz'}", val_size=0), "fast")


def test_run_config_takes_eval_archs_as_names():
    one = dd.RunConfig(dataset="digits", method="dm", ipc=1, eval_archs="mlp")  # type: ignore[arg-type]
    assert one.eval_archs == ("mlp",) and one.to_dict()["eval_archs"] == ["mlp"]
    two = dd.RunConfig(dataset="digits", method="dm", ipc=1, eval_archs="convnet, mlp")  # type: ignore[arg-type]
    assert two.eval_archs == ("convnet", "mlp")
    with pytest.raises(ConfigError, match="eval_archs"):
        dd.RunConfig(dataset="digits", method="dm", ipc=1, eval_archs=(3,))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"validate_every": 1.5}, "validate_every"),
        ({"validate_every": -1}, "validate_every"),
        ({"validate_every": "2"}, "validate_every"),
        ({"callbacks": [object()]}, "callbacks must be a list"),
        ({"callbacks": None}, "callbacks must be a list"),
        ({"progress": "yes"}, "progress must be True or False"),
    ],
)
def test_distill_refuses_bad_loop_options_in_one_sentence(digits, bad, message):
    with pytest.raises(ConfigError, match=message):
        dd.distill(digits, "dm", 1, iterations=1, device="cpu", **{**HP, **bad})


def test_a_coresets_callbacks_see_the_start_and_the_end(digits):
    from datadistill.callbacks import Callback

    class Seen(Callback):
        def __init__(self) -> None:
            self.calls: list[str] = []

        def on_start(self, method, start, total):
            self.calls.append(f"start {start} {total}")

        def on_end(self, method):
            self.calls.append("end")

    seen = Seen()
    dd.distill(digits, "random", 1, device="cpu", callbacks=[seen])
    assert seen.calls == ["start 0 0", "end"]
    # with validation asked for, a coreset is scored once, at iteration 0
    d = dd.distill(digits, "random", 1, device="cpu", validate_every=1, select="best-val")
    assert len(d.manifest["validation"]["history"]) == 1
    assert d.manifest["selected"] == "best-val (iteration 0)"


def test_best_val_selection_on_a_tiny_validation_split_warns(digits):
    """A choice among states scored on a handful of images is noise: said, at the caller's
    line; the default split of digits (14 images per class) is quiet, and so is a coreset
    (scored once: nothing to choose among)."""
    tiny = dd.load_dataset("digits", val_size=20)
    kw = dict(iterations=2, device="cpu", validate_every=1, **HP)
    with pytest.warns(UserWarning, match=r"on 20 validation images \(2 per class\).* 100 images"):
        dd.distill(tiny, "dm", 1, select="best-val", **kw)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        dd.distill(tiny, "dm", 1, select="best-val", **kw)
    assert [w.filename for w in rec if "validation image" in str(w.message)] == [__file__]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dd.distill(tiny, "dm", 1, **kw)  # no selection
        dd.distill(tiny, "random", 1, device="cpu", validate_every=1, select="best-val")
        dd.distill(digits, "dm", 1, select="best-val", **kw)


def test_device_names_are_case_free():
    from datadistill._device import resolve_device

    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device(" Cpu ") == torch.device("cpu")


def test_resume_holds_the_data_to_its_digest_when_both_sides_have_one(tmp_path, digits):
    """Other images or labels with the same shapes and statistics are another run's data;
    a checkpoint from before digests were recorded, or data without one, is not held."""
    import copy

    def with_digest(digest: str | None) -> dd.RealData:
        other = copy.copy(digits)
        other.options = None if digest is None else {**digits.options, "digest": digest}
        return other

    ckpt = tmp_path / "ckpt.pt"
    dd.distill(digits, "dm", 2, seed=1, iterations=2, device="cpu", checkpoint=ckpt, **HP)
    state = torch.load(ckpt, weights_only=True)
    assert state["fingerprint"]["data_digest"] == digits.options["digest"]
    with pytest.raises(ConfigError, match=r"made from other files of digits \(data digest"):
        dd.distill(
            with_digest("sha256:0123456789abcdef"), "dm", 2, seed=1, iterations=3,
            device="cpu", checkpoint=ckpt, resume=True, **HP,
        )  # fmt: skip
    d = dd.distill(
        with_digest(None), "dm", 2, seed=1, iterations=3, device="cpu", checkpoint=ckpt,
        resume=True, **HP,
    )  # fmt: skip
    assert d.manifest["iterations"] == 3
    # the checkpoint keeps the digest it was checked by, for the next resume
    state = torch.load(ckpt, weights_only=True)
    assert state["fingerprint"]["data_digest"] == digits.options["digest"]
    del state["fingerprint"]["data_digest"]  # a checkpoint of an older version
    torch.save(state, ckpt)
    d = dd.distill(
        digits, "dm", 2, seed=1, iterations=4, device="cpu", checkpoint=ckpt, resume=True, **HP
    )
    assert d.manifest["iterations"] == 4
