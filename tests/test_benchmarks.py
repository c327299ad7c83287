"""The benchmark scripts' own logic: the GPU check plan and the tagged-results table."""

from __future__ import annotations

import json

import pytest

from benchmarks import gpu_checks, write_md
from benchmarks.table import cell_name


def test_gpu_parts_are_unique_and_write_distinct_files():
    ps = gpu_checks.parts(4, 25, 20000)
    names = [p.name for p in ps]
    assert len(set(names)) == len(names)
    outputs = [o for p in ps for o in p.outputs]
    assert len(set(outputs)) == len(outputs)
    assert all(o.endswith("-gpu.json") for o in outputs)  # never overwrite the CPU figures
    assert all(p.minimum <= p.cap for p in ps)


@pytest.mark.parametrize("ipc", [1, 10])
def test_mtt_recipe_fits_the_gpu_expert_buffer(ipc):
    r = gpu_checks.MTT_RECIPE[ipc]
    assert r["max_start_epoch"] + r["expert_epochs"] <= 25  # the experts part's default epochs


def test_plan_skips_parts_that_do_not_fit_and_caps_the_rest():
    ps = gpu_checks.parts(4, 25, 20000)
    planned = gpu_checks.plan(ps, 500.0)
    assert sum(s for _, s in planned) <= 500.0
    assert [p.name for p, _ in planned][:2] == ["memory", "dc-step"]  # asked-for checks first
    for p, s in planned:
        assert p.minimum <= s <= p.cap
    assert gpu_checks.plan(ps, 10.0) == []


def test_distillation_parts_keep_time_for_evaluation():
    dm = next(p for p in gpu_checks.parts(4, 25, 20000) if p.name == "dm-mnist")
    cmd = gpu_checks.command(dm, 300.0)
    assert cmd[cmd.index("--budget") + 1] == "200"  # 300 s minus the evaluation allowance
    assert "--iterations" in cmd and "--tag" in cmd and "--paper" in cmd
    memory = next(p for p in gpu_checks.parts(4, 25, 20000) if p.name == "memory")
    assert "--budget" not in gpu_checks.command(memory, 100.0)


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
    assert "| mnist | 10 | dm | paper | dsa | **97.50 ± 0.10** | 95.00 ± 0.20 |" in text
    assert write_md.tagged_section([]) == []
