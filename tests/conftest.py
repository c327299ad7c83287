"""Shared fixtures: the embedded digits set (loaded once) and tiny-method settings."""

from __future__ import annotations

import os

import pytest
import torch

from datadistill._device import MALLOC_ENV

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _allocator_variable_restored():
    """The programs' entry points (`datadistill`, the demo) set DATADISTILL_CPU_MALLOC in
    os.environ when it is unset: each test gives the variable back as it found it."""
    saved = os.environ.get(MALLOC_ENV)
    yield
    if saved is None:
        os.environ.pop(MALLOC_ENV, None)
    else:
        os.environ[MALLOC_ENV] = saved


# Small settings that let every registered method run a few steps in seconds. A new
# method must add its entry here (tests/methods/test_methods.py checks the coverage).
_DC_SMOKE: dict[str, object] = {
    "width": 32,
    "batch_real": 32,
    "outer_loop": 2,
    "inner_loop": 2,
    "lr_img": 0.01,
    "compile": "no",
}
SMOKE_HPARAMS: dict[str, dict[str, object]] = {
    "random": {},
    "herding": {"width": 32, "train_steps": 30},
    "kcenter": {"width": 32, "train_steps": 30},
    "dm": {"width": 32, "batch_real": 64, "lr_img": 1.0, "compile": "no"},
    "dc": dict(_DC_SMOKE),
    "dsa": dict(_DC_SMOKE),  # DC with Siamese augmentation: the same smoke settings
    # "buffer" is filled in from the expert_buffer fixture
    "mtt": {"syn_steps": 4, "expert_epochs": 1, "max_start_epoch": 2, "lr_img": 10.0},
}

EXPERT_RECIPE = {
    "arch": "convnet",
    "width": 16,
    "epochs": 3,
    "lr": 0.01,
    "momentum": 0.9,
    "batch_size": 32,
}


@pytest.fixture(scope="session")
def digits():
    import datadistill as dd

    return dd.load_dataset("digits")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Baseline caches and default data roots never leak between tests or into $HOME."""
    monkeypatch.setenv("DATADISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DATADISTILL_DATA", str(tmp_path / "data"))
    os.environ.pop("DATADISTILL_NO_PROGRESS", None)


@pytest.fixture(scope="session")
def expert_buffer(digits, tmp_path_factory):
    """Two small ConvNet experts on digits, 3 epochs each (a few seconds)."""
    from datadistill.experts import ExpertRecipe, train_experts

    root = tmp_path_factory.mktemp("experts") / "digits-convnet"
    train_experts(digits, root, 2, ExpertRecipe(**EXPERT_RECIPE), device="cpu", log=lambda m: None)
    return root


def smoke_hparams(name: str, request: pytest.FixtureRequest) -> dict[str, object]:
    """The smoke settings of a method, with an expert buffer for trajectory methods."""
    hp = dict(SMOKE_HPARAMS[name])
    if name == "mtt":
        hp["buffer"] = str(request.getfixturevalue("expert_buffer"))
    return hp


@pytest.fixture(scope="session")
def readme_method_example() -> str:
    """The Python block of README's "Your own method" section (a method, then its run)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Your own method", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "the section holds one Python example"
    return blocks[0]
