"""File helpers shared by the writers of artefacts, expert buffers and downloads."""

from __future__ import annotations

import os
from pathlib import Path

# a run folder's own files, also named by the command line before torch loads
ARTEFACT_NAME = "distilled.safetensors"  # the artefact inside a run folder
CHECKPOINT_NAME = "checkpoint.pt"


def with_added_suffix(path: Path, suffix: str) -> Path:
    """``path`` ending in ``suffix``: added, not swapped in ("set.v1" -> "set.v1.npz",
    never "set.npz"), unless it ends so already."""
    return path if path.suffix == suffix else path.with_name(path.name + suffix)


def _umask() -> int:
    """The process umask: from /proc on Linux (reading it leaves it alone), elsewhere by
    setting it and putting it back at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_like_new_files(path: str | Path) -> None:
    """Give ``path`` the permissions a newly created file gets (0666 less the umask).

    safetensors' ``save_file`` and ``tempfile.mkstemp`` create owner-only (0600) files, so
    an artefact, expert shard or downloaded data file written through them could not be
    read by the colleagues it is shared with, unlike everything else a run writes. Best
    effort: a file system that refuses chmod keeps the file as it was written."""
    try:
        os.chmod(path, 0o666 & ~_umask())
    except OSError:
        pass
