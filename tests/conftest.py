"""Shared fixtures: the embedded digits set (loaded once) and tiny-method settings."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

# Small settings that let every registered method run a few steps in seconds. A new
# method must add its entry here (tests/methods/test_methods.py checks the coverage).
SMOKE_HPARAMS: dict[str, dict[str, object]] = {
    "random": {},
    "herding": {"width": 32, "train_steps": 30},
    "kcenter": {"width": 32, "train_steps": 30},
    "dm": {"width": 32, "batch_real": 64, "lr_img": 1.0, "compile": "no"},
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
