"""User-facing errors.

Every mistake a user can make (an unknown name, a bad hyperparameter, a corrupt file)
raises a subclass of :class:`DatadistillError` whose message is one sentence saying what
is wrong and how to fix it. The CLI prints that sentence and exits non-zero, without a
traceback; library callers can catch the exception.
"""

from __future__ import annotations


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


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)
