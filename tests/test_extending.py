"""README's "Your own method": its example runs as written, and a method registered by a
user goes through the same loop as the builtin ones (resume, run folder, evaluation)."""

import warnings

import pytest
import torch

import datadistill as dd
from datadistill.methods import METHODS


@pytest.fixture
def user_method(monkeypatch, capsys, readme_method_example):
    """Runs README's example (registering "moments" for this test only) and returns its
    namespace."""
    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))
    monkeypatch.setattr(METHODS, "_meta", dict(METHODS._meta))
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(readme_method_example, "README.md", "exec"), namespace)
    return namespace, capsys.readouterr().out


def test_the_readme_example_distills_and_evaluates(user_method):
    namespace, printed = user_method
    result = namespace["result"]
    assert isinstance(result, dd.Distilled)
    assert result.manifest["method"] == "moments" and result.manifest["iterations"] == 20
    assert result.manifest["hparams"] == {"lr_img": 0.5, "batch_real": 64, "width": 32}
    assert "distilled" in printed and "random" in printed
    assert "moments" in METHODS.names() and METHODS.meta("moments")["summary"].startswith(
        "Match each class's feature mean"
    )


def test_a_users_method_resumes_bit_for_bit_and_fills_a_run_folder(user_method, tmp_path):
    real = dd.load_dataset("digits")
    kw = dict(ipc=1, seed=3, device="cpu", lr_img=0.5)
    straight = dd.distill(real, "moments", iterations=6, **kw)
    ckpt = tmp_path / "moments.pt"
    dd.distill(real, "moments", iterations=3, checkpoint=ckpt, **kw)
    resumed = dd.distill(real, "moments", iterations=6, checkpoint=ckpt, resume=True, **kw)
    assert torch.equal(resumed.images, straight.images)
    with pytest.raises(dd.ConfigError, match="lr_img must be > 0"):
        dd.distill(real, "moments", ipc=1, iterations=1, lr_img=0.0, device="cpu")
    # every method's int, float and str hyperparameters are checked for their type
    with pytest.raises(dd.ConfigError, match="'batch_real' parameter of Moments must be an int"):
        dd.distill(real, "moments", ipc=1, iterations=1, batch_real="abc", device="cpu")
    with pytest.raises(dd.ConfigError, match="'lr_img' parameter of Moments must be a number"):
        dd.distill(real, "moments", ipc=1, iterations=1, lr_img="abc", device="cpu")
    with pytest.raises(dd.ConfigError, match="Unknown hyperparameter.*'lr_imgg'.*lr_img"):
        dd.distill(real, "moments", ipc=1, iterations=1, lr_imgg=0.5, device="cpu")
    config = dd.RunConfig(
        dataset="digits",
        method="moments",
        ipc=1,
        iterations=2,
        eval_archs=("convnetw32",),
        eval_seeds=1,
        protocol="fast",
        full=False,
        progress=False,
        device="cpu",
    )
    report = dd.run(config, tmp_path / "run")
    assert report["method"] == "moments" and report["protocol"] == "fast"
    assert (tmp_path / "run" / "distilled.safetensors").is_file()
    assert dd.load(tmp_path / "run" / "distilled.safetensors").manifest["method"] == "moments"


@pytest.fixture
def register(monkeypatch):
    """Registers methods for this test only."""
    from datadistill.methods import register_method

    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))
    monkeypatch.setattr(METHODS, "_meta", dict(METHODS._meta))
    return lambda name: register_method(name)


def _tiny(step):
    """A method whose step is ``step(self)``: real images, changed only by ``step``."""
    from datadistill.methods import Method
    from datadistill.methods.common import init_synset

    class Tiny(Method):
        """A method of a test."""

        def setup(self, real, ipc, generator, device):
            self.generator = generator
            self.synset = init_synset(real, ipc, "real", generator, device)

    Tiny.step = step  # type: ignore[method-assign]
    return Tiny


def test_a_step_that_breaks_the_contract_is_one_sentence(register, digits, tmp_path):
    """A user's step that forgets to count itself would loop for ever, one returning
    anything but a dict of numbers would fail at the end of the budget: both stop at the
    first step with what the method must do. A 0-dim tensor is taken as its number."""

    def no_count(self):
        return {"loss": 1.0}

    def no_dict(self):
        self.iteration += 1

    def text(self):
        self.iteration += 1
        return {"loss": "low"}

    def tensor(self):
        self.iteration += 1
        return {"loss": torch.tensor(0.5, requires_grad=True) * 2}

    register("no_count")(_tiny(no_count))
    register("no_dict")(_tiny(no_dict))
    register("text")(_tiny(text))
    register("tensor")(_tiny(tensor))
    run = dict(ipc=1, iterations=3, device="cpu")
    with pytest.raises(dd.RunError, match="left its iteration at 0 .* must add 1 to self.it"):
        dd.distill(digits, "no_count", **run)
    with pytest.raises(dd.RunError, match="no_dict's step\\(\\) returned NoneType; it must"):
        dd.distill(digits, "no_dict", **run)
    with pytest.raises(dd.RunError, match="the metric 'loss': 'low'; metrics must map"):
        dd.distill(digits, "text", **run)
    d = dd.distill(digits, "tensor", checkpoint=tmp_path / "t.pt", **run)
    assert d.manifest["iterations"] == 3
    assert dd.load(d.save(tmp_path / "t.safetensors")).manifest["method"] == "tensor"


def test_a_step_drawing_from_the_global_generator_is_warned_about(register, digits):
    def global_draw(self):
        torch.rand(1)  # not the run's generator
        self.iteration += 1
        return {"loss": 1.0}

    def own_draw(self):
        torch.rand(1, generator=self.generator)
        self.iteration += 1
        return {"loss": 1.0}

    def no_loss(self):
        self.iteration += 1
        return {"distance": 1.0}

    register("global_draw")(_tiny(global_draw))
    register("own_draw")(_tiny(own_draw))
    register("no_loss")(_tiny(no_loss))
    with pytest.warns(UserWarning, match="returned no 'loss', so a diverging run is not") as w:
        dd.distill(digits, "no_loss", ipc=1, iterations=4, device="cpu")
    assert len([x for x in w if "no 'loss'" in str(x.message)]) == 1
    with pytest.warns(UserWarning, match="drew from torch's global random generator") as w:
        dd.distill(digits, "global_draw", ipc=1, iterations=5, device="cpu")
    assert len([x for x in w if "global random" in str(x.message)]) == 3  # first 3 steps
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dd.distill(digits, "own_draw", ipc=1, iterations=5, device="cpu")


def test_a_diverged_users_method_is_told_what_a_resume_may_change(register, digits, tmp_path):
    def diverge(self):
        self.iteration += 1
        return {"loss": 1.0 if self.iteration < 3 else float("nan")}

    register("diverge")(_tiny(diverge))
    with pytest.raises(dd.RunError, match="lets a resume change none of its settings"):
        dd.distill(
            digits,
            "diverge",
            ipc=1,
            iterations=5,
            checkpoint=tmp_path / "c.pt",
            checkpoint_every=1,
            device="cpu",
        )


def test_a_model_without_embed_is_refused_where_features_are_matched(digits, monkeypatch):
    """A user's model that is a plain module (no `embed`) is refused in one sentence at
    set-up by a method that matches its features, not at its first step."""
    from torch import nn

    from datadistill.models import MODELS

    monkeypatch.setattr(MODELS, "_items", dict(MODELS._items))
    monkeypatch.setattr(MODELS, "_meta", dict(MODELS._meta))

    def plain(channels, num_classes, image_size, generator=None):
        """A plain module."""
        h, w = image_size
        return nn.Sequential(nn.Flatten(), nn.Linear(channels * h * w, num_classes))

    MODELS.register("plain")(plain)
    with pytest.raises(dd.ConfigError, match="DM matches the features .* 'plain' .* no embed"):
        dd.distill(digits, "dm", ipc=1, iterations=1, arch="plain", device="cpu")
    with pytest.raises(dd.ConfigError, match="feature space .* 'plain' .* no embed"):
        dd.distill(digits, "herding", ipc=1, arch="plain", device="cpu")


def test_a_method_class_without_a_docstring_registers(register):
    from datadistill.methods.dm import DM

    class Undocumented(DM):
        pass

    assert Undocumented.__doc__ is None  # a class docstring is not inherited
    register("undocumented")(Undocumented)
    assert METHODS.describe("undocumented") == "" and "undocumented" in METHODS.names()
