"""Teacher soft labels (datadistill.labels): the relabelled set, its artefact, the random
baseline labelled by the same teacher, and bad input."""

import dataclasses
import functools
import importlib
import json
import shutil

import pytest
import torch

import datadistill as dd
from datadistill.evaluation import get_protocol
from datadistill.experts import ExpertBuffer
from datadistill.labels import Teacher, teacher_logits

from .test_cli import cli_here  # noqa: F401  (the fixture)


def _teacher(buffer, expert=0, epoch=-1):
    buf = ExpertBuffer(buffer)
    return buf.network_at(expert, buf.epochs if epoch == -1 else epoch)


def test_relabel_gives_each_training_image_its_teachers_logits(digits, expert_buffer, tmp_path):
    d = dd.distill(digits, "random", 2, seed=0, device="cpu")
    d = d.with_manifest(evaluation={"results": "of the hard-labelled set"})
    r = dd.relabel(d, digits, expert_buffer, expert=1, epoch=2, temperature=4.0, device="cpu")
    assert "evaluation" not in r.manifest and r.manifest["method"] == d.manifest["method"]
    with torch.no_grad():
        expected = _teacher(expert_buffer, 1, 2)(d.images) / 4.0
    assert r.soft_labels is not None and r.soft_labels.shape == (20, 10)
    torch.testing.assert_close(r.soft_labels, expected)
    assert torch.equal(r.images, d.images) and torch.equal(r.labels, d.labels)
    entry = r.manifest["teacher"]
    assert entry["expert"] == 1 and entry["epoch"] == 2 and entry["temperature"] == 4.0
    assert entry["expert_file"] == "expert_0001.safetensors"
    assert entry["experts"] == str(expert_buffer.resolve())
    back = dd.load(r.save(tmp_path / "r.safetensors"))  # the labels travel in the artefact
    torch.testing.assert_close(back.soft_labels, r.soft_labels)
    assert back.manifest["teacher"] == entry
    # the last epoch by default; a higher temperature flattens the labels
    last = dd.relabel(d, digits, expert_buffer, device="cpu")
    assert last.manifest["teacher"]["epoch"] == 3
    soft = dd.relabel(d, digits, expert_buffer, temperature=10.0, device="cpu")
    assert (
        soft.soft_labels.softmax(1).max(1).values.mean()
        < last.soft_labels.softmax(1).max(1).values.mean()
    )


def test_a_multi_formation_set_gets_one_label_per_tile(digits, expert_buffer, tmp_path):
    d = dd.distill(digits, "random", 1, seed=0, device="cpu", factor=2)
    r = dd.relabel(d, digits, expert_buffer, device="cpu")
    images, labels, soft = r.training_set()
    assert images.shape[0] == 40 and soft.shape == (40, 10)  # 4 tiles per stored image
    with torch.no_grad():
        torch.testing.assert_close(soft, _teacher(expert_buffer)(images))
    assert not torch.equal(soft[0], soft[1])  # tiles of one stored image differ
    back = dd.load(r.save(tmp_path / "r.safetensors"))
    torch.testing.assert_close(back.training_set()[2], soft)
    assert back.as_dataset()[39][2].shape == (10,)
    # a learned label per stored image (MTT's) is still shared by its tiles
    shared = dataclasses.replace(d, soft_labels=torch.randn(10, 10))
    assert torch.equal(shared.training_set()[2][:4], shared.soft_labels[0].expand(4, 10))
    with pytest.raises(dd.DataError, match=r"\(10, 10\) or, one per training image, \(40, 10\)"):
        dataclasses.replace(d, soft_labels=torch.randn(20, 10))


def test_evaluate_labels_the_random_subset_with_the_sets_teacher(
    digits, expert_buffer, tmp_path, monkeypatch
):
    d = dd.distill(digits, "random", 2, seed=0, device="cpu")
    r = dd.relabel(d, digits, expert_buffer, temperature=2.0, device="cpu")
    proto = dataclasses.replace(get_protocol("fast"), epochs=5)
    module = importlib.import_module("datadistill.evaluation.evaluate")
    seen: list[torch.Tensor | None] = []
    original = module.train_and_test

    def recording(images, labels, *args, soft_labels=None, **kwargs):
        seen.append(soft_labels)
        return original(images, labels, *args, soft_labels=soft_labels, **kwargs)

    monkeypatch.setattr(module, "train_and_test", recording)
    run = dict(archs=["convnetw32"], seeds=1, full=False, cache_dir=tmp_path / "c", device="cpu")
    report = dd.evaluate(r, digits, proto, **run)
    assert report.teacher == r.manifest["teacher"] and report.to_dict()["teacher"]["epoch"] == 3
    assert len(seen) == 2  # the set, then the random subset
    torch.testing.assert_close(seen[0], r.soft_labels)
    x, _ = module.random_subset(digits, 2, 0)
    with torch.no_grad():
        expected = _teacher(expert_buffer)(x) / 2.0
    torch.testing.assert_close(seen[1], expected)
    # the hard-labelled set's random baseline is another cache entry, trained with hard labels
    seen.clear()
    plain = dd.evaluate(d, digits, proto, **run)
    assert plain.teacher is None and seen == [None, None]
    keys = [json.loads(p.read_text())["key"] for p in (tmp_path / "c").glob("*.json")]
    random_keys = [k for k in keys if k["kind"] == "random"]
    assert sorted("teacher" in k for k in random_keys) == [False, True]
    # read back from the cache the second time: nothing is trained
    seen.clear()
    dd.evaluate(r, digits, proto, **run)
    assert seen == []


def test_a_changed_teacher_buffer_is_refused(digits, expert_buffer, tmp_path):
    buffer = tmp_path / "buffer"
    shutil.copytree(expert_buffer, buffer)
    d = dd.distill(digits, "random", 1, seed=0, device="cpu")
    r = dd.relabel(d, digits, buffer, device="cpu")
    shutil.copy(buffer / "expert_0001.safetensors", buffer / "expert_0000.safetensors")
    proto = dataclasses.replace(get_protocol("fast"), epochs=1)
    with pytest.raises(dd.DataError, match="no longer holds the network that labelled this set"):
        dd.evaluate(r, digits, proto, seeds=1, full=False, cache_dir=False, device="cpu")
    shutil.rmtree(buffer)
    with pytest.raises(dd.DataError, match="which is missing"):
        dd.evaluate(r, digits, proto, seeds=1, full=False, cache_dir=False, device="cpu")
    # without baselines the teacher is not needed
    dd.evaluate(r, digits, proto, seeds=1, baselines=False, full=False, device="cpu")


def test_an_untrained_teacher_is_allowed_with_a_warning(digits, expert_buffer):
    d = dd.distill(digits, "random", 1, seed=0, device="cpu")
    with pytest.warns(UserWarning, match="epoch 0 is the expert before any training") as w:
        r = dd.relabel(d, digits, expert_buffer, epoch=0, device="cpu")
    assert w[0].filename == __file__  # points at the caller's line
    assert r.manifest["teacher"]["epoch"] == 0


def test_a_moved_teacher_buffer_is_found_where_it_is_said_to_be(digits, expert_buffer, tmp_path):
    """teacher_experts= points evaluation at the buffer's new place; it must hold the same
    network, which labels the random subset as before the move."""
    buffer = tmp_path / "buffer"
    shutil.copytree(expert_buffer, buffer)
    d = dd.distill(digits, "random", 1, seed=0, device="cpu")
    r = dd.relabel(d, digits, buffer, device="cpu")
    proto = dataclasses.replace(get_protocol("fast"), epochs=1)
    run = functools.partial(dd.evaluate, r, digits, proto, seeds=1, full=False, device="cpu")
    before = run(cache_dir=False)
    moved = tmp_path / "moved"
    buffer.rename(moved)
    after = run(cache_dir=False, teacher_experts=moved)
    assert after.results == before.results
    with pytest.raises(dd.DataError, match="is not an expert buffer.*--teacher-experts"):
        run(cache_dir=False, teacher_experts=tmp_path / "nowhere")
    other = tmp_path / "other"  # a buffer holding another network: refused
    shutil.copytree(moved, other)
    shutil.copy(other / "expert_0001.safetensors", other / "expert_0000.safetensors")
    with pytest.raises(dd.DataError, match="does not hold the network.*another buffer"):
        run(cache_dir=False, teacher_experts=other)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"expert": 2}, "holds experts 0..1"),
        ({"epoch": 4}, "beyond the 3 epochs"),
        ({"epoch": -2}, "epoch must be an int >= -1"),
        ({"temperature": 0.0}, "positive number"),
        (
            {"temperature": 1e-320},
            "not finite.*relabel with a larger temperature",
        ),  # logits / T: inf
        ({"temperature": 1e-320, "hard_weight": 0.5}, "not finite"),
        ({"hard_weight": 1.0}, r"hard-label weight must be a number in \[0, 1\)"),
        ({"hard_weight": -0.1}, "hard-label weight"),
    ],
)
def test_bad_teacher_options_are_refused(digits, expert_buffer, kwargs, match):
    d = dd.distill(digits, "random", 1, seed=0, device="cpu")
    with pytest.raises(dd.ConfigError, match=match):
        dd.relabel(d, digits, expert_buffer, device="cpu", **kwargs)


def test_hard_weight_mixes_the_one_hot_labels_into_the_teachers(digits, expert_buffer, tmp_path):
    """The target is w * one-hot + (1 - w) * softmax(logits / T), for the set and for its
    random baseline alike; w = 0 is the teacher's alone, recorded as before."""
    d = dd.distill(digits, "random", 2, seed=0, device="cpu", factor=2)
    r = dd.relabel(d, digits, expert_buffer, temperature=2.0, hard_weight=0.25, device="cpu")
    images, labels, soft = r.training_set()
    with torch.no_grad():
        teacher = (_teacher(expert_buffer)(images) / 2.0).softmax(1)
    target = 0.25 * torch.nn.functional.one_hot(labels, 10).float() + 0.75 * teacher
    torch.testing.assert_close(soft.softmax(1), target)
    assert torch.isfinite(soft).all() and r.manifest["teacher"]["hard_weight"] == 0.25
    back = dd.load(r.save(tmp_path / "r.safetensors"))
    assert Teacher.from_manifest(back.manifest["teacher"]).hard_weight == 0.25
    plain = dd.relabel(d, digits, expert_buffer, temperature=2.0, device="cpu")
    assert "hard_weight" not in plain.manifest["teacher"]  # cache keys as before it existed
    assert Teacher.from_manifest(plain.manifest["teacher"]).hard_weight == 0.0
    module = importlib.import_module("datadistill.evaluation.evaluate")
    label, key, _ = module._teacher_labels(r, digits, torch.device("cpu"), True)
    x, y = module.random_subset(digits, 2, 0)
    with torch.no_grad():
        expected = 0.25 * torch.nn.functional.one_hot(y, 10).float() + 0.75 * (
            _teacher(expert_buffer)(x) / 2.0
        ).softmax(1)
    assert label is not None and key["teacher"]["hard_weight"] == 0.25
    torch.testing.assert_close(label(x, y).softmax(1), expected)


def test_mixed_labels_stay_finite_where_the_teachers_softmax_underflows():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[500.0] * 4, [0.0] * 4, [-500.0] * 4]))
        net[1].bias.zero_()
    x, hard = torch.ones(2, 1, 2, 2), torch.tensor([2, 0])  # logits 2000 / 0 / -2000
    assert (teacher_logits(net, x, 1.0).softmax(1)[:, 1:] == 0).all()  # float32 underflow
    soft = Teacher("buffer", hard_weight=0.25).labels(net, x, hard)
    assert torch.isfinite(soft).all()  # log-probabilities, however small
    torch.testing.assert_close(soft.softmax(1), torch.tensor([[0.75, 0, 0.25], [1.0, 0, 0]]))


def test_a_damaged_teacher_record_is_one_clear_error():
    for entry in ({"experts": "x"}, ["x"], {"experts": "x", "expert": 0, "epoch": 1}):
        with pytest.raises(dd.DataError, match="teacher record is damaged"):
            Teacher.from_manifest(entry)


def test_teacher_logits_in_chunks_equal_one_pass(expert_buffer, monkeypatch):
    net = _teacher(expert_buffer)
    x = torch.randn(7, 1, 8, 8)
    one = teacher_logits(net, x, 1.0)
    monkeypatch.setattr("datadistill.labels.CHUNK", 3)
    torch.testing.assert_close(teacher_logits(net, x, 1.0), one)


def test_cli_relabel_then_evaluate(tmp_path, expert_buffer, cli_here):  # noqa: F811
    art = dd.distill(dd.load_dataset("digits"), "random", 1, seed=0, device="cpu")
    src = art.save(tmp_path / "set.safetensors")
    run = tmp_path / "run"  # a run folder stands for its artefact
    art.save(run / "distilled.safetensors")
    out = tmp_path / "relabelled.safetensors"
    cli_here("relabel", str(src), "--experts", str(expert_buffer), "--out", str(out))
    assert dd.load(out).manifest["teacher"]["temperature"] == 1.0
    res = tmp_path / "res.json"
    cli_here(
        "evaluate", str(out), "--protocol", "fast", "--seeds", "1", "--no-full", "--json", str(res)
    )
    assert json.loads(res.read_text())["teacher"]["expert"] == 0
    # a set whose teacher buffer is gone: evaluated without baselines only
    copy = tmp_path / "copy"
    shutil.copytree(expert_buffer, copy)
    out2 = tmp_path / "relabelled-2.safetensors"
    cli_here("relabel", str(src), "--experts", str(copy), "--out", str(out2))
    shutil.rmtree(copy)
    proc = cli_here("evaluate", str(out2), "--protocol", "fast", "--seeds", "1", check=False)
    assert proc.returncode == 2 and "which is missing" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    cli_here("evaluate", str(out2), "--protocol", "fast", "--seeds", "1", "--no-baselines")
    args = ["evaluate", str(out2), "--protocol", "fast", "--seeds", "1", "--no-full"]
    cli_here(*args, "--teacher-experts", str(expert_buffer))  # the same network, elsewhere
    # --out without the suffix gets it, as export's npz does
    named = cli_here(
        "relabel", str(src), "--experts", str(expert_buffer), "--out", str(tmp_path / "s.v1")
    )
    assert named.stdout.strip() == str(tmp_path / "s.v1.safetensors")
    assert dd.load(tmp_path / "s.v1.safetensors").manifest["teacher"]["expert"] == 0
    fresh = tmp_path / "fresh.safetensors"
    for args, expected in [
        (["--experts", str(tmp_path / "none"), "--out", str(fresh)], "No expert buffer"),
        (["--experts", str(expert_buffer), "--out", str(src)], "is the input artefact"),
        (["--experts", str(expert_buffer), "--out", str(run / "distilled.safetensors")], "input"),
        (["--experts", str(expert_buffer), "--epoch", "9", "--out", str(fresh)], "beyond the 3"),
        (["--experts", str(expert_buffer), "--out", str(out)], "already exists"),  # kept
    ]:
        source = run if "distilled.safetensors" in args[-1] else src
        proc = cli_here("relabel", str(source), *args, check=False)
        err = proc.stderr.strip()
        assert proc.returncode == 2 and expected in err, err
        assert "Traceback" not in err and len(err.splitlines()) == 1, err


def test_cli_relabel_checks_its_out_before_the_teacher_runs(
    tmp_path,
    expert_buffer,
    cli_here,  # noqa: F811
    monkeypatch,
):
    src = dd.distill(dd.load_dataset("digits"), "random", 1, seed=0, device="cpu")
    path = src.save(tmp_path / "set.safetensors")

    def teacher(*args, **kwargs):
        raise AssertionError("the teacher ran before --out was checked")

    monkeypatch.setattr("datadistill.labels.relabel", teacher)
    args = ("relabel", str(path), "--experts", str(expert_buffer))
    proc = cli_here(*args, "--out", str(path / "x"), check=False)  # a folder under a file
    assert proc.returncode == 2 and "check that the path" in proc.stderr


def test_a_batch_norm_teacher_uses_statistics_of_real_images(digits, tmp_path):
    """Buffers keep no running statistics: the teacher estimates them from real images,
    the same each time it is loaded (the set and its baseline get the same teacher)."""
    from datadistill.experts import ExpertRecipe, train_experts

    recipe = ExpertRecipe(arch="convnet_bn", width=16, epochs=2, momentum=0.9, batch_size=64)
    buffer = tmp_path / "bn"
    trained = train_experts(digits, buffer, 1, recipe, device="cpu", log=lambda m: None)
    teacher = Teacher(str(buffer))
    net, identity = teacher.network(digits, torch.device("cpu"))
    bn = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and not net.training and bn[0].running_mean.abs().sum() > 0
    x, y = digits.split("val")
    with torch.no_grad():  # as good as the expert was when it was trained
        assert (net(x).argmax(1) == y).float().mean() > trained.val_accs()[0] - 0.05 > 0.5
    again, _ = teacher.network(digits, torch.device("cpu"))
    torch.testing.assert_close(again(x[:8]), net(x[:8]))


def test_a_relabelled_set_is_written_in_a_format_older_readers_refuse(
    digits, expert_buffer, tmp_path
):
    d = dd.distill(digits, "random", 1, seed=0, device="cpu")
    plain = dd.load(d.save(tmp_path / "plain.safetensors"))
    assert plain.manifest["format_version"] == 1
    r = dd.load(dd.relabel(d, digits, expert_buffer, device="cpu").save(tmp_path / "r.st"))
    assert r.manifest["format_version"] == 3
    assert plain.manifest["synset"]["soft_labels"] is False
    assert r.manifest["synset"]["soft_labels"] is True  # what the set holds now
    entry = {**r.manifest["teacher"], "checksum": "x"}  # damaged: one clear error
    with pytest.raises(dd.DataError, match="no longer holds the network"):
        dd.evaluate(
            r.with_manifest(teacher=entry), digits, "fast", seeds=1, full=False, device="cpu"
        )
