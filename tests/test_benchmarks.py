"""The benchmark scripts' own logic: the GPU check plan and the tagged-results table."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

import datadistill as dd
from benchmarks import gpu_checks, table, write_md
from benchmarks.table import cell_name


def _values(args: tuple[str, ...], flag: str) -> list[str]:
    """The values after ``flag`` in an argparse-style argument tuple."""
    i = args.index(flag) + 1
    out = []
    while i < len(args) and not args[i].startswith("--"):
        out.append(args[i])
        i += 1
    return out


def test_gpu_parts_run_on_cuda_and_write_only_gpu_files():
    ps = gpu_checks.parts(gpu_checks.EXPERTS, gpu_checks.EXPERT_EPOCHS, 20000)
    names = [p.name for p in ps]
    assert len(set(names)) == len(names)
    for p in ps:
        assert _values(p.args, "--device") == ["cuda"], p.name
        assert p.minimum <= p.cap
        if p.args[0] == "table":  # the files the table will write, from its own arguments
            (tag,) = _values(p.args, "--tag")
            expected = {
                cell_name(d, m, int(k), tag)
                for d in _values(p.args, "--datasets")
                for m in _values(p.args, "--methods")
                for k in _values(p.args, "--ipcs")
            }
            assert set(p.outputs) == expected, p.name
        if p.args[0] == "experts":
            assert _values(p.args, "--tag") == ["gpu"]
        # the scripts that refuse to replace a result file without --force are told to:
        # a second GPU run finds the first one's files in benchmarks/results
        script = importlib.import_module(f"benchmarks.{p.args[0]}")
        if "--force" in inspect.getsource(script) or "add_output_options(" in inspect.getsource(
            script
        ):
            assert "--force" in p.args, p.name
    outputs = [o for p in ps for o in p.outputs]
    assert len(set(outputs)) == len(outputs)
    assert all(o.endswith("-gpu.json") for o in outputs)  # never the CPU figures


@pytest.mark.parametrize("ipc", [1, 10])
def test_mtt_recipe_fits_the_gpu_expert_buffer(ipc):
    r = gpu_checks.MTT_RECIPE[ipc]
    # MTT's own check: the latest target epoch is max_start_epoch - 1 + expert_epochs
    assert r["max_start_epoch"] - 1 + r["expert_epochs"] <= gpu_checks.EXPERT_EPOCHS


def test_parts_are_fitted_to_the_budget_left():
    ps = gpu_checks.parts(gpu_checks.EXPERTS, gpu_checks.EXPERT_EPOCHS, 20000)
    memory = next(p for p in ps if p.name == "memory")
    assert gpu_checks.fit(memory, memory.minimum - 1) is None
    assert gpu_checks.fit(memory, memory.cap + 100) == memory.cap
    assert gpu_checks.fit(memory, memory.minimum + 1) == memory.minimum + 1
    planned = gpu_checks.plan(ps, 480.0)  # the documented budget
    assert sum(s for _, s in planned) <= 480.0
    # the smoke run of every path first, then the checks the issues ask for
    assert [p.name for p, _ in planned][:3] == ["smoke", "memory", "dc-step"]
    assert gpu_checks.plan(ps, 10.0) == []


def test_distillation_parts_keep_time_for_evaluation():
    ps = gpu_checks.parts(gpu_checks.EXPERTS, gpu_checks.EXPERT_EPOCHS, 20000)
    dm = next(p for p in ps if p.name == "dm-mnist")
    cmd = gpu_checks.command(dm, 300.0)
    assert cmd[cmd.index("--budget") + 1] == "200"  # 300 s minus the evaluation allowance
    assert "--iterations" in cmd and "--paper" in cmd
    memory = next(p for p in ps if p.name == "memory")
    assert "--budget" not in gpu_checks.command(memory, 100.0)


def test_only_files_written_by_this_run_are_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_checks, "RESULTS", tmp_path)
    part = gpu_checks.Part("x", ("table",), 10, 1, ("a-gpu.json", "b-gpu.json"))
    old = tmp_path / "a-gpu.json"
    old.write_text("{}")
    os.utime(old, (1000.0, 1000.0))  # left from an earlier run
    since = time.time() - 1.0
    (tmp_path / "b-gpu.json").write_text("{}")
    (tmp_path / "b-gpu.meta.json").write_text("{}")
    got = {p.name for p in gpu_checks.fresh_outputs(part, since)}
    assert got == {"b-gpu.json", "b-gpu.meta.json"}


def test_a_part_cut_off_at_its_cap_takes_its_workers_with_it(tmp_path):
    pid_file = tmp_path / "worker.pid"
    script = (
        "import subprocess, sys, time\n"
        "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(w.pid))\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "part.log"
    t0 = time.perf_counter()
    status = gpu_checks.run_part([sys.executable, "-c", script], 5.0, log)
    assert status == "cut off at its cap"
    assert time.perf_counter() - t0 < 30
    worker = int(pid_file.read_text())
    for _ in range(50):  # the killed worker is reaped by init shortly after
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        with open(f"/proc/{worker}/stat") as f:  # still listed: it must at least be a zombie
            assert f.read().split()[2] == "Z"
    assert gpu_checks.run_part([sys.executable, "-c", "print('hi')"], 30.0, log) == "exit 0"
    assert log.read_text().strip() == "hi"


def test_tagged_cells_get_their_own_files_and_table(tmp_path, monkeypatch):
    assert cell_name("mnist", "dm", 10) == "mnist-dm-ipc10.json"
    assert cell_name("mnist", "dm", 10, "gpu") == "mnist-dm-ipc10-gpu.json"
    row = {
        "dataset": "mnist",
        "method": "dm",
        "ipc": 10,
        "protocol": "dsa",
        "tag": "gpu",
        "defaults": "paper",
        "seeds": 2,
        "results": {
            "distilled": {"mean": 0.975, "std": 0.001},
            "random": {"mean": 0.95, "std": 0.002},
            "full": {"mean": 0.99, "std": 0.0},
        },
        "full_reference": "5 epoch(s), 1 seed(s)",
        "iterations": 20000,
        "distill_seconds": 250.0,
        "peak_memory_bytes": 2**30,
        "machine": "16 cores x, NVIDIA H200",
        "command": "python -m benchmarks.table --tag gpu",
        "date": "2026-11-28",
    }
    monkeypatch.setattr(write_md, "RESULTS", tmp_path)
    (tmp_path / "mnist-dm-ipc10-gpu.json").write_text(json.dumps(row))
    (tmp_path / "mnist-dm-ipc10.json").write_text(json.dumps({**row, "tag": ""}))
    rows = write_md.load()
    assert len(rows) == 2
    lines = write_md.tagged_section([r for r in rows if r.get("tag")])
    text = "\n".join(lines)
    assert "## Tagged runs: gpu" in text
    assert "| mnist | 10 | dm | paper | dsa | 2 | **97.50 ± 0.10** | 95.00 ± 0.20 |" in text
    assert write_md.tagged_section([]) == []


def test_cells_distilled_from_other_seeds_are_pooled_beside_the_main_cell():
    def cell(method, tag, accs, hparams=None, **extra):
        mean = sum(accs) / len(accs)
        return {
            "dataset": "mnist",
            "method": method,
            "ipc": 1,
            "tag": tag,
            "results": {"distilled": {"accs": accs, "mean": mean}},
            "iterations": 10,
            "hparams": hparams or {"lr_img": 1.0},
            "date": "2026-12-05T00:00:00+00:00",
            "command": f"python -m benchmarks.table --methods {method} --tag {tag}",
            "machine": "2 cores",
            **extra,
        }

    main = [cell("dm", "", [0.86, 0.87, 0.88]), cell("dsa", "", [0.85, 0.85, 0.85])]
    tagged = [
        cell("dm", "seed1", [0.84, 0.84, 0.84]),
        cell("dsa", "seed2", [0.87, 0.87, 0.87], seed=2),
        cell("dsa", "seed1", [0.86, 0.86, 0.86], hparams={"lr_img": 3.0}),
        cell("dm", "gpu", [0.9, 0.9, 0.9]),  # another kind of tag: not a distillation seed
    ]
    assert [write_md.distillation_seed(r) for r in main + tagged] == [0, 0, 1, 2, 1, 0]
    assert write_md.distillation_seed(cell("dm", "seed3", [0.8], seed=None)) == 3
    lines, left = write_md.seeds_section(main, tagged)
    text = "\n".join(lines)
    assert "## Several distilled sets per cell" in text and left == []
    dm_row = next(line for line in text.splitlines() if line.startswith("| mnist | 1 | dm |"))
    # sets 0 and 1: means 87 and 84 -> 85.50 ± 1.50 over sets; networks 86, 87, 88, 84 x 3
    # -> 85.50 ± sqrt(15.5 / 6) = 1.61
    assert "0: 87.00 (10 it, 2026-12-05); 1: 84.00" in dm_row
    assert "**85.50 ± 1.50**" in dm_row and "| 85.50 ± 1.61 (6) |" in dm_row
    dsa_row = next(line for line in text.splitlines() if line.startswith("| mnist | 1 | dsa |"))
    assert "0: 85.00" in dsa_row and "1: 86.00" in dsa_row and "2: 87.00" in dsa_row
    assert "(settings differ)" in dsa_row and "(settings differ)" not in dm_row
    assert "90.00" not in text  # the gpu-tagged cell is no distillation seed
    assert text.count("- `python -m benchmarks.table") == 3  # each pooled set's command
    assert write_md.seeds_section(main, [tagged[-1]]) == ([], [])
    # not pooled: no main cell, or another protocol / network-seed count than the main cell
    orphan = {**cell("dm", "seed1", [0.8]), "ipc": 10}
    other = [cell("dm", "seed1", [0.8], protocol="dsa"), cell("dsa", "seed1", [0.8], seeds=5)]
    assert write_md.seeds_section(main, [orphan, *other]) == ([], [orphan, *other])
    twice = [cell("dm", "seed1", [0.84]), cell("dm", "seed2", [0.85], seed=1)]
    assert "(seed repeated)" in "\n".join(write_md.seeds_section(main, twice)[0])


def test_table_refuses_a_seed_tag_that_is_not_its_seed(monkeypatch, capsys):
    from benchmarks import table

    for extra in (["--tag", "seed1"], ["--tag", "seed0"], ["--tag", "seed2", "--seed", "1"]):
        monkeypatch.setattr(sys, "argv", ["table", "--datasets", "digits", *extra])
        with pytest.raises(SystemExit) as exc:
            table.main()
        assert exc.value.code == 2 and "pass the same --seed" in capsys.readouterr().err


def test_table_keeps_multiformation_cells_out_of_the_main_cells_files(monkeypatch, capsys):
    from benchmarks import table

    for extra in ([], ["--tag", "gpu"], ["--tag", "mf3"]):
        argv = ["table", "--datasets", "digits", "--hp", "dm:factor=2", *extra]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exc:
            table.main()
        assert exc.value.code == 2 and "needs --tag mf2" in capsys.readouterr().err


def test_data_options_are_the_loaders_defaults_in_the_table_and_demo():
    assert write_md.table_value("mnist", "dm", 10, "zca") is False
    assert write_md.table_value("mnist", "dm", 10, "zca_eps") == 0.1
    assert write_md.demo_value("dm", 1, "zca") is False
    assert write_md.table_value("mnist", "dm", 10, "lr_img") == 10.0  # hyperparameters as before


def test_mtt_memory_tables_by_width_and_device(tmp_path, monkeypatch):
    monkeypatch.setattr(write_md, "RESULTS", tmp_path)
    row = {"syn_steps": 80, "constant_peak_bytes": 2**29, "constant_seconds": 10.0}
    measured = {**row, "full_unroll_peak_bytes": 2**32, "full_unroll_seconds": 12.0}
    skipped = {**row, "full_unroll_peak_bytes": None, "full_unroll_note": "not run: projected"}
    for stem, rows in [
        ("mtt-memory-w32", [measured]),
        ("mtt-memory-gpu", [measured]),
        ("mtt-memory", [skipped]),
    ]:
        (tmp_path / f"{stem}.json").write_text(json.dumps(rows))
        (tmp_path / f"{stem}.meta.json").write_text(json.dumps({"settings": stem}))
    assert write_md.mtt_memory_stems() == ["mtt-memory", "mtt-memory-gpu", "mtt-memory-w32"]
    w32 = "\n".join(write_md.mtt_memory_section("mtt-memory-w32"))
    assert "constant memory (width 32)\n" in w32
    assert "| 80 | 4.00  | 0.50 | 0.125 | 12.0 | 10.0 |" in w32  # constant / full: 1/8
    paper = "\n".join(write_md.mtt_memory_section("mtt-memory"))
    assert "constant memory\n" in paper
    assert "| 80 | - (not run: projected) | 0.50 | - | - | 10.0 |" in paper
    assert "(GPU)" in "\n".join(write_md.mtt_memory_section("mtt-memory-gpu"))


def test_class_groups_memory_table(tmp_path, monkeypatch):
    monkeypatch.setattr(write_md, "RESULTS", tmp_path)
    row = {"method": "dc", "classes": 100, "groups": 7, "one_pass_peak_bytes": 2**32}
    row |= {"groups_peak_bytes": 2**30, "one_pass_seconds": 180.0, "groups_seconds": 130.0}
    (tmp_path / "class-groups-memory.json").write_text(json.dumps([row]))
    meta = {"settings": "s", "command": "c"}
    (tmp_path / "class-groups-memory.meta.json").write_text(json.dumps(meta))
    text = "\n".join(write_md.class_groups_memory_section("class-groups-memory"))
    assert "| dc | 100 | 7 | 4.00 | 1.00 | 0.25 | 180.0 | 130.0 |" in text
    assert "- command: `c`" in text and "(GPU)" not in text
    assert write_md.class_groups_memory_section("class-groups-memory-gpu") == []  # no file


def test_reevaluate_trains_the_table_artefact_under_another_protocol(digits, tmp_path, monkeypatch):
    from benchmarks import _common, reevaluate

    results, work = tmp_path / "results", tmp_path / "work"
    results.mkdir()
    work.mkdir()
    for mod in (reevaluate, _common):
        monkeypatch.setattr(mod, "RESULTS", results)
    monkeypatch.setattr(reevaluate, "WORK", work)
    distilled = dd.distill(digits, "random", 1, seed=0)
    distilled.save(work / "digits-random-ipc1.safetensors")
    cell = {
        "seed": 3,
        "iterations": 7,
        "distill_seconds": 1.5,
        "hparams": {"a": 1},
        "defaults": "cpu",
        "peak_memory_bytes": 2**20,
    }
    (results / "digits-random-ipc1.json").write_text(json.dumps({**cell, "date": "d"}))
    args = argparse.Namespace(
        protocol="fast", seeds=1, full_epochs=1, device="cpu", force=False, quiet=True, tag=""
    )
    assert reevaluate.reevaluate(digits, "random", 1, args)
    out = json.loads((results / "digits-random-ipc1-eval-fast.json").read_text())
    assert out["protocol"] == "fast" and out["tag"] == "eval-fast"
    assert out["evaluated_from"]["cell"] == "digits-random-ipc1.json"
    assert {k: out[k] for k in cell} == cell  # the distillation's figures travel along
    for entry in ("distilled", "random", "full"):
        assert len(out["results"][entry]["accs"]) == 1
    # a random subset re-evaluated is a random subset: it beats chance on digits
    assert out["results"]["distilled"]["mean"] > 0.2
    text = "\n".join(write_md.tagged_section([out]))
    assert "## Tagged runs: eval-fast" in text and "under the `fast` protocol" in text
    # no artefact: one line, nothing written, and the caller is told (a non-zero exit)
    assert not reevaluate.reevaluate(digits, "dm", 1, args)
    assert not (results / "digits-dm-ipc1-eval-fast.json").exists()
    # a tagged table run's set, re-evaluated beside the published cell
    distilled.save(work / "digits-random-ipc1-repro.safetensors")
    (results / "digits-random-ipc1-repro.json").write_text(json.dumps({**cell, "date": "e"}))
    assert reevaluate.reevaluate(
        digits, "random", 1, argparse.Namespace(**{**vars(args), "tag": "repro"})
    )
    tagged = json.loads((results / "digits-random-ipc1-repro-eval-fast.json").read_text())
    assert tagged["evaluated_from"]["cell"] == "digits-random-ipc1-repro.json"
    assert tagged["tag"] == "repro-eval-fast"


def test_sweep_scores_each_data_option_in_its_own_space(tmp_path, monkeypatch):
    from benchmarks import _common, sweep

    assert sweep.split_data_options({"zca": True, "lr_img": 1.0, "zca_eps": 0.5}) == (
        {"zca": True, "zca_eps": 0.5},
        {"lr_img": 1.0},
    )
    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    monkeypatch.setattr(sweep, "RESULTS", tmp_path)
    loaded = []
    real_load = dd.load_dataset

    def load(name, **kw):
        loaded.append(kw.get("zca", False))
        return real_load(name, **kw)

    monkeypatch.setattr(dd, "load_dataset", load)
    scored = []
    real_score = sweep.train_and_test

    def score(images, labels, real, *args, **kw):
        scored.append((real.info.zca, kw["split"]))
        return real_score(images, labels, real, *args, **kw)

    monkeypatch.setattr(sweep, "train_and_test", score)
    argv = ["sweep", "--dataset", "digits", "--method", "dm", "--ipc", "1", "--seeds", "1"]
    argv += ["--grid", "zca=False,True", "--budget", "0.5", "--protocol", "fast"]
    monkeypatch.setattr(sys, "argv", argv)
    sweep.main()
    out = json.loads((tmp_path / "sweep-digits-dm-ipc1-zca.json").read_text())
    assert [row["zca"] for row in out["rows"]] == [False, True]
    assert loaded == [False, True]  # each data variant loaded once
    assert scored == [(False, "val"), (True, "val")]  # and scored on its own validation split
    assert [row["data"] for row in out["rows"]] == [
        {"zca": False, "zca_eps": None},
        {"zca": True, "zca_eps": 0.1},
    ]
    assert out["split"] == "val"
    for row in out["rows"]:
        assert row["val_mean"] > 0.2  # a 10-class problem: above chance in both spaces


def test_sweep_names_its_file_from_any_value_and_keeps_what_it_scored(tmp_path, monkeypatch):
    """A path in --set (an expert buffer) names the file by its last component (a slash
    made the write fail after the whole sweep); each value's score is written as it comes,
    beside the result file until the last, so a sweep that stops keeps the values it scored
    and a stopped --force run leaves the complete file it would have replaced."""
    from benchmarks import _common, sweep

    assert sweep.name_part("buffer=benchmarks/work/experts/mnist-early") == "buffermnist-early"
    assert sweep.name_part("hard_weight=0.5") == "hard_weight0.5"
    assert sweep.name_part("x=a b:c") == "xa_b_c"
    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    monkeypatch.setattr(sweep, "RESULTS", tmp_path)
    real_score = sweep.train_and_test
    calls = []

    def score(*args, **kw):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real_score(*args, **kw)

    monkeypatch.setattr(sweep, "train_and_test", score)
    argv = ["sweep", "--dataset", "digits", "--method", "random", "--ipc", "1", "--seeds", "1"]
    argv += ["--grid", "factor=1,2", "--protocol", "fast"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(KeyboardInterrupt):
        sweep.main()
    assert not (tmp_path / "sweep-digits-random-ipc1-factor.json").exists()
    out = json.loads((tmp_path / "sweep-digits-random-ipc1-factor.json.partial").read_text())
    assert [row["factor"] for row in out["rows"]] == [1]
    calls.clear()  # a --force run that stops after its first value, like the first run
    (tmp_path / "sweep-digits-random-ipc1-factor.json").write_text("{}")  # a complete one
    monkeypatch.setattr(sys, "argv", [*argv, "--force"])
    with pytest.raises(KeyboardInterrupt):
        sweep.main()
    assert (tmp_path / "sweep-digits-random-ipc1-factor.json").read_text() == "{}"
    assert len(calls) == 2  # it had scored its first value
    monkeypatch.setattr(sweep, "train_and_test", real_score)
    sweep.main()  # a run to the end replaces it, and leaves no partial file
    out = json.loads((tmp_path / "sweep-digits-random-ipc1-factor.json").read_text())
    assert [row["factor"] for row in out["rows"]] == [1, 2]
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*.tmp"))


def test_sweep_warms_every_value_and_scores_the_decoded_set(tmp_path, monkeypatch):
    """Each value gets its own untimed warm-up (a factor changes the compiled shapes), and
    a multi-formation set is scored on the images a network trains on."""
    from benchmarks import _common, sweep

    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    monkeypatch.setattr(sweep, "RESULTS", tmp_path)
    warmups = []
    real_distill = dd.distill

    def distill(*args, **kw):
        if kw.get("iterations") == 1:
            warmups.append(kw["factor"])
        return real_distill(*args, **kw)

    monkeypatch.setattr(dd, "distill", distill)
    sizes = []
    real_score = sweep.train_and_test

    def score(images, labels, *args, **kw):
        sizes.append((images.shape[0], labels.shape[0]))
        return real_score(images, labels, *args, **kw)

    monkeypatch.setattr(sweep, "train_and_test", score)
    argv = ["sweep", "--dataset", "digits", "--method", "dm", "--ipc", "1", "--seeds", "1"]
    argv += ["--grid", "factor=1,2", "--budget", "0.5", "--protocol", "fast"]
    argv += ["--set", "width=16", "compile=no"]
    monkeypatch.setattr(sys, "argv", argv)
    sweep.main()
    assert warmups == [1, 2]
    assert sizes == [(10, 10), (40, 40)]


def test_multiformation_cells_are_named_and_explained():
    row = {"method": "dm", "hparams": {"factor": 2, "lr_img": 10.0}}
    assert write_md.method_label(row) == "dm (multi-formation x2)"
    assert write_md.method_label({"method": "dm", "hparams": {"lr_img": 1.0}}) == "dm"
    assert write_md.method_label({"method": "random"}) == "random"
    idc = {"method": "dc", "hparams": {"factor": 2, "distance": "l1"}}
    assert write_md.method_label(idc) == "dc (multi-formation x2, distance l1)"
    # each method's own default distance goes unnamed (DM's mean, DC / DSA's ours)
    assert write_md.method_label({"method": "dm", "hparams": {"distance": "mean"}}) == "dm"
    assert write_md.method_label({"method": "dsa", "hparams": {"distance": "ours"}}) == "dsa"
    mmd = {"method": "dm", "hparams": {"distance": "mmd"}}
    assert write_md.method_label(mmd) == "dm (distance mmd)"
    again = {"method": "dsa", "hparams": {"factor": 2}, "seed": 1, "tag": "mf2-seed1"}
    assert write_md.method_label(again) == "dsa (multi-formation x2, seed 1)"
    assert write_md.MF_TAG.fullmatch("mf2-l1") and not write_md.MF_TAG.fullmatch("mf2l1")
    cell = {
        "dataset": "mnist",
        "method": "dm",
        "ipc": 10,
        "protocol": "dc",
        "tag": "mf2",
        "hparams": {"factor": 2},
        "results": {"distilled": {"mean": 0.96, "std": 0.001}},
        "distill_seconds": 600.0,
        "peak_memory_bytes": 2**30,
        "machine": "2 cores",
        "command": "python -m benchmarks.table --hp dm:factor=2 --tag mf2",
        "date": "2026-12-05",
    }
    text = "\n".join(write_md.tagged_section([cell]))
    assert "## Tagged runs: mf2" in text and "same storage" in text
    assert "| mnist | 10 | dm (multi-formation x2) |" in text
    assert "| IDC: 98.4 |" in text  # the published figure of that parameterisation
    assert "is a variant" not in text
    mtt = "\n".join(write_md.tagged_section([{**cell, "method": "mtt"}]))
    assert "IDC:" not in mtt  # IDC was published on gradient matching, not on MTT
    variant = "\n".join(write_md.tagged_section([{**cell, "tag": "mf2-l1"}]))
    assert "## Tagged runs: mf2-l1" in variant and "`mf2-l1` is a variant" in variant
    assert "MALLOC" not in variant
    tuned = {**cell, "command": "DATADISTILL_CPU_MALLOC=tuned " + cell["command"]}
    assert "the same arithmetic, faster" in "\n".join(write_md.tagged_section([tuned]))


def test_pooled_cells_compare_hparams_with_the_methods_defaults():
    from benchmarks.write_md import settings

    old = {"method": "random", "hparams": {}}  # run before `factor` existed
    assert settings(old, "hparams") == settings({**old, "hparams": {"factor": 1}}, "hparams")
    assert settings(old, "hparams") != settings({**old, "hparams": {"factor": 2}}, "hparams")
    assert settings({"budget_seconds": 600}, "budget_seconds") == 600


def test_result_command_names_the_allocator_setting_it_ran_under(monkeypatch):
    """The allocator changes speed, so iterations within a budget: the recorded command
    carries the setting, so that it reproduces the run."""
    from benchmarks import _common

    monkeypatch.setattr("sys.argv", ["benchmarks/sweep.py", "--ipc", "10"])
    monkeypatch.delenv(_common.MALLOC_ENV, raising=False)
    assert _common.command() == "python -m benchmarks.sweep --ipc 10"
    monkeypatch.setenv(_common.MALLOC_ENV, "tuned")
    assert _common.command() == "DATADISTILL_CPU_MALLOC=tuned python -m benchmarks.sweep --ipc 10"


def test_seed_and_multiformation_mtt_cells_train_from_the_cells_own_buffer():
    for tag in ("", "seed1", "mf2", "mf2-l1"):
        assert table.cell_buffer_tag("mnist", 1, tag, paper=False) == "ipc1"  # 20 experts
        assert table.cell_buffer_tag("mnist", 10, tag, paper=False) == ""  # the default
    assert table.cell_buffer_tag("mnist", 1, "w128", paper=False) == "w128"
    assert table.cell_buffer_tag("mnist", 1, "gpu", paper=True) == "gpu"
    for tag in ("", "seed1", "mf2"):
        assert table.cell_buffer_tag("mnist", 1, tag, paper=True) == ""


def test_teacher_cells_need_a_teacher_tag_and_keep_the_cells_buffer(monkeypatch, capsys):
    for extra in ([], ["--tag", "mf2"], ["--tag", "teachers"]):
        argv = ["table", "--datasets", "digits", "--teacher", "", *extra]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exc:
            table.main()
        assert exc.value.code == 2 and "a 'teacher' part" in capsys.readouterr().err
    # teacher options without a teacher, or out of range: refused before any distillation
    for extra, match in (
        (["--hard-weight", "0.5"], "pass --teacher"),
        (["--teacher", "", "--tag", "teacher", "--hard-weight", "1"], "hard-label weight"),
        (["--teacher", "", "--tag", "teacher", "--temperature", "0"], "positive number"),
    ):
        monkeypatch.setattr(sys, "argv", ["table", "--datasets", "digits", *extra])
        with pytest.raises(SystemExit) as exc:
            table.main()
        assert exc.value.code == 2 and match in capsys.readouterr().err
    # the teacher changes the labels only: an MTT cell still trains from its own buffer
    assert table.cell_buffer_tag("mnist", 1, "mf2-teacher", paper=False) == "ipc1"
    assert table.cell_buffer_tag("mnist", 10, "teacher", paper=False) == ""
    teacher = {"experts": "/w/experts/mnist-teacher", "epoch": 8, "temperature": 2.0}
    row = {"method": "dc", "hparams": {"factor": 2}, "teacher": teacher, "teacher_seconds": 289}
    assert write_md.method_label(row) == (
        "dc (multi-formation x2, teacher labels: expert epoch 8, T 2)"
    )
    text = "\n".join(
        write_md.tagged_section(
            [
                {
                    **row,
                    "dataset": "mnist",
                    "ipc": 10,
                    "protocol": "dc",
                    "tag": "mf2-teacher",
                    "results": {"distilled": {"mean": 0.97, "std": 0.001}},
                    "distill_seconds": 600.0,
                    "peak_memory_bytes": 2**30,
                    "machine": "2 cores",
                    "command": "python -m benchmarks.table --teacher '' --tag mf2-teacher",
                    "date": "2026-12-06",
                }
            ]
        )
    )
    assert "labelled\nby the same expert" in text or "labelled by the same expert" in text
    assert "| 600 | teacher 289 |" in text  # the teacher's training time


def test_sweep_relabels_each_set_with_the_teacher(tmp_path, monkeypatch, expert_buffer):
    from benchmarks import _common, sweep

    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    monkeypatch.setattr(sweep, "RESULTS", tmp_path)
    monkeypatch.setattr(sweep, "buffer_dir", lambda dataset, tag: str(expert_buffer))
    soft = []
    real_score = sweep.train_and_test

    def score(images, labels, *args, soft_labels=None, **kw):
        soft.append(soft_labels)
        return real_score(images, labels, *args, soft_labels=soft_labels, **kw)

    monkeypatch.setattr(sweep, "train_and_test", score)
    argv = ["sweep", "--dataset", "digits", "--method", "random", "--ipc", "1", "--seeds", "1"]
    argv += ["--grid", "temperature=1,4", "--set", "teacher_epoch=2", "--protocol", "fast"]
    monkeypatch.setattr(sys, "argv", [*argv, "--teacher", "x"])
    sweep.main()
    assert len(soft) == 2 and torch.allclose(soft[0], soft[1] * 4)
    out = json.loads(next(tmp_path.glob("sweep-*teacherx.json")).read_text())
    assert out["teacher"] == str(expert_buffer) and out["best"] in (1, 4)
    monkeypatch.setattr(sys, "argv", argv)  # teacher options without a teacher
    with pytest.raises(SystemExit) as exc:
        sweep.main()
    assert exc.value.code == 2


def test_sweep_relabels_one_given_set_without_distilling(
    tmp_path, monkeypatch, expert_buffer, capsys
):
    from benchmarks import _common, sweep

    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    monkeypatch.setattr(sweep, "RESULTS", tmp_path)
    monkeypatch.setattr(sweep, "buffer_dir", lambda dataset, tag: str(expert_buffer))
    digits = dd.load_dataset("digits")
    art = dd.distill(digits, "dm", 1, seed=0, device="cpu", iterations=2).save(
        tmp_path / "set.safetensors"
    )

    def no_distill(*args, **kwargs):
        raise AssertionError("the given set is relabelled, not distilled again")

    monkeypatch.setattr(sweep.dd, "distill", no_distill)
    soft = []
    real_score = sweep.train_and_test

    def score(images, labels, *args, soft_labels=None, **kw):
        soft.append((labels, soft_labels))
        return real_score(images, labels, *args, soft_labels=soft_labels, **kw)

    monkeypatch.setattr(sweep, "train_and_test", score)
    argv = ["sweep", "--artefact", str(art), "--seeds", "1", "--protocol", "fast"]
    argv += ["--grid", "hard_weight=0,0.5", "--set", "temperature=2"]
    monkeypatch.setattr(sys, "argv", [*argv, "--teacher", "x"])
    sweep.main()
    assert len(soft) == 2
    (labels, teacher), (_, mixed) = soft
    one_hot = torch.nn.functional.one_hot(labels, 10).float()
    torch.testing.assert_close(mixed.softmax(1), 0.5 * one_hot + 0.5 * teacher.softmax(1))
    out = json.loads(
        (tmp_path / "sweep-digits-dm-ipc1-hard_weight-temperature2-teacherx-set.json").read_text()
    )
    assert out["artefact"] == str(art.resolve()) and out["budget_seconds"] is None
    assert [r["hard_weight"] for r in out["rows"]] == [0, 0.5]
    for bad in (
        argv,  # no teacher
        [*argv[:-4], "--grid", "lr_img=1,2", "--teacher", "x"],  # a distillation option
        [*argv[:-4], "--grid", "hard_weight=0,1", "--teacher", "x"],  # out of range
        [*argv[:-4], "--grid", "hard_weight=0", "--teacher", "x", "--experts-tag", "y"],
        [
            "sweep",
            "--artefact",
            str(tmp_path / "none"),
            "--grid",
            "hard_weight=0",
            "--teacher",
            "x",
        ],
    ):
        monkeypatch.setattr(sys, "argv", bad)
        with pytest.raises(SystemExit) as exc:
            sweep.main()
        assert exc.value.code == 2
    assert "No distilled set at" in capsys.readouterr().err  # one line, no traceback


def test_gpu_smoke_steps_read_only_what_the_steps_they_need_wrote(tmp_path):
    import typer

    from benchmarks import gpu_smoke
    from datadistill.cli import app

    command = typer.main.get_command(app)

    names = [name for name, _, _ in gpu_smoke.STEPS]
    assert len(set(names)) == len(names)
    written: dict[str, str] = {}  # --out of each step
    for name, line, needs in gpu_smoke.STEPS:
        args = gpu_smoke.arguments(line, tmp_path, "cuda")
        commands = {"distill", "experts", "relabel", "evaluate", "export", "show", "list", "check"}
        assert args[0] in commands
        assert all(n in written for n in needs), name  # earlier steps
        inputs = [a.split("=", 1)[-1] for a in args[1:] if str(tmp_path) in a]
        out = args[args.index("--out") + 1] if "--out" in args else None
        outputs = {args[i + 1] for i, a in enumerate(args) if a in ("--out", "--json")}
        for path in inputs:
            if path not in outputs:
                assert any(path.startswith(written[n]) for n in needs), (name, path)
        if out is not None:
            written[name] = out
        assert "--device" in args or args[0] in {"export", "show", "list"}, name
        # the real command line parses it (option names, types), nothing runs
        sub = command.get_command(None, args[0])  # type: ignore[attr-defined]
        assert sub is not None, name
        sub.make_context(args[0], list(args[1:]))


def test_a_missing_expert_buffer_is_named_with_the_command_that_trains_it(tmp_path, monkeypatch):
    from benchmarks import experts, table

    monkeypatch.setattr(table, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(experts, "WORK", tmp_path / "work")
    (tmp_path / "results").mkdir()
    # a fresh clone: the record is committed, the (git-ignored) buffer is not there; the
    # command offered is the record's own, with the published recipe
    recorded = "python -m benchmarks.experts --datasets mnist --num 20 --epochs 3 --tag ipc1"
    (tmp_path / "results" / "mnist-experts-ipc1.json").write_text(json.dumps({"command": recorded}))
    msg = table.missing_buffer("mnist", "ipc1")
    assert "experts/mnist-ipc1 not found" in msg and "mnist-experts-ipc1.json" not in msg
    assert msg.endswith(f"train it with {recorded}") and "names a buffer" not in msg
    # no record either: both named, and a plain --tag is said to name a buffer of its own
    msg = table.missing_buffer("mnist", "repro", chosen_by_tag=True)
    assert "experts/mnist-repro and" in msg and "mnist-experts-repro.json not found" in msg
    assert "names a buffer of its own" in msg and msg.endswith("--datasets mnist --tag repro")
    assert "json" not in table.missing_buffer("mnist", "repro", record_needed=False)
    buffer = tmp_path / "work" / "experts" / "mnist-ipc1"
    buffer.mkdir(parents=True)
    (buffer / "manifest.json").write_text("{}")
    assert table.missing_buffer("mnist", "ipc1") == ""
    assert table.missing_buffer("mnist", "x", buffer=str(buffer), record_needed=False) == ""


def test_scripts_refuse_to_replace_a_result_and_end_user_errors_in_one_line(
    tmp_path, monkeypatch, capsys
):
    from benchmarks import _common

    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    ap = argparse.ArgumentParser()
    _common.add_output_options(ap, "x.json")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(SystemExit):
        _common.output_name(ap, ap.parse_args([]), "x.json")
    assert "x.json exists; pass --out NAME.json" in capsys.readouterr().err
    assert _common.output_name(ap, ap.parse_args(["--force"]), "x.json") == "x.json"
    assert _common.output_name(ap, ap.parse_args(["--out", "y.json"]), "x.json") == "y.json"
    with pytest.raises(SystemExit):
        _common.output_name(ap, ap.parse_args(["--out", "../y.json"]), "x.json")

    def main() -> None:
        raise dd.ConfigError("Unknown method 'foo'. Valid methods: dm.")

    with pytest.raises(SystemExit) as exc:
        _common.run_main(main)
    assert exc.value.code == 2
    assert (
        capsys.readouterr().err.strip().endswith("error: Unknown method 'foo'. Valid methods: dm.")
    )
    data_ap = argparse.ArgumentParser()
    _common.add_data_root(data_ap)
    assert _common.data_root(data_ap.parse_args(["--data-root", "d"])) == Path("d")
    assert _common.data_root(data_ap.parse_args([])) == _common.DATA


def test_sweep_values_read_booleans_as_the_command_line_does():
    from benchmarks.sweep import parse_value

    assert parse_value("false") is False and parse_value("True") is True
    assert parse_value("0.5") == 0.5 and parse_value("None") is None
    assert parse_value("color_crop") == "color_crop"


def test_expert_records_are_kept_unless_replaced_and_say_what_was_resumed(
    tmp_path, monkeypatch, capsys
):
    from benchmarks import _common, experts

    for mod in (experts, _common):
        monkeypatch.setattr(mod, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(experts, "WORK", tmp_path / "work")
    argv = ["experts", "--datasets", "digits", "--num", "1", "--epochs", "1", "--width", "8"]
    monkeypatch.setattr(sys, "argv", argv)
    experts.main()
    record = tmp_path / "results" / "digits-experts.json"
    first = json.loads(record.read_text())
    assert first["experts_trained_before"] == 0 and first["seconds"] > 0
    with pytest.raises(SystemExit) as exc:  # a record is not replaced unasked
        experts.main()
    assert exc.value.code == 2 and "--force" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", [*argv, "--force"])
    experts.main()  # the buffer is complete: its record keeps the training's seconds
    assert json.loads(record.read_text()) == first
    assert "trained before" in capsys.readouterr().out
