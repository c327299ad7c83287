"""User-facing errors.

Every mistake a user can make (an unknown name, a bad hyperparameter, a corrupt file)
raises a subclass of :class:`DatadistillError` whose message is one sentence saying what
is wrong and how to fix it. The CLI prints that sentence and exits non-zero, without a
traceback; library callers can catch the exception.
"""

from __future__ import annotations

import functools
import sys
import sysconfig
import traceback
from pathlib import Path
from types import FrameType


class DatadistillError(Exception):
    """Base class of the errors caused by user input (not by bugs)."""


class ConfigError(DatadistillError, ValueError):
    """An invalid option, hyperparameter or name."""


class UnknownNameError(ConfigError):
    """A name that is not in a registry."""


class DataError(DatadistillError):
    """A missing, corrupt, truncated or inconsistent data file."""


class RunError(DatadistillError):
    """A run that cannot go on (NaN loss, incompatible checkpoint, ...)."""


class Interrupted(RunError):
    """The user stopped a run (Ctrl-C); its checkpoint is saved and resumable."""


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the CPU or an accelerator ran out of memory."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def first_difference(old: object, new: object, old_name: str, new_name: str, at: str = "") -> str:
    """The first place where two JSON-like settings differ, said in words, for example
    ``"ipc is 1 in the checkpoint and 3 now"`` (``old_name`` "in the checkpoint",
    ``new_name`` "now"); "" when they are equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            where = f"{at}.{key}" if at else str(key)
            if key not in new:
                return f"{where} is set {old_name} and missing {new_name}"
            if key not in old:
                return f"{where} is missing {old_name} and set {new_name}"
            found = first_difference(old[key], new[key], old_name, new_name, where)
            if found:
                return found
        return ""
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            found = first_difference(a, b, old_name, new_name, f"{at}[{i}]")
            if found:
                return found
        return ""
    if old != new:
        return f"{at or 'the value'} is {old!r} {old_name} and {new!r} {new_name}"
    return ""


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning issued by the caller of this function point
    at the first frame outside datadistill: the user's own line, however deep the call."""
    level = 2  # level 1: the frame that warns, our caller
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("datadistill"):
        level, frame = level + 1, frame.f_back
    return level


_PACKAGE_DIR = str(Path(__file__).resolve().parent)


@functools.cache
def _stdlib() -> str:
    return str(Path(sysconfig.get_paths()["stdlib"]).resolve())


def _not_users(file: str) -> bool:
    """Whether ``file`` is datadistill's, torch's or Python's own code (importlib's
    machinery, the standard library; not installed packages, which may live below it)."""
    if file.startswith("<"):
        return True
    path = Path(file).resolve()
    if str(path).startswith(_PACKAGE_DIR) or {"torch", "importlib"} & set(path.parts):
        return True
    installed = {"site-packages", "dist-packages"} & set(path.parts)
    return str(path).startswith(_stdlib()) and not installed


def user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """The innermost frame of ``exc``'s traceback in the user's own code (a plugin, a
    method or model of their own), or None when it never passed through any."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if not _not_users(frame.filename):
            return frame
    return None
