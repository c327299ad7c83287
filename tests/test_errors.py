"""Messages that name what differs between two settings."""

from __future__ import annotations

from datadistill.errors import first_difference


def test_first_difference_names_the_first_differing_place():
    old = {"method": "dm", "hparams": {"lr_img": 1.0, "dsa": True}, "splits": [[5, 1], [2, 1]]}
    assert first_difference(old, old, "then", "now") == ""
    new = {**old, "hparams": {"lr_img": 3.0, "dsa": True}}
    assert first_difference(old, new, "then", "now") == "hparams.lr_img is 1.0 then and 3.0 now"
    new = {**old, "splits": [[5, 1], [4, 1]]}
    assert first_difference(old, new, "then", "now") == "splits[1][0] is 2 then and 4 now"
    new = {**old, "extra": 1}
    assert first_difference(old, new, "then", "now") == "extra is missing then and set now"
    assert first_difference(1, 2, "a", "b") == "the value is 1 a and 2 b"


# ----------------------------------------------------------- the Python API's bad input
import pytest  # noqa: E402
import torch  # noqa: E402

import datadistill as dd  # noqa: E402
from datadistill.errors import ConfigError, DataError  # noqa: E402


def _set(real, **kw):
    return dd.Distilled(images=real.train_x[:10], labels=real.train_y[:10], info=real.info, **kw)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"iterations": -1}, r"iterations \(--iterations\) must be an int >= 0"),
        ({"iterations": "2"}, "must be an int >= 0; got '2'"),
        ({"time_budget": 0}, "time_budget .* > 0"),
        ({"time_budget": float("nan")}, "time_budget"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"seed": "0"}, r"seed \(--seed\) must be an int"),
        ({"resume": True}, "resume=True needs checkpoint=PATH"),
        ({"ipc": True}, "IPC must be an integer"),
    ],
)
def test_distill_refuses_bad_arguments_before_any_work(digits, kwargs, match):
    kw = {"ipc": 1, **kwargs}
    with pytest.raises(ConfigError, match=match):
        dd.distill(digits, "dm", device="cpu", **kw)


def test_distill_and_evaluate_name_a_wrong_real_argument(digits):
    with pytest.raises(ConfigError, match="load_dataset"):
        dd.distill("digits", "dm", ipc=1)
    with pytest.raises(ConfigError, match="load_dataset"):
        dd.evaluate(_set(digits), "digits")


def test_an_integer_of_any_kind_is_an_ipc(digits):
    import numpy as np

    d = dd.distill(digits, "random", ipc=np.int64(1), seed=np.int64(2), device="cpu")
    assert d.ipc == 1 and d.manifest["seed"] == 2
    assert type(d.manifest["seed"]) is int  # the manifest stays plain JSON


def test_evaluate_refuses_a_set_from_other_data(digits):
    other = dd.load_dataset("digits", zca=True)  # the same images, whitened
    with pytest.raises(DataError, match="distilled from digits .* ZCA eps 0.1"):
        dd.evaluate(_set(other), digits, "fast", seeds=1, full=False, device="cpu")
    declared = dd.load_dataset("digits", normalization="none")
    with pytest.raises(DataError, match="the real data is digits"):
        dd.evaluate(_set(declared), digits, "fast", seeds=1, full=False, device="cpu")
    with pytest.raises(ConfigError, match="seeds must be an int >= 1; got '1'"):
        dd.evaluate(_set(digits), digits, "fast", seeds="1", device="cpu")


def test_evaluate_refuses_a_set_whose_classes_are_in_another_order(digits):
    """Same images and statistics, classes numbered otherwise (an image folder read in
    sorted folder order): the labels would be scored against other classes."""
    import dataclasses

    names = tuple(reversed(digits.info.class_names))
    shuffled = dataclasses.replace(
        _set(digits), info=dataclasses.replace(digits.info, class_names=names)
    )
    with pytest.raises(
        DataError, match=r"class_names\[0\] is '9' in this set and '0' in the real data"
    ):
        dd.evaluate(shuffled, digits, "fast", seeds=1, full=False, device="cpu")


def test_a_distilled_set_checks_its_own_fields(digits):
    with pytest.raises(DataError, match=r"images have shape \(10, 3, 8, 8\)"):
        dd.Distilled(
            images=torch.zeros(10, 3, 8, 8), labels=torch.zeros(10).long(), info=digits.info
        )
    with pytest.raises(DataError, match="one integer label per image: 10 images"):
        dd.Distilled(images=digits.train_x[:10], labels=torch.zeros(3).long(), info=digits.info)
    with pytest.raises(DataError, match=r"Labels must lie in 0..9 .* got 5..14"):
        dd.Distilled(images=digits.train_x[:10], labels=torch.arange(10) + 5, info=digits.info)
    with pytest.raises(DataError, match=r"soft_labels must have shape \(N, K\) = \(10, 10\)"):
        _set(digits, soft_labels=torch.zeros(10, 4))


def test_save_to_a_folder_and_export_formats(digits, tmp_path):
    d = _set(digits)
    with pytest.raises(ConfigError, match="is a folder; give a file path"):
        d.save(tmp_path)
    assert not list(tmp_path.parent.glob(f"{tmp_path.name}.tmp"))
    assert dd.export(d, tmp_path / "x.npz", "NPZ").is_file()
