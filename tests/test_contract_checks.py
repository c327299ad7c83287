"""datadistill.testing: the contract checks pass for every builtin method and model, and
each catches the mistake it is for in a method or model of a user's own."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import datadistill as dd
from datadistill.methods import METHODS, HParams, Method, register_method
from datadistill.methods.common import init_synset
from datadistill.models import MODELS, ImageClassifier
from datadistill.testing import ContractError, check_method, check_model
from tests.conftest import smoke_hparams


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_every_builtin_method_passes(method, request, digits):
    report = check_method(method, digits, **smoke_hparams(method, request))
    statuses = {c.name: c.status for c in report.checks}
    assert report.passed and "FAIL" not in statuses.values(), str(report)
    steps = METHODS.get(method).needs_steps
    assert statuses["resume"] == ("ok" if steps else "skip")
    assert statuses["seed"] == "ok" and statuses["reproducible"] == "ok"


@pytest.mark.parametrize(
    "model", ["convnet", "convnet_bn", "lenet", "mlp", "alexnet", "vgg11_bn", "resnet18"]
)
def test_builtin_models_pass(model):
    sizes = (28,) if model.startswith(("vgg", "resnet")) else (28, 32)  # the slow ones once
    report = check_model(model, image_sizes=sizes)
    assert report.passed and all(c.status == "ok" for c in report.checks), str(report)
    assert len([c for c in report.checks if c.name.startswith("torch.func")]) == 2 * len(sizes)


# ------------------------------------------------------------------ a user's methods


@pytest.fixture
def register(monkeypatch):
    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))
    monkeypatch.setattr(METHODS, "_meta", dict(METHODS._meta))
    return register_method


@dataclasses.dataclass(frozen=True)
class NudgeParams(HParams):
    lr_img: float = 0.1


class Nudge(Method):
    """Pull each synthetic image towards a random real image of its class."""

    hparams_class = NudgeParams

    def setup(self, real, ipc, generator, device):
        self.real, self.generator = real, generator
        self.synset = init_synset(real, ipc, "real", generator, device)
        self.opt = torch.optim.SGD(self.synset.parameters(), lr=self.hparams.lr_img, momentum=0.9)

    def target(self):
        return torch.stack([self.real.sample(c, 1, self.generator)[0] for c in range(10)])

    def step(self):
        syn = self.synthetic().class_images()[:, 0]
        loss = (syn - self.target()).square().mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.iteration += 1
        return {"loss": loss.item()}

    def state_dict(self):
        return {**super().state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.opt.load_state_dict(state["opt"])


def failed(report):
    return {c.name: c.detail for c in report.checks if c.status == "FAIL"}


def test_a_correct_users_method_passes_and_the_readme_one_too(register, user_method):
    register("nudge")(Nudge)
    assert check_method("nudge").passed
    with pytest.raises(dd.ConfigError, match="Unknown hyperparameter.*Did you mean 'lr_img'"):
        check_method("nudge", lr_imgg=0.1)  # the user's mistake, not the method's
    report = check_method("moments", lr_img=0.5, width=16, batch_real=16)
    assert report.passed, str(report)


@pytest.fixture
def user_method(monkeypatch, readme_method_example):
    namespace = {"__name__": "readme_example"}
    exec(compile(readme_method_example.split("\nreal = dd")[0], "README.md", "exec"), namespace)
    return namespace


def test_a_state_dict_without_the_optimiser_fails_the_resume_check(register):
    @register("forgetful")
    class Forgetful(Nudge):
        def state_dict(self):
            return Method.state_dict(self)

        def load_state_dict(self, state):
            Method.load_state_dict(self, state)

    report = check_method("forgetful", raise_on_failure=False)
    assert list(failed(report)) == ["resume"]
    assert "optimiser's state" in failed(report)["resume"]
    # a method that declares a changeable lr gets the row for it, skipped
    Forgetful.resume_may_change = frozenset({"lr_img"})
    statuses = {c.name: c.status for c in check_method("forgetful", raise_on_failure=False).checks}
    assert statuses["resume"] == "FAIL" and statuses["resume with a new lr"] == "skip"
    with pytest.raises(ContractError, match=r"'forgetful' failed 1 check\(s\). resume: a run"):
        check_method("forgetful")
    with pytest.raises(AssertionError):  # a failed check is a failed test under pytest
        check_method("forgetful")


def test_a_draw_from_the_global_generator_is_named(register):
    @register("noisy")
    class Noisy(Nudge):
        resume_may_change = frozenset({"lr_img"})

        def target(self):
            return super().target() + 0.1 * torch.randn(10, 1, 8, 8)

    report = check_method("noisy", raise_on_failure=False)
    assert set(failed(report)) == {"global generator", "reproducible"}
    assert "generator setup() is given" in failed(report)["global generator"]
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["resume"] == statuses["resume with a new lr"] == "skip"


def test_real_data_changed_in_place_is_caught(register):
    @register("scribbler")
    class Scribbler(Nudge):
        def target(self):
            self.real.train_x.mul_(1.0001)  # e.g. an augmentation applied in place
            return super().target()

    report = check_method("scribbler", dd.load_dataset("digits"), raise_on_failure=False)
    assert "real data" in failed(report) and "clone" in failed(report)["real data"]


def test_real_data_changed_on_a_gpu_copy_is_caught(register, monkeypatch):
    """On a GPU every run gets a device copy of the caller's data (``RealData.to`` copies
    across devices and keeps the tensors on their own): the check watches that copy."""
    from datadistill.data.real import RealData

    to = RealData.to

    def copying_to(self, device):  # a CUDA .to: a copy, unless already on the device
        moved = to(self, device)
        for key in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
            t = getattr(moved, key)
            if not getattr(t, "on_device", False):
                t = t.clone()
                t.on_device = True
                setattr(moved, key, t)
        return moved

    monkeypatch.setattr(RealData, "to", copying_to)

    @register("scribbler")
    class Scribbler(Nudge):
        def target(self):
            self.real.train_x.mul_(1.0001)
            return super().target()

    report = check_method("scribbler", dd.load_dataset("digits"), raise_on_failure=False)
    assert "real data" in failed(report) and "reproducible" in failed(report)


def test_the_cuda_generator_is_watched_too(monkeypatch):
    """On CUDA, randn(..., device="cuda") and dropout draw from the device's generator,
    which torch.get_rng_state does not cover (a CPU generator stands in for it here)."""
    from datadistill._device import global_rng_states, same_rng_states

    stand_in = torch.Generator().manual_seed(0)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device=None: stand_in.get_state())
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    before, before_cpu = global_rng_states(cuda), global_rng_states(cpu)
    assert len(before) == 2 and same_rng_states(global_rng_states(cuda), before)
    torch.randn(3, generator=stand_in)
    assert not same_rng_states(global_rng_states(cuda), before)
    assert same_rng_states(global_rng_states(cpu), before_cpu)
    torch.randn(3)
    assert not same_rng_states(global_rng_states(cpu), before_cpu)


def test_torch_compile_notices_are_no_finding():
    """Inductor warns once per process on a recent GPU that TF32 is off: that is about the
    machine, not about a method that compiles its steps."""
    import warnings

    from datadistill.testing import _from_compiler

    def message(filename):
        return warnings.WarningMessage("TensorFloat32 ...", UserWarning, filename, 1)

    assert _from_compiler(message("/venv/lib/torch/_inductor/compile_fx.py"))
    assert _from_compiler(message("/venv/lib/torch/_dynamo/utils.py"))
    assert not _from_compiler(message("/venv/lib/torch/nn/functional.py"))
    assert not _from_compiler(message("/home/me/my_method.py"))


def test_a_step_that_breaks_the_loop_names_no_line_of_the_loop(register):
    """The loop's own sentence names the method; the loop's line would only mislead."""

    @register("stuck")
    class Stuck(Nudge):
        def step(self):
            return {"loss": 1.0}  # no self.iteration += 1

    report = check_method("stuck", raise_on_failure=False)
    assert "left its iteration at 0" in failed(report)["runs"]
    assert ".py:" not in failed(report)["runs"]


def test_a_step_without_a_loss_and_an_unloadable_state_fail(register):
    @register("quiet")
    class Quiet(Nudge):
        def step(self):
            super().step()
            return {}

    assert list(failed(check_method("quiet", raise_on_failure=False))) == ["metrics"]

    class Schedule:  # not something torch.load(weights_only=True) reads back
        pass

    @register("pickly")
    class Pickly(Nudge):
        def state_dict(self):
            return {**super().state_dict(), "schedule": Schedule()}

    detail = failed(check_method("pickly", raise_on_failure=False))["resume"]
    assert "weights_only=True" in detail


def test_hyperparameters_must_be_a_dataclass_with_defaults(register):
    @dataclasses.dataclass(frozen=True)
    class NoDefault(HParams):
        lr_img: float

    @register("nodefault")
    class NoDefaultMethod(Nudge):
        hparams_class = NoDefault

    report = check_method("nodefault", raise_on_failure=False)
    assert "lr_img has none" in failed(report)["hyperparameters"] and len(report.checks) == 1

    @dataclasses.dataclass(frozen=True)
    class NotHParams:
        lr_img: float = 0.1

    @register("nothparams")
    class NotHParamsMethod(Nudge):
        hparams_class = NotHParams

    report = check_method("nothparams", raise_on_failure=False)
    assert "subclassing datadistill.methods.HParams" in failed(report)["hyperparameters"]
    with pytest.raises(dd.UnknownNameError, match="Did you mean 'nodefault'"):
        check_method("nodefaul")


def test_a_method_with_a_generator_of_its_own(register):
    @register("fixed")
    class Fixed(Nudge):
        def setup(self, real, ipc, generator, device):
            super().setup(real, ipc, torch.Generator().manual_seed(0), device)

    report = check_method("fixed", raise_on_failure=False)
    # every seed gives the same set, and a resume does not continue its generator
    assert {c.name: c.status for c in report.checks}["seed"] == "warn"
    assert list(failed(report)) == ["resume"]


# ------------------------------------------------------------------ a user's models


@pytest.fixture
def register_model(monkeypatch):
    monkeypatch.setattr(MODELS, "_items", dict(MODELS._items))
    monkeypatch.setattr(MODELS, "_meta", dict(MODELS._meta))
    return lambda name: MODELS.register(name)


class Tiny(ImageClassifier):
    def __init__(self, *, channels, num_classes, image_size):
        super().__init__(
            channels=channels, num_classes=num_classes, image_size=image_size, owner="tiny"
        )
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.feature_dim = 4
        self.classifier = nn.Linear(4, num_classes)

    def embed(self, x):
        return self.conv(x).relu().mean((2, 3))


def test_a_correct_users_model_passes(register_model):
    register_model("tiny")(Tiny)
    report = check_model("tiny")
    assert len(report.checks) == 4 * 5 and report.passed


def test_a_model_as_readme_writes_it_needs_no_owner(register_model):
    """README's sentence (subclass ImageClassifier, take the three keywords) is enough:
    the messages that refuse a size name the class when no ``owner`` is given."""

    class Plain(Tiny):
        def __init__(self, *, channels, num_classes, image_size):
            ImageClassifier.__init__(
                self, channels=channels, num_classes=num_classes, image_size=image_size
            )
            self.conv = nn.Conv2d(channels, 4, 3, padding=1)
            self.feature_dim = 4
            self.classifier = nn.Linear(4, num_classes)

    register_model("plain")(Plain)
    assert check_model("plain", image_sizes=(8,)).passed
    with pytest.raises(dd.ConfigError, match="Plain"):
        Plain(channels=0, num_classes=10, image_size=8)


@pytest.mark.parametrize(
    "change,check,words",
    [
        ("prelu", "builds", "does not know how to initialise PReLU"),
        ("plain_tensor", "builds", "keeps the tensor 'scale' made in __init__"),
        ("buffer", "builds", "make its constants in forward()"),
        ("detach", "gradients", "no gradient reaches the input"),
        ("wrong_dim", "forward", "not (batch, feature_dim)"),
        ("inplace_item", "torch.func", "vmap"),
    ],
)
def test_each_model_mistake_is_named(register_model, change, check, words):
    class Broken(Tiny):
        def __init__(self, **kw):
            super().__init__(**kw)
            if change == "prelu":
                self.act = nn.PReLU()
            if change == "plain_tensor":
                self.scale = torch.ones(1)  # made on the meta device: not a buffer
            if change == "buffer":
                self.register_buffer("scale", torch.ones(1))  # no layer reset_parameters knows
            if change == "wrong_dim":
                self.feature_dim = 5

        def embed(self, x):
            f = super().embed(x)
            if change in ("plain_tensor", "buffer"):
                f = f * self.scale
            if change == "detach":
                f = f.detach() + self.classifier.bias.sum() * 0
            if change == "inplace_item":
                f = f / max(1.0, float(f.abs().max().item()))
            return f

    register_model("broken")(Broken)
    report = check_model("broken", channels=(1,), image_sizes=(28,), raise_on_failure=False)
    fails = failed(report)
    assert list(fails) == [f"{check} [1x28x28]"], str(report)
    assert words in fails[f"{check} [1x28x28]"]


def test_a_model_with_dropout_is_warned_about_and_a_non_classifier_fails(register_model):
    class WithDropout(Tiny):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.drop = nn.Dropout(0.5)

        def embed(self, x):
            return self.drop(super().embed(x))

    register_model("dropout")(WithDropout)
    report = check_model("dropout", channels=(3,), image_sizes=(32,), raise_on_failure=False)
    assert [c.name for c in report.checks if c.status == "warn"] == ["global generator [3x32x32]"]
    # DC / DSA take its per-class gradients in training mode, where vmap refuses dropout
    assert "dropout in training mode" in failed(report)["torch.func [3x32x32]"]
    state = torch.get_rng_state()
    check_model("dropout", channels=(1,), image_sizes=((12, 8),), raise_on_failure=False)
    assert torch.equal(torch.get_rng_state(), state)  # the check leaves the global state

    @register_model("plain")
    def plain(channels, num_classes, image_size):
        return nn.Sequential(nn.Flatten(), nn.Linear(channels * image_size[0] * image_size[1], 10))

    with pytest.raises(ContractError, match="no datadistill.models.ImageClassifier"):
        check_model("plain", channels=(1,), image_sizes=(28,))


def test_the_test_split_and_the_soft_labels_are_checked_too(register):
    @register("peeker")
    class Peeker(Nudge):
        def target(self):
            self.real.test_x.mul_(1.0001)  # evaluation reads the test split
            return super().target()

    assert "real data" in failed(check_method("peeker", raise_on_failure=False))

    @register("nan_labels")
    class NanLabels(Nudge):
        def setup(self, real, ipc, generator, device):
            super().setup(real, ipc, generator, device)
            self.synset.soft_labels = torch.nn.Parameter(torch.full((10 * ipc, 10), float("nan")))

    report = check_method("nan_labels", raise_on_failure=False)
    # one finding, not a run that "is not reproducible" because NaN != NaN
    assert list(failed(report)) == ["synthetic set"], str(report)
    assert "non-finite soft labels" in failed(report)["synthetic set"]


def test_mistakes_in_the_call_raise_as_distill_does(register, register_model):
    register("nudge")(Nudge)
    state = torch.get_rng_state()
    with pytest.raises(dd.ConfigError, match="IPC must be an integer"):
        check_method("nudge", ipc=0)
    with pytest.raises(dd.ConfigError, match="iterations"):
        check_method("nudge", iterations=-1)
    with pytest.raises(dd.ConfigError, match="device"):
        check_method("nudge", device="bogus")
    with pytest.raises(dd.ConfigError, match="expert buffer"):
        check_method("mtt")
    register_model("tiny")(Tiny)
    with pytest.raises(dd.ConfigError, match="unknown option"):
        check_model("tiny", widht=3)

    @register("drawer")
    class Drawer(Nudge):
        def target(self):
            return super().target() + 0 * torch.rand(1)

    check_method("drawer", raise_on_failure=False)
    assert torch.equal(torch.get_rng_state(), state)  # restored after the check


def test_resume_may_change_must_be_applied(register):
    @register("stubborn")
    class Stubborn(Nudge):
        resume_may_change = frozenset({"lr_img"})  # but load_state_dict keeps the old lr

    report = check_method("stubborn", raise_on_failure=False)
    assert list(failed(report)) == ["resume with a new lr"]
    assert "set_lr" in failed(report)["resume with a new lr"]

    @register("applies")
    class Applies(Stubborn):
        def load_state_dict(self, state):
            super().load_state_dict(state)
            from datadistill.methods.base import set_lr

            set_lr(self.opt, self.hparams.lr_img)

    checks = {c.name: c.status for c in check_method("applies").checks}
    assert checks["resume with a new lr"] == "ok"


def test_distill_refuses_what_the_checks_would_find_before_any_step(register, digits, tmp_path):
    @dataclasses.dataclass(frozen=True)
    class TensorParams(HParams):
        scales: object = None

    @register("tensorhp")
    class TensorHP(Nudge):
        hparams_class = TensorParams

    with pytest.raises(dd.ConfigError, match="'scales' parameter of Tensor is of type Tensor"):
        dd.distill(digits, "tensorhp", ipc=1, iterations=1, scales=torch.ones(2), device="cpu")

    @register("nosynset")
    class NoSynset(Nudge):
        def setup(self, real, ipc, generator, device):
            super().setup(real, ipc, generator, device)
            self.syn, self.synset = self.synset, None

    with pytest.raises(dd.RunError, match="setup\\(\\) left self.synset as NoneType"):
        dd.distill(digits, "nosynset", ipc=1, iterations=1, device="cpu")

    @register("plainhp")
    class PlainHP(Nudge):
        hparams_class = dict

    with pytest.raises(dd.ConfigError, match="must be a frozen dataclass subclassing"):
        dd.distill(digits, "plainhp", ipc=1, iterations=1, device="cpu")


def test_a_model_factory_with_other_keywords_is_refused(register_model):
    @register_model("keywords")
    class Keywords(Tiny):
        def __init__(self, *, in_channels, num_classes, image_size):
            super().__init__(channels=in_channels, num_classes=num_classes, image_size=image_size)

    with pytest.raises(dd.ConfigError, match="must take the keywords.*it lacks channels"):
        dd.create_model("keywords", channels=1, num_classes=10, image_size=28)
    report = check_model("keywords", raise_on_failure=False)
    assert list(failed(report)) == ["builds"] and "it lacks channels" in failed(report)["builds"]


def test_hyperparameter_classes_and_defaults_the_method_gets_wrong(register, digits):
    class Undecorated(NudgeParams):  # forgot @dataclass: its field would be ignored
        momentum: float = 0.9

    @register("undecorated")
    class UndecoratedMethod(Nudge):
        hparams_class = Undecorated

    report = check_method("undecorated", raise_on_failure=False)
    assert "declares 'momentum' but is not a dataclass" in failed(report)["hyperparameters"]
    with pytest.raises(dd.ConfigError, match="declares 'momentum' but is not a dataclass"):
        dd.create_method("undecorated")

    @dataclasses.dataclass(frozen=True)
    class BadDefaults(HParams):
        root: object = dataclasses.field(default_factory=lambda: __import__("pathlib").Path("x"))

    @register("baddefaults")
    class BadDefaultsMethod(Nudge):
        hparams_class = BadDefaults

    detail = failed(check_method("baddefaults", raise_on_failure=False))["hyperparameters"]
    assert "its defaults are refused" in detail and "of type PosixPath" in detail

    @dataclasses.dataclass(frozen=True)
    class Refused(NudgeParams):
        def validate(self):
            raise dd.ConfigError("lr_img must be set")

    @register("refused")
    class RefusedMethod(Nudge):
        hparams_class = Refused

    detail = failed(check_method("refused", raise_on_failure=False))["hyperparameters"]
    assert detail == "its defaults are refused: lr_img must be set"

    register("nudge")(Nudge)  # numpy scalars are taken as their numbers
    result = dd.distill(digits, "nudge", ipc=1, iterations=1, lr_img=np.float32(0.5), device="cpu")
    assert result.manifest["hparams"]["lr_img"] == 0.5


def test_an_empty_placeholder_tensor_in_a_model_is_kept(register_model):
    @register_model("placeholder")
    class Placeholder(Tiny):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.cache = torch.empty(0)  # replaced in forward

        def embed(self, x):
            self.cache = torch.ones(1, device=x.device)
            return super().embed(x) * self.cache

    assert check_model("placeholder", channels=(1,), image_sizes=(28,)).passed


def test_a_method_that_fails_only_on_a_later_run_is_a_failed_check(register):
    @register("flaky")
    class Flaky(Nudge):
        runs = 0

        def setup(self, real, ipc, generator, device):
            type(self).runs += 1
            if type(self).runs == 2:
                raise RuntimeError("out of luck")
            super().setup(real, ipc, generator, device)

    report = check_method("flaky", raise_on_failure=False)
    detail = failed(report)["reproducible"]
    assert "a second run with seed 0 failed: RuntimeError: out of luck" in detail
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["artefact"] == "ok" and statuses["seed"] == statuses["resume"] == "skip"


def test_resume_may_change_is_checked_at_registration_and_each_name_in_the_report(register):
    for names, words in [
        (("lr_img",), "must be a frozenset"),
        (frozenset({"lr_imgg"}), "'lr_imgg'"),
    ]:
        with pytest.raises(dd.ConfigError, match=words):

            @register("badnames")
            class BadNames(Nudge):
                resume_may_change = names

    @dataclasses.dataclass(frozen=True)
    class Mixed(HParams):
        lr_img: float | None = 0.1  # optional, still a learning rate to halve
        steps: int = 2

    @register("mixed")
    class MixedMethod(Nudge):
        hparams_class = Mixed
        resume_may_change = frozenset({"lr_img", "steps"})  # lr_img declared, not applied

    report = check_method("mixed", raise_on_failure=False)
    rows = [(c.status, c.detail) for c in report.checks if c.name == "resume with a new lr"]
    assert rows[0][0] == "FAIL" and "lr_img halved" in rows[0][1]
    assert rows[1] == ("skip", "steps: not a positive float, so not halved and not checked")


def test_a_failing_run_with_another_seed_is_named(register):
    @register("flaky3")
    class Flaky3(Nudge):
        runs = 0

        def setup(self, real, ipc, generator, device):
            type(self).runs += 1
            if type(self).runs == 3:
                raise RuntimeError("third time")
            super().setup(real, ipc, generator, device)

    report = check_method("flaky3", raise_on_failure=False)
    assert "a run with seed 1 failed: RuntimeError: third time" in failed(report)["reproducible"]
    assert {c.name: c.status for c in report.checks}["resume"] == "skip"


def test_installed_entry_points_are_scanned_again_after_an_install(tmp_path, monkeypatch):
    import sys

    from datadistill import plugins

    monkeypatch.setattr(plugins, "_scanned", {})
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path)])
    assert not any(ep.name == "late" for ep in plugins._entry_points())
    info = tmp_path / "late_plugin-1.0.dist-info"
    info.mkdir()  # as `pip install` in a running notebook would
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: late-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[datadistill.plugins]\nlate = late_module\n")
    assert any(ep.name == "late" for ep in plugins._entry_points())
