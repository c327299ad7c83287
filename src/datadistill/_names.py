"""The builtin names of the registries, so that the command line refuses an unknown method,
dataset, model or protocol in a fraction of a second, before it loads torch (the
registries live with the code they name, which needs torch). ``tests/test_registry.py``
holds these lists equal to the registries.

In a process that has already loaded a registry (a user's script that registered its own
method, then called the command line's ``main``), the checks ask that registry instead, as
they do once user plugins (:mod:`datadistill.plugins`) are configured, after loading them.
"""

from __future__ import annotations

import importlib
import sys

from datadistill.errors import ConfigError, UnknownNameError
from datadistill.plugins import configured, load_plugins
from datadistill.registry import is_name, refuse_name

BUILTIN_NAMES: dict[str, tuple[str, ...]] = {
    "method": ("dc", "dm", "dsa", "herding", "kcenter", "mtt", "random"),
    "dataset": ("cifar10", "cifar100", "digits", "fashion-mnist", "kmnist", "mnist", "svhn"),
    "model": (
        "alexnet",
        "convnet",
        "convnet_bn",
        "convnet_ln",
        "convnet_mp",
        "convnet_nn",
        "convnetd3",
        "convnetd4",
        "convnetd5",
        "convnetw32",
        "convnetw64",
        "lenet",
        "mlp",
        "resnet18",
        "resnet18_bn",
        "vgg11",
        "vgg11_bn",
    ),
    "protocol": ("dc", "dsa", "fast", "mtt"),
}

# the builtin methods whose ``arch`` hyperparameter names a model (``--hp arch=...``), and
# the name their hyperparameters' checks give themselves in errors
ARCH_METHODS: dict[str, str] = {
    "dc": "DC",
    "dm": "DM",
    "dsa": "DC",  # DSA's hyperparameters are DC's
    "herding": "herding",
    "kcenter": "kcenter",
}

# kind -> (module, attribute) of the live registry
REGISTRIES: dict[str, tuple[str, str]] = {
    "method": ("datadistill.methods.base", "METHODS"),
    "dataset": ("datadistill.data.builtin", "DATASETS"),
    "model": ("datadistill.models._factory", "MODELS"),
    "protocol": ("datadistill.evaluation.protocols", "PROTOCOLS"),
}

PLUGIN_HINT = "; a name of your own: list the module that registers it in $DATADISTILL_PLUGINS."
USER_PREFIXES = ("imagefolder", "npz")
USER_DATA_HINT = ", or 'imagefolder:PATH' / 'npz:PATH' for your own data."


def split_user_data(name: str) -> tuple[str, str] | None:
    """``("npz" | "imagefolder", PATH as given)`` for user data (``npz:PATH`` /
    ``imagefolder:PATH``, spaces stripped; PATH may be empty), ``None`` for other names."""
    prefix, sep, rest = name.partition(":")
    if sep and prefix.strip().lower() in USER_PREFIXES:
        return prefix.strip().lower(), rest.strip()
    return None


def check_name(kind: str, name: str, plugin_hint: bool = True) -> None:
    """Raise the registry's :class:`UnknownNameError` when ``name`` is not a ``kind`` (one of
    :data:`BUILTIN_NAMES`' keys); without loading the registry unless it is loaded."""
    module, attr = REGISTRIES[kind]
    loaded = sys.modules.get(module)
    if configured():  # user plugins may register the name: ask the registry after them
        load_plugins()
        loaded = importlib.import_module(module)
    if loaded is not None and hasattr(loaded, attr):
        getattr(loaded, attr).canonical(name)
        return
    valid = list(BUILTIN_NAMES[kind])
    if not isinstance(name, str) or not is_name(name, valid):
        try:
            refuse_name(kind, name, valid)
        except UnknownNameError as e:
            if kind == "dataset" or not plugin_hint:  # check_dataset names user data instead
                raise
            raise UnknownNameError(f"{str(e).rstrip('.')}{PLUGIN_HINT}") from None


def check_dataset(name: str) -> None:
    """:func:`check_name` for a dataset, which may also be user data (``npz:`` /
    ``imagefolder:``; their paths are checked when read)."""
    if isinstance(name, str) and split_user_data(name) is not None:
        return
    try:
        check_name("dataset", name)
    except UnknownNameError as e:
        raise UnknownNameError(f"{str(e).rstrip('.')}{USER_DATA_HINT}") from None


def check_arch_hparam(method: str, hparams: dict[str, object]) -> None:
    """:func:`check_name` for the model that ``--hp arch=NAME`` gives a builtin method that
    takes one, in the sentence of the method's own check (which runs once torch loads)."""
    arch = hparams.get("arch")
    owner = ARCH_METHODS.get(method.strip().lower()) if isinstance(method, str) else None
    if not isinstance(arch, str) or owner is None:
        return
    try:
        check_name("model", arch, plugin_hint=False)  # the method's own sentence
    except UnknownNameError as e:
        raise ConfigError(f"The 'arch' parameter of {owner}: {e}") from None
