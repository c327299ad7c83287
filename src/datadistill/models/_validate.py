"""Argument checks shared by the model factories, all raising one message format.

Every message reads "The '<param>' parameter of <owner> must be <constraint>; got <value>."
"""

from __future__ import annotations

from collections.abc import Sequence

from datadistill.errors import ConfigError


def check_int(value: object, param: str, owner: str, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"The {param!r} parameter of {owner} must be an int >= {minimum}; got {value!r}."
        )
    return value


def check_choice(value: object, choices: Sequence[str], param: str, owner: str) -> str:
    """Return ``value`` lower-cased if it is one of ``choices``, else raise :class:`ConfigError`."""
    if isinstance(value, str) and value.strip().lower() in choices:
        return value.strip().lower()
    valid = ", ".join(repr(c) for c in choices)
    raise ConfigError(f"The {param!r} parameter of {owner} must be one of {valid}; got {value!r}.")


def image_hw(image_size: int | Sequence[int], owner: str = "create_model") -> tuple[int, int]:
    """Normalise ``image_size`` (an int or an (H, W) pair of ints >= 1) to ``(H, W)``."""
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        sizes: tuple[object, ...] = (image_size, image_size)
    elif isinstance(image_size, Sequence) and not isinstance(image_size, str):
        sizes = tuple(image_size)
    else:
        sizes = ()
    ok = len(sizes) == 2 and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes
    )
    if not ok:
        raise ConfigError(
            f"The 'image_size' parameter of {owner} must be an int >= 1 or an (H, W) pair of "
            f"ints >= 1; got {image_size!r}."
        )
    return (int(sizes[0]), int(sizes[1]))  # type: ignore[call-overload]
