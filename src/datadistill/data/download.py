"""Downloading the official files of the builtin datasets.

The MD5 of the official archive (the value torchvision publishes) is checked only for
a file just downloaded; files already on disk are validated by their readers
(headers, shapes, counts) instead, so a re-compressed but intact copy is accepted.
A download goes to a temporary file in the target folder and is renamed when complete.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from datadistill._files import share_like_new_files
from datadistill.errors import DataError

TIMEOUT_S = 10.0  # per connection attempt / read
_BLOCK = 1 << 20


@dataclass(frozen=True)
class Remote:
    """One official file: where it is and its published MD5."""

    filename: str
    md5: str
    mirrors: tuple[str, ...]  # base URLs, tried in order; URL = base + filename


_MNIST = ("https://ossci-datasets.s3.amazonaws.com/mnist/",)
_FASHION = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_KMNIST = ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",)
_KRIZ = ("https://www.cs.toronto.edu/~kriz/",)
_SVHN = ("http://ufldl.stanford.edu/housenumbers/",)

REMOTES: dict[str, tuple[Remote, ...]] = {
    "mnist": (
        Remote("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", _MNIST),
        Remote("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", _MNIST),
        Remote("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", _MNIST),
        Remote("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", _MNIST),
    ),
    "fashion-mnist": (
        Remote("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", _FASHION),
        Remote("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", _FASHION),
        Remote("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", _FASHION),
        Remote("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", _FASHION),
    ),
    "kmnist": (
        Remote("train-images-idx3-ubyte.gz", "bdb82020997e1d708af4cf47b453dcf7", _KMNIST),
        Remote("train-labels-idx1-ubyte.gz", "e144d726b3acfaa3e44228e80efcd344", _KMNIST),
        Remote("t10k-images-idx3-ubyte.gz", "5c965bf0a639b31b8f53240b1b52f4d7", _KMNIST),
        Remote("t10k-labels-idx1-ubyte.gz", "7320c461ea6c1c855c0b718fb2a4b134", _KMNIST),
    ),
    "cifar10": (Remote("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", _KRIZ),),
    "cifar100": (Remote("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", _KRIZ),),
    "svhn": (
        Remote("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373", _SVHN),
        Remote("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3", _SVHN),
    ),
}


class DownloadFailed(Exception):
    """Internal: a fetch that did not produce a verified file (the reason is the message).

    ``local``: the data folder could not be written (no mirror can help with that).
    """

    def __init__(self, reason: str, local: bool = False) -> None:
        super().__init__(reason)
        self.local = local


def fetch(url: str, dest: Path, md5: str) -> None:
    """Download ``url`` to ``dest``, verifying ``md5``; ``dest`` appears only when complete."""
    try:  # a read-only data root, or a file where the folder should be
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as e:
        raise DownloadFailed(f"{e.strerror or e}: {e.filename or dest.parent}", local=True) from e
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            while block := resp.read(_BLOCK):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != md5:
            raise DownloadFailed(f"{url} has MD5 {digest.hexdigest()}, expected {md5}")
        share_like_new_files(tmp)
        os.replace(tmp, dest)
    except DownloadFailed:
        raise
    except (OSError, ValueError, http.client.HTTPException) as e:  # URLError, timeouts, disk
        raise DownloadFailed(f"{url}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)


def download_all(dataset: str, folder: Path, filenames: list[str] | None = None) -> None:
    """Fetch the official files of ``dataset`` (or those named) into ``folder``.

    Raises :class:`DownloadFailed` with the reasons when a file could not be fetched.
    """
    remotes = [r for r in REMOTES[dataset] if filenames is None or r.filename in filenames]
    for remote in remotes:
        errors = []
        for base in remote.mirrors:
            try:
                fetch(base + remote.filename, folder / remote.filename, remote.md5)
                break
            except DownloadFailed as e:
                if e.local:  # the folder, not the mirror: another mirror fails the same way
                    raise
                errors.append(str(e))
        else:
            raise DownloadFailed("; ".join(errors))


def missing_files_error(
    dataset: str,
    folder: Path,
    missing: list[str],
    reason: str | None = None,
    local: bool = False,
) -> DataError:
    """The one error for absent files: which, where to put them, how to choose the folder.

    ``reason``: why a download failed (``local``: the folder could not be written)."""
    head = f"The {dataset} files {', '.join(missing)} were not found"
    choose = "with --data-root / the DATADISTILL_DATA environment variable"
    if local:
        return DataError(
            f"{head} and could not be downloaded: the data folder cannot be written "
            f"({reason}); put them in {folder} or choose another data folder {choose}."
        )
    why = f" (download failed: {reason})" if reason else " (download=False)"
    then = "retry the download" if reason else "allow the download"
    return DataError(
        f"{head}{why}; put them in {folder} (or choose the data folder {choose}) or {then}."
    )
