"""Your own methods, models, datasets and protocols on the command line.

A plugin is a Python module that registers names (``register_method``, ``MODELS.register``,
...) when it is imported. The command line imports, before it looks a name up:

- each entry of ``DATADISTILL_PLUGINS`` (comma-separated): a module name, or the path of a
  ``.py`` file (``DATADISTILL_PLUGINS=./moments.py``);
- each entry point of the group ``datadistill.plugins`` that installed packages declare
  (``[project.entry-points."datadistill.plugins"] moments = "mypkg.moments"``).

In Python, import the module yourself: registering is all a plugin does.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from datadistill.errors import ConfigError

PLUGINS_ENV = "DATADISTILL_PLUGINS"
ENTRY_POINT_GROUP = "datadistill.plugins"

_loaded: dict[str, str] = {}  # what was imported -> how it was named (once per process)


def _from_environment() -> list[str]:
    return [p.strip() for p in os.environ.get(PLUGINS_ENV, "").split(",") if p.strip()]


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def configured() -> bool:
    """Whether the environment or an installed package names a plugin."""
    return bool(_from_environment() or _entry_points())


def _is_path(entry: str) -> bool:
    return entry.endswith(".py") or "/" in entry or os.sep in entry


def _import_file(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(
            f"The plugin {str(path)!r} from ${PLUGINS_ENV} is not a file; give the path of a "
            ".py file or an importable module name."
        )
    name = f"datadistill_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def _where(exc: BaseException) -> str:
    """`` at FILE:LINE``: the innermost frame of the failure, for the plugin's author."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""


def load_plugins() -> list[str]:
    """Import every configured plugin once; returns how each loaded one was named. A
    plugin that fails to import is one :class:`ConfigError` naming it, the failure and
    where it happened."""
    todo: list[tuple[str, str, object]] = [(e, f"${PLUGINS_ENV}", e) for e in _from_environment()]
    todo += [(f"{ep.name} = {ep.value}", "an installed package", ep) for ep in _entry_points()]
    for label, source, target in todo:
        key = (
            str(Path(target).resolve())
            if isinstance(target, str) and _is_path(target)
            else (target if isinstance(target, str) else f"entry point {label}")
        )
        if key in _loaded:
            continue
        try:
            if isinstance(target, str):
                if _is_path(target):
                    _import_file(Path(target).expanduser())
                else:
                    importlib.import_module(target)
            else:
                target.load()  # type: ignore[attr-defined]
        except ConfigError:
            raise
        except ModuleNotFoundError as exc:
            if exc.name and isinstance(target, str) and target.split(".")[0] == exc.name:
                raise ConfigError(
                    f"The plugin {label!r} from {source} is not an importable module; give a "
                    ".py file's path, or put its folder on PYTHONPATH."
                ) from None
            raise ConfigError(
                f"The plugin {label!r} from {source} could not be loaded: {exc}{_where(exc)}."
            ) from None
        except Exception as exc:
            raise ConfigError(
                f"The plugin {label!r} from {source} could not be loaded: "
                f"{type(exc).__name__}: {exc}{_where(exc)}; fix it, or leave it out."
            ) from None
        _loaded[key] = label
    return list(_loaded.values())


__all__ = ["ENTRY_POINT_GROUP", "PLUGINS_ENV", "configured", "load_plugins"]
