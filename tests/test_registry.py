import dataclasses
import importlib
import sys

import pytest

from datadistill.errors import ConfigError, UnknownNameError
from datadistill.registry import Registry


def test_register_get_and_names():
    reg: Registry[int] = Registry("thing")
    reg.register("Alpha-One", summary="first")(1)
    reg.register("beta")(2)
    assert reg.get("alpha_one") == 1  # case-insensitive, - and _ interchangeable
    assert reg.names() == ["Alpha-One", "beta"]
    assert reg.names("b*") == ["beta"]
    assert reg.names("alpha_*") == reg.names("ALPHA-*") == ["Alpha-One"]
    reg.register("resnet18")(3)
    assert reg.names("resnet[0-9]*") == ["resnet18"]  # a range stays a range
    assert reg.names("[a-b]*") == ["Alpha-One", "beta"]
    assert "ALPHA-ONE" in reg and "gamma" not in reg
    assert reg.meta("beta")["name"] == "beta"


def test_unknown_name_lists_valid_names_and_closest():
    reg: Registry[int] = Registry("dataset")
    for n in ("mnist", "fashion-mnist", "cifar10"):
        reg.register(n)(0)
    with pytest.raises(UnknownNameError) as err:
        reg.get("mnsit")
    msg = str(err.value)
    assert "Did you mean 'mnist'?" in msg
    assert "cifar10, fashion-mnist, mnist" in msg
    assert "\n" not in msg


def test_did_you_mean_compares_names_as_the_registry_does():
    from datadistill.registry import did_you_mean

    # case and "-" / "_" do not count, and the hint spells the name as registered
    assert (
        did_you_mean("FASHION_MNSIT", ["mnist", "fashion-mnist"])
        == " Did you mean 'fashion-mnist'?"
    )
    assert did_you_mean("lr-img", ["lr_img", "momentum"]) == " Did you mean 'lr_img'?"
    assert did_you_mean("zzz", ["dm", "dc"]) == ""
    assert did_you_mean("x", []) == ""


def test_double_registration_is_a_bug():
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="thing 'A' is already registered"):
        reg.register("A")(2)


def test_describe_uses_summary_then_docstring_and_fixed_settings():
    class Net:
        """A small network.

        Details that a one-line listing leaves out."""

    reg: Registry[object] = Registry("model")
    reg.register("told", summary="said at registration")(Net)
    reg.register("net")(Net)
    reg.register("net_bn", base="net", fixed={"norm": "batchnorm"})(lambda: Net())
    assert reg.describe("told") == "said at registration"
    assert reg.describe("net") == "A small network."
    assert reg.describe("NET-BN") == "A small network. (norm=batchnorm)"


def test_every_model_and_method_describes_itself():
    from datadistill.methods import METHODS
    from datadistill.models import MODELS

    for reg in (MODELS, METHODS):
        for name in reg.names():
            assert reg.describe(name), f"{reg.kind} {name} has no description"


@pytest.mark.parametrize("name", [None, 3])
def test_a_name_that_is_not_a_string_is_one_clear_error(name):
    reg: Registry[int] = Registry("method")
    reg.register("dm")(0)
    with pytest.raises(UnknownNameError, match=f"A method name must be a string, got {name}"):
        reg.get(name)  # type: ignore[arg-type]


def test_the_command_lines_name_lists_are_the_registries():
    """``datadistill._names`` checks names before torch loads; its lists must be the
    registries' (a new method, model, dataset or protocol is added to both)."""
    from datadistill import _names

    for kind, (module, attr) in _names.REGISTRIES.items():
        registry = getattr(importlib.import_module(module), attr)
        assert list(_names.BUILTIN_NAMES[kind]) == registry.names(), kind
    from datadistill.methods import METHODS

    takes_arch = [
        n
        for n in METHODS.names()
        if "arch" in {f.name for f in dataclasses.fields(METHODS.get(n).hparams_class)}
    ]
    assert list(_names.ARCH_METHODS) == takes_arch
    for method in takes_arch:  # the early sentence is the method's own
        with pytest.raises(ConfigError) as live:
            METHODS.get(method).hparams_class(arch="convnett")
        with pytest.raises(ConfigError) as early:
            _names.check_arch_hparam(method.upper(), {"arch": "convnett"})
        assert str(early.value) == str(live.value), method
    _names.check_arch_hparam("mtt", {"arch": "convnett"})  # MTT's network is its buffer's


def test_the_early_check_matches_the_registry(monkeypatch):
    from datadistill import _names
    from datadistill.methods import METHODS

    with pytest.raises(UnknownNameError) as live:
        METHODS.canonical("dmm")
    _names.check_name("method", "DM")  # case-free, as the registry
    _names.check_name("model", "resnet18-bn")  # - and _ alike
    _names.check_dataset("npz:anything.npz")  # user data: checked when read
    # without the loaded registry: the static list gives the registry's own sentence,
    # and on the command line, where it runs, how a name of the user's own gets there
    monkeypatch.delitem(sys.modules, "datadistill.methods.base")
    with pytest.raises(UnknownNameError) as early:
        _names.check_name("method", "dmm")
    assert str(early.value) == str(live.value).rstrip(".") + _names.PLUGIN_HINT
    assert _names.PLUGIN_HINT.endswith("list the module that registers it in $DATADISTILL_PLUGINS.")
    with pytest.raises(UnknownNameError) as early:
        _names.check_name("method", "dmm", plugin_hint=False)
    assert str(early.value) == str(live.value)
    with pytest.raises(UnknownNameError, match="must be a string"):
        _names.check_name("method", None)  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError, match="Did you mean 'mnist'.*npz:PATH"):
        _names.check_dataset("mnsit")


def test_the_early_check_sees_a_method_registered_in_the_process():
    """A script that registers its own method, then calls the command line in-process: the
    loaded registry answers, not the builtin list."""
    from datadistill import _names
    from datadistill.methods import METHODS

    METHODS.register("my-test-method")(object)  # type: ignore[arg-type]
    try:
        _names.check_name("method", "my_test_method")
    finally:
        METHODS._items.pop("my_test_method")
        METHODS._meta.pop("my_test_method")
