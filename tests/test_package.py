"""The package's top level: public names imported on first use, and a command line whose
help does not wait for torch."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import datadistill as dd

_NO_TORCH = "assert 'torch' not in sys.modules, 'torch was imported'"
ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def _main_without_torch(argv: list[str], code: int) -> subprocess.CompletedProcess[str]:
    """``datadistill ARGV`` in a fresh interpreter; the process fails unless main() exits
    with ``code`` and torch was never imported."""
    return _python(
        "import sys\n"
        "from datadistill.cli import main\n"
        f"sys.argv = ['datadistill', *{argv!r}]\n"
        f"try:\n    main()\nexcept SystemExit as e:\n    assert e.code == {code}, e.code\n"
        "else:\n    raise AssertionError('no exit')\n"
        f"{_NO_TORCH}"
    )


def test_every_public_name_is_its_modules_object():
    for name in dd.__all__:
        value = getattr(dd, name)
        if name == "__version__":
            continue
        module = importlib.import_module(f"datadistill.{dd._EXPORTS[name]}")
        assert value is getattr(module, name), name
    assert set(dd.__all__) <= set(dir(dd))
    assert set(dd._EXPORTS) | {"__version__"} == set(dd.__all__)


def test_importing_a_submodule_leaves_the_function_of_the_same_name():
    """``datadistill.run`` is a module and ``dd.run`` a function: importing the module (as
    the command line does) must not replace the function on the package."""
    importlib.import_module("datadistill.run")
    assert callable(dd.run) and not isinstance(dd.run, type(dd))
    assert dd.run is importlib.import_module("datadistill.run").run
    assert dd.models is importlib.import_module("datadistill.models")  # a subpackage by name


def test_an_unknown_name_is_an_attribute_error():
    try:
        dd.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("no AttributeError")


def test_import_and_help_do_not_import_torch():
    r = _python(f"import sys, datadistill; print(datadistill.__version__); {_NO_TORCH}")
    assert r.returncode == 0, r.stderr
    r = _main_without_torch(["--help"], 0)
    assert r.returncode == 0, r.stderr
    assert "distill" in r.stdout
    # a name from the API still works after a lazy import
    r = _python("import datadistill as dd; print(sorted(dd.METHODS.names()))")
    assert r.returncode == 0, r.stderr
    assert "dm" in r.stdout


def test_version_names_the_package_torch_and_python_without_importing_torch():
    r = _main_without_torch(["--version"], 0)
    assert r.returncode == 0, r.stderr
    from importlib.metadata import version

    line = r.stdout.strip()
    assert line.startswith(f"datadistill {dd.__version__} (torch {version('torch')}, Python 3.")
    assert line.count("\n") == 0


def test_an_unknown_name_on_the_command_line_is_refused_before_torch_loads():
    for argv, expected in (
        (["distill", "--dataset", "digits", "--method", "dmm", "--out", "x"], "'dm'"),
        (["distill", "--dataset", "mnisst", "--out", "x"], "npz:PATH"),
        (["distill", "--dataset", "digits", "--out", "x", "--protocol", "dcc"], "'dc'"),
        (["distill", "--dataset", "digits", "--out", "x", "--eval-arch", "convnet,vgg"], "vgg11"),
        (["experts", "--dataset", "digits", "--out", "x", "--arch", "lenett"], "'lenet'"),
        (["evaluate", "no-such.safetensors", "--protocol", "dcc"], "'dc'"),
        (["list", "method"], "methods"),
        (["distill", "--dataset", "digits", "--out", "x", "--hp", "arch=convnt"], "'convnet'"),
    ):
        r = _main_without_torch(argv, 2)
        assert r.returncode == 0, (argv, r.stderr)
        assert r.stderr.startswith(
            ("error: Unknown ", "error: Cannot list", "error: The 'arch'")
        ), r.stderr
        assert expected in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1, r.stderr


def _pins(name: str) -> dict[str, str]:
    """``package -> version`` of a constraints file at the repository's root (``NAME==V``
    lines; names compared as pip compares them)."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            package, _, version = line.partition("==")
            pins[canonicalize_name(package.strip())] = version.strip()
    return pins


def test_the_constraint_files_pin_every_dependency_and_the_lowest_its_lower_bound():
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    newest, lowest = _pins("constraints.txt"), _pins("constraints-lowest.txt")
    for dep in map(Requirement, deps):
        name = canonicalize_name(dep.name)
        bounds = [s.version for s in dep.specifier if s.operator == ">="]
        assert len(bounds) == 1, f"pyproject.toml gives {dep} no single lower bound (>=)"
        bound = bounds[0]
        assert name in newest, f"constraints.txt does not pin {name}"
        assert Version(newest[name]) in dep.specifier, (name, newest[name])
        if name == "torch":  # these machines have one CPU wheel; its bound is not tested
            assert lowest[name] == newest[name]
            continue
        assert Version(lowest[name]) == Version(bound), (name, lowest[name], bound)
