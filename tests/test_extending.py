"""README's "Your own method": its example runs as written, and a method registered by a
user goes through the same loop as the builtin ones (resume, run folder, evaluation)."""

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
