import json
import os
import re
import stat

import pytest
import torch
from safetensors.torch import load_file

import datadistill as dd
from datadistill.errors import ConfigError, DataError
from datadistill.experts import ExpertBuffer, ExpertRecipe, expert_file, train_experts
from tests.conftest import EXPERT_RECIPE


def _interrupt_after_epoch(digits, root, num, recipe, epoch):
    """Start training ``num`` experts into ``root`` and stop (as Ctrl-C would) once expert
    0 has finished ``epoch`` epochs."""

    def interrupt(msg: str) -> None:
        if msg.startswith(f"expert 0: epoch {epoch}/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_experts(digits, root, num, recipe, device="cpu", log=interrupt)


def test_buffer_layout_and_lazy_read(expert_buffer, monkeypatch):
    buf = ExpertBuffer(expert_buffer)
    assert len(buf) == 2
    manifest = json.loads((expert_buffer / "manifest.json").read_text())
    assert manifest["recipe"]["arch"] == "convnet" and manifest["data"]["dataset"] == "digits"
    traj = load_file(str(expert_file(expert_buffer, 1)))["trajectory"]
    assert traj.shape == (4, buf.num_params)
    assert torch.equal(buf.epoch(1, 2), traj[2])
    assert not torch.equal(buf.epoch(1, 0), buf.epoch(1, 3))  # it trained
    assert not torch.equal(buf.epoch(0, 0), buf.epoch(1, 0))  # independent inits
    assert all(a > 0.2 for a in buf.val_accs()), buf.val_accs()  # chance is 0.1
    with pytest.raises(ConfigError, match="outside"):
        buf.epoch(0, 4)
    mask = os.umask(0o022)  # (reading the umask means setting it)
    os.umask(mask)
    for shard in expert_buffer.glob("*.safetensors"):  # shareable, not owner-only
        assert stat.S_IMODE(shard.stat().st_mode) == 0o666 & ~mask, shard

    # lazy: one epoch is one slice of the file; the whole trajectory is never loaded
    def no_whole_file(*args, **kwargs):
        raise AssertionError("the whole trajectory was loaded")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "load_file", no_whole_file)
    monkeypatch.setattr(safetensors.torch, "load", no_whole_file)
    monkeypatch.setattr(torch, "load", no_whole_file)
    assert torch.equal(ExpertBuffer(expert_buffer).epoch(1, 2), traj[2])


def test_interrupted_expert_resumes_to_the_same_trajectory(digits, tmp_path, expert_buffer):
    recipe = ExpertRecipe(**EXPERT_RECIPE)
    uninterrupted = load_file(str(expert_file(expert_buffer, 0)))["trajectory"]

    root = tmp_path / "b"
    _interrupt_after_epoch(digits, root, 2, recipe, epoch=1)
    folder = expert_file(root, 0, partial=True)
    # one file per finished epoch (init and epoch 1), each written once
    assert sorted(p.name for p in folder.iterdir()) == [
        "epoch_0000.safetensors",
        "epoch_0001.safetensors",
    ]
    assert not expert_file(root, 0).exists()
    with pytest.raises(DataError, match="no finished expert"):
        ExpertBuffer(root)
    buf = train_experts(digits, root, 2, recipe, device="cpu", log=lambda m: None)
    assert len(buf) == 2
    assert not expert_file(root, 0, partial=True).exists()
    resumed = load_file(str(expert_file(root, 0)))["trajectory"]
    assert torch.equal(resumed, uninterrupted)
    # the same folder with another recipe is refused
    with pytest.raises(
        ConfigError, match=r"another recipe \(recipe.epochs is 3 there and 5 here\)"
    ):
        train_experts(digits, root, 2, ExpertRecipe(**{**EXPERT_RECIPE, "epochs": 5}))
    # and so is a folder of another version's network under the same name (a default depth)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["layout"]["shapes"][-2] = [10, 16]  # the classifier of a deeper network
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="another version's convnet"):
        train_experts(digits, root, 3, recipe)


def test_buffer_errors(tmp_path, expert_buffer, digits):
    with pytest.raises(DataError, match="No expert buffer"):
        ExpertBuffer(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="not a datadistill expert buffer"):
        ExpertBuffer(tmp_path)
    buf = ExpertBuffer(expert_buffer)
    with pytest.raises(ConfigError, match="'resnet18'"):
        buf.check(digits, arch="resnet18")
    with pytest.raises(ConfigError, match="width"):
        buf.check(digits, arch="convnet", width=128)
    with pytest.raises(ConfigError, match="number of experts"):
        train_experts(digits, tmp_path / "x", 0)
    # the same dataset with another training split: its mean differs, and the fix is named
    other = dd.load_dataset("digits", val_size=0.3)
    with pytest.raises(ConfigError, match="mean=.*--val-size / --max-train used when the experts"):
        buf.check(other)


@pytest.mark.parametrize(
    ("text", "says"),
    [("{not json", "Cannot read the expert manifest"), ('{"format": "other"}', "is not a")],
)
def test_adding_to_a_folder_with_a_damaged_manifest_says_so(digits, tmp_path, text, says):
    """One clear error (the CLI prints it as one line), not a JSON traceback."""
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(DataError, match=says):
        train_experts(digits, tmp_path, 1, ExpertRecipe(**EXPERT_RECIPE))


def test_parallel_workers_train_the_same_experts(digits, tmp_path):
    """Experts trained in two worker processes equal, bit for bit, those trained one after
    another with the same threads per expert (each expert is seeded by its index, whichever
    worker trains it)."""
    recipe = ExpertRecipe(**EXPERT_RECIPE)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # two workers of one thread each
        par = train_experts(
            digits, tmp_path / "par", 2, recipe, device="cpu", workers=2, log=lambda m: None
        )
        torch.set_num_threads(1)
        seq = train_experts(digits, tmp_path / "seq", 2, recipe, device="cpu", log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    assert len(par) == len(seq) == 2
    for i in range(2):
        got = load_file(str(expert_file(tmp_path / "par", i)))["trajectory"]
        want = load_file(str(expert_file(tmp_path / "seq", i)))["trajectory"]
        assert torch.equal(got, want)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_resume_from_an_earlier_versions_partial_file(digits, tmp_path, momentum):
    """An unfinished expert written by an earlier version (one file rewritten every epoch)
    still resumes, with its momentum, to the uninterrupted trajectory."""
    from safetensors.torch import save_file

    recipe = ExpertRecipe(**{**EXPERT_RECIPE, "momentum": momentum})
    full = tmp_path / "full"
    train_experts(digits, full, 1, recipe, device="cpu", log=lambda m: None)
    uninterrupted = load_file(str(expert_file(full, 0)))["trajectory"]

    root = tmp_path / "b"
    _interrupt_after_epoch(digits, root, 1, recipe, epoch=2)
    folder = expert_file(root, 0, partial=True)
    shards = [load_file(str(folder / f"epoch_{e:04d}.safetensors")) for e in range(3)]
    legacy = {"trajectory": torch.stack([s["params"] for s in shards])}
    legacy["generator"] = shards[-1]["generator"]
    if momentum:
        legacy["momentum"] = shards[-1]["momentum"]
    save_file(legacy, str(root / "expert_0000.partial.safetensors"), metadata={"epochs_done": "2"})
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    train_experts(digits, root, 1, recipe, device="cpu", log=lambda m: None)
    assert not (root / "expert_0000.partial.safetensors").exists()
    assert not folder.exists()
    assert torch.equal(load_file(str(expert_file(root, 0)))["trajectory"], uninterrupted)


def test_unreadable_epoch_file_and_leftovers(digits, tmp_path, expert_buffer):
    """A truncated epoch file stops the resume with one clear error naming what to delete;
    what an unfinished expert left beside a finished one is cleaned up."""
    recipe = ExpertRecipe(**EXPERT_RECIPE)

    root = tmp_path / "b"
    _interrupt_after_epoch(digits, root, 1, recipe, epoch=1)
    folder = expert_file(root, 0, partial=True)
    last = folder / "epoch_0001.safetensors"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(DataError, match="Cannot resume expert 0 .* delete the folder"):
        train_experts(digits, root, 1, recipe, device="cpu", log=lambda m: None)
    last.unlink()  # one epoch back (from the initialisation): the same trajectory
    train_experts(digits, root, 1, recipe, device="cpu", log=lambda m: None)
    assert not folder.exists()
    resumed = load_file(str(expert_file(root, 0)))["trajectory"]
    assert torch.equal(resumed, load_file(str(expert_file(expert_buffer, 0)))["trajectory"])
    folder.mkdir()  # a crash between the finished file and the clean-up
    (folder / "epoch_0000.safetensors").write_bytes(b"x")
    train_experts(digits, root, 1, recipe, device="cpu", log=lambda m: None)
    assert not folder.exists()


def test_a_truncated_finished_expert_is_one_error(digits, tmp_path, expert_buffer):
    """A damaged finished expert (an interrupted copy of a buffer) is named before anything
    trains, and its scores are not read as if it were whole."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(expert_buffer, root)
    path = expert_file(root, 1)
    path.write_bytes(path.read_bytes()[:1000])
    recipe = ExpertRecipe(**EXPERT_RECIPE)
    with pytest.raises(DataError, match=r"Cannot read expert .*expert_0001.* delete it"):
        train_experts(digits, root, 3, recipe, device="cpu", log=lambda m: None)
    assert not expert_file(root, 2).exists()  # refused before training the third
    with pytest.raises(DataError, match=r"Cannot read expert .*expert_0001"):
        ExpertBuffer(root).val_accs()


def test_zca_regulariser_and_manifest_checks(tmp_path, expert_buffer, digits):
    """A buffer whitened with another ZCA eps is refused; a buffer from before the eps
    was recorded is not held to it; a damaged manifest or a width for an architecture
    without one is one clear error."""
    import shutil

    from datadistill import load_dataset
    from datadistill.experts import data_fingerprint

    root = tmp_path / "zca"
    shutil.copytree(expert_buffer, root)
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    whitened = load_dataset("digits", zca=True, zca_eps=0.1)
    manifest["data"] = data_fingerprint(whitened)
    assert manifest["data"]["zca_eps"] == 0.1
    path.write_text(json.dumps(manifest))
    ExpertBuffer(root).check(whitened)
    with pytest.raises(ConfigError, match="zca_eps=0.1, but the data has zca_eps=0.01"):
        ExpertBuffer(root).check(load_dataset("digits", zca=True, zca_eps=0.01))
    del manifest["data"]["zca_eps"]  # written before the eps was recorded
    path.write_text(json.dumps(manifest))
    ExpertBuffer(root).check(load_dataset("digits", zca=True, zca_eps=0.01))

    del manifest["recipe"]["epochs"]
    manifest["recipe"]["epoch_count"] = 3
    path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="incomplete or invalid"):
        ExpertBuffer(root)
    with pytest.raises(ConfigError, match="width applies to the models that take one"):
        train_experts(digits, tmp_path / "bn", 1, ExpertRecipe(arch="lenet", width=64))


def test_buffer_refuses_data_whose_classes_are_in_another_order(expert_buffer, digits):
    """The same images with the classes numbered otherwise: the experts' labels would mean
    other classes."""
    import copy
    import dataclasses

    other = copy.copy(digits)
    other.info = dataclasses.replace(
        digits.info, class_names=tuple(reversed(digits.info.class_names))
    )
    ExpertBuffer(expert_buffer).check(digits)
    with pytest.raises(
        ConfigError,
        match=r"other classes \(class_names\[0\] is '0' in the buffer and '9' in the data\)",
    ):
        ExpertBuffer(expert_buffer).check(other)


def test_a_diverging_expert_stops_with_its_finished_epochs_kept(digits, tmp_path):
    """An lr that blows the weights up stops the buffer with one clear error instead of
    saving non-finite experts; the epochs before the divergence stay on disk."""
    from datadistill.errors import RunError

    recipe = ExpertRecipe(**{**EXPERT_RECIPE, "lr": 1e30})
    with pytest.raises(RunError, match=r"Expert 0 diverged in epoch 1 .*lower --lr"):
        train_experts(digits, tmp_path / "b", 1, recipe, device="cpu", log=lambda m: None)
    folder = expert_file(tmp_path / "b", 0, partial=True)
    assert [p.name for p in folder.iterdir()] == ["epoch_0000.safetensors"]
    assert not expert_file(tmp_path / "b", 0).exists()
    with pytest.raises(ConfigError, match="finite number > 0"):
        ExpertRecipe(lr=float("inf"))


def test_user_data_is_the_same_data_however_its_path_is_spelled(tmp_path, monkeypatch):
    """`npz:d.npz`, `npz:./d.npz` and the absolute path name one file: a buffer trained on
    one spelling serves the others, and one recorded as typed (older buffers) still does;
    cached baselines are found under any spelling."""
    import numpy as np
    from sklearn.datasets import load_digits

    from datadistill import load_dataset
    from datadistill.experts import data_fingerprint, fingerprint_difference

    digits = load_digits()
    np.savez(tmp_path / "d.npz", x=digits.images.astype(np.float32) / 16, y=digits.target)
    monkeypatch.chdir(tmp_path)
    spellings = ["npz:d.npz", "npz:./d.npz", f"npz:{tmp_path / 'd.npz'}"]
    reals = [load_dataset(s, val_size=0.1) for s in spellings]
    prints = [data_fingerprint(real) for real in reals]
    assert prints[0] == prints[1] == prints[2]
    from datadistill.evaluation.evaluate import _fingerprint  # the baselines' cache key

    assert _fingerprint(reals[0]) == _fingerprint(reals[1]) == _fingerprint(reals[2])
    assert prints[0]["dataset"] == f"npz:{(tmp_path / 'd.npz').resolve()}"
    older = {**prints[0], "dataset": "npz:./d.npz"}  # recorded as typed
    assert fingerprint_difference(older, prints[0]) is None
    other = {**prints[0], "dataset": "npz:other.npz"}
    assert fingerprint_difference(other, prints[0])[0] == "dataset"


def test_worker_devices_spread_a_bare_cuda_and_keep_an_index():
    from datadistill.experts import worker_devices

    assert worker_devices(torch.device("cuda"), 3, 2) == ["cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices(torch.device("cuda:1"), 2, 2) == ["cuda:1", "cuda:1"]
    assert worker_devices(torch.device("cpu"), 2, 0) == ["cpu", "cpu"]


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"dsa": "no"}, "dsa must be True or False; got 'no'"),
        ({"lr": True}, "lr must be a finite number > 0; got True"),
        ({"arch": ""}, "arch must be a model name; got ''"),
        ({"arch": 3}, "arch must be a model name; got 3"),
        ({"dsa": 1}, "dsa must be True or False; got 1"),
    ],
)
def test_an_expert_recipe_takes_switches_and_numbers_of_their_own_type(bad, message):
    """A string switch is truthy ("no" would train with DSA): refused, as HParams does."""
    with pytest.raises(ConfigError, match=re.escape(f"The expert {message}.")):
        ExpertRecipe(**bad)


def test_a_buffer_trained_on_other_files_is_refused_by_their_digest(
    tmp_path, expert_buffer, digits
):
    """The same name and statistics from other files (an edited image or label) is other
    data; a buffer from before digests were recorded, or data without one, is not held."""
    import copy
    import shutil

    manifest = json.loads((expert_buffer / "manifest.json").read_text())
    assert manifest["data"]["digest"] == digits.options["digest"]
    root = tmp_path / "other"
    shutil.copytree(expert_buffer, root)
    manifest["data"]["digest"] = "sha256:0123456789abcdef"
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"digest='sha256:0123456789abcdef', but .*edited"):
        ExpertBuffer(root).check(digits)
    unknown = copy.copy(digits)
    unknown.options = None  # a RealData built by hand
    ExpertBuffer(root).check(unknown)
    del manifest["data"]["digest"]  # a buffer of an older version
    (root / "manifest.json").write_text(json.dumps(manifest))
    ExpertBuffer(root).check(digits)
