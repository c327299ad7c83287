"""Device selection shared by the API and the CLI."""

from __future__ import annotations

import torch

from datadistill.errors import ConfigError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; anything else must exist."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"Unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("CUDA was requested but is not available here; use --device cpu or auto.")
    return dev


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of this process: CUDA allocator peak on GPU, max RSS on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)
