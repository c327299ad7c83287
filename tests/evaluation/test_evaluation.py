import dataclasses
import functools
import importlib
import json
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import datadistill as dd
from datadistill._device import compiler_works
from datadistill.cli import app
from datadistill.errors import DataError, UnknownNameError
from datadistill.evaluation import PROTOCOLS, get_protocol, train_network
from datadistill.evaluation.evaluate import (
    FULL_MIN_STEPS,
    full_reference_epochs,
    random_subset,
)


def test_protocols_are_frozen_and_faithful():
    dc = get_protocol("dc")
    assert (dc.epochs, dc.lr, dc.momentum, dc.weight_decay, dc.batch_size, dc.dsa) == (
        300,
        0.01,
        0.9,
        5e-4,
        256,
        False,
    )
    assert get_protocol("dsa").epochs == 1000 and get_protocol("dsa").dsa
    assert get_protocol("mtt").learned_lr
    # every paper protocol divides the lr by 10 at half the epochs and trains 5 networks
    assert {n: (get_protocol(n).decay_at, get_protocol(n).seeds) for n in PROTOCOLS.names()} == {
        "dc": (0.5, 5),
        "dsa": (0.5, 5),
        "mtt": (0.5, 5),
        "fast": (0.5, 2),
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        dc.epochs = 1  # type: ignore[misc]
    with pytest.raises(UnknownNameError, match="Did you mean 'fast'"):
        get_protocol("fats")
    assert {"dc", "dsa", "mtt", "fast"} <= set(PROTOCOLS.names())


def test_lr_decays_at_half():
    model = torch.nn.Linear(2, 2)
    x, y = torch.randn(8, 2), torch.randint(2, (8,))
    seen = []
    orig = torch.optim.SGD.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return orig(self, *a, **k)

    torch.optim.SGD.step = spy  # type: ignore[method-assign]
    try:
        train_network(model, x, y, epochs=4, lr=0.1, generator=torch.Generator().manual_seed(0))
    finally:
        torch.optim.SGD.step = orig  # type: ignore[method-assign]
    assert seen == pytest.approx([0.1, 0.1, 0.01, 0.01])


def test_evaluate_reports_baselines_and_caches(digits, tmp_path, monkeypatch):
    d = dd.distill(digits, "random", 2, seed=0, device="cpu")
    proto = dataclasses.replace(get_protocol("fast"), epochs=20)
    run = functools.partial(
        dd.evaluate,
        distilled=d,
        real=digits,
        protocol=proto,
        archs=["convnetw32", "mlp"],
        seeds=2,
        full_epochs=1,  # explicit: kept as given
        cache_dir=tmp_path / "c",
        device="cpu",
    )
    rep = run()
    assert set(rep.results) == {"convnetw32", "mlp"}
    for rows in rep.results.values():
        assert set(rows) == {"distilled", "random", "full"}
        for r in rows.values():
            assert len(r.accs) == 2 and all(0 <= a <= 1 for a in r.accs)
    out = rep.to_dict()
    assert out["results"]["mlp"]["random"]["mean"] == pytest.approx(
        sum(out["results"]["mlp"]["random"]["accs"]) / 2
    )
    cached = sorted((tmp_path / "c").glob("*.json"))
    assert len(cached) == 12  # distilled, random and full, 2 seeds, 2 architectures
    # every network from the cache: nothing is trained again
    module = importlib.import_module("datadistill.evaluation.evaluate")
    trained: list[int] = []
    original = module.train_and_test

    def counting(images, *args, **kwargs):
        trained.append(images.shape[0])
        return original(images, *args, **kwargs)

    monkeypatch.setattr(module, "train_and_test", counting)
    again = run()
    assert trained == []
    assert again.to_dict() == rep.to_dict()
    # a set that differs in one pixel is another set: only its own networks train again
    other = dataclasses.replace(d, images=d.images.clone())
    other.images[0, 0, 0, 0] += 0.5
    run(distilled=other)
    assert trained == [d.images.shape[0]] * 4  # 2 architectures x 2 seeds


def test_an_interrupted_evaluation_goes_on_after_the_networks_it_finished(
    digits, tmp_path, monkeypatch
):
    """Each network trained on the set is cached when it finishes, so an evaluation stopped
    by Ctrl-C trains only what it had not finished, and reports what an uninterrupted one
    does."""
    d = dd.distill(digits, "random", 1, seed=0, device="cpu")
    proto = dataclasses.replace(get_protocol("fast"), epochs=3)
    run = functools.partial(
        dd.evaluate, d, digits, proto, archs=["convnetw32"], seeds=3, full=False, device="cpu"
    )
    module = importlib.import_module("datadistill.evaluation.evaluate")
    original = module.train_and_test
    trained: list[int] = []

    def stop_at_the_third(images, *args, **kwargs):
        if len(trained) == 2:
            raise KeyboardInterrupt
        trained.append(kwargs["seed"])
        return original(images, *args, **kwargs)

    monkeypatch.setattr(module, "train_and_test", stop_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        run(cache_dir=tmp_path / "c")
    assert trained == [0, 1]  # the set's first two networks
    trained.clear()

    def counting(images, *args, **kwargs):
        trained.append(kwargs["seed"])
        return original(images, *args, **kwargs)

    monkeypatch.setattr(module, "train_and_test", counting)
    said: list[str] = []
    resumed = run(cache_dir=tmp_path / "c", progress=said.append)
    assert trained == [2, 0, 1, 2]  # the set's last network, then the random subset's
    assert said[:3] == [
        "convnetw32: distilled set, seed 0 (cached)",
        "convnetw32: distilled set, seed 1 (cached)",
        "convnetw32: distilled set, seed 2",
    ]
    assert said[3:] == [f"convnetw32: random real subset, seed {s}" for s in range(3)]
    monkeypatch.setattr(module, "train_and_test", original)
    assert resumed.to_dict() == run(cache_dir=False).to_dict()


def test_the_sets_cache_key_sees_its_labels_and_learned_lr():
    """The set's key covers everything its networks train on."""
    from datadistill.evaluation.evaluate import _set_fingerprint

    x, y = torch.zeros(4, 1, 2, 2), torch.tensor([0, 0, 1, 1])
    soft = torch.eye(2)[y]
    first = _set_fingerprint(x, y, None, None)
    assert _set_fingerprint(x.clone(), y.clone(), None, None) == first
    assert _set_fingerprint(x, torch.tensor([0, 1, 0, 1]), None, None) != first
    assert _set_fingerprint(x, y, soft, None) != first
    assert _set_fingerprint(x, y, soft * 0.9, None) != _set_fingerprint(x, y, soft, None)
    assert _set_fingerprint(x, y, None, 0.01) != first
    as_tensor = torch.tensor(0.01, dtype=torch.float64)  # a number, however it is held
    assert _set_fingerprint(x, y, None, as_tensor) == _set_fingerprint(x, y, None, 0.01)
    assert _set_fingerprint(x.bfloat16(), y, None, None) != first


def test_a_cached_baseline_is_not_reused_for_a_changed_network(digits, tmp_path, monkeypatch):
    """The cache key holds the network's layers, not just its name: when a default changes
    the structure under the same name (here the ConvNet's depth for 8x8 images), the
    baselines are trained again."""
    d = dd.distill(digits, "random", 1, seed=0, device="cpu")
    proto = dataclasses.replace(get_protocol("fast"), epochs=2)
    run = functools.partial(
        dd.evaluate, d, digits, proto, archs=["convnetw32"], seeds=1, full=False, device="cpu"
    )
    run(cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").glob("*.json"))) == 2  # the set's network, random's
    run(cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").glob("*.json"))) == 2  # read back
    monkeypatch.setattr("datadistill.models.convnet.MIN_NORM_SIDE", 2)  # depth 3 for 8x8
    run(cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").glob("*.json"))) == 4


def test_a_cache_that_cannot_be_written_keeps_the_results(digits, tmp_path):
    """The baselines are trained before their cache entry is written: a cache folder that
    cannot be created loses the caching (one warning naming the fix), not the results."""
    d = dd.distill(digits, "random", 1, seed=0, device="cpu")
    proto = dataclasses.replace(get_protocol("fast"), epochs=2)
    (tmp_path / "afile").write_text("")
    with pytest.warns(UserWarning, match="cannot be written.*DATADISTILL_CACHE") as caught:
        rep = dd.evaluate(
            d,
            digits,
            proto,
            archs=["convnetw32"],
            seeds=1,
            full_epochs=1,
            device="cpu",
            cache_dir=tmp_path / "afile" / "cache",
        )
    assert set(rep.results["convnetw32"]) == {"distilled", "random", "full"}
    assert len(caught) == 1  # one warning for both baselines (shown once by the CLI)
    assert (tmp_path / "afile").read_text() == ""


def test_a_baseline_trained_compiled_has_its_own_cache_key(digits, tmp_path, monkeypatch):
    """Compiled training rounds differently, so a baseline's key says whether it would be
    trained compiled; an eager one keeps the key it had before compiled training existed."""
    from datadistill.evaluation.evaluate import _compiled_key

    info = digits.info
    monkeypatch.setenv("DATADISTILL_TRAIN_COMPILE", "no")
    assert _compiled_key("convnet", info, 100, 300, torch.device("cpu")) == {}
    monkeypatch.setenv("DATADISTILL_TRAIN_COMPILE", "yes")
    assert _compiled_key("convnet", info, 100, 300, torch.device("cpu")) == {"compiled": True}
    monkeypatch.setenv("DATADISTILL_TRAIN_COMPILE", "auto")  # digits are far below the bar
    assert _compiled_key("convnet", info, 100, 300, torch.device("cpu")) == {}

    # the decision reaches the keys of the set and both baselines (the training stays eager)
    d = dd.distill(digits, "random", 1, seed=0, device="cpu")
    proto = dataclasses.replace(get_protocol("fast"), epochs=2)
    run = functools.partial(
        dd.evaluate, d, digits, proto, archs=["convnetw32"], seeds=1, full_epochs=1
    )
    run(cache_dir=tmp_path / "c", device="cpu")
    module = importlib.import_module("datadistill.evaluation.evaluate")  # not the function
    monkeypatch.setattr(module, "compiles", lambda *a: True)
    run(cache_dir=tmp_path / "c", device="cpu")
    keys = [json.loads(p.read_text())["key"] for p in (tmp_path / "c").glob("*.json")]
    assert sorted((k["kind"], k.get("compiled", False)) for k in keys) == [
        ("distilled", False),
        ("distilled", True),
        ("full", False),
        ("full", True),
        ("random", False),
        ("random", True),
    ]


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    from datadistill.evaluation.evaluate import _cache_dir

    monkeypatch.setenv("DATADISTILL_CACHE", str(tmp_path))
    assert _cache_dir(None) == tmp_path / "eval"
    assert _cache_dir(tmp_path / "mine") == tmp_path / "mine"  # an explicit folder wins
    monkeypatch.setenv("DATADISTILL_CACHE", "off")
    assert _cache_dir(None) is None
    monkeypatch.delenv("DATADISTILL_CACHE")
    assert _cache_dir(None) == Path.home() / ".cache" / "datadistill" / "eval"
    assert _cache_dir(False) is None  # type: ignore[arg-type]


def test_the_full_reference_takes_enough_steps_on_a_small_training_split(digits):
    """fast's 3 epochs are 18 SGD steps on digits' 1294 training images: the default grows
    to FULL_MIN_STEPS; a large split keeps the protocol's epochs; an explicit value is
    kept as given."""
    fast, dc = get_protocol("fast"), get_protocol("dc")
    per_epoch = -(-digits.train_x.shape[0] // fast.batch_size)
    epochs = full_reference_epochs(fast, digits)
    assert epochs * per_epoch >= FULL_MIN_STEPS > (epochs - 1) * per_epoch
    big = types.SimpleNamespace(train_x=torch.empty(100 * digits.train_x.shape[0], 1, 8, 8))
    assert full_reference_epochs(fast, big) == fast.full_epochs
    assert full_reference_epochs(dc, big) == dc.full_epochs
    d = dd.distill(digits, "random", 1, seed=0, device="cpu")
    run = functools.partial(dd.evaluate, d, digits, dataclasses.replace(fast, epochs=1))
    kw = {"seeds": 1, "baselines": False, "cache_dir": False, "device": "cpu"}
    assert run(archs=["mlp"], full_epochs=1, **kw).full_epochs == 1
    for command in ("evaluate", "distill"):
        help_text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
        assert f"at least {FULL_MIN_STEPS} SGD steps" in " ".join(
            help_text.replace("│", " ").split()
        )


def test_random_subset_is_stratified_and_seeded(digits):
    x1, y1 = random_subset(digits, 3, seed=4)
    x2, _ = random_subset(digits, 3, seed=4)
    x3, _ = random_subset(digits, 3, seed=5)
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    assert torch.bincount(y1).tolist() == [3] * 10


def test_soft_labels_are_used(digits):
    d = dd.distill(digits, "random", 1, seed=0, device="cpu")
    # soft labels that all point to class 0: the network learns to predict class 0
    soft = torch.full((10, 10), -10.0)
    soft[:, 0] = 10.0
    d = dataclasses.replace(d, soft_labels=soft)
    proto = dataclasses.replace(get_protocol("fast"), epochs=30)
    rep = dd.evaluate(
        d, digits, proto, seeds=1, baselines=False, full=False, device="cpu", archs=["convnetw32"]
    )
    frac0 = float((digits.test_y == 0).float().mean())
    assert rep.results["convnetw32"]["distilled"].mean == pytest.approx(frac0, abs=0.02)


def test_the_report_says_which_lr_the_set_trained_with(digits, monkeypatch):
    """Under a learned-lr protocol the set trains at its own lr and the report says so;
    a set without one, or a protocol without learned lr, trains at the protocol's."""
    module = importlib.import_module("datadistill.evaluation.evaluate")
    used: list[float | None] = []
    monkeypatch.setattr(module, "train_and_test", lambda *a, lr=None, **k: used.append(lr) or 0.5)
    d = dd.distill(digits, "random", 1, seed=0, device="cpu")
    learned = dataclasses.replace(d, lr=0.05)
    mtt = dataclasses.replace(get_protocol("mtt"), epochs=1)
    kw = dict(
        seeds=1, baselines=False, full=False, device="cpu", archs=["convnetw32"], cache_dir=False
    )
    rep = dd.evaluate(learned, digits, mtt, **kw).to_dict()
    assert (rep["lr_distilled"], rep["lr_learned"], used) == (0.05, True, [0.05])
    for the_set, proto in ((d, mtt), (learned, get_protocol("fast"))):
        rep = dd.evaluate(the_set, digits, proto, **kw).to_dict()
        assert (rep["lr_distilled"], rep["lr_learned"]) == (proto.lr, False)
    assert used[1:] == [None, None]
    # one spelling of an architecture is one entry, trained once
    used.clear()
    rep = dd.evaluate(d, digits, mtt, **{**kw, "archs": ["ConvNetW32", "convnetw32"]})
    assert list(rep.results) == ["convnetw32"] and len(used) == 1


@pytest.mark.parametrize("bad", [-0.0004, 0.0, float("nan")])
def test_a_learned_lr_that_cannot_train_is_one_clear_error(digits, bad):
    """A set whose learned lr is not positive (one distilled before MTT kept it so) is
    refused under a learned-lr protocol, naming the fix; a fixed-lr protocol still takes it."""
    d = dataclasses.replace(dd.distill(digits, "random", 1, seed=0, device="cpu"), lr=bad)
    kw = dict(seeds=1, baselines=False, full=False, device="cpu", archs=["convnetw32"])
    with pytest.raises(DataError, match="cannot train a network.*--protocol dc"):
        dd.evaluate(d, digits, dataclasses.replace(get_protocol("mtt"), epochs=1), **kw)
    rep = dd.evaluate(d, digits, dataclasses.replace(get_protocol("fast"), epochs=1), **kw)
    assert rep.to_dict()["lr_learned"] is False


def test_report_md_says_the_set_trained_at_its_learned_lr(digits, tmp_path):
    from datadistill.evaluation.evaluate import EvalReport, Result
    from datadistill.report import write_report

    d = dd.distill(digits, "random", 1, seed=0, device="cpu")
    rows = {"distilled": Result((0.5,)), "random": Result((0.4,))}
    rep = EvalReport(
        get_protocol("mtt"), 1, 1, {"convnet": rows}, lr_distilled=0.05, lr_learned=True
    )
    cfg = dd.RunConfig(dataset="digits", method="random", ipc=1, protocol="mtt")
    report = write_report(tmp_path, cfg, d, rep, 123)
    assert report["evaluation"]["lr_learned"] is True
    md = (tmp_path / "report.md").read_text()
    assert "the distilled set trained at the set's learned lr 0.05, the baselines at" in md
    assert "no full-data reference" in md


def test_micro_batches_give_the_same_update():
    import dataclasses as _dc  # noqa: F401

    x, y = torch.randn(40, 1, 8, 8), torch.randint(10, (40,))
    nets = [
        dd.create_model(
            "convnetw32",
            channels=1,
            num_classes=10,
            image_size=8,
            generator=torch.Generator().manual_seed(0),
        )
        for _ in range(2)
    ]
    for net, mb in zip(nets, (0, 16), strict=True):
        train_network(
            net,
            x,
            y,
            epochs=2,
            lr=0.1,
            batch_size=40,
            micro_batch=mb,
            generator=torch.Generator().manual_seed(1),
        )
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.skipif(not compiler_works(torch.device("cpu")), reason="no C++ compiler")
@pytest.mark.parametrize("norm", ["instancenorm", "batchnorm"])
def test_a_compiled_training_gives_the_eager_update(norm):
    """compile="yes" trains through torch.compile (a ConvNet through stem_logits): the same
    parameters and batch-norm statistics as the eager training up to rounding; a second
    network compiles nothing new, and a remainder batch runs eagerly."""
    import torch._dynamo.utils as dynamo_utils

    x, y = torch.randn(20, 1, 8, 8), torch.randint(10, (20,))  # batches of 8, 8 and 4

    def net(seed=0):
        g = torch.Generator().manual_seed(seed)
        return dd.create_model(
            "convnet", channels=1, num_classes=10, image_size=8, generator=g, width=8, norm=norm
        )

    def train(model, mode):
        train_network(
            model, x, y, epochs=3, lr=0.1, batch_size=8, compile=mode,
            generator=torch.Generator().manual_seed(1),
        )  # fmt: skip

    nets = [net(), net()]
    for model, mode in zip(nets, ("no", "yes"), strict=True):
        train(model, mode)
    eager, compiled = (m.state_dict() for m in nets)
    for key in eager:
        torch.testing.assert_close(eager[key], compiled[key], atol=1e-5, rtol=1e-4)
    graphs = dynamo_utils.counters["stats"]["unique_graphs"]
    train(net(1), "yes")
    assert dynamo_utils.counters["stats"]["unique_graphs"] == graphs


def test_auto_compiles_only_a_long_convnet_training_on_cpu(monkeypatch):
    from datadistill.evaluation import train as train_module

    x = torch.randn(10, 1, 28, 28)
    net = dd.create_model("convnet", channels=1, num_classes=10, image_size=28, width=8)
    mlp = dd.create_model("mlp", channels=1, num_classes=10, image_size=28)
    monkeypatch.setattr(train_module, "compiler_works", lambda device: True)
    monkeypatch.delenv(train_module.COMPILE_ENV, raising=False)
    compiles = train_module.compiles
    long = 30_000  # 23.5 M pixels: MNIST IPC 10 for 300 epochs
    assert compiles(net, x, long, "auto") and compiles(net, x, long, None)
    assert not compiles(net, x, 3000, "auto")  # 2.4 M pixels: IPC 1
    assert not compiles(mlp, x, long, "auto") and compiles(mlp, x, 1, "yes")
    assert not compiles(net, x, long, "no") and not compiles(net, x, long, False)
    monkeypatch.setenv(train_module.COMPILE_ENV, "no")  # the switch for every training
    assert not compiles(net, x, long, None) and compiles(net, x, 1, "yes")
    monkeypatch.setenv(train_module.COMPILE_ENV, "sometimes")
    with pytest.raises(dd.ConfigError, match="DATADISTILL_TRAIN_COMPILE.*auto, yes, no"):
        compiles(net, x, long, None)
    monkeypatch.delenv(train_module.COMPILE_ENV)
    monkeypatch.setattr(train_module, "compiler_works", lambda device: False)
    assert not compiles(net, x, long, "auto")
    with pytest.raises(dd.ConfigError, match="must be one of auto, yes, no"):
        compiles(net, x, 1, "maybe")
    # what a training counts: epochs x images, or max_steps x batch when that is less
    seen = []
    monkeypatch.setattr(train_module, "compiles", lambda m, i, work, mode: seen.append(work))
    g = torch.Generator().manual_seed(0)
    kw = dict(lr=0.1, generator=g, batch_size=4)
    train_network(net, x, torch.arange(10), epochs=2, **kw)
    train_network(net, x, torch.arange(10), epochs=50, max_steps=3, **kw)
    assert seen == [20, 12]


def test_baseline_cache_key_sees_every_byte_of_the_data(digits):
    """An edited dataset of the same size (a relabelled test image, an image past the
    first few) is another cache key; the same data is the same key."""
    from datadistill.evaluation.evaluate import _fingerprint

    base = _fingerprint(digits)
    assert _fingerprint(digits) == base
    test_y = digits.test_y.clone()
    test_y[-1] = (test_y[-1] + 1) % 10
    train_x = digits.train_x.clone()
    train_x[-1, 0, 0, 0] += 1.0
    for field, value in (("test_y", test_y), ("train_x", train_x)):
        original = getattr(digits, field)
        try:
            setattr(digits, field, value)
            assert _fingerprint(digits) != base, field
        finally:
            setattr(digits, field, original)
    assert _fingerprint(digits) == base


def test_cache_entries_name_device_and_torch_and_leave_no_temporary(digits, tmp_path):
    import json

    from datadistill.evaluation.evaluate import _cached

    acc = _cached(tmp_path, {"kind": "random", "device": "cpu"}, lambda: 0.5)
    assert acc == 0.5
    (entry,) = tmp_path.iterdir()
    key = json.loads(entry.read_text())["key"]
    assert key["torch"] == torch.__version__ and key["device"] == "cpu"
    assert _cached(tmp_path, {"kind": "random", "device": "cpu"}, lambda: 0.9) == 0.5
    assert _cached(tmp_path, {"kind": "random", "device": "cuda"}, lambda: 0.9) == 0.9
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "field, value",
    [
        ("epochs", 0),
        ("epochs", 2.5),
        ("batch_size", 0),
        ("lr", -1.0),
        ("lr", float("nan")),
        ("momentum", 1.0),
        ("weight_decay", -1e-4),
        ("decay_at", 1.5),
        ("seeds", True),
        ("dsa", "yes"),
        ("full_epochs", 0),
        ("name", ""),
    ],
)
def test_a_protocol_built_by_hand_is_checked(field, value):
    """dd.Protocol and dataclasses.replace of a registered one fail in one sentence,
    before any network trains (not a ZeroDivisionError, torch's lr error, or ~10% from
    untrained networks)."""
    with pytest.raises(dd.ConfigError, match=f"'{field}' field of protocol"):
        dataclasses.replace(get_protocol("fast"), **{field: value})


def test_a_mismatch_names_the_call_and_the_split_options(digits):
    d = dd.distill(digits, "random", 1, device="cpu")
    other = dd.load_dataset("digits", val_size=0)  # another training split: other statistics
    with pytest.raises(DataError, match="evaluate it with .*val_size and max_train"):
        dd.evaluate(d, other, "fast", device="cpu")
    with pytest.raises(DataError, match="relabel it with"):
        dd.relabel(d, other, "no-such-buffer")


def test_evaluating_on_other_files_of_the_same_shape_and_statistics_warns(digits):
    """The set records the digest of the files it was distilled from; data read from other
    files warns that the results are not comparable, and a side without a digest (an
    older set, a RealData built by hand) is quiet."""
    import copy

    from datadistill.evaluation.evaluate import warn_if_other_data

    d = dd.distill(digits, "random", 1, device="cpu")
    assert d.manifest["data"]["digest"] == digits.options["digest"]
    other = copy.copy(digits)
    other.options = {**digits.options, "digest": "sha256:0123456789abcdef"}
    with pytest.warns(UserWarning, match=r"differ from those this set was distilled from"):
        warn_if_other_data(d, other)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_other_data(d, digits)
        other.options = None
        warn_if_other_data(d, other)
        warn_if_other_data(d.with_manifest(data={"name": "digits"}), digits)


def test_evaluate_warns_when_the_data_files_were_edited(tmp_path):
    """End to end: a set distilled from an npz, evaluated after two labels of the file
    were swapped (the same shapes and statistics) warns; the file as it was is quiet."""
    import numpy as np

    from datadistill.evaluation.evaluate import dataset_of

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 6, 6), dtype=np.uint8)
    y = np.arange(40) % 2
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, x_test=x, y_test=y)  # 20 test images per class: no noise warning
    real = dd.load_dataset(f"npz:{path}", val_size=0)
    d = dd.distill(real, "random", 1, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dd.evaluate(d, dataset_of(d), "fast", device="cpu", cache_dir=False)
    y2 = y.copy()
    y2[[0, 1]] = y2[[1, 0]]
    np.savez(path, x=x, y=y2, x_test=x, y_test=y)
    with pytest.warns(UserWarning, match="differ from those this set was distilled from"):
        report = dd.evaluate(d, dataset_of(d), "fast", device="cpu", cache_dir=False)
    # the evaluation records the data it trained and tested on, not the set's
    assert report.to_dict()["data_digest"] != d.manifest["data"]["digest"]
    assert report.to_dict()["data_digest"] == dd.load_dataset(f"npz:{path}").options["digest"]


def test_a_test_split_too_small_to_tell_sets_apart_warns(digits):
    """Fewer than 10 test images per class, or a class missing from the test split,
    warns that the accuracies are noise; digits' 359 test images are quiet."""
    import copy

    from datadistill.evaluation.evaluate import warn_if_small_test

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_small_test(digits)
    small = copy.copy(digits)
    keep = torch.nonzero(digits.test_y < 3).flatten()[:5]
    small.test_x, small.test_y = digits.test_x[keep], digits.test_y[keep]
    with pytest.warns(UserWarning, match=r"has 5 images \(0.5 per class, none of classes '3'"):
        warn_if_small_test(small)


def test_the_small_test_warning_names_classes_by_index_without_names(digits):
    import copy
    import dataclasses

    from datadistill.evaluation.evaluate import warn_if_small_test

    unnamed = copy.copy(digits)
    unnamed.info = dataclasses.replace(digits.info, class_names=())
    keep = torch.nonzero(digits.test_y < 9).flatten()[:20]
    unnamed.test_x, unnamed.test_y = digits.test_x[keep], digits.test_y[keep]
    with pytest.warns(UserWarning, match=r"none of class '9'"):
        warn_if_small_test(unnamed)


def test_a_users_network_is_keyed_by_its_source(digits, tmp_path, monkeypatch):
    """A user's (or plugin's) network can change its forward pass without changing its
    layers or any version in the key: its module's source is part of the key, so an edit
    trains it afresh; one whose source cannot be read is never read back. The builtin
    networks keep the keys they had (their layers only)."""
    import importlib.util

    from datadistill.evaluation.evaluate import _evaluation_model, _network
    from datadistill.models import MODELS

    monkeypatch.setattr(MODELS, "_items", dict(MODELS._items))
    monkeypatch.setattr(MODELS, "_meta", dict(MODELS._meta))
    info = digits.info
    with torch.device("meta"):
        assert _network("convnet_bn", info) == repr(_evaluation_model("convnet_bn", info))

    def import_file(name, text):
        path = tmp_path / f"{name}.py"
        path.write_text(text)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    source = "from datadistill.models import MLP\n\n\nclass UserNet(MLP):\n    pass\n"
    first = import_file("usernet_a", source)
    MODELS.register("usernet")(first.UserNet)
    key = _network("usernet", info)
    assert " source " in key and _network("usernet", info) == key
    edited = import_file("usernet_a", source + "    # a changed forward pass\n")
    MODELS._items["usernet"] = edited.UserNet
    assert _network("usernet", info) not in (key, "")
    namespace: dict[str, object] = {"__name__": "nowhere"}  # no source to read
    exec(source, namespace)
    MODELS._items["usernet"] = namespace["UserNet"]
    assert _network("usernet", info) != _network("usernet", info)


def test_an_evaluation_report_prints_as_a_table():
    """``print(dd.evaluate(...))`` shows the accuracies, not the dataclass's fields."""
    from datadistill.evaluation import get_protocol
    from datadistill.evaluation.evaluate import EvalReport, Result

    report = EvalReport(
        protocol=get_protocol("fast"),
        ipc=1,
        seeds=2,
        results={
            "convnet": {"distilled": Result((0.9, 0.92)), "random": Result((0.7, 0.74))},
            "mlp": {"distilled": Result((0.8, 0.8))},
        },
        lr_distilled=0.0123,
        lr_learned=True,
        full_epochs=60,
        full_seeds=1,
    )
    lines = str(report).splitlines()
    assert lines[0] == (
        "test accuracy (%), protocol fast, IPC 1, 2 seeds; full data 60 epochs, 1 seed; the "
        "distilled set trained at its learned lr 0.0123"
    )
    assert lines[1].split("  ")[0] == "architecture" and "random real subset" in lines[1]
    assert lines[2].split() == ["convnet", "91.00", "±", "1.00", "72.00", "±", "2.00", "-"]
    assert lines[3].split() == ["mlp", "80.00", "±", "0.00", "-", "-"]
    assert len(lines) == 4


def test_train_and_test_trains_with_every_setting_of_the_protocol(digits, monkeypatch):
    """Each of the protocol's settings reaches the training (a protocol whose values all
    differ from the defaults), and the accuracy is measured on the split asked for."""
    ev = importlib.import_module("datadistill.evaluation.evaluate")

    seen: dict = {}
    monkeypatch.setattr(ev, "train_network", lambda model, x, y, **kw: seen.update(kw))
    monkeypatch.setattr(ev, "accuracy", lambda model, x, y: 0.5)
    proto = dataclasses.replace(
        get_protocol("fast"),
        epochs=7,
        lr=0.03,
        momentum=0.7,
        weight_decay=1e-3,
        batch_size=17,
        decay_at=0.3,
        dsa=True,
    )
    x, y = digits.train_x[:20], digits.train_y[:20]
    ev.train_and_test(x, y, digits, proto, "convnet", seed=0, device=torch.device("cpu"))
    picked = {k: seen[k] for k in ("epochs", "lr", "momentum", "weight_decay", "batch_size")}
    assert picked == {
        "epochs": 7,
        "lr": 0.03,
        "momentum": 0.7,
        "weight_decay": 1e-3,
        "batch_size": 17,
    }
    assert seen["decay_at"] == 0.3
    # DSA for the dataset: digits are never mirrored
    assert seen["dsa"] is not None and "flip" not in seen["dsa"].config.families
    seen.clear()
    ev.train_and_test(x, y, digits, get_protocol("fast"), "convnet", 0, device=torch.device("cpu"))
    assert seen["dsa"] is None and seen["decay_at"] == 0.5


@pytest.mark.parametrize("split", ["test", "val"])
def test_train_and_test_scores_the_split_asked_for(digits, monkeypatch, split):
    ev = importlib.import_module("datadistill.evaluation.evaluate")

    scored = []
    monkeypatch.setattr(ev, "train_network", lambda *a, **kw: None)
    monkeypatch.setattr(ev, "accuracy", lambda model, x, y: scored.append((x, y)) or 0.5)
    x, y = digits.train_x[:20], digits.train_y[:20]
    ev.train_and_test(x, y, digits, get_protocol("fast"), "convnet", 0, split=split)
    ((sx, sy),) = scored
    assert torch.equal(sx, digits.split(split)[0]) and torch.equal(sy, digits.split(split)[1])


def test_evaluate_draws_a_random_subset_per_seed_and_the_full_reference_on_train(
    digits, monkeypatch, tmp_path
):
    """Seed s of the random baseline trains on random_subset(real, ipc, s), and the
    full-data reference on the training split (neither validation nor test); the seed
    count defaults to the protocol's."""
    ev = importlib.import_module("datadistill.evaluation.evaluate")

    calls = []

    def fake_train(images, labels, real, protocol, arch, seed, **kw):
        calls.append((images, labels, seed, kw.get("epochs")))
        return 0.5

    monkeypatch.setattr(ev, "train_and_test", fake_train)
    d = dd.distill(digits, "random", ipc=2, seed=0, device="cpu")
    proto = dataclasses.replace(get_protocol("fast"), seeds=3)
    report = ev.evaluate(d, digits, proto, cache_dir=tmp_path, device="cpu", full_seeds=1)
    assert report.seeds == 3 and len(report.results["convnet"]["random"].accs) == 3
    randoms = [c for c in calls if c[3] is None and not torch.equal(c[0], d.images)]
    assert [c[2] for c in randoms] == [0, 1, 2]
    for images, labels, s, _ in randoms:
        rx, ry = random_subset(digits, 2, s)
        assert torch.equal(images, rx) and torch.equal(labels, ry)
    (full,) = [c for c in calls if c[3] is not None]
    assert torch.equal(full[0], digits.train_x) and torch.equal(full[1], digits.train_y)


def test_accuracy_scores_in_eval_mode_and_leaves_training_mode_on():
    """Batch-norm networks are scored with their running statistics (eval mode)."""
    from datadistill.evaluation.train import accuracy

    modes = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            modes.append(self.training)
            return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 3).float()

    model = Probe().train()
    acc = accuracy(model, torch.zeros(120, 1, 2, 2), torch.tensor([0, 1] * 60))
    assert acc == 0.5 and modes and not any(modes) and model.training


@pytest.mark.parametrize("data", ["digits", [1], {"name": 5}])
def test_a_damaged_data_record_is_one_error(digits, data):
    """A set's manifest says how its data were loaded; a hand-edited one of another shape
    is a DataError, not an AttributeError."""
    from datadistill.errors import DataError
    from datadistill.evaluation.evaluate import dataset_of

    d = dd.distill(digits, "random", 1, device="cpu")
    damaged = dataclasses.replace(d, manifest={**d.manifest, "data": data})
    with pytest.raises(DataError, match="damaged 'data' entry"):
        dataset_of(damaged)


@pytest.mark.parametrize("recipe", [{}, "x", {"arch": "convnet", "width": 10**9}])
def test_a_damaged_expert_recipe_leaves_the_lr_warning_out(digits, recipe):
    from datadistill.evaluation.evaluate import _warn_if_lr_learned_elsewhere

    d = dd.distill(digits, "random", 1, device="cpu")
    damaged = dataclasses.replace(d, lr=0.01, manifest={**d.manifest, "expert_recipe": recipe})
    _warn_if_lr_learned_elsewhere(damaged, ["convnet"])  # nothing to compare with: no error
