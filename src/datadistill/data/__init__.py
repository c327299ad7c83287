"""Real datasets: loading (builtin formats, downloads, user data), splits, normalisation,
ZCA whitening, and :class:`RealData` with its per-class sampling."""

from datadistill.data.builtin import DATASETS, DatasetLoader
from datadistill.data.info import DatasetInfo
from datadistill.data.load import load_dataset
from datadistill.data.raw import RawData
from datadistill.data.real import RealData
from datadistill.data.zca import ZCA

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetLoader",
    "RawData",
    "RealData",
    "ZCA",
    "load_dataset",
]
