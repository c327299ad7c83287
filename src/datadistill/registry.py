"""One registry type for models, methods, datasets, protocols and augmentations.

Modelled on timm's ``register_model`` / ``create_model`` / ``list_models``: a registry maps
names to factories, ``register`` is a decorator, and an unknown name raises an error
listing the valid names and the closest match.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Any, Generic, NoReturn, TypeVar

from datadistill.errors import UnknownNameError

T = TypeVar("T")


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _normalise_pattern(pattern: str) -> str:
    """``_normalise`` for a shell pattern: a ``-`` inside ``[...]`` is a range, kept."""
    out, depth = [], 0
    for ch in pattern.strip().lower():
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
        out.append("_" if ch == "-" and not depth else ch)
    return "".join(out)


def did_you_mean(name: str, valid: list[str] | tuple[str, ...], cutoff: float = 0.6) -> str:
    """`` Did you mean 'x'?`` for the valid name closest to ``name`` (compared as a
    registry compares names: case-free, ``-`` and ``_`` alike), or ``""`` when none is
    as close as ``cutoff`` (difflib's ratio): the hint unknown-name messages end with."""
    by_key = {_normalise(v): v for v in valid}
    close = difflib.get_close_matches(_normalise(name), list(by_key), n=1, cutoff=cutoff)
    return f" Did you mean {by_key[close[0]]!r}?" if close else ""


def refuse_name(kind: str, name: object, valid: list[str]) -> NoReturn:
    """Raise the one-line :class:`UnknownNameError` for a ``kind`` name that is none of
    ``valid``: not a string (e.g. a null or a number read from a config file), or the
    closest valid name, if one is close, and all of them."""
    if not isinstance(name, str):
        raise UnknownNameError(
            f"A {kind} name must be a string, got {name!r}. Valid {kind}s: {', '.join(valid)}."
        )
    hint = did_you_mean(name, valid, cutoff=0.5)  # short names: a looser match
    raise UnknownNameError(f"Unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid)}.")


def is_name(name: str, valid: list[str] | tuple[str, ...]) -> bool:
    """Whether ``name`` is one of ``valid`` as a registry matches names (case-free, ``-``
    and ``_`` alike)."""
    return _normalise(name) in {_normalise(v) for v in valid}


class Registry(Generic[T]):
    """A name -> object mapping with helpful errors.

    Names are matched case-insensitively, and ``-`` and ``_`` are interchangeable.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind  # e.g. "model", used in error messages
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` with optional metadata."""

        def deco(obj: T) -> T:
            key = _normalise(name)
            if key in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[key] = obj
            self._meta[key] = {"name": name, **meta}
            return obj

        return deco

    def canonical(self, name: str) -> str:
        """The registered spelling of ``name``; raises :class:`UnknownNameError`."""
        if not isinstance(name, str) or _normalise(name) not in self._items:
            refuse_name(self.kind, name, self.names())
        return str(self._meta[_normalise(name)]["name"])

    def get(self, name: str) -> T:
        self.canonical(name)
        return self._items[_normalise(name)]

    def meta(self, name: str) -> dict[str, Any]:
        self.canonical(name)
        return dict(self._meta[_normalise(name)])

    def describe(self, name: str) -> str:
        """One line about ``name``: its registered ``summary`` or ``description``, else the
        first paragraph of the registered object's docstring (of its ``base`` entry, for a
        variant such as ``resnet18_bn``), followed by the variant's ``fixed`` settings."""
        meta = self.meta(name)
        text = str(meta.get("summary") or meta.get("description") or "")
        if not text:
            doc = (getattr(self.get(meta.get("base") or name), "__doc__", None) or "").strip()
            text = " ".join(doc.split("\n\n")[0].split()).replace("``", "")
            if meta.get("fixed"):
                fixed = ", ".join(f"{k}={v}" for k, v in meta["fixed"].items())
                text = f"{text} ({fixed})" if text else fixed
        return text

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted registered names, optionally filtered by a shell pattern (``"conv*"``)."""
        out = sorted(str(m["name"]) for m in self._meta.values())
        if pattern is not None:
            pat = _normalise_pattern(pattern)  # "resnet18-*" finds "resnet18_bn", as get()
            out = [n for n in out if fnmatch.fnmatch(_normalise(n), pat)]
        return out

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _normalise(name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
