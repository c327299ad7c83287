"""Device preparation: the opt-in CPU allocator setting and the peak-memory window."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from datadistill import _device
from datadistill.errors import ConfigError


def test_prepare_device_leaves_the_allocator_alone_by_default(monkeypatch):
    monkeypatch.delenv("DATADISTILL_CPU_MALLOC", raising=False)
    monkeypatch.setattr(_device, "_tuned", False)
    called = []
    monkeypatch.setattr(_device, "tune_cpu_allocator", lambda: called.append(1) or True)
    assert _device.prepare_device(torch.device("cpu")) == torch.device("cpu")
    assert called == []


def test_prepare_device_tunes_the_cpu_allocator_on_request(monkeypatch):
    monkeypatch.setenv("DATADISTILL_CPU_MALLOC", "tuned")
    called = []
    monkeypatch.setattr(_device, "tune_cpu_allocator", lambda: called.append(1) or True)
    _device.prepare_device(torch.device("cpu"))
    assert called == [1]
    _device.prepare_device(torch.device("meta"))  # not a CPU: nothing to do
    assert called == [1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tuned_allocator_keeps_results_and_peak_window_working():
    if _device._glibc() is None:
        pytest.skip("not glibc")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, 32, 32, generator=g)
    w = torch.randn(128, 8, 3, 3, generator=g)
    before = torch.nn.functional.conv2d(x, w, padding=1)  # 32 MiB out: mmap-sized
    assert _device.tune_cpu_allocator() and _device.cpu_allocator_tuned()
    assert _device.tune_cpu_allocator()  # idempotent
    assert torch.equal(torch.nn.functional.conv2d(x, w, padding=1), before)
    del before
    _device.reset_peak_memory(torch.device("cpu"))  # trims retained memory first
    y = torch.ones(64, 128, 32, 32)
    assert _device.peak_memory_bytes(torch.device("cpu")) >= y.numel() * 4


def test_unknown_allocator_setting_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("DATADISTILL_CPU_MALLOC", "tunned")
    with pytest.raises(_device.ConfigError, match="'default' or 'tuned'"):
        _device.prepare_device(torch.device("cpu"))


def test_cuda_peak_window_starts_cuda_before_resetting(monkeypatch):
    """The CUDA peak reset raises in a process that has not started CUDA yet, so the
    window must start CUDA first (a fresh `distill(..., device="cuda")` does exactly that)."""
    calls = []
    monkeypatch.setattr(torch.cuda, "init", lambda: calls.append("init"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: calls.append("reset"))
    _device.reset_peak_memory(torch.device("cuda"))
    assert calls == ["init", "reset"]


@pytest.mark.parametrize("name", ["mps", "xpu", "meta"])
def test_devices_other_than_cpu_and_cuda_are_one_clear_error(name):
    with pytest.raises(ConfigError, match=f"Device '{name}' is not supported by datadistill"):
        _device.resolve_device(name)


def test_a_cuda_index_beyond_the_devices_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert _device.resolve_device("cuda:0") == torch.device("cuda:0")
    assert _device.resolve_device(torch.device("cuda:0")) == torch.device("cuda:0")
    for dev in ("cuda:1", torch.device("cuda:1")):
        with pytest.raises(ConfigError, match=r"There is no 'cuda:1' here \(1 CUDA device"):
            _device.resolve_device(dev)


def test_a_torch_device_is_checked_like_its_name(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _device.resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA was requested but is not available"):
        _device.resolve_device(torch.device("cuda"))
    with pytest.raises(ConfigError, match="is not supported by datadistill"):
        _device.resolve_device(torch.device("meta"))
    with pytest.raises(ConfigError, match="Unknown device 3.5"):
        _device.resolve_device(3.5)  # type: ignore[arg-type]


def test_the_programs_default_to_the_tuned_allocator_unless_the_user_chose(monkeypatch, capfd):
    """`datadistill` (and `make demo`) own their process: tuned unless the variable is set."""
    from datadistill import cli

    for preset, expected in ((None, "tuned"), ("default", "default"), ("tuned", "tuned")):
        if preset is None:  # conftest restores the variable after the test
            monkeypatch.delenv(_device.MALLOC_ENV, raising=False)
        else:
            monkeypatch.setenv(_device.MALLOC_ENV, preset)
        monkeypatch.setattr(sys, "argv", ["datadistill", "list"])
        with pytest.raises(SystemExit) as exit_:
            cli.main()
        assert exit_.value.code == 0
        assert os.environ[_device.MALLOC_ENV] == expected
    capfd.readouterr()


def test_compiler_works_needs_triton_and_a_recent_gpu_on_cuda(monkeypatch):
    """On an old GPU, without Triton or without the C compiler Triton builds its launcher
    with, "auto" settings run eagerly instead of failing at the first step; "yes" still
    compiles as asked."""
    from datadistill.methods.common import maybe_compile

    cuda = torch.device("cuda")
    monkeypatch.setattr(_device, "_has_triton", lambda: True)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(_device.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (6, 0))
    assert not _device.compiler_works(cuda)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (8, 0))
    assert _device.compiler_works(cuda)
    monkeypatch.setattr(_device.shutil, "which", lambda name: None)  # no C compiler
    assert not _device.compiler_works(cuda)
    monkeypatch.setattr(_device.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(_device, "_has_triton", lambda: False)
    assert not _device.compiler_works(cuda)

    def fn(x):
        return x

    assert maybe_compile(fn, "auto", cuda, 0) is fn
    assert maybe_compile(fn, "yes", cuda, 0) is not fn
    monkeypatch.setattr(_device, "_has_triton", lambda: True)
    assert maybe_compile(fn, "auto", cuda, 0) is not fn


def test_compiler_works_looks_for_inductors_cpp_compiler_on_the_cpu(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(_device.shutil, "which", lambda name: None)
    assert not _device.compiler_works(cpu)
    monkeypatch.setattr(
        _device.shutil, "which", lambda name: "/usr/bin/g++" if name == "g++" else None
    )
    assert _device.compiler_works(cpu) == (sys.platform != "darwin")
    monkeypatch.setenv("CXX", "icpx")  # Inductor then looks for that one only
    assert not _device.compiler_works(cpu)
