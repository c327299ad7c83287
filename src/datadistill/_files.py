"""File helpers shared by the writers of artefacts, expert buffers and downloads."""

from __future__ import annotations

import os
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)  # reading the mask means setting it; it is put back at once
    os.umask(mask)
    return mask


def share_like_new_files(path: str | Path) -> None:
    """Give ``path`` the permissions a newly created file gets (0666 less the umask).

    safetensors' ``save_file`` and ``tempfile.mkstemp`` create owner-only (0600) files, so
    an artefact, expert shard or downloaded data file written through them could not be
    read by the colleagues it is shared with, unlike everything else a run writes."""
    os.chmod(path, 0o666 & ~_umask())
