"""The Method contract and the method registry.

A method is configured by a frozen, validated hyperparameter dataclass. ``setup`` prepares
(a coreset baseline selects here and needs no steps), ``step`` does one iteration and
returns metrics, ``state_dict`` / ``load_state_dict`` make it resumable. The loop that
calls ``step`` lives once, in :mod:`datadistill.run`.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from datadistill._device import compile_choice
from datadistill.data import RealData
from datadistill.errors import ConfigError, user_stacklevel
from datadistill.registry import Registry
from datadistill.synthetic import SyntheticSet

METHODS: Registry[type[Method]] = Registry("method")


@dataclasses.dataclass(frozen=True)
class HParams:
    """Base of every method's hyperparameters; subclasses add fields and validate them."""

    # field -> (switch, value): the field has an effect only while the switch has that
    # value; set to anything but its default otherwise, it is unused and a warning says so
    applies_only_with: ClassVar[dict[str, tuple[str, Any]]] = {}
    # the method's name in messages; default: the class name without "Params"
    display_name: ClassVar[str] = ""

    def validate(self) -> None:
        """Raise :class:`ConfigError` on an invalid value; called after construction."""

    @property
    def owner(self) -> str:
        """The method's name in messages: ``display_name``, else the class name without
        "Params"."""
        return self.display_name or type(self).__name__.removesuffix("Params")

    def __post_init__(self) -> None:
        # A switch must be a real bool: a string such as "no" is truthy and would turn it on.
        owner = self.owner
        for f in dataclasses.fields(self):  # a numpy scalar (np.float32(0.1)) as its number
            value = getattr(self, f.name)
            if (
                type(value).__module__ == "numpy"
                and hasattr(value, "item")
                and not getattr(value, "shape", ())
            ):
                object.__setattr__(self, f.name, value.item())
        if hasattr(self, "compile"):
            object.__setattr__(self, "compile", compile_choice(self.compile))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, bool):
                require(owner, f.name, value, isinstance(value, bool), "true or false")
            elif f.type in _SIMPLE_TYPES:  # `batch_real=abc` is one sentence, not a traceback
                ok, expected = _SIMPLE_TYPES[f.type]
                require(owner, f.name, value, ok(value), expected)
        self.validate()
        if hasattr(self, "dsa_strategy"):
            _check_dsa_strategy(owner, self.dsa_strategy, bool(getattr(self, "dsa", True)))
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, (switch, needed) in self.applies_only_with.items():
            value, actual = getattr(self, name), getattr(self, switch)
            off = isinstance(value, str) and value.strip().lower() in ("", "none")
            if value != defaults[name] and actual != needed and not off:
                warnings.warn(
                    f"{owner}'s {name}={value!r} has no effect with {switch}={actual!r} (it "
                    f"applies with {switch}={needed!r}); it is recorded but unused.",
                    stacklevel=user_stacklevel(),
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# annotations (strings, under `from __future__ import annotations`) whose values are checked
# for every method's hyperparameters, before the method's own validate()
_SIMPLE_TYPES: dict[Any, tuple[Callable[[Any], bool], str]] = {
    "int": (_is_int, "an int"),
    int: (_is_int, "an int"),
    "float": (_is_number, "a number"),
    float: (_is_number, "a number"),
    "str": (lambda v: isinstance(v, str), "a str"),
    str: (lambda v: isinstance(v, str), "a str"),
}


def require(owner: str, name: str, value: Any, ok: bool, expected: str) -> None:
    """The one error format for invalid hyperparameters (scikit-learn style)."""
    if not ok:
        raise ConfigError(
            f"The {name!r} parameter of {owner} must be {expected}. Got {value!r} instead."
        )


def positive(owner: str, name: str, value: Any, kind: type = float) -> None:
    is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        require(
            owner,
            name,
            value,
            isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            "an int >= 1",
        )
    else:
        require(owner, name, value, is_num and value > 0, "a number > 0")


def _check_dsa_strategy(owner: str, strategy: Any, dsa: bool) -> None:
    """``dsa_strategy`` names DSA families DSA knows, and at least one while DSA is on."""
    from datadistill.augment.config import parse_strategy

    require(owner, "dsa_strategy", strategy, isinstance(strategy, str), "a str")
    try:
        families = parse_strategy(strategy)
    except ConfigError as exc:
        raise type(exc)(f"The 'dsa_strategy' parameter of {owner}: {exc}") from None
    if dsa and not families:  # a warning, so that such a run made before still resumes
        warnings.warn(
            f"The 'dsa_strategy' parameter of {owner} names no augmentation while dsa is on, "
            "so nothing is augmented; name families (e.g. 'color_crop_cutout_flip_scale_rotate') "
            "or pass dsa=false.",
            stacklevel=user_stacklevel(),
        )


def one_of(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    require(owner, name, value, value in choices, "one of " + ", ".join(repr(c) for c in choices))


def registered_model(params: HParams, owner: str, name: str = "arch") -> None:
    """``params.<name>`` names a registered model (checked before any run folder is made);
    it is stored in its registered spelling, so ``ConvNet-BN`` and ``convnet_bn`` are one
    run for a checkpoint."""
    from datadistill.errors import UnknownNameError
    from datadistill.models import MODELS, check_width_applies

    value = getattr(params, name)
    require(owner, name, value, isinstance(value, str), "a model name")
    try:
        canonical = MODELS.canonical(value)
    except UnknownNameError as exc:
        raise ConfigError(f"The {name!r} parameter of {owner}: {exc}") from None
    object.__setattr__(params, name, canonical)  # frozen: set once, during validation
    default = type(params).__dataclass_fields__.get("width")
    if name == "arch" and default is not None:
        width = params.width  # type: ignore[attr-defined]  # declared by this subclass
        check_width_applies(canonical, width, default.default, owner)


class Method:
    """Base class of distillation methods (and coreset baselines)."""

    name: ClassVar[str] = ""
    hparams_class: ClassVar[type[HParams]] = HParams  # the frozen hyperparameter dataclass
    needs_steps: ClassVar[bool] = True  # False for coreset selection
    default_iterations: ClassVar[int] = 1000
    expected_protocol: ClassVar[str] = "dc"  # the evaluation protocol its sets are made for
    # hyperparameters a resumed run may change (learning rates, e.g. after a divergence);
    # load_state_dict applies the current values over the checkpoint's optimiser state
    resume_may_change: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, hparams: HParams) -> None:
        self.hparams = hparams
        self.iteration = 0
        self.synset: SyntheticSet | None = None

    # ------------------------------------------------------------------ contract
    def check(self, real: RealData) -> None:
        """Raise :class:`ConfigError` if the method cannot run on ``real`` (for example a
        missing or mismatched expert buffer); cheap, called before a run writes anything."""

    def changeable_on_resume(self) -> frozenset[str]:
        """The hyperparameters a resumed run may change with these settings: those of
        ``resume_may_change`` that take effect (e.g. no label lr without soft labels)."""
        return self.resume_may_change

    def setup(
        self, real: RealData, ipc: int, generator: torch.Generator, device: torch.device
    ) -> None:
        raise NotImplementedError

    def step(self) -> dict[str, float]:
        raise NotImplementedError(f"{self.name} has no iterations")

    def synthetic(self) -> SyntheticSet:
        if self.synset is None:
            raise RuntimeError("call setup() before synthetic()")
        return self.synset

    def manifest_extra(self) -> dict[str, Any]:
        """What the artefact's manifest records beyond the hyperparameters (after setup)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit; subclasses extend it."""
        return {"iteration": self.iteration, "synset": self.synthetic().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.synthetic().load_state_dict(state["synset"])


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group of ``optimizer`` the learning rate ``lr`` (after
    ``load_state_dict``, which restores the checkpoint's)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def hparams_class_problem(hp_cls: Any) -> str:
    """What is wrong with a method's ``hparams_class`` ("" when nothing): it must be a
    frozen dataclass subclassing :class:`HParams` whose annotated names are its fields (a
    subclass that forgot ``@dataclass`` would silently take none of them)."""
    if not (isinstance(hp_cls, type) and issubclass(hp_cls, HParams)):
        return (
            f"hparams_class={hp_cls!r} must be a frozen dataclass subclassing "
            "datadistill.methods.HParams"
        )
    fields = {f.name for f in dataclasses.fields(hp_cls)}
    for klass in hp_cls.__mro__:
        if klass is HParams:
            break
        for attr, annotation in vars(klass).get("__annotations__", {}).items():
            if attr not in fields and "ClassVar" not in str(annotation):
                return (
                    f"{klass.__name__} declares {attr!r} but is not a dataclass; decorate it "
                    "with @dataclasses.dataclass(frozen=True)"
                )
    return ""


def create_method(name: str, **hparams: Any) -> Method:
    """Create a registered method; unknown or invalid hyperparameters raise ConfigError."""
    cls = METHODS.get(name)
    hp_cls = cls.hparams_class
    problem = hparams_class_problem(hp_cls)
    if problem:
        raise ConfigError(f"Method {cls.name!r}'s {problem}.")
    fields = {f.name for f in dataclasses.fields(hp_cls)}
    unknown = sorted(set(hparams) - fields)
    if unknown:
        from datadistill.registry import did_you_mean

        valid = ", ".join(sorted(fields)) or "none"
        hint = did_you_mean(unknown[0], sorted(fields))
        raise ConfigError(
            f"Unknown hyperparameter(s) {', '.join(repr(u) for u in unknown)} for method "
            f"{cls.name!r}; valid: {valid}.{hint}"
        )
    try:
        hp = cls.hparams_class(**hparams)
    except TypeError as exc:  # wrong types that dataclasses itself rejects
        raise ConfigError(f"Invalid hyperparameters for {cls.name!r}: {exc}.") from None
    return cls(hp)


def _check_resume_may_change(cls: type[Method]) -> None:
    """``resume_may_change`` is a frozenset of the method's hyperparameter names (a resume
    compares it with the changed settings, and the NaN stop's advice names them)."""
    names = cls.resume_may_change
    if not (isinstance(names, frozenset) and all(isinstance(n, str) for n in names)):
        raise ConfigError(
            f"{cls.__name__}.resume_may_change must be a frozenset of hyperparameter names, "
            f"e.g. frozenset({{'lr_img'}}); got {names!r}."
        )
    if hparams_class_problem(cls.hparams_class):
        return  # create_method says what is wrong with it
    unknown = sorted(names - {f.name for f in dataclasses.fields(cls.hparams_class)})
    if unknown:
        raise ConfigError(
            f"{cls.__name__}.resume_may_change names {', '.join(map(repr, unknown))}, which "
            f"{cls.hparams_class.__name__} does not declare."
        )


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Register a Method subclass under ``name`` (sets ``cls.name``)."""

    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        _check_resume_may_change(cls)
        lines = (cls.__doc__ or "").strip().splitlines()  # a class without a docstring too
        return METHODS.register(name, summary=lines[0] if lines else "")(cls)

    return deco
