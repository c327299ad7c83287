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
