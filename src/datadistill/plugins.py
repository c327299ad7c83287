"""Your own methods, models, datasets and protocols on the command line.

A plugin is a Python module that registers names (``register_method``, ``MODELS.register``,
...) when it is imported. The command line imports, before it looks a name up:

- each entry of ``DATADISTILL_PLUGINS`` (comma-separated): a module name, or the path of a
  ``.py`` file (``DATADISTILL_PLUGINS=./moments.py``);
- each entry point of the group ``datadistill.plugins`` that installed packages declare
  (``[project.entry-points."datadistill.plugins"] moments = "mypkg.moments"``).

``DATADISTILL_PLUGIN_AUTOLOAD=0`` skips the entry points (a broken installed plugin), as
pytest's ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` does. In Python, import the module yourself:
registering is all a plugin does.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

from datadistill.errors import ConfigError, user_frame

PLUGINS_ENV = "DATADISTILL_PLUGINS"
AUTOLOAD_ENV = "DATADISTILL_PLUGIN_AUTOLOAD"
ENTRY_POINT_GROUP = "datadistill.plugins"

_loaded: dict[str, str] = {}  # what was imported -> how it was named (once per process)
_code: set[Path] = set()  # the plugins' source: files, and the folders of packages


def _from_environment() -> list[str]:
    return [p.strip() for p in os.environ.get(PLUGINS_ENV, "").split(",") if p.strip()]


# the installed entry points, by the import path they were found on and its folders'
# modification times: scanning the installed packages takes 2-60 ms, and every name a
# command checks asks for them
_scanned: dict[tuple[tuple[str, int], ...], list[importlib.metadata.EntryPoint]] = {}


def _mtime(path: str) -> int:
    try:
        return os.stat(path or ".").st_mtime_ns
    except OSError:
        return 0


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    if os.environ.get(AUTOLOAD_ENV, "").strip().lower() in ("0", "no", "false", "off"):
        return []
    key = tuple((p, _mtime(p)) for p in sys.path)  # a package installed since: rescan
    if key not in _scanned:
        _scanned[key] = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    return _scanned[key]


def configured() -> bool:
    """Whether the environment or an installed package names a plugin."""
    return bool(_from_environment() or _entry_points())


def _is_path(entry: str) -> bool:
    return entry.endswith(".py") or "/" in entry or os.sep in entry


def _imported_from(path: Path) -> bool:
    """Whether a module of this process was imported from the file ``path`` (a script
    that imported the plugin itself, or the plugin named again as a module)."""
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and file.endswith(".py") and Path(file).resolve() == path:
            return True
    return False


def _import_file(path: Path) -> None:
    if _imported_from(path):  # registering twice would fail: the names are there already
        return
    # its folder goes on the path (appended: nothing installed is shadowed), so that the
    # plugin imports its siblings, and it is imported under its own name where that name
    # finds this file: a sibling's `import mine` then gets the module already loaded
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.append(folder)
    stem = path.stem
    if stem.isidentifier() and stem not in sys.modules:
        spec = importlib.util.find_spec(stem)
        origin = getattr(spec, "origin", None)
        if origin and Path(origin).resolve() == path:
            importlib.import_module(stem)
            return
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]  # two folders' moments.py
    name = f"datadistill_plugin_{path.stem.replace('-', '_').replace('.', '_')}_{digest}"
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
    """`` at FILE:LINE``, for the plugin's author: where a syntax error is, else the
    innermost frame of the failure in the plugin's code (not in importlib's machinery
    nor in datadistill's, e.g. the registry refusing a name the plugin registers again)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" at {Path(exc.filename).name}:{exc.lineno}"
    frame = user_frame(exc)
    return f" at {Path(frame.filename).name}:{frame.lineno}" if frame is not None else ""


def load_plugins() -> list[str]:
    """Import every configured plugin once; returns how each loaded one was named. A
    plugin that fails to import is one :class:`ConfigError` naming it, the failure and
    where it happened."""
    todo: list[tuple[str, str, object]] = [(e, f"${PLUGINS_ENV}", e) for e in _from_environment()]
    for ep in _entry_points():
        package = getattr(getattr(ep, "dist", None), "name", None)
        source = f"the installed package {package}" if package else "an installed package"
        todo.append((f"{ep.name} = {ep.value}", f"{source} (skip: {AUTOLOAD_ENV}=0)", ep))
    for label, source, target in todo:
        is_file = isinstance(target, str) and _is_path(target)
        path = Path(str(target)).expanduser().resolve() if is_file else None
        key = str(path) if path else (target if isinstance(target, str) else f"entry {label}")
        if key in _loaded:
            continue
        if path is not None and not path.is_file():
            raise ConfigError(
                f"The plugin {label!r} from {source} is not a file; give the path of a .py "
                "file or an importable module name."
            )
        _remember_code(path, target)  # before the import: it may warn
        try:
            if path is not None:
                _import_file(path)
            elif isinstance(target, str):
                importlib.import_module(target)
            else:
                target.load()  # type: ignore[attr-defined]
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if isinstance(target, str) and missing and f"{target}.".startswith(f"{missing}."):
                raise ConfigError(
                    f"The plugin {label!r} from {source} is not an importable module; give a "
                    ".py file's path, or put its folder on PYTHONPATH."
                ) from None
            raise ConfigError(
                f"The plugin {label!r} from {source} could not be loaded: "
                f"{type(exc).__name__}: {exc}{_where(exc)}; fix it, or leave it out."
            ) from None
        except Exception as exc:
            raise ConfigError(
                f"The plugin {label!r} from {source} could not be loaded: "
                f"{type(exc).__name__}: {exc}{_where(exc)}; fix it, or leave it out."
            ) from None
        _loaded[key] = label
    return list(_loaded.values())


def _remember_code(path: Path | None, target: object) -> None:
    """Where the plugin's code lives: its file, or its module's (a package's folder)."""
    if path is None:
        name = target if isinstance(target, str) else getattr(target, "module", "")
        try:  # a dotted name imports its parents, which may fail in any way
            spec = importlib.util.find_spec(str(name))
        except Exception:  # noqa: BLE001  (the plugin's own import says what is wrong)
            spec = None
        origin = getattr(spec, "origin", None)
        path = Path(origin).resolve() if origin and origin.endswith(".py") else None
    if path is not None:
        _code.add(path.parent if path.name == "__init__.py" else path)


def plugin_location(filename: str, lineno: int) -> str:
    """`` (FILE:LINE)`` when ``filename`` is a loaded plugin's code (a warning raised there,
    or pointed there by its stacklevel), else ""."""
    if not _code or not filename or filename.startswith("<"):
        return ""
    path = Path(filename).resolve()
    if any(path == c or c in path.parents for c in _code):
        return f" ({path.name}:{lineno})"
    return ""


__all__ = [
    "AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "PLUGINS_ENV",
    "configured",
    "load_plugins",
    "plugin_location",
]
