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

from datadistill.artefact import Distilled, export, load
from datadistill.augment import DSA, DSAConfig
from datadistill.data import DATASETS, DatasetInfo, RealData, load_dataset
from datadistill.errors import ConfigError, DatadistillError, DataError, RunError, UnknownNameError
from datadistill.evaluation import PROTOCOLS, EvalReport, Protocol, evaluate
from datadistill.labels import relabel
from datadistill.methods import METHODS, Method, create_method
from datadistill.models import MODELS, create_model, list_models
from datadistill.registry import Registry
from datadistill.run import RunConfig, distill, run
from datadistill.synthetic import SYNSETS, PixelSet, SyntheticSet

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
