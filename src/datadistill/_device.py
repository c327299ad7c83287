"""Device selection shared by the API and the CLI, and the CPU allocator setting.

torch is imported where a function needs it: the command line imports this module to set
its allocator default, and ``datadistill --help`` should not wait for torch (about 2 s)."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import shutil
import sys
from typing import TYPE_CHECKING, Any

from datadistill.errors import ConfigError

if TYPE_CHECKING:
    import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; anything else must exist."""
    import torch

    if isinstance(device, str):  # "CPU", "Auto", " cuda:0": as case-free as the registries
        device = device.strip().lower()
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:  # a torch.device is checked like its string: it must exist here too
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"Unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'.") from None
    device = str(device)  # messages name a torch.device as its string ('cuda:1')
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(
            f"Device {device!r} is not supported by datadistill; use 'auto', 'cpu' or 'cuda[:N]'."
        )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("CUDA was requested but is not available here; use --device cpu or auto.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(
            f"There is no {device!r} here ({torch.cuda.device_count()} CUDA device(s)); "
            "use 'cuda' or an index below the count."
        )
    return dev


def global_rng_states(device: torch.device) -> tuple[Any, ...]:
    """The states of torch's global generators a run on ``device`` can draw from: the CPU
    one (``torch.randn(n)``, a CPU model's init) and, on CUDA, the device's own, which
    ``torch.randn(..., device="cuda")``, ``randn_like`` and dropout draw from there (and
    ``torch.get_rng_state`` does not cover)."""
    import torch

    if device.type == "cuda":
        return torch.get_rng_state(), torch.cuda.get_rng_state(device)
    return (torch.get_rng_state(),)


def same_rng_states(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Whether two :func:`global_rng_states` are the same: nothing drew in between."""
    import torch

    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def fork_global_rng(device: torch.device) -> Any:
    """A context restoring torch's global generators that :func:`global_rng_states` covers
    for ``device`` when it ends."""
    import torch

    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)
_libc: ctypes.CDLL | None = None


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim"):
                _libc = lib
        except OSError:
            pass
    return _libc


_tuned = False


def tune_cpu_allocator() -> bool:
    """Let glibc keep freed tensor memory for reuse instead of unmapping it.

    By default glibc serves every allocation above a threshold (128 KiB, growing to at
    most 32 MiB) with a fresh ``mmap`` and returns it with ``munmap`` on free, so a loop
    that allocates the same 10 MB activation each step pays a page fault per 4 KiB page
    every time. This raises the mmap and trim thresholds so that such memory stays in the
    heap; the resident size then stays at its peak (``reset_peak_memory`` trims before
    opening a new peak window). It is what PyTorch's CPU performance guide gets from
    jemalloc / tcmalloc through ``LD_PRELOAD``, without a preload.

    Opt-in for the library: it is a process-wide setting that keeps the resident memory
    at its peak, which a library should not impose on the program importing it (the
    package's own programs turn it on: :func:`program_allocator_default`). Measured on the
    2-core reference machines (NOTES.md): a first convolution over 100 MNIST images 10.9
    -> 1.7 ms, 60 epochs of the ``dc`` evaluation protocol on 100 images 28 -> 20 s, a DM
    iteration unchanged, one compiled DC outer iteration about the same (18.3 s default,
    20.3 s tuned, in separate runs on a machine whose speed drifts by 10-30%; 9.6-9.9
    against 9.4 s on a later machine), and with a multi-formation set DC's iteration 1.2x
    faster (its per-class synthetic gradients allocate tensors above the 32 MiB ceiling,
    freshly mapped on every call by default). Enable it with
    ``DATADISTILL_CPU_MALLOC=tuned`` (read by :func:`prepare_device`) or by calling this
    function; Linux with glibc only, once per process. Returns whether it is active.
    """
    global _tuned
    if _tuned:
        return True
    lib = _glibc()
    if lib is None:
        return False
    big = 1 << 30
    _tuned = bool(lib.mallopt(_M_MMAP_THRESHOLD, big)) and bool(lib.mallopt(_M_TRIM_THRESHOLD, big))
    return _tuned


def cpu_allocator_tuned() -> bool:
    """Whether :func:`tune_cpu_allocator` is active in this process."""
    return _tuned


MALLOC_ENV = "DATADISTILL_CPU_MALLOC"


def program_allocator_default() -> None:
    """For the package's own programs (the ``datadistill`` command, ``make demo``): the
    tuned CPU allocator unless the user set ``DATADISTILL_CPU_MALLOC`` (``default`` turns
    it off). A program owns its process, so the reason the library leaves the allocator
    alone (a process-wide setting imposed on whoever imports it) does not apply. Set
    through the environment so that worker processes (parallel experts) inherit it; it
    takes effect where :func:`prepare_device` runs on a CPU."""
    os.environ.setdefault(MALLOC_ENV, "tuned")


def prepare_device(device: torch.device) -> torch.device:
    """Per-process settings for ``device`` before heavy work: the CPU allocator when
    ``DATADISTILL_CPU_MALLOC=tuned``."""
    mode = os.environ.get(MALLOC_ENV, "default")
    if mode not in ("default", "tuned"):
        raise ConfigError(
            f"{MALLOC_ENV} must be 'default' or 'tuned'; got {mode!r}. "
            "Unset it or pick one of the two."
        )
    if device.type == "cpu" and mode == "tuned":
        tune_cpu_allocator()
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (faster than float32): a CUDA GPU
    with bf16 support, or a CPU with AVX512-BF16 or AMX instructions (elsewhere oneDNN
    emulates bf16, which is slower than float32)."""
    import torch

    if device.type == "cuda":  # bf16 tensor cores from Ampere (compute capability 8) on
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        cpu = torch.cpu
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return False


def _has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


COMPILE_CHOICES = ("auto", "yes", "no")  # every compile option's values


def compile_choice(value: Any) -> Any:
    """A compile option's value with a bool (``--hp compile=false`` reads as one) as "yes" /
    "no"; anything else as given, for the caller to check against ``COMPILE_CHOICES``."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def compiler_works(device: torch.device) -> bool:
    """Whether ``torch.compile``'s default backend can build kernels for ``device``: on
    CUDA it needs a GPU of compute capability 7.0 or newer, Triton, and a C compiler for
    Triton's launcher (``$CC``, gcc or clang); on the CPU the C++ compiler Inductor looks
    for (``$CXX``, else g++; clang++ on macOS). Where it cannot, "auto" settings run
    eagerly instead of failing at the first step."""
    if device.type == "cuda":
        import torch

        if torch.cuda.get_device_capability(device) < (7, 0) or not _has_triton():
            return False
        return any(shutil.which(n) for n in (os.environ.get("CC", ""), "gcc", "clang") if n)
    if device.type == "cpu":
        cxx = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
        return shutil.which(cxx) is not None
    return False


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA allocator stats; Linux peak RSS via clear_refs)."""
    if device.type == "cuda":
        import torch

        # unlike the stats readers, the reset does not start CUDA itself, and before start-up
        # it raises ("did you call init?"): a fresh process may not have touched CUDA yet
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats(device)
        return
    lib = _glibc()
    if _tuned and lib is not None:
        lib.malloc_trim(0)  # give retained free memory back, so it does not count as peak
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak resident set size
    except OSError:
        pass  # not Linux: the peak then covers the whole process


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory since :func:`reset_peak_memory`: CUDA allocator peak on GPU, peak RSS on CPU."""
    if device.type == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)
