"""datadistill: dataset distillation as a maintained, tested library.

The public API, re-exported::

    import datadistill as dd
    real = dd.load_dataset("mnist", root="data/")
    # a budget in seconds (or iterations=N; without either, the paper's count: DM 20000)
    result = dd.distill(real, method="dm", ipc=10, seed=0, time_budget=600, progress=True)
    result.save("mnist_dm10.safetensors")
    report = dd.evaluate(result, real, protocol="dc", archs=["convnet"], seeds=5)
"""

__version__ = "0.1.0"

import importlib as _importlib
import importlib.util as _importlib_util
import sys as _sys
import types as _types
from typing import TYPE_CHECKING

# The public names and the module that defines each. They are imported on first use
# (PEP 562), so that `import datadistill` and `datadistill --help` do not pay for torch's
# import (about 2 s) until something needs it.
_EXPORTS = {
    "Distilled": "artefact",
    "export": "artefact",
    "load": "artefact",
    "DSA": "augment",
    "DSAConfig": "augment",
    "DATASETS": "data",
    "DatasetInfo": "data",
    "RealData": "data",
    "load_dataset": "data",
    "ConfigError": "errors",
    "DatadistillError": "errors",
    "DataError": "errors",
    "RunError": "errors",
    "UnknownNameError": "errors",
    "PROTOCOLS": "evaluation",
    "EvalReport": "evaluation",
    "Protocol": "evaluation",
    "evaluate": "evaluation",
    "relabel": "labels",
    "METHODS": "methods",
    "Method": "methods",
    "create_method": "methods",
    "MODELS": "models",
    "create_model": "models",
    "list_models": "models",
    "Registry": "registry",
    "RunConfig": "run",
    "distill": "run",
    "run": "run",
    "SYNSETS": "synthetic",
    "PixelSet": "synthetic",
    "SyntheticSet": "synthetic",
}

if TYPE_CHECKING:
    from datadistill.artefact import Distilled, export, load
    from datadistill.augment import DSA, DSAConfig
    from datadistill.data import DATASETS, DatasetInfo, RealData, load_dataset
    from datadistill.errors import (
        ConfigError,
        DatadistillError,
        DataError,
        RunError,
        UnknownNameError,
    )
    from datadistill.evaluation import PROTOCOLS, EvalReport, Protocol
    from datadistill.evaluation.evaluate import evaluate  # the function, not its module
    from datadistill.labels import relabel
    from datadistill.methods import METHODS, Method, create_method
    from datadistill.models import MODELS, create_model, list_models
    from datadistill.registry import Registry
    from datadistill.run import RunConfig, distill, run
    from datadistill.synthetic import SYNSETS, PixelSet, SyntheticSet


if not TYPE_CHECKING:  # type checkers see the imports above, and report misspelled names

    def __getattr__(name: str):
        """A public name, imported from its module on first use; a subpackage by its name
        (``datadistill.models``), as an eager ``__init__`` would have left it."""
        if name in _EXPORTS:
            value = getattr(_importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        elif (
            name.isidentifier()
            and not name.startswith("__")
            and _importlib_util.find_spec(f"{__name__}.{name}")
        ):
            value = _importlib.import_module(f"{__name__}.{name}")
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({n for n in globals() if not n.startswith("_")} | set(__all__))


class _Package(_types.ModuleType):
    """Importing a submodule binds its name on the package: for ``datadistill.run`` that
    would hide the function ``run`` behind its module. A public name keeps its value, as
    the eager imports of earlier releases left it."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _EXPORTS and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


__all__ = [
    "DATASETS",
    "DSA",
    "METHODS",
    "MODELS",
    "PROTOCOLS",
    "SYNSETS",
    "ConfigError",
    "DSAConfig",
    "DataError",
    "DatadistillError",
    "DatasetInfo",
    "Distilled",
    "EvalReport",
    "Method",
    "PixelSet",
    "Protocol",
    "RealData",
    "Registry",
    "RunConfig",
    "RunError",
    "SyntheticSet",
    "UnknownNameError",
    "__version__",
    "create_method",
    "create_model",
    "distill",
    "evaluate",
    "export",
    "list_models",
    "load",
    "load_dataset",
    "relabel",
    "run",
]
